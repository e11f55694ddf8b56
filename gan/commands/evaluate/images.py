"""The distribution metrics of ``medsynth evaluate``: FID, KID, the memorization audit, precision/recall/density/
coverage and the sliced Wasserstein distance of image sets, and the downstream-utility test beside them.

Image sets are read one batch at a time through :mod:`data.image_sets` (image folders, whole-slide tiles, or a
statistics ``.npz`` for the real side of FID); only features are kept, and only when KID or the audit needs them.
The memorization audit is the release gate's (:func:`gan.release.memorization_audit`, data-copying cells adapted to
the set sizes); precision-recall and SWD are :mod:`gan.commands.evaluate.fidelity`'s, the utility test
:mod:`gan.commands.evaluate.utility`'s. :func:`distribution_report` scores; :func:`evaluate_images` writes the report
folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from data.errors import DataError
from data.image_sets import ImageFiles, ImageSet, StatsFile, TileScale, open_image_set
from gan.commands.evaluate.common import (
    CHECKPOINT_SUFFIXES,
    DISTRIBUTION_METRICS,
    FEATURE_METRICS,
    PathLike,
    extractor_arg,
    parse_metrics,
    write_report_folder,
)
from gan.commands.evaluate.fidelity import ClassLabels, FidelitySettings, class_labels, prdc_section, swd_section
from gan.commands.evaluate.utility import UtilityRequest, utility_section
from gan.metrics import FeatureStats, FrechetInceptionDistance, KernelInceptionDistance
from gan.metrics.features import (
    FeatureExtractor,
    extract_features,
    protocol_record,
)
from gan.release import AuditSettings, memorization_audit
from gan.reports import progress
from gan.utility.tiles import synthetic_image_files

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
    """How images become features (FID, KID, the memorization audit, precision/recall).

    Args:
        extractor: ``"fid-inception"`` (pytorch-fid's Inception-v3), ``"torchvision-inception"``, or a domain
            extractor ``"timm:<model>"`` / ``"torchvision:<model>"`` (weights from ``weights``).
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
        heldout: real images the generator never saw (memorization audit calibration; the floor of precision-recall
            and SWD).
    """

    real: tuple[Path, ...]
    fake: tuple[Path, ...]
    train: tuple[Path, ...] = ()
    heldout: tuple[Path, ...] = ()


def build_extractor(kind: str, weights: str | Path | None, device: str) -> FeatureExtractor:
    """The feature network of ``--extractor`` (:func:`gan.metrics.features.factory.build_extractor`, after the
    argument check).

    Args:
        kind: ``"fid-inception"``, ``"torchvision-inception"``, or a domain extractor ``"timm:<model>"`` /
            ``"torchvision:<model>"`` (:class:`gan.metrics.TimmExtractor` / :class:`gan.metrics.TorchvisionExtractor`).
        weights: weights file or folder; ``"random"`` for a seeded random network (``pretrained=False, seed=0``: its
            protocol record says ``"comparable": false``); None for the hub cache.
        device: torch device.
    """
    from gan.metrics.features.factory import build_extractor as build

    return build(extractor_arg(kind), weights, device)


def _open_set(paths: Sequence[Path], label: str, scale: TileScale, allow_stats: bool) -> ImageSet | FeatureStats:
    """An image set (or, for ``--real``, FID statistics) from paths; checkpoints are refused with a hint. A synthetic
    set released by ``medsynth generate`` (one folder with a manifest or an ``audit/`` report) is read as the tiles
    its manifest lists, never the audit's pictures."""
    ckpt = [p for p in paths if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES]
    if ckpt:
        raise ValueError(f"--{label} {ckpt[0]}: is a checkpoint; evaluate reads images. Generate them first "
                         "(`medsynth generate` for translation checkpoints, which also runs the memorization audit) "
                         "and pass their folder.")
    if label == "fake" and len(paths) == 1 and paths[0].is_dir() and any(
            (paths[0] / name).exists() for name in ("manifest.json", "manifest.csv", "audit")):
        return ImageFiles(label, [str(paths[0])], synthetic_image_files(paths[0]))
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


def _all_features(images: ImageSet, extractor: FeatureExtractor, features: FeatureSettings, quiet: bool) -> Tensor:
    return torch.cat(list(_feature_batches(images, extractor, features, quiet)))


def _memorization(fake_set: ImageSet, fake_feats: list[Tensor], train_set: ImageSet, heldout_set: ImageSet, *,
                  heldout_feats: Tensor, report_dir: Path, extractor: FeatureExtractor, features: FeatureSettings,
                  audit: AuditSettings, counts: dict[str, int | None],
                  quiet: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """The memorization audit of the synthetic images against the training images (held-out calibrated): its
    report section and its scalars; its files go to ``report_dir/memorization``; ``counts`` gains the set sizes."""
    train_feats = _all_features(train_set, extractor, features, quiet)
    counts["train"], counts["heldout"] = len(train_set), len(heldout_set)

    def pairs(mem: Any) -> np.ndarray | None:
        imgs = [(fake_set.load(int(g)), train_set.load(int(t))) for g, t in zip(mem.pair_generated, mem.pair_train)]
        if not imgs or len({tuple(x.shape) for pair in imgs for x in pair}) != 1:
            return None
        return torch.stack([torch.stack(p) for p in imgs]).numpy()

    names_fake = [fake_set.name(i) for i in range(len(fake_set))]
    mem, outcome = memorization_audit(
        train_feats, heldout_feats, torch.cat(fake_feats), names=names_fake, settings=audit,
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


def _feature_sections(metrics: tuple[str, ...], real_set: ImageSet | FeatureStats, fake_set: ImageSet,
                      train_set: ImageSet | None, heldout_set: ImageSet | None, *, labels: ClassLabels | None,
                      report_dir: Path, extractor: FeatureExtractor, features: FeatureSettings, kid: KIDSettings,
                      audit: AuditSettings, fidelity: FidelitySettings, counts: dict[str, int | None],
                      quiet: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """FID / KID / memorization / precision-recall sections from one feature pass per set."""
    record = protocol_record(features.protocol, extractor)
    fid = kid_metric = None
    if "fid" in metrics:
        fid = FrechetInceptionDistance(extractor=extractor, protocol=features.protocol,
                                       real_stats=real_set if isinstance(real_set, FeatureStats) else None)
    if "kid" in metrics:
        kid_metric = KernelInceptionDistance(extractor=extractor, protocol=features.protocol, subsets=kid.subsets,
                                             subset_size=kid.subset_size, seed=kid.seed)
    fake_feats: list[Tensor] = []
    for feats in _feature_batches(fake_set, extractor, features, quiet):
        if fid is not None:
            fid.update(feats, real=False, precomputed=True)
        fake_feats.append(feats)
    real_feats: list[Tensor] = []
    if isinstance(real_set, FeatureStats):
        counts["real"] = real_set.n
    elif fid is not None or kid_metric is not None or "prdc" in metrics:
        for feats in _feature_batches(real_set, extractor, features, quiet):
            for metric in (fid, kid_metric):
                if metric is not None:
                    metric.update(feats, real=True, precomputed=True)
            if "prdc" in metrics:
                real_feats.append(feats)
        counts["real"] = len(real_set)
    heldout_feats = None if heldout_set is None else _all_features(heldout_set, extractor, features, quiet)
    if heldout_feats is not None:
        counts["heldout"] = len(heldout_set)  # type: ignore[arg-type]

    sections: dict[str, Any] = {"feature_protocol": record, "comparable": record["comparable"]}
    values: dict[str, float] = {}
    if fid is not None:
        result = fid.compute()
        sections["fid"] = {"value": result.value, "protocol": result.protocol}
        values["fid"] = result.value
    if kid_metric is not None:
        for feats in fake_feats:
            kid_metric.update(feats, real=False, precomputed=True)
        result = kid_metric.compute()
        sections["kid"] = {"mean": result.mean, "std": result.std, "protocol": result.protocol}
        values["kid"], values["kid_std"] = result.mean, result.std
    if "memorization" in metrics and train_set is not None and heldout_set is not None:
        sections["memorization"], audit_values = _memorization(
            fake_set, fake_feats, train_set, heldout_set, heldout_feats=heldout_feats,  # type: ignore[arg-type]
            report_dir=report_dir, extractor=extractor, features=features, audit=audit, counts=counts, quiet=quiet)
        values.update(audit_values)
    if "prdc" in metrics:
        sections["prdc"], prdc_values = prdc_section(torch.cat(real_feats), torch.cat(fake_feats), heldout_feats,
                                                     labels=labels, settings=fidelity, record=record)
        values.update(prdc_values)
    return sections, values


def distribution_report(inputs: ImageSetInputs, *, metrics: tuple[str, ...], report_dir: Path,
                        extractor: FeatureExtractor | None, features: FeatureSettings, tiles: TileScale,
                        kid: KIDSettings, audit: AuditSettings, fidelity: FidelitySettings = FidelitySettings(),
                        quiet: bool = False) -> dict[str, Any]:
    """FID / KID / memorization / precision-recall / sliced Wasserstein of two image sets (the memorization audit's
    files go to ``report_dir``); with ``inputs.heldout``, precision-recall and SWD also score the held-out images
    against the real ones (the floor).

    Args:
        inputs: the image sets.
        metrics: distribution metric names.
        report_dir: the report folder being written.
        extractor: the feature network (None only when no metric needs features, e.g. ``swd`` alone).
        features: feature settings (protocol, batch size).
        tiles: tile scale for whole-slide inputs.
        kid: KID settings.
        audit: memorization audit settings.
        fidelity: precision-recall and SWD settings.
        quiet: no progress bars.
    """
    real_set = _open_set(inputs.real, "real", tiles, allow_stats=True)
    fake_set = _open_set(inputs.fake, "fake", tiles, allow_stats=False)
    beyond_fid = [m for m in metrics if m != "fid"]
    if isinstance(real_set, FeatureStats) and beyond_fid:
        raise ValueError(f"--real {inputs.real[0]}: cached statistics serve FID only; {', '.join(beyond_fid)} need "
                         "the real images")
    train_set = heldout_set = None
    if "memorization" in metrics:
        if not inputs.train or not inputs.heldout:
            raise ValueError("memorization needs --train (the generator's training images) and --heldout (real "
                             "images the generator never saw, to calibrate the near-copy threshold)")
        train_set = _open_set(inputs.train, "train", tiles, allow_stats=False)
    if inputs.heldout and ("memorization" in metrics or "prdc" in metrics or "swd" in metrics):
        heldout_set = _open_set(inputs.heldout, "heldout", tiles, allow_stats=False)
    labels = None
    if ("prdc" in metrics or "swd" in metrics) and not isinstance(real_set, FeatureStats):
        labels = class_labels(real_set, fake_set, heldout_set)
    counts: dict[str, int | None] = {"fake": len(fake_set)}
    report: dict[str, Any] = {"mode": "distribution"}
    values: dict[str, float] = {}
    if any(m in FEATURE_METRICS for m in metrics):
        if extractor is None:
            raise ValueError(f"metrics {[m for m in metrics if m in FEATURE_METRICS]} need a feature extractor")
        sections, values = _feature_sections(
            metrics, real_set, fake_set, train_set, heldout_set, labels=labels, report_dir=report_dir,
            extractor=extractor, features=features, kid=kid, audit=audit, fidelity=fidelity, counts=counts,
            quiet=quiet)
        report.update(sections)
    if "swd" in metrics:
        report["swd"], swd_values = swd_section(real_set, fake_set, heldout_set, labels=labels,  # type: ignore[arg-type]
                                                settings=fidelity, quiet=quiet)
        values.update(swd_values)
        counts.setdefault("real", len(real_set))  # type: ignore[arg-type]
        if heldout_set is not None:
            counts.setdefault("heldout", len(heldout_set))
    if labels is not None:
        report["classes"] = labels.names
    report["values"] = values
    report["counts"] = counts
    report["input_kinds"] = {"real": "stats" if isinstance(real_set, FeatureStats) else real_set.kind,
                             "fake": fake_set.kind}
    return report


def evaluate_images(inputs: ImageSetInputs, *, metrics: str | Sequence[str], out: PathLike,
                    features: FeatureSettings = FeatureSettings(), extractor: FeatureExtractor | None = None,
                    tiles: TileScale | None = None, kid: KIDSettings = KIDSettings(),
                    audit: AuditSettings | None = None, fidelity: FidelitySettings = FidelitySettings(),
                    utility: UtilityRequest | None = None, overwrite: bool = False,
                    quiet: bool = False) -> dict[str, Any]:
    """FID / KID / memorization / precision-recall / SWD of image sets and the downstream-utility test, written as a
    report folder ``out``.

    Args:
        inputs: the image sets.
        metrics: ``"fid,kid"`` or a sequence of distribution metric names; may be empty with ``utility``.
        out: the report folder (refused when it exists, unless ``overwrite``).
        features: feature settings; ``extractor`` None builds ``features.extractor`` from ``features.weights`` (only
            when a metric needs features).
        extractor: a ready :class:`gan.metrics.features.FeatureExtractor` (e.g. ``ModuleExtractor``).
        tiles: tile scale for whole-slide inputs (default :class:`data.image_sets.TileScale`).
        kid: KID settings.
        audit: memorization audit settings (default :class:`gan.release.AuditSettings`).
        fidelity: precision-recall and SWD settings.
        utility: the downstream-utility test to run (its tile sets and settings), or None.
        overwrite: replace an existing report folder (atomically).
        quiet: no progress bars.

    Returns:
        The report, as written to ``out/report.json``.
    """
    names = parse_metrics(metrics) if (metrics or utility is None) else ()
    if names and names[0] not in DISTRIBUTION_METRICS:
        raise ValueError(f"evaluate_images scores {', '.join(DISTRIBUTION_METRICS)}; use evaluate_volumes for {names}")
    if isinstance(features.batch_size, bool) or int(features.batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {features.batch_size!r}")
    if names and not inputs.real:
        raise ValueError("--real: image-set metrics need the real images (or FID statistics .npz)")
    if extractor is None and any(m in FEATURE_METRICS for m in names):
        extractor = build_extractor(features.extractor, features.weights, features.device)
    elif extractor is not None and not isinstance(extractor, FeatureExtractor):
        raise ValueError(f"extractor must be a gan.metrics.FeatureExtractor, got {type(extractor).__name__}; wrap a "
                         "plain nn.Module with gan.metrics.ModuleExtractor(module, name=...)")
    tiles = tiles or TileScale()
    description = {"real": [str(p) for p in inputs.real], "fake": [str(p) for p in inputs.fake], "metrics": list(names),
                   "train": [str(p) for p in inputs.train], "heldout": [str(p) for p in inputs.heldout],
                   "fid_protocol": features.protocol, "batch_size": int(features.batch_size),
                   "utility": utility is not None}

    def build(folder: Path) -> dict[str, Any]:
        body: dict[str, Any] = {"mode": "distribution", "values": {}, "counts": {}, "input_kinds": {}}
        if names:
            body = distribution_report(inputs, metrics=names, report_dir=folder, extractor=extractor,
                                       features=features, tiles=tiles, kid=kid, audit=audit or AuditSettings(),
                                       fidelity=fidelity, quiet=quiet)
        if utility is not None:
            body["utility"], utility_values = utility_section(utility, tiles=tiles, quiet=quiet)
            body["values"].update(utility_values)
        if "slides" in body["input_kinds"].values() or (utility is not None and "slides" in
                                                        body["utility"]["layouts"].values()):
            description.update(tile_size=tiles.tile_size, mpp=tiles.mpp, magnification=tiles.magnification,
                               mpp_override=tiles.mpp_override)
        return body

    return write_report_folder(Path(out), overwrite=overwrite, inputs=description, build=build)
