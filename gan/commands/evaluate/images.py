"""The distribution metrics of ``medsynth evaluate``: FID, KID and the memorization audit of image sets.

Image sets are read one batch at a time through :mod:`data.image_sets` (image folders, whole-slide tiles, or a
statistics ``.npz`` for the real side of FID); only features are kept, and only when KID or the audit needs them.
The memorization audit is the release gate's (:func:`gan.release.memorization_audit`, data-copying cells adapted to
the set sizes). :func:`distribution_report` scores; :func:`evaluate_images` writes the report folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from data.errors import DataError
from data.image_sets import ImageSet, StatsFile, TileScale, open_image_set
from gan.commands.evaluate.common import (
    CHECKPOINT_SUFFIXES,
    DISTRIBUTION_METRICS,
    EXTRACTORS,
    RANDOM_WEIGHTS,
    PathLike,
    parse_metrics,
    write_report_folder,
)
from gan.metrics import FeatureStats, FrechetInceptionDistance, KernelInceptionDistance
from gan.metrics.features import (
    FeatureExtractor,
    FIDInceptionV3,
    TorchvisionInceptionExtractor,
    extract_features,
    protocol_record,
)
from gan.release import AuditSettings, memorization_audit
from gan.reports import progress

__all__ = [
    "FeatureSettings",
    "ImageSetInputs",
    "KIDSettings",
    "build_extractor",
    "distribution_report",
    "evaluate_images",
]


@dataclass(frozen=True)
class FeatureSettings:
    """How images become features (FID, KID, the memorization audit).

    Args:
        extractor: ``"fid-inception"`` (pytorch-fid's Inception-v3) or ``"torchvision-inception"``.
        weights: weights file or folder, ``"random"`` (seeded random network) or None (torch hub cache).
        protocol: pre-processing protocol, ``"pytorch-fid"`` or ``"clean"``.
        batch_size: images read and featurised per step (bounds memory).
        device: torch device of the network.
    """

    extractor: str = "fid-inception"
    weights: str | Path | None = None
    protocol: str = "pytorch-fid"
    batch_size: int = 32
    device: str = "cpu"


@dataclass(frozen=True)
class KIDSettings:
    """KID subsets.

    Args:
        subsets: number of subsets.
        subset_size: images per subset.
        seed: seed of the subset draws.
    """

    subsets: int = 100
    subset_size: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class ImageSetInputs:
    """The image sets of a distribution evaluation (folders and/or files each).

    Args:
        real: real images, slides, or a statistics ``.npz`` (FID only).
        fake: synthetic images.
        train: the generator's training images (memorization audit).
        heldout: real images the generator never saw (memorization audit calibration).
    """

    real: tuple[Path, ...]
    fake: tuple[Path, ...]
    train: tuple[Path, ...] = ()
    heldout: tuple[Path, ...] = ()


def build_extractor(kind: str, weights: str | Path | None, device: str) -> FeatureExtractor:
    """The feature network of ``--extractor`` from a local weights file (never downloaded), or seeded random.

    Args:
        kind: ``"fid-inception"`` or ``"torchvision-inception"``.
        weights: weights file or folder; ``"random"`` for a seeded random network (``FIDInceptionV3(
            pretrained=False, seed=0)``: its protocol record says ``"comparable": false``); None for the hub cache.
        device: torch device.
    """
    if kind not in EXTRACTORS:
        raise ValueError(f"extractor: expected one of {', '.join(EXTRACTORS)}, got {kind!r}")
    cls = FIDInceptionV3 if kind == "fid-inception" else TorchvisionInceptionExtractor
    net = cls(pretrained=False, seed=0) if weights == RANDOM_WEIGHTS else cls(weights_path=weights)
    return net.to(device)


def _open_set(paths: Sequence[Path], label: str, scale: TileScale, allow_stats: bool) -> ImageSet | FeatureStats:
    """An image set (or, for ``--real``, FID statistics) from paths; checkpoints are refused with a hint."""
    ckpt = [p for p in paths if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES]
    if ckpt:
        raise ValueError(f"--{label} {ckpt[0]}: is a checkpoint; evaluate reads images. Generate them first "
                         "(`medsynth generate` for translation checkpoints, which also runs the memorization audit) "
                         "and pass their folder.")
    opened = open_image_set(paths, label=label, scale=scale, allow_stats=allow_stats)
    if isinstance(opened, StatsFile):
        try:
            return FeatureStats.load(opened.path)
        except ValueError as exc:
            raise DataError(opened.path, str(exc)) from exc
    return opened


def _feature_batches(images: ImageSet, extractor: FeatureExtractor, features: FeatureSettings,
                     quiet: bool) -> Iterator[Tensor]:
    """Features of an image set, ``batch_size`` images at a time, in the set's order (mixed sizes are grouped per
    size; the protocol resizes each image on its own, so grouping changes no feature)."""
    n, step = len(images), features.batch_size
    starts = range(0, n, step)
    for start in progress(starts, total=len(starts), desc=f"{images.label} features", quiet=quiet):
        batch = [images.load(i) for i in range(start, min(start + step, n))]
        groups: dict[tuple[int, ...], list[int]] = {}
        for j, img in enumerate(batch):
            groups.setdefault(tuple(img.shape), []).append(j)
        out = torch.empty(len(batch), extractor.dim, dtype=torch.float32)
        for idx in groups.values():
            try:
                feats = extract_features(torch.stack([batch[j] for j in idx]), extractor, features.protocol)
            except ValueError as exc:
                raise DataError(images.name(start + idx[0]), f"feature extraction failed: {exc}") from exc
            out[idx] = feats.detach().to("cpu", torch.float32)
        yield out


def _memorization(fake_set: ImageSet, fake_feats: list[Tensor], train_set: ImageSet, heldout_set: ImageSet, *,
                  report_dir: Path, extractor: FeatureExtractor, features: FeatureSettings, audit: AuditSettings,
                  counts: dict[str, int | None], quiet: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """The memorization audit of the synthetic images against the training images (held-out calibrated): its
    report section and its scalars; its files go to ``report_dir/memorization``; ``counts`` gains the set sizes."""
    sets = {}
    for name, s in (("train", train_set), ("heldout", heldout_set)):
        sets[name] = torch.cat(list(_feature_batches(s, extractor, features, quiet)))
        counts[name] = len(s)

    def pairs(mem: Any) -> np.ndarray | None:
        imgs = [(fake_set.load(int(g)), train_set.load(int(t))) for g, t in zip(mem.pair_generated, mem.pair_train)]
        if not imgs or len({tuple(x.shape) for pair in imgs for x in pair}) != 1:
            return None
        return torch.stack([torch.stack(p) for p in imgs]).numpy()

    names_fake = [fake_set.name(i) for i in range(len(fake_set))]
    mem, outcome = memorization_audit(
        sets["train"], sets["heldout"], torch.cat(fake_feats), names=names_fake, settings=audit,
        report_dir=report_dir / "memorization", extractor=extractor, protocol=features.protocol,
        pair_images=pairs, hint="lower --audit-min-cell, or give more --heldout and --fake images")
    section = {
        "passed": outcome.passed, "reasons": list(outcome.reasons), **dict(outcome.summary),
        "flagged_files": list(outcome.flagged),
        "lpips": "not run here (LPIPS re-ranking needs all images in memory; use gan.metrics.audit)",
        "files": {k: f"memorization/{v}" for k, v in outcome.files.items()},
    }
    values = {"near_copy_fraction": mem.near_copy_fraction, "memorization_passed": float(mem.passed),
              "data_copying_c_t": float(mem.copying.c_t)}
    return section, values


def distribution_report(inputs: ImageSetInputs, *, metrics: tuple[str, ...], report_dir: Path,
                        extractor: FeatureExtractor, features: FeatureSettings, tiles: TileScale, kid: KIDSettings,
                        audit: AuditSettings, quiet: bool = False) -> dict[str, Any]:
    """FID / KID / memorization of two image sets (the memorization audit's files go to ``report_dir``).

    Args:
        inputs: the image sets.
        metrics: distribution metric names.
        report_dir: the report folder being written.
        extractor: the feature network.
        features: feature settings (protocol, batch size).
        tiles: tile scale for whole-slide inputs.
        kid: KID settings.
        audit: memorization audit settings.
        quiet: no progress bars.
    """
    real_set = _open_set(inputs.real, "real", tiles, allow_stats=True)
    fake_set = _open_set(inputs.fake, "fake", tiles, allow_stats=False)
    if isinstance(real_set, FeatureStats) and ("kid" in metrics or "memorization" in metrics):
        raise ValueError(f"--real {inputs.real[0]}: cached statistics serve FID only; KID and the memorization audit "
                         "need the real images")
    train_set = heldout_set = None
    if "memorization" in metrics:
        if not inputs.train or not inputs.heldout:
            raise ValueError("memorization needs --train (the generator's training images) and --heldout (real "
                             "images the generator never saw, to calibrate the near-copy threshold)")
        train_set = _open_set(inputs.train, "train", tiles, allow_stats=False)
        heldout_set = _open_set(inputs.heldout, "heldout", tiles, allow_stats=False)
    record = protocol_record(features.protocol, extractor)
    fid = kid_metric = None
    if "fid" in metrics:
        fid = FrechetInceptionDistance(extractor=extractor, protocol=features.protocol,
                                       real_stats=real_set if isinstance(real_set, FeatureStats) else None)
    if "kid" in metrics:
        kid_metric = KernelInceptionDistance(extractor=extractor, protocol=features.protocol, subsets=kid.subsets,
                                             subset_size=kid.subset_size, seed=kid.seed)
    keep_fake = kid_metric is not None or "memorization" in metrics
    fake_feats: list[Tensor] = []
    for feats in _feature_batches(fake_set, extractor, features, quiet):
        if fid is not None:
            fid.update(feats, real=False, precomputed=True)
        if keep_fake:
            fake_feats.append(feats)
    counts: dict[str, int | None] = {"fake": len(fake_set)}
    if isinstance(real_set, FeatureStats):
        counts["real"] = real_set.n
    elif fid is not None or kid_metric is not None:
        for feats in _feature_batches(real_set, extractor, features, quiet):
            for metric in (fid, kid_metric):
                if metric is not None:
                    metric.update(feats, real=True, precomputed=True)
        counts["real"] = len(real_set)

    report: dict[str, Any] = {"mode": "distribution", "feature_protocol": record, "comparable": record["comparable"]}
    values: dict[str, float] = {}
    if fid is not None:
        result = fid.compute()
        report["fid"] = {"value": result.value, "protocol": result.protocol}
        values["fid"] = result.value
    if kid_metric is not None:
        for feats in fake_feats:
            kid_metric.update(feats, real=False, precomputed=True)
        result = kid_metric.compute()
        report["kid"] = {"mean": result.mean, "std": result.std, "protocol": result.protocol}
        values["kid"], values["kid_std"] = result.mean, result.std
    if train_set is not None and heldout_set is not None:
        report["memorization"], audit_values = _memorization(
            fake_set, fake_feats, train_set, heldout_set, report_dir=report_dir, extractor=extractor,
            features=features, audit=audit, counts=counts, quiet=quiet)
        values.update(audit_values)
    report["values"] = values
    report["counts"] = counts
    report["input_kinds"] = {"real": "stats" if isinstance(real_set, FeatureStats) else real_set.kind,
                             "fake": fake_set.kind}
    return report


def evaluate_images(inputs: ImageSetInputs, *, metrics: str | Sequence[str], out: PathLike,
                    features: FeatureSettings = FeatureSettings(), extractor: FeatureExtractor | None = None,
                    tiles: TileScale | None = None, kid: KIDSettings = KIDSettings(),
                    audit: AuditSettings | None = None, overwrite: bool = False, quiet: bool = False) -> dict[str, Any]:
    """FID / KID / the memorization audit of image sets, written as a report folder ``out``.

    Args:
        inputs: the image sets.
        metrics: ``"fid,kid"`` or a sequence of distribution metric names.
        out: the report folder (refused when it exists, unless ``overwrite``).
        features: feature settings; ``extractor`` None builds ``features.extractor`` from ``features.weights``.
        extractor: a ready :class:`gan.metrics.features.FeatureExtractor` (e.g. ``ModuleExtractor``).
        tiles: tile scale for whole-slide inputs (default :class:`data.image_sets.TileScale`).
        kid: KID settings.
        audit: memorization audit settings (default :class:`gan.release.AuditSettings`).
        overwrite: replace an existing report folder (atomically).
        quiet: no progress bars.

    Returns:
        The report, as written to ``out/report.json``.
    """
    names = parse_metrics(metrics)
    if names[0] not in DISTRIBUTION_METRICS:
        raise ValueError(f"evaluate_images scores {', '.join(DISTRIBUTION_METRICS)}; use evaluate_volumes for {names}")
    if isinstance(features.batch_size, bool) or int(features.batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {features.batch_size!r}")
    if extractor is None:
        extractor = build_extractor(features.extractor, features.weights, features.device)
    elif not isinstance(extractor, FeatureExtractor):
        raise ValueError(f"extractor must be a gan.metrics.FeatureExtractor, got {type(extractor).__name__}; wrap a "
                         "plain nn.Module with gan.metrics.ModuleExtractor(module, name=...)")
    tiles = tiles or TileScale()
    description = {"real": [str(p) for p in inputs.real], "fake": [str(p) for p in inputs.fake], "metrics": list(names),
                   "train": [str(p) for p in inputs.train], "heldout": [str(p) for p in inputs.heldout],
                   "fid_protocol": features.protocol, "batch_size": int(features.batch_size)}

    def build(folder: Path) -> dict[str, Any]:
        body = distribution_report(inputs, metrics=names, report_dir=folder, extractor=extractor, features=features,
                                   tiles=tiles, kid=kid, audit=audit or AuditSettings(), quiet=quiet)
        if "slides" in body["input_kinds"].values():
            description.update(tile_size=tiles.tile_size, mpp=tiles.mpp, magnification=tiles.magnification,
                               mpp_override=tiles.mpp_override)
        return body

    return write_report_folder(Path(out), overwrite=overwrite, inputs=description, build=build)
