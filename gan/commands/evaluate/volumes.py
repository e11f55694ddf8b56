"""The paired volume metrics of ``medsynth evaluate``: MAE, PSNR, SSIM / MS-SSIM and LPIPS per patient, model and
trivial baseline, averaged over patients.

Each pair is scored with :func:`gan.metrics.volume_metrics` in physical units, inside the body mask. The evaluation
window follows the modality of the reference volumes (JSON sidecar, DICOM tag, ``--target`` or ``--modality``): CT
the protocol's HU window, PET the SUV window [0, 20], MR each patient's own percentile window fitted on the reference
volume, as in training; ``--window`` fixes one window for all. There is no default across modalities: an unknown or
mixed modality is an error naming the file. The trivial baseline is scored beside the model: a folder of baseline
volumes, or made here by the translation modules' own rules (:func:`gan.metrics.volume_evaluation.copy_baseline`:
the source volume read through the target's window; :func:`~gan.metrics.volume_evaluation.mean_baseline`: the mean
training target inside the body). :func:`paired_report` scores; :func:`evaluate_volumes` writes the report folder.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from data.errors import VolumeError
from data.image_sets import MaskedVolume, VolumePair
from data.intensity import Window, WindowParams, default_window, modality_windows, to_unit
from data.volumes import Volume, is_nifti_path, load_volume, sidecar_modality
from gan.commands.evaluate.common import (
    MODALITY_KEYS,
    PAIRED_METRICS,
    RANDOM_WEIGHTS,
    PathLike,
    parse_metrics,
    write_report_folder,
)
from gan.losses import LPIPSLoss
from gan.metrics import PROTOCOLS, default_data_range, metric_names, volume_metrics
from gan.metrics.volume_evaluation import copy_baseline, mean_baseline
from gan.reports import progress

__all__ = [
    "LPIPSSettings",
    "TrainingWindows",
    "VolumeSettings",
    "evaluate_volumes",
    "paired_report",
]

Baseline = Literal["copy", "mean"]


@dataclass(frozen=True)
class TrainingWindows:
    """The training windows of the translation model (the volume datamodule's settings of the same names); used by
    the MR evaluation window and the ``copy``/``mean`` baselines.

    Args:
        ct_window: CT window in HU.
        pet_window: PET window in SUV.
        pet_log: log-compressed PET window.
        mr_percentiles: MR per-volume percentile normalisation (lower, upper).
    """

    ct_window: tuple[float, float] = (-1024.0, 3000.0)
    pet_window: tuple[float, float] = (0.0, 20.0)
    pet_log: bool = False
    mr_percentiles: tuple[float, float] = (0.5, 99.5)

    def windows(self) -> dict[str, Window]:
        """The window of each modality key (``data.intensity.modality_windows``)."""
        return modality_windows(ct_window=tuple(self.ct_window), pet_window=tuple(self.pet_window),
                                pet_log=self.pet_log, mr_percentiles=tuple(self.mr_percentiles))


@dataclass(frozen=True)
class VolumeSettings:
    """How paired volumes are scored.

    Args:
        protocol: ``"default"``, ``"synthrad2023"`` or ``"synthrad2025"``.
        window: one fixed evaluation window ``(low, high)`` in physical units; None follows the modality.
        modality: ``"ct"``, ``"mr"`` or ``"pet"`` for volumes that declare none (a volume declaring another is
            refused); None trusts the sidecars / DICOM tags.
        training: the training windows (MR evaluation window, computed baselines).
        baseline: make the trivial baseline here: ``"copy"`` (each pair's source volume through the windows) or
            ``"mean"`` (the mean training target inside the body); None uses the pairs' baseline files, if any.
        source: modality key of the source volumes (``"ct"``), needed by ``"copy"``.
    """

    protocol: str = "default"
    window: tuple[float, float] | None = None
    modality: str | None = None
    training: TrainingWindows = field(default_factory=TrainingWindows)
    baseline: Baseline | None = None
    source: str | None = None


@dataclass(frozen=True)
class LPIPSSettings:
    """The 2.5D LPIPS of paired volumes.

    Args:
        net: backbone, ``"alex"``, ``"vgg"`` or ``"squeeze"``.
        weights: backbone weights file, ``"random"``, or None (torch hub cache).
        max_slices: evenly spaced slices per axis (None: all).
    """

    net: str = "alex"
    weights: str | Path | None = None
    max_slices: int | None = 32


# ------------------------------------------------------------------------------------- geometry and modality


def _check_same_grid(ref: Volume, other: Volume, what: str) -> None:
    """Raise a VolumeError naming both files unless shape and affine agree."""
    if ref.shape != other.shape:
        raise VolumeError(other.source, f"{what} shape {other.shape} differs from the reference {ref.source} shape "
                                        f"{ref.shape}")
    if not np.allclose(ref.affine, other.affine, atol=1e-3):
        diff = float(np.abs(ref.affine - other.affine).max())
        raise VolumeError(other.source, f"{what} affine differs from the reference {ref.source} (max difference "
                                        f"{diff:.4g} mm); the volumes are not on the same voxel grid")


def _declared(volume: Volume, expected: str | None, what: str, given_by: str) -> str | None:
    """The modality code of ``volume``: its declared one (sidecar / DICOM tag), or ``expected`` when it declares
    none; a volume declaring another modality than ``expected`` (or a mask) is refused."""
    code = None if volume.modality == "OT" else volume.modality
    if code == "SEG":
        raise VolumeError(volume.source, f"{what} is declared a mask (SEG), not an image")
    if expected is not None and code is not None and code != expected:
        raise VolumeError(volume.source, f"{what} is declared {code} (sidecar / DICOM tag), but {given_by} says "
                                         f"{expected}; fix the sidecar or the option")
    return code or expected


def _declared_file(path: Path, expected: str | None, what: str, given_by: str) -> str | None:
    """:func:`_declared` of a volume file; a NIfTI file's sidecar is read without decoding the volume."""
    if not is_nifti_path(path):
        return _declared(load_volume(path), expected, what, given_by)
    stub = Volume(np.zeros((1, 1, 1), np.float32), np.eye(4), modality=sidecar_modality(path) or "OT",
                  source=str(path))
    return _declared(stub, expected, what, given_by)


def _resolve_modality(pairs: Sequence[VolumePair], settings: VolumeSettings, given_by: str) -> str | None:
    """The one modality code of the reference volumes (declared, or ``settings.modality`` for those declaring none).

    Raises:
        VolumeError: a reference declares another modality than the others or than the option, or none is known
            and the window is not fixed.
    """
    expected = None if settings.modality is None else MODALITY_KEYS[settings.modality]
    found: dict[str, Path] = {}
    for pair in pairs:
        code = _declared_file(pair.real, expected, "reference volume", given_by)
        if code is None:
            if settings.window is None:
                raise VolumeError(pair.real, "declares no modality (no 'modality' in its JSON sidecar, no DICOM "
                                             "tag), so its evaluation window is unknown; pass --modality ct|mr|pet "
                                             "(or one fixed --window)")
            continue
        found.setdefault(code, pair.real)
        if len(found) > 1:
            (c0, p0), (c1, p1) = list(found.items())[:2]
            raise VolumeError(p1, f"is {c1} but {p0} is {c0}; evaluate one modality at a time")
    return next(iter(found), None)


# ----------------------------------------------------------------------------------------- windows and baselines


class _Windows:
    """The evaluation window of each patient and the windows of the trivial baselines, from the run's modality.

    Args:
        settings: the volume settings.
        code: the modality code of the references (``CT``, ``MR``, ``PT``), or None (unknown; a fixed window).
    """

    def __init__(self, settings: VolumeSettings, code: str | None) -> None:
        self.settings, self.code = settings, code
        self.key = next((k for k, v in MODALITY_KEYS.items() if v == code), None)
        self.training = settings.training.windows()
        self.fixed: tuple[float, float] | None = None
        if settings.window is not None:
            self.fixed = (float(settings.window[0]), float(settings.window[1]))
            self.rule = "fixed (--window)"
        elif code == "CT":
            self.fixed = tuple(float(v) for v in default_data_range(settings.protocol))  # type: ignore[assignment]
            self.rule = f"CT: the {settings.protocol} protocol's HU window"
        elif code == "PT":
            w = default_window("PT").fit()
            self.fixed = (w.low, w.high)
            self.rule = "PET: the SUV window"
        else:
            lo, hi = settings.training.mr_percentiles
            self.rule = f"MR: per patient, percentiles ({lo:g}, {hi:g}) of the reference volume (as in training)"
        if self.fixed is not None and not self.fixed[1] > self.fixed[0]:
            raise ValueError(f"window: expected LOW HIGH with HIGH > LOW, got {list(self.fixed)}")

    def evaluation(self, ref: np.ndarray) -> tuple[float, float]:
        """The evaluation window of one patient (its reference volume)."""
        if self.fixed is not None:
            return self.fixed
        w = self.training["mr"].fit(ref)
        return (w.low, w.high)

    def target(self, ref: np.ndarray) -> WindowParams:
        """The target's training window of one patient, as the model saw it (fitted on the reference for MR)."""
        return self.training[self.key].fit(ref)  # type: ignore[index]

    def source_unit(self, source: np.ndarray) -> np.ndarray:
        """The source volume in network range, through its own training window (the model's input)."""
        window = self.training[self.settings.source].fit(source)  # type: ignore[index]
        return to_unit(np.asarray(source, np.float64), window)  # type: ignore[return-value]

    def training_mean(self, training: Sequence[MaskedVolume], quiet: bool) -> float:
        """Mean training target inside the body masks (voxel-weighted over patients), clipped to its training
        window as the model sees it."""
        if not training:
            raise ValueError("--baseline mean needs the training split's targets (--data and --splits)")
        total, count = 0.0, 0
        for mv in progress(training, total=len(training), desc="training mean", quiet=quiet):
            vol = load_volume(mv.volume)
            _declared(vol, self.code, "training target", "the target modality")
            mask = np.ones(vol.shape, bool)
            if mv.mask is not None:
                m = load_volume(mv.mask)
                _check_same_grid(vol, m, "mask")
                mask = m.array > 0
            w = self.target(vol.array)
            values = np.clip(np.asarray(vol.array, np.float64), w.low, w.high)[mask]
            total, count = total + float(values.sum()), count + int(values.size)
        if count == 0:
            raise VolumeError(training[0].mask, "the training body masks are all empty")
        return total / count


def _baseline_volume(pair: VolumePair, ref: Volume, mask: np.ndarray | None, win: _Windows,
                     mean: float | None) -> tuple[np.ndarray, str] | None:
    """The baseline volume of one pair and how it was made: the pair's baseline file, or the ``copy``/``mean``
    baseline made here (:mod:`gan.metrics.volume_evaluation`); None without a baseline."""
    computed = win.settings.baseline
    if pair.baseline is not None and computed is None:
        base = load_volume(pair.baseline)
        _check_same_grid(ref, base, "baseline")
        return base.array, str(pair.baseline)
    if computed == "copy":
        src = load_volume(pair.source)  # type: ignore[arg-type]
        _check_same_grid(ref, src, "source volume")
        _declared(src, MODALITY_KEYS[win.settings.source], "source volume", "--source")  # type: ignore[index]
        return copy_baseline(win.source_unit(src.array), win.target(ref.array)), f"copy of {pair.source}"
    if computed == "mean":
        inside = np.ones(ref.shape, bool) if mask is None else mask
        return mean_baseline(inside, mean, win.target(ref.array).low), "mean training target"  # type: ignore[arg-type]
    return None


def _unit_to(array: np.ndarray, window: tuple[float, float]) -> Tensor:
    """Clip to the evaluation window and map it linearly to [-1, 1], as (1, 1, I, J, K) float32 (for LPIPS)."""
    low, high = window
    x = (np.clip(array, low, high) - low) / (high - low) * 2.0 - 1.0
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]


# ------------------------------------------------------------------------------------------------ the report


def _wanted(metrics: tuple[str, ...], protocol: str, lpips: nn.Module | None) -> list[str]:
    """The metric columns of ``metrics`` under ``protocol`` (``ssim`` becomes ``ms_ssim`` for synthrad2025)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    structural = "ms_ssim" if protocol == "synthrad2025" else "ssim"
    if "ms_ssim" in metrics and structural != "ms_ssim":
        raise ValueError(f"ms_ssim is reported by protocol 'synthrad2025' only; protocol {protocol!r} reports ssim")
    wanted = list(dict.fromkeys(structural if m in ("ssim", "ms_ssim") else m for m in metrics))
    if "lpips" in wanted and lpips is None:
        raise ValueError("lpips: no LPIPS network given")
    return wanted


def paired_report(pairs: Sequence[VolumePair], *, metrics: tuple[str, ...], settings: VolumeSettings,
                  training: Sequence[MaskedVolume] = (), lpips: nn.Module | None = None, quiet: bool = False,
                  given_by: str = "--modality") -> dict[str, Any]:
    """Per-patient paired volume metrics in each patient's evaluation window, and their patient mean / std.

    Args:
        pairs: the volume pairs (with masks, baseline files or source volumes).
        metrics: paired metric names.
        settings: protocol, window, modality, training windows, computed baseline.
        training: the training targets (for the ``mean`` baseline).
        lpips: LPIPS module taking (1, 1, D, H, W) volumes in [-1, 1] (needed for ``lpips``).
        quiet: no progress bars.
        given_by: the option that declared the modality (for messages).
    """
    protocol = settings.protocol
    wanted = _wanted(metrics, protocol, lpips)
    if not pairs:
        raise ValueError("no volume pairs to evaluate")
    code = _resolve_modality(pairs, settings, given_by)
    win = _Windows(settings, code)
    computed = settings.baseline
    if computed is not None and win.key is None:
        raise ValueError(f"--baseline {computed} needs the target modality (--target or --modality)")
    if computed == "copy" and (settings.source not in MODALITY_KEYS or any(p.source is None for p in pairs)):
        raise ValueError("--baseline copy needs the source volumes: --source ct|mr|pet with --data/--splits")
    mean = win.training_mean(training, quiet) if computed == "mean" else None
    has_baseline = computed is not None or any(p.baseline is not None for p in pairs)
    rows: list[dict[str, Any]] = []
    for pair in progress(pairs, total=len(pairs), desc="patients", quiet=quiet):
        ref = load_volume(pair.real)
        window = win.evaluation(ref.array)
        row: dict[str, Any] = {"patient": pair.patient, "real": str(pair.real), "fake": str(pair.fake),
                               "window": list(window)}
        mask = None
        if pair.mask is not None:
            m = load_volume(pair.mask)
            _check_same_grid(ref, m, "mask")
            mask = m.array > 0
            row["mask"], row["mask_voxels"] = str(pair.mask), int(mask.sum())
            if not mask.any():
                raise VolumeError(pair.mask, "body mask is empty")
        fake = load_volume(pair.fake)
        _check_same_grid(ref, fake, "synthetic volume")
        _declared(fake, code, "synthetic volume", f"the reference ({code})")
        candidates: list[tuple[str, np.ndarray]] = [("", fake.array)]
        baseline = _baseline_volume(pair, ref, mask, win, mean)
        if baseline is not None:
            candidates.append(("baseline_", baseline[0]))
            row["baseline"] = baseline[1]
        for prefix, array in candidates:
            values = volume_metrics(array, ref.array, mask, protocol=protocol, data_range=window)  # type: ignore[arg-type]
            for name in metric_names(protocol):  # type: ignore[arg-type]
                if name in wanted:
                    row[prefix + name] = values[name]
            if "lpips" in wanted:
                with torch.no_grad():
                    dist = lpips(_unit_to(array, window), _unit_to(ref.array, window))  # type: ignore[misc]
                row[prefix + "lpips"] = float(dist.reshape(-1)[0])
        rows.append(row)
    columns = wanted + ([f"baseline_{m}" for m in wanted] if has_baseline else [])
    summary = {}
    for c in columns:
        v = np.asarray([r[c] for r in rows], dtype=np.float64)
        summary[c] = {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
    return {
        "mode": "paired",
        "volume_protocol": {
            "name": protocol,
            "modality": code or "unknown",
            "window": None if win.fixed is None else list(win.fixed),
            "window_rule": win.rule,
            "data_range": None if win.fixed is None else win.fixed[1] - win.fixed[0],
            "mask": "body mask (voxels > 0)" if any(p.mask is not None for p in pairs) else "whole volume",
            "units": "physical (as stored in the volume files)",
            "averaging": "per-patient values, mean and population std (ddof=0) over patients",
            "baseline": _baseline_text(settings, pairs, mean),
            "training_windows": dataclasses.asdict(settings.training),
            "lpips": "2.5D LPIPS of the volumes clipped to the window and mapped to [-1, 1] (whole volume)"
            if "lpips" in wanted else None,
        },
        "metric_columns": columns,
        "patients": rows,
        "summary": summary,
        "values": {k: v["mean"] for k, v in summary.items()} | {f"{k}_std": v["std"] for k, v in summary.items()},
        "counts": {"patients": len(rows)},
    }


def _baseline_text(settings: VolumeSettings, pairs: Sequence[VolumePair], mean: float | None) -> str | None:
    if settings.baseline == "copy":
        return f"copy: the {settings.source} volume through its training window, back through the target's"
    if settings.baseline == "mean":
        return f"mean: the mean training target inside the body ({mean:.6g}), the window's low value outside"
    if any(p.baseline is not None for p in pairs):
        return "volumes from the baseline folder"
    return None


def evaluate_volumes(pairs: Sequence[VolumePair], *, metrics: str | Sequence[str], out: PathLike,
                     settings: VolumeSettings = VolumeSettings(), training: Sequence[MaskedVolume] = (),
                     lpips: nn.Module | None = None, lpips_settings: LPIPSSettings = LPIPSSettings(),
                     device: str = "cpu", inputs: dict[str, Any] | None = None, overwrite: bool = False,
                     quiet: bool = False, given_by: str = "--modality") -> dict[str, Any]:
    """Paired whole-volume metrics (model and baseline), written as a report folder ``out``.

    Args:
        pairs: the volume pairs (:func:`data.image_sets.find_volume_pairs` or ``split_volume_pairs``).
        metrics: ``"mae,psnr,ssim"`` or a sequence of paired metric names.
        out: the report folder (refused when it exists, unless ``overwrite``).
        settings: protocol, window, modality, training windows, computed baseline.
        training: the training targets (for the ``mean`` baseline, :func:`data.image_sets.training_volumes`).
        lpips: an LPIPS module for ``lpips``; None builds ``LPIPSLoss(spatial_dims=3)`` from ``lpips_settings``.
        lpips_settings: backbone, weights and slices of the LPIPS built here.
        device: torch device of the LPIPS network.
        inputs: how the inputs were given (recorded in the report).
        overwrite: replace an existing report folder (atomically).
        quiet: no progress bars.
        given_by: the option that declared the modality (for messages).

    Returns:
        The report, as written to ``out/report.json``.
    """
    names = parse_metrics(metrics)
    if names[0] not in PAIRED_METRICS:
        raise ValueError(f"evaluate_volumes scores {', '.join(PAIRED_METRICS)}; use evaluate_images for {names}")
    if "lpips" in names and lpips is None:
        random = lpips_settings.weights == RANDOM_WEIGHTS
        lpips = LPIPSLoss(net=lpips_settings.net, pretrained=not random,  # type: ignore[arg-type]
                          backbone_weights=None if random else lpips_settings.weights, spatial_dims=3,
                          max_slices=lpips_settings.max_slices, reduction="none").to(device)
    description = {"metrics": list(names), **(inputs or {})}
    return write_report_folder(Path(out), overwrite=overwrite, inputs=description,
                               build=lambda _folder: paired_report(pairs, metrics=names, settings=settings,
                                                                   training=training, lpips=lpips, quiet=quiet,
                                                                   given_by=given_by))
