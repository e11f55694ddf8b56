"""``medsynth evaluate``: FID / KID / memorization of image sets and paired whole-volume metrics, as a report.

Two kinds of evaluation, chosen by ``--metrics``:

* distribution metrics (``fid``, ``kid``, ``memorization``): ``--real`` / ``--fake`` are folders of images
  (PNG/JPEG/TIFF, searched recursively, class sub-folders allowed), whole-slide images (folders or files;
  tiles are cut with :class:`data.tiles.TileDataset` at ``--mpp``/``--magnification``) or, for the real side
  and FID only, a statistics ``.npz`` (:class:`gan.metrics.FeatureStats`). Images are read and passed through
  the feature extractor ONE batch at a time; only the features are kept (and only when KID or the
  memorization audit needs them: FID keeps float64 sums).
* paired metrics (``mae``, ``psnr``, ``ssim`` / ``ms_ssim``, ``lpips``): ``--real`` / ``--fake`` are folders of
  NIfTI volumes matched by relative path (``<patient>/<key>.nii.gz`` or ``<patient>.nii.gz``), scored per patient
  with :func:`gan.metrics.volume_metrics` in physical units under ``--protocol`` and ``--window``, then averaged
  over patients (mean and population std). ``lpips`` is the 2.5D LPIPS of the volumes mapped from the
  evaluation window to [-1, 1].

Outputs in ``--out``: ``report.json``, ``report.md`` and plots (``paired_metrics.png``; the memorization audit's
own files under ``memorization/``), each written atomically. With an active W&B run the scalars and the
per-patient table are logged too.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import logging
import math
import platform
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from data.atomic import atomic_path, atomic_write_text
from data.errors import DataError, VolumeError
from data.volumes import Volume, load_volume, nifti_stem
from gan.metrics.features import FeatureExtractor, FIDProtocol, extract_features, protocol_record, quantize_uint8
from gan.metrics.fid import FeatureStats, FrechetInceptionDistance, KernelInceptionDistance
from gan.metrics.memorization import audit
from gan.metrics.volume import PROTOCOLS, default_data_range, metric_names, volume_metrics

PathLike = Union[str, Path]
log = logging.getLogger("medsynth.evaluate")

__all__ = [
    "DISTRIBUTION_METRICS",
    "PAIRED_METRICS",
    "ExtractorKind",
    "VolumePair",
    "build_extractor",
    "build_parser",
    "evaluate",
    "find_volume_pairs",
    "parse_metrics",
    "run",
]

DISTRIBUTION_METRICS: tuple[str, ...] = ("fid", "kid", "memorization")
PAIRED_METRICS: tuple[str, ...] = ("mae", "psnr", "ssim", "ms_ssim", "lpips")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SLIDE_SUFFIXES: tuple[str, ...] = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".safetensors")


class ExtractorKind(str, Enum):
    """Built-in feature extractors of ``--extractor``."""

    FID_INCEPTION = "fid-inception"
    TORCHVISION_INCEPTION = "torchvision-inception"


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """Split and check a metric list such as ``"fid,kid"`` (duplicates dropped, order kept).

    Args:
        text: comma-separated names, or a sequence of names.

    Raises:
        ValueError: for an unknown name, an empty list, or a mix of distribution and paired metrics.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for raw in items:
        name = raw.strip().lower().replace("-", "_")
        if not name:
            continue
        if name not in DISTRIBUTION_METRICS + PAIRED_METRICS:
            raise ValueError(
                f"unknown metric {raw.strip()!r}; choose from {', '.join(DISTRIBUTION_METRICS + PAIRED_METRICS)}"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no metric given; e.g. --metrics fid,kid or --metrics mae,psnr,ssim")
    dist = [n for n in names if n in DISTRIBUTION_METRICS]
    paired = [n for n in names if n in PAIRED_METRICS]
    if dist and paired:
        raise ValueError(
            f"metrics {dist} compare image distributions and {paired} compare paired volumes; their inputs differ, "
            "so run `medsynth evaluate` once for each group"
        )
    return tuple(names)


# ----------------------------------------------------------------------------------------------------------
# image sources (distribution metrics)


def _is_checkpoint(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES


def _is_slide(path: Path) -> bool:
    """Slide by vendor suffix; a ``.tif``/``.tiff`` only when OpenSlide recognises it (tiled/pyramidal)."""
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix in (".tif", ".tiff"):
        import openslide

        try:
            return openslide.OpenSlide.detect_format(str(path)) is not None
        except Exception:  # noqa: BLE001 - unreadable files are reported when decoded
            return False
    return False


def _files_under(folder: Path) -> list[Path]:
    return sorted(
        f for f in folder.rglob("*")
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    )  # fmt: skip


class _ImageSet:
    """A set of images readable one at a time as (3, H, W) uint8 tensors.

    Args:
        label: how the set is named in messages and the report (e.g. ``"real"``).
        description: the inputs it came from.
    """

    kind = "images"

    def __init__(self, label: str, description: list[str]) -> None:
        self.label = label
        self.description = description

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Tensor:
        """Image ``index`` as a (3, H, W) uint8 tensor."""
        raise NotImplementedError

    def name(self, index: int) -> str:
        """Where image ``index`` comes from."""
        raise NotImplementedError


class _ImageFiles(_ImageSet):
    """Image files (any size; grey and RGBA images are converted to RGB, as pytorch-fid does).

    Args:
        label: set name.
        description: the inputs it came from.
        files: the image files, in a fixed order.
    """

    def __init__(self, label: str, description: list[str], files: list[Path]) -> None:
        super().__init__(label, description)
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Tensor:
        f = self.files[index]
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f, f"cannot decode image ({exc})") from exc
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def name(self, index: int) -> str:
        return str(self.files[index])


class _SlideTiles(_ImageSet):
    """Tiles of whole-slide images (:class:`data.tiles.TileDataset`), as uint8.

    Args:
        label: set name.
        description: the inputs it came from.
        slides: slide files.
        tile_size: tile side in pixels.
        mpp: microns per pixel of the tiles (or None with ``magnification``).
        magnification: nominal magnification (shorthand for ``mpp = 10 / magnification``).
        mpp_override: um/px for slides without MPP metadata.
    """

    kind = "slides"

    def __init__(
        self,
        label: str,
        description: list[str],
        slides: list[Path],
        *,
        tile_size: int,
        mpp: float | None,
        magnification: float | None,
        mpp_override: float | None,
    ) -> None:
        super().__init__(label, description)
        from data.tiles import TileDataset

        if (mpp is None) == (magnification is None):
            raise ValueError(
                f"{label}: whole-slide images {[s.name for s in slides][:3]} need exactly one of --mpp or "
                "--magnification to set the tile scale"
            )
        self.dataset = TileDataset(
            slides, tile_size=tile_size, mpp=mpp, magnification=magnification, mpp_override=mpp_override
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> Tensor:
        return quantize_uint8(self.dataset[index]["image"][None])[0]

    def name(self, index: int) -> str:
        spec = self.dataset.tiles[index]
        return f"{spec.slide}@({spec.x},{spec.y})"


def _open_image_set(
    paths: Sequence[PathLike],
    *,
    label: str,
    allow_stats: bool,
    tile_size: int,
    mpp: float | None,
    magnification: float | None,
    mpp_override: float | None,
) -> _ImageSet | FeatureStats:
    """Resolve ``--real``/``--fake``/``--train``/``--heldout`` arguments into an image set or cached statistics.

    Args:
        paths: folders and/or files.
        label: which argument (for messages).
        allow_stats: whether a statistics ``.npz`` is accepted.
        tile_size: tile side for slides.
        mpp: tile scale for slides.
        magnification: tile scale for slides (alternative to ``mpp``).
        mpp_override: um/px for slides without MPP metadata.
    """
    given = [Path(p) for p in paths]
    if not given:
        raise ValueError(f"--{label}: no path given")
    for p in given:
        if not p.exists():
            raise DataError(p, f"--{label}: no such file or folder")
    npz = [p for p in given if p.is_file() and p.suffix.lower() == ".npz"]
    if npz:
        if not allow_stats:
            raise DataError(npz[0], f"--{label}: a statistics .npz is accepted only for --real (FID reference)")
        if len(given) != 1:
            raise ValueError(f"--{label}: a statistics .npz must be given alone, got {[str(p) for p in given]}")
        try:
            return FeatureStats.load(npz[0])
        except ValueError as exc:
            raise DataError(npz[0], str(exc)) from exc
    ckpt = [p for p in given if _is_checkpoint(p)]
    if ckpt:
        raise ValueError(
            f"--{label} {ckpt[0]}: is a checkpoint; evaluate reads images. Generate them first (`medsynth generate` "
            "for translation checkpoints, which also runs the memorization audit) and pass their folder."
        )
    files: list[Path] = []
    for p in given:
        files.extend(_files_under(p) if p.is_dir() else [p])
    slides = [f for f in files if _is_slide(f)]
    slide_set = set(slides)
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES and f not in slide_set]
    description = [str(p) for p in given]
    if slides and images:
        raise DataError(
            given[0],
            f"--{label}: mixes whole-slide images ({slides[0]}) and image files ({images[0]}); give one kind",
        )
    if slides:
        return _SlideTiles(label, description, slides, tile_size=tile_size, mpp=mpp, magnification=magnification,
                           mpp_override=mpp_override)  # fmt: skip
    if not images:
        raise DataError(
            given[0], f"--{label}: holds no images ({', '.join(IMAGE_SUFFIXES)}) and no slides ({', '.join(SLIDE_SUFFIXES)})"
        )
    return _ImageFiles(label, description, images)


def _progress(iterable: Any, *, total: int, desc: str, quiet: bool) -> Any:
    """tqdm progress bar on stderr, disabled when quiet or stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=quiet or not sys.stderr.isatty(), leave=False)


def _feature_batches(
    images: _ImageSet, extractor: FeatureExtractor, protocol: FIDProtocol, batch_size: int, quiet: bool
) -> Iterator[Tensor]:
    """Features of an image set, one batch of ``batch_size`` images at a time, in the set's order.

    Images of different sizes in one batch go through the extractor in same-size groups (the protocol resizes
    each image independently, so grouping does not change any feature).

    Args:
        images: the image set.
        extractor: the feature extractor.
        protocol: FID pre-processing protocol.
        batch_size: images read per step.
        quiet: no progress bar.
    """
    n = len(images)
    starts = range(0, n, batch_size)
    for start in _progress(starts, total=len(starts), desc=f"{images.label} features", quiet=quiet):
        batch = [images.load(i) for i in range(start, min(start + batch_size, n))]
        groups: dict[tuple[int, ...], list[int]] = {}
        for j, img in enumerate(batch):
            groups.setdefault(tuple(img.shape), []).append(j)
        out = torch.empty(len(batch), extractor.dim, dtype=torch.float32)
        for idx in groups.values():
            try:
                feats = extract_features(torch.stack([batch[j] for j in idx]), extractor, protocol)
            except ValueError as exc:
                raise DataError(images.name(start + idx[0]), f"feature extraction failed: {exc}") from exc
            out[idx] = feats.detach().to("cpu", torch.float32)
        yield out


def build_extractor(kind: ExtractorKind | str, weights: PathLike | None, device: str) -> FeatureExtractor:
    """The extractor of ``--extractor`` from a local weights file (never downloaded).

    Args:
        kind: :class:`ExtractorKind` or its value.
        weights: weights file or folder; None looks in the torch hub cache.
        device: torch device.
    """
    from gan.metrics.features import FIDInceptionV3, TorchvisionInceptionExtractor

    kind = ExtractorKind(kind)
    if kind is ExtractorKind.FID_INCEPTION:
        net: FeatureExtractor = FIDInceptionV3(weights_path=weights)
    else:
        net = TorchvisionInceptionExtractor(weights_path=weights)
    return net.to(device)


def _distribution_report(
    *,
    real: Sequence[PathLike],
    fake: Sequence[PathLike],
    metrics: tuple[str, ...],
    out: Path,
    train: Sequence[PathLike] | None,
    heldout: Sequence[PathLike] | None,
    extractor: FeatureExtractor,
    fid_protocol: FIDProtocol,
    batch_size: int,
    tile_size: int,
    mpp: float | None,
    magnification: float | None,
    mpp_override: float | None,
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
    audit_quantile: float,
    audit_cells: int,
    audit_min_cell: int,
    quiet: bool,
) -> dict[str, Any]:
    """FID / KID / memorization of two image sets (see :func:`evaluate`)."""
    scale = dict(tile_size=tile_size, mpp=mpp, magnification=magnification, mpp_override=mpp_override)
    real_set = _open_image_set(real, label="real", allow_stats=True, **scale)
    fake_set = _open_image_set(fake, label="fake", allow_stats=False, **scale)
    assert isinstance(fake_set, _ImageSet)
    if isinstance(real_set, FeatureStats) and ("kid" in metrics or "memorization" in metrics):
        raise ValueError(
            f"--real {real[0]}: cached statistics serve FID only; KID and the memorization audit need the real images"
        )
    train_set = heldout_set = None
    if "memorization" in metrics:
        if not train or not heldout:
            raise ValueError(
                "memorization needs --train (the generator's training images) and --heldout (real images the "
                "generator never saw, to calibrate the near-copy threshold)"
            )
        train_set = _open_image_set(train, label="train", allow_stats=False, **scale)
        heldout_set = _open_image_set(heldout, label="heldout", allow_stats=False, **scale)

    record = protocol_record(fid_protocol, extractor)
    fid = kid = None
    if "fid" in metrics:
        fid = FrechetInceptionDistance(
            extractor=extractor, protocol=fid_protocol,
            real_stats=real_set if isinstance(real_set, FeatureStats) else None,
        )  # fmt: skip
    if "kid" in metrics:
        kid = KernelInceptionDistance(
            extractor=extractor, protocol=fid_protocol, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
        )
    keep_fake = kid is not None or "memorization" in metrics
    fake_feats: list[Tensor] = []
    for feats in _feature_batches(fake_set, extractor, fid_protocol, batch_size, quiet):
        if fid is not None:
            fid.update(feats, real=False, precomputed=True)
        if keep_fake:
            fake_feats.append(feats)
    counts: dict[str, int | None] = {"fake": len(fake_set)}
    if isinstance(real_set, FeatureStats):
        counts["real"] = real_set.n
    elif fid is not None or kid is not None:
        for feats in _feature_batches(real_set, extractor, fid_protocol, batch_size, quiet):
            if fid is not None:
                fid.update(feats, real=True, precomputed=True)
            if kid is not None:
                kid.update(feats, real=True, precomputed=True)
        counts["real"] = len(real_set)

    report: dict[str, Any] = {"mode": "distribution", "feature_protocol": record}
    values: dict[str, float] = {}
    if fid is not None:
        result = fid.compute()
        report["fid"] = {"value": result.value, "protocol": result.protocol}
        values["fid"] = result.value
    if kid is not None:
        for feats in fake_feats:
            kid.update(feats, real=False, precomputed=True)
        result = kid.compute()
        report["kid"] = {"mean": result.mean, "std": result.std, "protocol": result.protocol}
        values["kid"], values["kid_std"] = result.mean, result.std
    if "memorization" in metrics:
        assert isinstance(train_set, _ImageSet) and isinstance(heldout_set, _ImageSet)
        sets = {}
        for name, s in (("train", train_set), ("heldout", heldout_set)):
            sets[name] = torch.cat(list(_feature_batches(s, extractor, fid_protocol, batch_size, quiet)))
            counts[name] = len(s)
        mem = audit(
            sets["train"], sets["heldout"], torch.cat(fake_feats), quantile=audit_quantile, n_cells=audit_cells,
            min_cell=audit_min_cell, seed=seed,
        )  # fmt: skip
        mem.protocol = record
        pairs = [(fake_set.load(int(g)), train_set.load(int(t))) for g, t in zip(mem.pair_generated, mem.pair_train)]
        if pairs and len({tuple(x.shape) for pair in pairs for x in pair}) == 1:
            mem.pair_images = torch.stack([torch.stack(p) for p in pairs]).numpy()
        written = mem.save(out / "memorization")
        summary = mem.to_dict()
        report["memorization"] = {
            "passed": summary["passed"],
            "reasons": summary["reasons"],
            "near_copy_fraction": summary["near_copy_fraction"],
            "n_near_copies": summary["n_near_copies"],
            "heldout_flag_rate": summary["heldout_flag_rate"],
            "excess_p_value": summary["excess_p_value"],
            "feature_threshold": summary["feature_threshold"],
            "data_copying_test": summary["data_copying_test"],
            "flagged_files": [fake_set.name(i) for i in mem.flagged],
            "lpips": "not run here (LPIPS re-ranking needs all images in memory; use gan.metrics.audit)",
            "files": {k: str(v.relative_to(out)) for k, v in written.items()},
        }
        values["near_copy_fraction"] = mem.near_copy_fraction
        values["memorization_passed"] = float(mem.passed)
        values["data_copying_c_t"] = float(mem.copying.c_t)
    report["values"] = values
    report["counts"] = counts
    report["input_kinds"] = {
        "real": "stats" if isinstance(real_set, FeatureStats) else real_set.kind,
        "fake": fake_set.kind,
    }
    return report


# ----------------------------------------------------------------------------------------------------------
# paired volumes


@dataclass(frozen=True)
class VolumePair:
    """One patient's reference and synthetic volumes (and optional body mask / baseline).

    Args:
        patient: relative path of the volume without the NIfTI suffix (e.g. ``"p01/ct"`` or ``"p01"``).
        real: reference volume file.
        fake: synthetic volume file.
        mask: body mask file, or None.
        baseline: trivial-baseline volume file (e.g. the input copied), or None.
    """

    patient: str
    real: Path
    fake: Path
    mask: Path | None = None
    baseline: Path | None = None


def _nifti_files(folder: Path) -> dict[str, Path]:
    """NIfTI files under ``folder`` by relative path without suffix."""
    out: dict[str, Path] = {}
    for f in _files_under(folder):
        stem = nifti_stem(f)
        if stem is None:
            continue
        key = (f.relative_to(folder).parent / stem).as_posix()
        if key in out:
            raise VolumeError(f, f"both {out[key].name} and {f.name} exist for {key!r}; keep one")
        out[key] = f
    return out


def find_volume_pairs(
    real_dir: PathLike,
    fake_dir: PathLike,
    *,
    mask_dir: PathLike | None = None,
    baseline_dir: PathLike | None = None,
) -> list[VolumePair]:
    """Match reference and synthetic NIfTI volumes (and masks / baselines) by relative path.

    Args:
        real_dir: folder of reference volumes (``<patient>/<key>.nii.gz`` or ``<patient>.nii.gz``).
        fake_dir: folder of synthetic volumes laid out the same way.
        mask_dir: folder of body masks laid out the same way, or None.
        baseline_dir: folder of trivial-baseline volumes laid out the same way, or None.

    Raises:
        VolumeError: a folder is missing or empty, or a volume has no counterpart (naming the files).
    """
    folders = {"real": real_dir, "fake": fake_dir, "mask": mask_dir, "baseline": baseline_dir}
    found: dict[str, dict[str, Path]] = {}
    for name, folder in folders.items():
        if folder is None:
            continue
        path = Path(folder)
        if not path.is_dir():
            raise VolumeError(path, f"--{name if name != 'mask' else 'mask-dir'}: expected a folder of NIfTI volumes")
        found[name] = _nifti_files(path)
        if not found[name]:
            raise VolumeError(path, "holds no NIfTI volumes (.nii / .nii.gz)")
    real, fake = found["real"], found["fake"]
    for name, other in (("fake", fake), ("mask", found.get("mask")), ("baseline", found.get("baseline"))):
        if other is None:
            continue
        missing = sorted(set(real) - set(other))
        if missing:
            expected = [str(Path(folders[name]) / f"{k}.nii.gz") for k in missing[:3]]  # type: ignore[arg-type]
            raise VolumeError(
                Path(folders[name]),  # type: ignore[arg-type]
                f"{len(missing)} reference volume(s) have no {name} counterpart, e.g. {real[missing[0]]} -> "
                f"expected {', '.join(expected)}",
            )
    extra = sorted(set(fake) - set(real))
    if extra:
        raise VolumeError(
            fake[extra[0]], f"has no reference volume at the same relative path under {real_dir} "
            f"({len(extra)} synthetic volume(s) unmatched)",
        )
    return [
        VolumePair(
            patient=k, real=real[k], fake=fake[k],
            mask=found["mask"][k] if "mask" in found else None,
            baseline=found["baseline"][k] if "baseline" in found else None,
        )  # fmt: skip
        for k in sorted(real)
    ]


def _check_same_grid(ref: Volume, other: Volume, what: str) -> None:
    """Raise a VolumeError naming both files unless shape and affine agree.

    Args:
        ref: the reference volume.
        other: the volume compared to it.
        what: what ``other`` is (for the message).
    """
    if ref.shape != other.shape:
        raise VolumeError(
            other.source, f"{what} shape {other.shape} differs from the reference {ref.source} shape {ref.shape}"
        )
    if not np.allclose(ref.affine, other.affine, atol=1e-3):
        diff = float(np.abs(ref.affine - other.affine).max())
        raise VolumeError(
            other.source,
            f"{what} affine differs from the reference {ref.source} (max difference {diff:.4g} mm); the volumes "
            "are not on the same voxel grid",
        )


def _to_unit_range(array: np.ndarray, window: tuple[float, float]) -> Tensor:
    """Clip to the evaluation window and map it linearly to [-1, 1], as (1, 1, I, J, K) float32."""
    low, high = window
    x = (np.clip(array, low, high) - low) / (high - low) * 2.0 - 1.0
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]


def _paired_report(
    *,
    real: PathLike,
    fake: PathLike,
    metrics: tuple[str, ...],
    mask_dir: PathLike | None,
    baseline_dir: PathLike | None,
    protocol: str,
    window: tuple[float, float] | None,
    lpips: nn.Module | None,
    quiet: bool,
) -> dict[str, Any]:
    """Per-patient paired volume metrics and their patient mean/std (see :func:`evaluate`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    structural = "ms_ssim" if protocol == "synthrad2025" else "ssim"
    if "ms_ssim" in metrics and structural != "ms_ssim":
        raise ValueError(f"ms_ssim is reported by protocol 'synthrad2025' only; protocol {protocol!r} reports ssim")
    wanted = [structural if m in ("ssim", "ms_ssim") else m for m in metrics]
    wanted = list(dict.fromkeys(wanted))
    win = tuple(float(v) for v in (default_data_range(protocol) if window is None else window))  # type: ignore[arg-type]
    if len(win) != 2 or not win[1] > win[0]:
        raise ValueError(f"window: expected LOW HIGH with HIGH > LOW, got {win}")
    pairs = find_volume_pairs(real, fake, mask_dir=mask_dir, baseline_dir=baseline_dir)
    if "lpips" in wanted and lpips is None:
        raise ValueError("lpips: no LPIPS network given")
    rows: list[dict[str, Any]] = []
    for pair in _progress(pairs, total=len(pairs), desc="patients", quiet=quiet):
        ref = load_volume(pair.real)
        row: dict[str, Any] = {"patient": pair.patient, "real": str(pair.real), "fake": str(pair.fake)}
        mask = None
        if pair.mask is not None:
            m = load_volume(pair.mask)
            _check_same_grid(ref, m, "mask")
            mask = m.array > 0
            row["mask"] = str(pair.mask)
            row["mask_voxels"] = int(mask.sum())
            if not mask.any():
                raise VolumeError(pair.mask, "body mask is empty")
        candidates = [("", pair.fake)] + ([("baseline_", pair.baseline)] if pair.baseline is not None else [])
        for prefix, path in candidates:
            vol = load_volume(path)
            _check_same_grid(ref, vol, "baseline" if prefix else "synthetic volume")
            values = volume_metrics(vol.array, ref.array, mask, protocol=protocol, data_range=win)  # type: ignore[arg-type]
            for name in metric_names(protocol):  # type: ignore[arg-type]
                if name in wanted:
                    row[prefix + name] = values[name]
            if "lpips" in wanted:
                with torch.no_grad():
                    row[prefix + "lpips"] = float(
                        lpips(_to_unit_range(vol.array, win), _to_unit_range(ref.array, win)).reshape(-1)[0]  # type: ignore[misc]
                    )
            if prefix:
                row["baseline"] = str(path)
        rows.append(row)
    columns = wanted + ([f"baseline_{m}" for m in wanted] if baseline_dir is not None else [])
    summary = {}
    for c in columns:
        v = np.asarray([r[c] for r in rows], dtype=np.float64)
        summary[c] = {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
    return {
        "mode": "paired",
        "volume_protocol": {
            "name": protocol,
            "window": list(win),
            "data_range": win[1] - win[0],
            "mask": "body mask (voxels > 0)" if mask_dir is not None else "whole volume",
            "units": "physical (as stored in the NIfTI files)",
            "averaging": "per-patient values, mean and population std (ddof=0) over patients",
            "lpips": "2.5D LPIPS of the volumes clipped to the window and mapped to [-1, 1] (whole volume)"
            if "lpips" in wanted else None,
        },
        "metric_columns": columns,
        "patients": rows,
        "summary": summary,
        "values": {k: v["mean"] for k, v in summary.items()} | {f"{k}_std": v["std"] for k, v in summary.items()},
        "counts": {"patients": len(rows)},
    }


# ----------------------------------------------------------------------------------------------------------
# report files


def _jsonable(obj: Any) -> Any:
    """Plain-JSON copy: NaN/Inf -> None, numpy scalars/arrays and paths -> Python values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    return obj


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.6g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.4e}"
    return str(x)


def _markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    lines = [f"# medsynth evaluate ({report['created']})", ""]
    for k, v in report["inputs"].items():
        if v not in (None, [], ""):
            lines.append(f"- {k}: " + (", ".join(f"`{x}`" for x in v) if isinstance(v, list) else f"`{v}`"))
    lines.append("")
    if report["mode"] == "paired":
        proto = report["volume_protocol"]
        lines += [f"Protocol `{proto['name']}`, window {proto['window']}, {proto['mask']}, "
                  f"{report['counts']['patients']} patients.", ""]  # fmt: skip
        summ = report["summary"]
        base = any(k.startswith("baseline_") for k in summ)
        lines += ["| metric | mean ± std (synthetic) |" + (" mean ± std (baseline) |" if base else "") + " patients |",
                  "|---|---|" + ("---|" if base else "") + "---|"]  # fmt: skip
        for k, v in summ.items():
            if k.startswith("baseline_"):
                continue
            cell = f"| {k} | {_fmt(v['mean'])} ± {_fmt(v['std'])} |"
            if base:
                b = summ[f"baseline_{k}"]
                cell += f" {_fmt(b['mean'])} ± {_fmt(b['std'])} |"
            lines.append(f"{cell} {v['n']} |")
        cols = report["metric_columns"]
        lines += ["", "## Per patient", "", "| patient | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for row in report["patients"]:
            lines.append(f"| {row['patient']} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    else:
        rec = report["feature_protocol"]
        lines += [f"Features: `{rec['extractor']}` (weights `{str(rec['weights_sha256'])[:16]}`), protocol "
                  f"`{rec['protocol']}`; counts {report['counts']}.", ""]  # fmt: skip
        lines += ["| metric | value |", "|---|---|"]
        if "fid" in report:
            lines.append(f"| FID | {_fmt(report['fid']['value'])} |")
        if "kid" in report:
            lines.append(f"| KID | {_fmt(report['kid']['mean'])} ± {_fmt(report['kid']['std'])} |")
        if "memorization" in report:
            m = report["memorization"]
            ct = m["data_copying_test"]
            lines.append(f"| memorization audit | {'passed' if m['passed'] else 'FAILED'} |")
            lines.append(f"| near-copy fraction | {_fmt(m['near_copy_fraction'])} (held-out {_fmt(m['heldout_flag_rate'])}) |")
            lines.append(f"| data-copying C_T | {_fmt(ct.get('c_t'))} ({ct.get('verdict')}) |")
            lines += [""] + [f"- {r}" for r in m["reasons"]]
    lines += ["", f"medsynth {report['software']['medsynth']}, torch {report['software']['torch']}", ""]
    return "\n".join(lines)


def _paired_plot(report: dict[str, Any], path: Path) -> Path:
    """Per-patient bar charts of each paired metric, with the patient mean as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = [c for c in report["metric_columns"] if not c.startswith("baseline_")]
    patients = [r["patient"] for r in report["patients"]]
    fig = Figure(figsize=(max(4.0, 0.35 * len(patients) + 2.0), 2.6 * len(cols)), dpi=100)
    FigureCanvasAgg(fig)
    x = np.arange(len(patients))
    has_base = f"baseline_{cols[0]}" in report["summary"]
    width = 0.4 if has_base else 0.8
    for j, c in enumerate(cols, start=1):
        ax = fig.add_subplot(len(cols), 1, j)
        ax.bar(x - (width / 2 if has_base else 0), [r[c] for r in report["patients"]], width, label="synthetic")
        if has_base:
            ax.bar(x + width / 2, [r[f"baseline_{c}"] for r in report["patients"]], width, label="baseline")
        ax.axhline(report["summary"][c]["mean"], color="k", linestyle="--", linewidth=1,
                   label=f"mean {report['summary'][c]['mean']:.4g}")  # fmt: skip
        ax.set_ylabel(c)
        ax.set_xticks(x)
        ax.set_xticklabels(patients if j == len(cols) else [], rotation=90, fontsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def _log_wandb(report: dict[str, Any]) -> bool:
    """Log scalars (and the per-patient table) to the active W&B run, if any; True when logged."""
    wandb = sys.modules.get("wandb")  # a run can only be active if wandb was imported
    if wandb is None or getattr(wandb, "run", None) is None:
        return False
    payload: dict[str, Any] = {f"evaluate/{k}": v for k, v in report["values"].items() if v is not None}
    if report["mode"] == "paired":
        cols = ["patient"] + report["metric_columns"]
        payload["evaluate/patients"] = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in report["patients"]])
    wandb.log(payload)
    return True


def _software() -> dict[str, str]:
    from importlib import metadata

    try:
        version = metadata.version("medsynth")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    return {"medsynth": version, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


# ----------------------------------------------------------------------------------------------------------
# entry points


def evaluate(
    *,
    real: PathLike | Sequence[PathLike],
    fake: PathLike | Sequence[PathLike],
    metrics: str | Sequence[str],
    out: PathLike,
    train: PathLike | Sequence[PathLike] | None = None,
    heldout: PathLike | Sequence[PathLike] | None = None,
    extractor: nn.Module | None = None,
    extractor_kind: ExtractorKind | str = ExtractorKind.FID_INCEPTION,
    weights: PathLike | None = None,
    fid_protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID,
    batch_size: int = 32,
    tile_size: int = 256,
    mpp: float | None = None,
    magnification: float | None = None,
    mpp_override: float | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    audit_quantile: float = 0.01,
    audit_cells: int = 10,
    audit_min_cell: int = 20,
    mask_dir: PathLike | None = None,
    baseline: PathLike | None = None,
    protocol: str = "default",
    window: tuple[float, float] | None = None,
    lpips: nn.Module | None = None,
    lpips_net: str = "alex",
    lpips_weights: PathLike | None = None,
    lpips_max_slices: int | None = 32,
    device: str = "cpu",
    quiet: bool = False,
) -> dict[str, Any]:
    """Evaluate synthetic images or volumes against real ones and write the report to ``out``.

    Args:
        real: distribution metrics: image folder(s)/files, slide folder(s)/files, or a statistics ``.npz``
            (FID only); paired metrics: folder of reference NIfTI volumes.
        fake: the synthetic counterpart (never a ``.npz``; a checkpoint is refused until the StyleGAN2 module).
        metrics: names (``"fid,kid"`` or a sequence): ``fid``, ``kid``, ``memorization``, or paired ``mae``,
            ``psnr``, ``ssim`` (MS-SSIM under ``synthrad2025``), ``ms_ssim``, ``lpips``.
        out: report folder (created).
        train: training images (memorization audit).
        heldout: held-out real images (memorization audit calibration).
        extractor: a :class:`gan.metrics.FeatureExtractor` (e.g. ``ModuleExtractor``); None builds
            ``extractor_kind`` from ``weights``.
        extractor_kind: ``"fid-inception"`` (pytorch-fid's network) or ``"torchvision-inception"``.
        weights: extractor weights file or folder; None looks in the torch hub cache (never downloads).
        fid_protocol: ``"pytorch-fid"`` or ``"clean"`` pre-processing.
        batch_size: images read and featurised per step (memory bound).
        tile_size: tile side for slides.
        mpp: tile scale (um/px) for slides.
        magnification: tile scale for slides as nominal magnification (``mpp = 10 / magnification``).
        mpp_override: um/px for slides without MPP metadata.
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size.
        seed: seed of KID subsets and of the audit's k-means.
        audit_quantile: memorization audit: held-out quantile that sets the near-copy threshold.
        audit_cells: memorization audit: k-means cells of the data-copying test.
        audit_min_cell: memorization audit: fewest held-out and generated samples for a cell to count.
        mask_dir: folder of body masks matched to the volumes by relative path.
        baseline: folder of trivial-baseline volumes (input copied, mean image) scored like ``fake``.
        protocol: volume protocol ``"default"``, ``"synthrad2023"`` or ``"synthrad2025"``.
        window: evaluation window ``(low, high)`` in physical units; None uses the protocol's CT window.
        lpips: LPIPS module for paired ``lpips`` taking (1, 1, D, H, W) volumes in [-1, 1]; None builds
            ``LPIPSLoss(spatial_dims=3)`` from ``lpips_net``/``lpips_weights`` when ``lpips`` is requested.
        lpips_net: LPIPS backbone (``"alex"``, ``"vgg"``, ``"squeeze"``).
        lpips_weights: backbone weights file; None looks in the torch hub cache.
        lpips_max_slices: evenly spaced slices per axis for 2.5D LPIPS (None: all).
        device: torch device of the extractor / LPIPS network.
        quiet: no progress bars.

    Returns:
        The report dict also written as ``out/report.json``.
    """
    names = parse_metrics(metrics)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")

    def as_list(x: PathLike | Sequence[PathLike] | None) -> list[Path] | None:
        if x is None:
            return None
        return [Path(x)] if isinstance(x, (str, Path)) else [Path(p) for p in x]

    real_l, fake_l = as_list(real), as_list(fake)
    assert real_l is not None and fake_l is not None
    inputs: dict[str, Any] = {"real": [str(p) for p in real_l], "fake": [str(p) for p in fake_l], "metrics": list(names)}
    if names[0] in DISTRIBUTION_METRICS:
        if extractor is None:
            extractor = build_extractor(extractor_kind, weights, device)
        elif not isinstance(extractor, FeatureExtractor):
            raise ValueError(
                f"extractor must be a gan.metrics.FeatureExtractor, got {type(extractor).__name__}; wrap a plain "
                "nn.Module with gan.metrics.ModuleExtractor(module, name=...)"
            )
        train_l, heldout_l = as_list(train), as_list(heldout)
        inputs |= {"train": [str(p) for p in train_l or []], "heldout": [str(p) for p in heldout_l or []],
                   "fid_protocol": FIDProtocol(fid_protocol).value, "batch_size": int(batch_size)}  # fmt: skip
        body = _distribution_report(
            real=real_l, fake=fake_l, metrics=names, out=out, train=train_l, heldout=heldout_l,
            extractor=extractor, fid_protocol=FIDProtocol(fid_protocol), batch_size=int(batch_size),
            tile_size=tile_size, mpp=mpp, magnification=magnification, mpp_override=mpp_override,
            kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed,
            audit_quantile=audit_quantile, audit_cells=audit_cells, audit_min_cell=audit_min_cell, quiet=quiet,
        )  # fmt: skip
        if body["input_kinds"]["real"] == "slides" or body["input_kinds"]["fake"] == "slides":
            inputs |= {"tile_size": tile_size, "mpp": mpp, "magnification": magnification, "mpp_override": mpp_override}
    else:
        for label, paths in (("real", real_l), ("fake", fake_l)):
            if len(paths) != 1:
                raise ValueError(f"--{label}: paired metrics take ONE folder of volumes, got {[str(p) for p in paths]}")
            if _is_checkpoint(paths[0]):
                raise ValueError(
                    f"--{label} {paths[0]}: is a checkpoint; translate the volumes first (`medsynth translate`) "
                    "and pass the folder of synthetic volumes"
                )
        if "lpips" in names and lpips is None:
            from gan.losses.perceptual import LPIPSLoss

            lpips = LPIPSLoss(net=lpips_net, backbone_weights=lpips_weights, spatial_dims=3,  # type: ignore[arg-type]
                              max_slices=lpips_max_slices, reduction="none").to(device)  # fmt: skip
        inputs |= {"mask_dir": None if mask_dir is None else str(mask_dir),
                   "baseline": None if baseline is None else str(baseline)}  # fmt: skip
        body = _paired_report(
            real=real_l[0], fake=fake_l[0], metrics=names, mask_dir=mask_dir, baseline_dir=baseline,
            protocol=protocol, window=window, lpips=lpips, quiet=quiet,
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "software": _software(),
        "inputs": inputs,
        **body,
    }
    files = {"json": "report.json", "markdown": "report.md"}
    if report["mode"] == "paired":
        _paired_plot(report, out / "paired_metrics.png")
        files["plot"] = "paired_metrics.png"
    report["files"] = files
    report = _jsonable(report)
    atomic_write_text(out / "report.md", _markdown(report))
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n")
    if _log_wandb(report):
        log.info("logged the evaluation to the active W&B run")
    return report


def _metrics_arg(text: str) -> tuple[str, ...]:
    """argparse type of ``--metrics``: :func:`parse_metrics` with its message shown by argparse."""
    try:
        return parse_metrics(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``medsynth evaluate`` arguments to ``parser`` (a subparser or a fresh parser) and return it.

    Args:
        parser: the parser to fill.
    """
    p = parser
    p.add_argument("--real", required=True, nargs="+", type=Path,
                   help="real images: image folder(s), slide folder(s)/files, or FID statistics .npz; "
                        "paired metrics: folder of reference NIfTI volumes")
    p.add_argument("--fake", required=True, nargs="+", type=Path,
                   help="synthetic images (folder(s)/slides) or, for paired metrics, a folder of synthetic volumes")
    p.add_argument("--metrics", required=True, type=_metrics_arg,
                   help=f"comma-separated: {', '.join(DISTRIBUTION_METRICS)} (image sets) or "
                        f"{', '.join(PAIRED_METRICS)} (paired volumes)")
    p.add_argument("--out", required=True, type=Path, help="report folder (report.json, report.md, plots)")
    g = p.add_argument_group("image sets (fid, kid, memorization)")
    g.add_argument("--train", nargs="+", type=Path, default=None, help="training images (memorization audit)")
    g.add_argument("--heldout", nargs="+", type=Path, default=None, help="held-out real images (memorization audit)")
    g.add_argument("--extractor", choices=[k.value for k in ExtractorKind], default=ExtractorKind.FID_INCEPTION.value,
                   help="feature network (default: pytorch-fid's Inception-v3)")
    g.add_argument("--weights", type=Path, default=None,
                   help="extractor weights file or folder (default: the torch hub cache; never downloaded)")
    g.add_argument("--fid-protocol", choices=[k.value for k in FIDProtocol], default=FIDProtocol.PYTORCH_FID.value,
                   help="pre-processing protocol of FID/KID features")
    g.add_argument("--batch-size", type=int, default=32, help="images per step (bounds memory)")
    g.add_argument("--tile-size", type=int, default=256, help="tile side for whole-slide inputs")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument("--mpp", type=float, default=None, help="tile scale for slides, microns per pixel")
    scale.add_argument("--magnification", type=float, default=None, help="tile scale for slides (10 / mpp)")
    g.add_argument("--mpp-override", type=float, default=None, help="um/px of slides without MPP metadata")
    g.add_argument("--kid-subsets", type=int, default=100, help="KID subsets")
    g.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size")
    g.add_argument("--seed", type=int, default=0, help="seed of KID subsets and the audit's k-means")
    g.add_argument("--audit-quantile", type=float, default=0.01,
                   help="memorization: held-out quantile setting the near-copy threshold")
    g.add_argument("--audit-cells", type=int, default=10, help="memorization: k-means cells of the data-copying test")
    g.add_argument("--audit-min-cell", type=int, default=20,
                   help="memorization: fewest held-out and generated samples for a cell to count")
    v = p.add_argument_group("paired volumes (mae, psnr, ssim, ms_ssim, lpips)")
    v.add_argument("--mask-dir", type=Path, default=None, help="body masks matched to the volumes by relative path")
    v.add_argument("--baseline", type=Path, default=None,
                   help="trivial-baseline volumes (input copied / mean image), matched by relative path")
    v.add_argument("--protocol", choices=list(PROTOCOLS), default="default", help="volume metric protocol")
    v.add_argument("--window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="evaluation window in physical units (default: the protocol's CT window)")
    v.add_argument("--lpips-net", choices=("alex", "vgg", "squeeze"), default="alex", help="LPIPS backbone")
    v.add_argument("--lpips-weights", type=Path, default=None, help="LPIPS backbone weights (default: hub cache)")
    v.add_argument("--lpips-max-slices", type=int, default=32, help="slices per axis for 2.5D LPIPS")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no summary on stdout")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``medsynth evaluate`` from parsed arguments (see :func:`build_parser`); returns the report dict.

    Args:
        args: the namespace ``build_parser(...).parse_args()`` returned.
    """
    report = evaluate(
        real=args.real, fake=args.fake, metrics=args.metrics, out=args.out, train=args.train, heldout=args.heldout,
        extractor_kind=args.extractor, weights=args.weights, fid_protocol=args.fid_protocol,
        batch_size=args.batch_size, tile_size=args.tile_size, mpp=args.mpp, magnification=args.magnification,
        mpp_override=args.mpp_override, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
        seed=args.seed, audit_quantile=args.audit_quantile, audit_cells=args.audit_cells,
        audit_min_cell=args.audit_min_cell, mask_dir=args.mask_dir, baseline=args.baseline, protocol=args.protocol,
        window=None if args.window is None else tuple(args.window), lpips_net=args.lpips_net,
        lpips_weights=args.lpips_weights, lpips_max_slices=args.lpips_max_slices, device=args.device,
        quiet=args.quiet,
    )  # fmt: skip
    if not args.quiet:
        print((Path(args.out) / "report.md").read_text(encoding="utf-8"))
        print(f"report: {Path(args.out) / 'report.json'}")
    return report
