"""``medsynth generate``: a synthetic data set from a trained translation checkpoint, released only after a
memorization audit against the generator's training images.

Every input volume (NIfTI file, folder of NIfTI files, or DICOM series folder) is translated with
:func:`gan.translate.translate_volume` into a staging folder beside ``--out``. Then axial slices of the synthetic
volumes, of the training volumes of the output modality (``--train``) and of held-out real volumes of that modality
(``--heldout``, never seen in training) are windowed as in training, quantised to uint8 and audited with
:func:`gan.metrics.memorization.audit`: near-copy threshold calibrated on the held-out slices (feature cosine, and
LPIPS re-ranking with ``--lpips``), binomial test of the near-copy excess, and the three-sample data-copying test. Only when the audit passes is the staging folder renamed to
``--out`` (with ``manifest.json`` and the audit under ``audit/``). When it fails, the synthetic volumes are deleted,
the audit report is kept in ``<out>.rejected`` and the command exits with status 3; ``--allow-flagged`` releases
anyway and records that in the manifest. ``--out`` is never overwritten.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from data.errors import DataError
from data.intensity import WindowParams, to_unit
from data.volumes import Volume, load_volume, nifti_stem, sidecar_path
from data.writers import write_manifest, write_nifti
from gan.metrics.fid_medical import slice_indices
from gan.metrics.features import FeatureExtractor, FIDProtocol, extract_features, protocol_record, quantize_uint8, sha256_file
from gan.metrics.memorization import MemorizationReport, audit
from gan.translate import load_translation_model, training_window, translate_volume

log = logging.getLogger("medsynth.generate")
EXIT_AUDIT_FAILED = 3

__all__ = ["AuditFailed", "GenerateResult", "build_parser", "find_volumes", "generate", "run", "volume_slices"]


class AuditFailed(RuntimeError):
    """The memorization audit flagged the synthetic set; nothing was released.

    Args:
        message: what failed and where the report is.
        report_dir: folder holding the audit report.
    """

    def __init__(self, message: str, report_dir: Path) -> None:
        super().__init__(message)
        self.report_dir = report_dir


@dataclass
class GenerateResult:
    """What :func:`generate` released.

    Args:
        out: the released data set folder.
        volumes: synthetic volume files (inside ``out``).
        manifest: ``manifest.json``.
        audit: the audit report, or None with ``skip_audit``.
    """

    out: Path
    volumes: list[Path]
    manifest: Path
    audit: MemorizationReport | None = field(default=None, repr=False)


def find_volumes(paths: Sequence[str | Path], key: str, *, label: str) -> list[tuple[Path, Path]]:
    """Resolve volume arguments into ``(volume path, name relative to its argument)`` pairs, in a fixed order.

    A NIfTI file is itself (named by its file name); a folder with NIfTI files anywhere below gives those named
    ``<key>.nii[.gz]`` (e.g. ``patient_007/mr.nii.gz`` in the demo layout) or, when none has that name, all of them,
    named by their path from the folder's parent (``volumes/patient_007/mr.nii.gz``); a folder without NIfTI files
    is one DICOM series.

    Args:
        paths: files and folders.
        key: modality key preferred in folders (``ct``, ``mr``, ``pet``).
        label: argument name for messages (``input``, ``train``, ``heldout``).
    """
    if not paths:
        raise ValueError(f"--{label}: no path given")
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(p, f"--{label}: no such file or folder")
        if p.is_file():
            found.append((p, Path(p.name)))
            continue
        nifti = sorted(f for f in p.rglob("*") if f.is_file() and nifti_stem(f) is not None
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not nifti:
            found.append((p, Path(p.name)))  # a DICOM series folder; load_volume says if it is not one
            continue
        keyed = [f for f in nifti if nifti_stem(f) == key]
        found.extend((f, Path(p.name) / f.relative_to(p)) for f in (keyed or nifti))
    seen: dict[Path, Path] = {}
    for f, _ in found:
        if f.resolve() in seen:
            raise DataError(f, f"--{label}: given twice")
        seen[f.resolve()] = f
    return found


def volume_slices(volume: Volume, window: WindowParams, n: int, min_foreground: float = 0.05) -> tuple[Tensor, list[int]]:
    """Up to ``n`` evenly spaced axial slices with anatomy, windowed and quantised: ``(N, 3, J, I)`` uint8 (J flipped).

    A slice has anatomy when at least ``min_foreground`` of it lies above 5% of the window (the selection rule of
    :func:`gan.metrics.slice_indices`). Slices are taken along the volume's last array axis (axial for NIfTI /
    DICOM in nibabel order).

    Args:
        volume: volume in physical units.
        window: intensity window (as in training).
        n: most slices to return.
        min_foreground: fraction of the slice above the window's bottom 5%.
    """
    unit = np.asarray(to_unit(np.asarray(volume.array, dtype=np.float32), window), dtype=np.float32)
    if unit.ndim != 3:
        raise DataError(volume.source, f"expected a 3D volume, got shape {unit.shape}")
    pick = slice_indices(torch.from_numpy(unit), 2, max_slices=n, min_foreground=min_foreground, foreground_threshold=-0.9)
    if pick.size == 0:
        raise DataError(volume.source, "no slice with anatomy inside the training window (empty or mis-windowed volume?)")
    return _axial_images(unit, pick), [int(k) for k in pick]


def _axial_images(unit: np.ndarray, slices: Sequence[int] | np.ndarray) -> Tensor:
    """Axial slices of a [-1, 1] volume as ``(N, 3, J, I)`` uint8, J flipped (anterior up for RAS-stored volumes,
    as viewers show axial slices)."""
    grey = torch.from_numpy(np.ascontiguousarray(unit[:, ::-1, np.asarray(slices)].transpose(2, 1, 0)))[:, None]
    return quantize_uint8(grey.clamp(-1, 1).expand(-1, 3, -1, -1).contiguous())


@dataclass
class _SliceSet:
    """Features of volume slices and where each row came from (to reload the images of the closest pairs)."""

    keep_images: bool = False  # LPIPS re-ranking needs the images; otherwise only features are kept
    features: list[Tensor] = field(default_factory=list)
    images: list[Tensor] = field(default_factory=list)
    rows: list[tuple[int, int]] = field(default_factory=list)  # (volume index, slice)
    names: list[str] = field(default_factory=list)

    def add(self, images: Tensor, slices: list[int], volume_index: int, name: str, extractor: FeatureExtractor,
            protocol: FIDProtocol, batch_size: int) -> None:
        if self.keep_images:
            self.images.append(images)
        else:
            for s in range(0, images.shape[0], batch_size):
                self.features.append(extract_features(images[s:s + batch_size], extractor, protocol).detach().float().cpu())
        self.rows.extend((volume_index, k) for k in slices)
        self.names.extend(f"{name}[slice {k}]" for k in slices)

    def matrix(self, label: str) -> Tensor:
        """All features, or with ``keep_images`` all images (one in-plane size required)."""
        parts = self.images if self.keep_images else self.features
        if not parts:
            raise ValueError(f"--{label}: no slices to audit")
        if self.keep_images and len({tuple(p.shape[1:]) for p in parts}) > 1:
            raise ValueError(f"--{label}: LPIPS re-ranking needs slices of one size, got in-plane sizes "
                             f"{sorted({tuple(p.shape[2:]) for p in parts})}; resample the volumes or drop --lpips")
        return torch.cat(parts)


def _reference_slices(volumes: list[tuple[Path, Path]], key: str, windows: dict[str, tuple[float, float, bool]], n: int,
                      extractor: FeatureExtractor, protocol: FIDProtocol, batch_size: int, keep_images: bool) -> _SliceSet:
    out = _SliceSet(keep_images=keep_images)
    for i, (path, _) in enumerate(volumes):
        vol = load_volume(path)
        images, ks = volume_slices(vol, training_window(vol, key, windows), n)
        out.add(images, ks, i, str(path), extractor, protocol, batch_size)
    return out


def _output_name(rel: Path, source: str, target: str) -> Path:
    stem = nifti_stem(rel)
    if stem is None:  # a DICOM series folder
        return rel.parent / f"{rel.name}_{target}.nii.gz"
    return rel.parent / (f"{target}.nii.gz" if stem == source else f"{stem}_{target}.nii.gz")


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, i = path.with_name(f"{path.name}-{stamp}"), 1
    while candidate.exists():
        candidate, i = path.with_name(f"{path.name}-{stamp}-{i}"), i + 1
    return candidate


def generate(
    ckpt: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    train: Sequence[str | Path] | None,
    heldout: Sequence[str | Path] | None,
    extractor: FeatureExtractor | None = None,
    protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID,
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
    direction: Literal["forward", "reverse"] = "forward",
    device: str = "cpu",
    slices_per_volume: int = 16,
    batch_size: int = 32,
    quantile: float = 0.01,
    n_cells: int = 10,
    min_cell: int = 20,
    alpha: float = 0.01,
    seed: int = 0,
    allow_flagged: bool = False,
    skip_audit: bool = False,
) -> GenerateResult:
    """Translate ``inputs`` with ``ckpt`` into a new data set ``out``, released only if the memorization audit passes.

    Args:
        ckpt: CycleGAN / Pix2Pix checkpoint.
        inputs: input volumes of the source modality (files or folders, see :func:`find_volumes`).
        out: folder of the released data set; must not exist.
        train: the generator's training volumes of the output modality.
        heldout: real volumes of the output modality the generator never saw (threshold calibration).
        extractor: audit feature extractor (e.g. :class:`gan.metrics.FIDInceptionV3`); None loads the FID Inception
            from the torch hub cache.
        protocol: feature pre-processing protocol.
        lpips: per-pair LPIPS (e.g. ``LPIPSLoss(reduction="none")``) to re-rank the nearest feature candidates and
            flag near-copies by LPIPS too; needs slices of one in-plane size (all sets are then held in memory).
        direction: CycleGAN direction.
        device: torch device for translation and features.
        slices_per_volume: slices per volume in the audit.
        batch_size: slices per feature batch.
        quantile: near-copy threshold quantile of the held-out distances.
        n_cells: cells of the data-copying test.
        min_cell: fewest held-out and generated slices for a cell to count.
        alpha: significance level of the near-copy excess test.
        seed: k-means seed of the data-copying test.
        allow_flagged: release even when the audit fails (recorded in the manifest).
        skip_audit: release without an audit (recorded in the manifest; not recommended for patient data).

    Raises:
        AuditFailed: the audit flagged the set (the report is kept in ``<out>.rejected``).
        FileExistsError: ``out`` exists.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: exists; generate never overwrites a data set, choose a new --out")
    if not skip_audit and (not train or not heldout):
        raise ValueError("the memorization audit needs --train (the generator's training volumes of the output modality) "
                         "and --heldout (real volumes of that modality it never saw); --skip-audit releases without it")
    model = load_translation_model(ckpt, map_location="cpu")
    src, tgt = (model.source, model.target) if direction == "forward" else (model.target, model.source)
    windows = model.training_windows()
    items = find_volumes(inputs, src, label="input")
    names = [_output_name(rel, src, tgt) for _, rel in items]
    dupes = sorted({str(n) for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--input: several inputs would be written to {dupes[0]}; give their parent folder instead")
    train_items = find_volumes(train, tgt, label="train") if not skip_audit else []
    heldout_items = find_volumes(heldout, tgt, label="heldout") if not skip_audit else []
    overlap = {p.resolve() for p, _ in train_items} & {p.resolve() for p, _ in heldout_items}
    if overlap:
        raise ValueError(f"--train and --heldout share {sorted(map(str, overlap))[0]}; held-out volumes must be unseen")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        ckpt_sha = sha256_file(ckpt)
        prov_base = {"checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha, "model": type(model).__name__,
                     "direction": f"{src}->{tgt}", "synthetic": True}
        if not skip_audit:
            if extractor is None:
                from gan.metrics.features import FIDInceptionV3

                extractor = FIDInceptionV3()
            extractor = extractor.to(device).eval()
            protocol = FIDProtocol(protocol)
        keep = lpips is not None
        generated = _SliceSet(keep_images=keep)
        written: list[Path] = []
        for i, ((path, _), name) in enumerate(zip(items, names)):
            vol = load_volume(path)
            syn = translate_volume(model, vol, direction=direction, device=device)
            if not np.isfinite(syn.array).all():
                raise DataError(path, "the translation contains NaN/Inf (diverged checkpoint?)")
            written.append(write_nifti(syn, staging / name, provenance={**prov_base, "input": str(path)}))
            if not skip_audit:
                images, ks = volume_slices(syn, training_window(syn, tgt, windows), slices_per_volume)
                generated.add(images, ks, i, str(name), extractor, protocol, batch_size)
            log.info("translated %s -> %s", path, name)

        report: MemorizationReport | None = None
        audit_summary: dict[str, Any] = {"run": False}
        if not skip_audit:
            assert extractor is not None
            train_set = _reference_slices(train_items, tgt, windows, slices_per_volume, extractor, protocol, batch_size, keep)
            heldout_set = _reference_slices(heldout_items, tgt, windows, slices_per_volume, extractor, protocol, batch_size, keep)
            report = audit(train_set.matrix("train"), heldout_set.matrix("heldout"), generated.matrix("input"),
                           extractor=extractor, protocol=protocol, lpips=lpips, batch_size=batch_size,
                           quantile=quantile, n_cells=n_cells, min_cell=min_cell, alpha=alpha, seed=seed)
            report.protocol = report.protocol or protocol_record(protocol, extractor)
            report.pair_images = report.pair_images if report.pair_images is not None else _pair_images(report, generated, written, train_set, train_items, tgt, windows)
            files = report.save(staging / "audit")
            summary = report.to_dict()
            audit_summary = {
                "run": True, "passed": summary["passed"], "reasons": summary["reasons"],
                "near_copy_fraction": summary["near_copy_fraction"], "heldout_flag_rate": summary["heldout_flag_rate"],
                "excess_p_value": summary["excess_p_value"], "data_copying_test": summary["data_copying_test"],
                "flagged_slices": [generated.names[i] for i in report.flagged],
                "n_slices": {"generated": len(generated.rows), "train": len(train_set.rows), "heldout": len(heldout_set.rows)},
                "train": [str(p) for p, _ in train_items], "heldout": [str(p) for p, _ in heldout_items],
                "files": {k: str(v.relative_to(staging)) for k, v in files.items()},
            }
        released = skip_audit or report is None or report.passed or allow_flagged
        manifest = {
            **prov_base,
            "items": [{"input": str(p), "output": str(n)} for (p, _), n in zip(items, names)],
            "audit": audit_summary,
            "released_despite_failed_audit": bool(report is not None and not report.passed and allow_flagged),
            "released_without_audit": bool(skip_audit),
        }
        if not released:
            assert report is not None
            for f in written:
                f.unlink(missing_ok=True)
                sidecar_path(f).unlink(missing_ok=True)
            write_manifest(staging / "manifest.json", {**manifest, "items": [], "rejected": True})
            rejected = _free_name(out.with_name(out.name + ".rejected"))
            staging.rename(rejected)
            raise AuditFailed(f"memorization audit FAILED, nothing released: {'; '.join(report.reasons)}. "
                              f"Report: {rejected}/audit/ (flagged: {', '.join(audit_summary['flagged_slices'][:5]) or 'see C_T'})",
                              rejected)
        manifest_path = write_manifest(staging / "manifest.json", manifest)
        staging.rename(out)
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return GenerateResult(out=out, volumes=[out / f.relative_to(staging) for f in written],
                          manifest=out / manifest_path.relative_to(staging), audit=report)


def _pair_images(report: MemorizationReport, generated: _SliceSet, written: list[Path], train_set: _SliceSet,
                 train_items: list[tuple[Path, Path]], key: str, windows: dict[str, tuple[float, float, bool]]) -> np.ndarray | None:
    """(p, 2, 3, H, W) uint8 images of the closest (generated, training) pairs, or None when sizes differ.

    Only features were kept during the audit, so the pairs' slices are read again, each volume once.
    """
    units: dict[Path, np.ndarray] = {}

    def image(path: Path, k: int) -> Tensor:
        if path not in units:
            vol = load_volume(path)
            window = training_window(vol, key, windows)
            units[path] = np.asarray(to_unit(np.asarray(vol.array, dtype=np.float32), window), dtype=np.float32)
        return _axial_images(units[path], [k])[0]

    pairs = []
    for g, t in zip(report.pair_generated, report.pair_train):
        gi, gk = generated.rows[int(g)]
        ti, tk = train_set.rows[int(t)]
        pairs.append([image(written[gi], gk), image(train_items[ti][0], tk)])
    if not pairs or len({tuple(x.shape) for p in pairs for x in p}) != 1:
        return None
    return torch.stack([torch.stack(p) for p in pairs]).numpy()


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``medsynth generate``."""
    parser.add_argument("--ckpt", required=True, type=Path, help="CycleGAN / Pix2Pix checkpoint (.ckpt)")
    parser.add_argument("--input", required=True, nargs="+", type=Path,
                        help="source volumes: NIfTI files, folders of them (<patient>/<source>.nii.gz), DICOM series folders")
    parser.add_argument("--out", required=True, type=Path, help="new folder for the synthetic data set (must not exist)")
    parser.add_argument("--train", nargs="+", type=Path, default=None,
                        help="the generator's training volumes of the OUTPUT modality (files or folders)")
    parser.add_argument("--heldout", nargs="+", type=Path, default=None,
                        help="real volumes of the output modality the generator never saw (calibrate the audit)")
    parser.add_argument("--direction", choices=("forward", "reverse"), default="forward", help="CycleGAN direction")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    g = parser.add_argument_group("memorization audit")
    g.add_argument("--extractor", choices=("fid-inception", "torchvision-inception"), default="fid-inception",
                   help="audit features (weights from --weights or the torch hub cache, never downloaded)")
    g.add_argument("--weights", type=Path, default=None, help="feature extractor weights file")
    g.add_argument("--protocol", choices=[p.value for p in FIDProtocol], default=FIDProtocol.PYTORCH_FID.value)
    g.add_argument("--lpips", action="store_true",
                   help="re-rank nearest neighbours with LPIPS and flag LPIPS near-copies too (slices of one size)")
    g.add_argument("--lpips-weights", type=Path, default=None, help="LPIPS AlexNet backbone weights (default: hub cache)")
    g.add_argument("--slices-per-volume", type=int, default=16, help="axial slices per volume in the audit")
    g.add_argument("--batch-size", type=int, default=32, help="slices per feature batch")
    g.add_argument("--quantile", type=float, default=0.01, help="near-copy threshold quantile of held-out distances")
    g.add_argument("--cells", type=int, default=10, help="cells of the data-copying test")
    g.add_argument("--min-cell", type=int, default=20, help="fewest slices for a cell to count in C_T")
    g.add_argument("--alpha", type=float, default=0.01, help="significance level of the near-copy excess test")
    g.add_argument("--seed", type=int, default=0, help="k-means seed")
    g.add_argument("--allow-flagged", action="store_true", help="release even if the audit fails (recorded)")
    g.add_argument("--skip-audit", action="store_true", help="release without an audit (recorded; not for patient data)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth generate`` from parsed arguments; returns the exit status (3 when the audit failed)."""
    from gan.evaluate import build_extractor

    extractor = None if args.skip_audit else build_extractor(args.extractor, args.weights, args.device)
    lpips = None
    if args.lpips and not args.skip_audit:
        from gan.losses import LPIPSLoss

        lpips = LPIPSLoss(pretrained=True, backbone_weights=args.lpips_weights, reduction="none").to(args.device)
    try:
        res = generate(args.ckpt, args.input, args.out, train=args.train, heldout=args.heldout, extractor=extractor,
                       protocol=args.protocol, lpips=lpips, direction=args.direction, device=args.device,
                       slices_per_volume=args.slices_per_volume, batch_size=args.batch_size, quantile=args.quantile,
                       n_cells=args.cells, min_cell=args.min_cell, alpha=args.alpha, seed=args.seed,
                       allow_flagged=args.allow_flagged, skip_audit=args.skip_audit)
    except AuditFailed as exc:
        print(str(exc))
        return EXIT_AUDIT_FAILED
    verdict = "skipped" if res.audit is None else ("passed" if res.audit.passed else "FAILED (released with --allow-flagged)")
    print(f"released {len(res.volumes)} synthetic volumes to {res.out}/ (memorization audit {verdict}); "
          f"manifest {res.manifest}")
    return 0
