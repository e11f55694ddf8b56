"""Fidelity and diversity sections of ``medsynth evaluate``: precision/recall/density/coverage (``--metrics prdc``) on
features and the sliced Wasserstein distance (``--metrics swd``) on pixels, overall and per class, each beside the
same score of held-out real images against the same reals (the floor) when ``--heldout`` is given.

Classes come from the sets themselves (:func:`gan.utility.tiles.image_set_labels`: region labels of slide tiles, a
synthetic set's manifest, or class sub-folders); per-class scores are reported when every set involved has classes.
The sliced Wasserstein distance compares images of one size: every image is resized (antialiased bilinear) to the
first synthetic image's side unless ``swd_size`` says otherwise, and the size is recorded with its settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from data.image_sets import ImageSet
from gan.metrics import PrecisionRecallDensityCoverage, SlicedWassersteinDistance
from gan.metrics.swd import DEFAULT_MAX_DESCRIPTORS
from gan.reports import progress
from gan.utility.tiles import image_set_labels

__all__ = ["ClassLabels", "FidelitySettings", "class_labels", "prdc_section", "swd_section"]


@dataclass(frozen=True)
class FidelitySettings:
    """Settings of precision/recall/density/coverage and the sliced Wasserstein distance.

    Args:
        k: ``(k for precision/recall, k for density/coverage)``.
        swd_patches: 7x7 neighbourhoods per image and pyramid level.
        swd_projections: random directions per level.
        swd_normalisation: ``"karras"`` (each set by its own channel statistics, the paper) or ``"real"``.
        swd_min_resolution: smallest pyramid level.
        swd_size: image side the distance is computed at; None: the first synthetic image's smaller side.
        swd_max_descriptors: most patches per set and level (seeded subsample beyond; bounds the time on large sets).
        seed: seed of patch positions and directions.
        batch_size: images read per step.
    """

    k: tuple[int, int] = (3, 5)
    swd_patches: int = 128
    swd_projections: int = 512
    swd_normalisation: str = "karras"
    swd_min_resolution: int = 16
    swd_size: int | None = None
    swd_max_descriptors: int | None = DEFAULT_MAX_DESCRIPTORS
    seed: int = 0
    batch_size: int = 32


@dataclass(frozen=True)
class ClassLabels:
    """Class indices of the images of each set, on one list of class names.

    Args:
        names: class names, sorted, in index order.
        real: class index per real image.
        fake: class index per synthetic image.
        heldout: class index per held-out image, or None without a held-out set.
    """

    names: list[str]
    real: list[int]
    fake: list[int]
    heldout: list[int] | None


def class_labels(real: ImageSet, fake: ImageSet, heldout: ImageSet | None) -> ClassLabels | None:
    """The classes of every set, or None when one of them carries none (then only overall scores are given).

    Args:
        real: real images.
        fake: synthetic images.
        heldout: held-out real images, or None.
    """
    per_set = [image_set_labels(s) for s in (real, fake)] + [None if heldout is None else image_set_labels(heldout)]
    if per_set[0] is None or per_set[1] is None or (heldout is not None and per_set[2] is None):
        return None
    names = sorted({n for labels in per_set if labels for n in labels})
    index = {n: i for i, n in enumerate(names)}

    def to_index(labels: list[str] | None) -> list[int] | None:
        return None if labels is None else [index[n] for n in labels]

    return ClassLabels(names=names, real=to_index(per_set[0]), fake=to_index(per_set[1]),  # type: ignore[arg-type]
                       heldout=to_index(per_set[2]))


def _named(per_class: dict[int, Any], names: Sequence[str]) -> dict[str, Any]:
    return {names[c]: v for c, v in per_class.items()}


def prdc_section(real: Tensor, fake: Tensor, heldout: Tensor | None, *, labels: ClassLabels | None,
                 settings: FidelitySettings, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """Precision/recall/density/coverage of the synthetic features (and of the held-out ones: the floor).

    Args:
        real: (N, d) features of the real images.
        fake: (M, d) features of the synthetic images.
        heldout: (K, d) features of held-out real images, or None.
        labels: classes of the sets, or None for overall scores only.
        settings: ``k``.
        record: the features' protocol record.

    Returns:
        The report section and its scalars.
    """
    names = labels.names if labels else None
    metric = PrecisionRecallDensityCoverage(k=settings.k, num_classes=len(names) if names else None,
                                            class_names=names, reset_real_features=False)
    metric.update(real, real=True, labels=labels.real if labels else None)
    metric.update(fake, real=False, labels=labels.fake if labels else None)
    result = metric.compute()
    section: dict[str, Any] = {
        "k_precision_recall": settings.k[0], "k_density_coverage": settings.k[1], "overall": result.overall,
        "per_class": _named(result.per_class, names) if names else {}, "counts": result.counts,
        "feature_protocol": record, "floor": None,
    }
    values = {f"prdc_{k}": v for k, v in result.overall.items()}
    values.update({f"prdc/{names[c]}/{k}": v for c, s in result.per_class.items() if s and names for k, v in s.items()})
    if heldout is not None:
        metric.reset()
        metric.update(heldout, real=False, labels=labels.heldout if labels else None)
        floor = metric.compute()
        section["floor"] = {"overall": floor.overall, "per_class": _named(floor.per_class, names) if names else {},
                            "counts": floor.counts}
        values.update({f"prdc_floor_{k}": v for k, v in floor.overall.items()})
    return section, values


def _first_side(images: ImageSet) -> int:
    return int(min(images.load(0).shape[1:]))


def _pixel_batches(images: ImageSet, labels: list[int] | None, *, size: int, batch_size: int,
                   quiet: bool) -> Iterator[tuple[Tensor, list[int] | None]]:
    """(B, 3, size, size) uint8 batches of a set (resized where needed) with their labels."""
    n = len(images)
    starts = range(0, n, batch_size)
    for start in progress(starts, total=len(starts), desc=f"{images.label} patches", quiet=quiet):
        idx = range(start, min(start + batch_size, n))
        batch = []
        for i in idx:
            img = images.load(i)
            if tuple(img.shape[1:]) != (size, size):
                img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True,
                                    align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
            batch.append(img)
        yield torch.stack(batch), None if labels is None else [labels[i] for i in idx]


def swd_section(real: ImageSet, fake: ImageSet, heldout: ImageSet | None, *, labels: ClassLabels | None,
                settings: FidelitySettings, quiet: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
    """Sliced Wasserstein distance of the synthetic images to the real ones (and of the held-out ones: the floor).

    Args:
        real: real images.
        fake: synthetic images.
        heldout: held-out real images, or None.
        labels: classes of the sets, or None for the overall score only.
        settings: patches, projections, normalisation, size, seed, batch size.
        quiet: no progress bars.

    Returns:
        The report section and its scalars.
    """
    size = int(settings.swd_size) if settings.swd_size is not None else _first_side(fake)
    names = labels.names if labels else None
    metric = SlicedWassersteinDistance(
        patches_per_image=settings.swd_patches, projections=settings.swd_projections,
        min_resolution=settings.swd_min_resolution, normalisation=settings.swd_normalisation,  # type: ignore[arg-type]
        seed=settings.seed, max_descriptors=settings.swd_max_descriptors, num_classes=len(names) if names else None,
        class_names=names, reset_real_features=False)

    def feed(images: ImageSet, set_labels: list[int] | None, is_real: bool) -> None:
        for batch, lab in _pixel_batches(images, set_labels, size=size, batch_size=settings.batch_size, quiet=quiet):
            metric.update(batch, real=is_real, labels=lab)

    def per_class(result: Any) -> dict[str, float | None]:
        return {names[c]: None if v is None else v["value"] for c, v in result.per_class.items()} if names else {}

    feed(real, labels.real if labels else None, True)
    feed(fake, labels.fake if labels else None, False)
    result = metric.compute()
    section: dict[str, Any] = {"value": result.value, "per_level": result.per_level, "per_class": per_class(result),
                               "counts": result.counts, "settings": {**result.settings, "size": size},
                               "floor": None}
    values = {"swd": result.value}
    values.update({f"swd/{c}": v for c, v in section["per_class"].items() if v is not None})
    if heldout is not None:
        metric.reset()
        feed(heldout, labels.heldout if labels else None, False)
        floor = metric.compute()
        section["floor"] = {"value": floor.value, "per_level": floor.per_level, "per_class": per_class(floor),
                            "counts": floor.counts}
        values["swd_floor"] = floor.value
        values.update({f"swd_floor/{c}": v for c, v in section["floor"]["per_class"].items() if v is not None})
    return section, values
