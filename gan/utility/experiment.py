"""The downstream-utility test: does adding synthetic rare-class tiles help a classifier more than oversampling?

:func:`utility_test` trains the same classifier under the three regimes of :mod:`gan.utility.regimes` for every
seed (identical budget, identical seeds, so the regimes of one seed start from the same weights and see the same
number of tiles), scores each on the held-out real tiles (:mod:`gan.utility.scores`), and returns the report
section: per regime the per-class precision/recall/F1, balanced accuracy and the rare class's AUROC as mean ± std
over seeds, the paired differences between regimes, and the verdict line. :func:`run_utility` does the same from
labelled tile sets (:mod:`gan.utility.tiles`), refusing train and held-out tiles that share a slide.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from gan.utility.regimes import REGIMES, build_regimes
from gan.utility.scores import (
    VERDICT_RULE,
    classification_scores,
    mean_std,
    paired_difference,
    verdict,
)
from gan.utility.tiles import LabelledTiles, check_disjoint_slides, load_tiles
from gan.utility.training import TrainSettings, predict_probabilities, train_classifier

__all__ = ["MIN_SEEDS", "UtilitySettings", "run_utility", "utility_test"]

#: Fewest seeds of a utility test (mean ± std needs a spread).
MIN_SEEDS = 3
_METRICS = ("precision", "recall", "f1")
_SUMMARY = ("balanced_accuracy", "accuracy", "rare_auroc", "rare_recall", "rare_precision", "rare_f1")
_PAIRS = (("synthetic", "oversampled"), ("synthetic", "real_only"), ("oversampled", "real_only"))


@dataclass(frozen=True)
class UtilitySettings:
    """Settings of a utility test.

    Args:
        seeds: training seeds (at least :data:`MIN_SEEDS`); the same seeds for every regime.
        rare_class: the rare class's name; None: the class with the fewest real training tiles.
        size: tile side the classifier sees; None: the smallest side among the first tiles of the three sets.
        max_synthetic: use at most this many synthetic rare tiles (the first ones); None: all.
        train: budget and recipe of every run.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    rare_class: str | None = None
    size: int | None = None
    max_synthetic: int | None = None
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        seeds = tuple(int(s) for s in self.seeds)
        if len(seeds) < MIN_SEEDS or len(set(seeds)) != len(seeds):
            raise ValueError(f"the utility test needs at least {MIN_SEEDS} distinct seeds (mean ± std over seeds), "
                             f"got {list(self.seeds)}")
        object.__setattr__(self, "seeds", seeds)
        if self.size is not None and int(self.size) < 8:
            raise ValueError(f"utility tile size must be >= 8, got {self.size}")
        if self.max_synthetic is not None and int(self.max_synthetic) < 1:
            raise ValueError(f"max_synthetic must be >= 1, got {self.max_synthetic}")


def _summary(scores: Mapping[str, Any], rare_name: str) -> dict[str, float | None]:
    rare = scores["per_class"][rare_name]
    return {"balanced_accuracy": scores["balanced_accuracy"], "accuracy": scores["accuracy"],
            "rare_auroc": scores["rare_auroc"], "rare_recall": rare["recall"], "rare_precision": rare["precision"],
            "rare_f1": rare["f1"]}


def utility_test(train_images: Tensor, train_labels: Tensor | Sequence[int], heldout_images: Tensor,
                 heldout_labels: Tensor | Sequence[int], synthetic_images: Tensor, *, classes: Sequence[str],
                 rare_class: str, seeds: Sequence[int] = (0, 1, 2), train: TrainSettings = TrainSettings(),
                 quiet: bool = True) -> dict[str, Any]:
    """The three regimes over seeds on tensors (see the module docstring); the report section.

    Args:
        train_images: (N, 3, S, S) uint8 real training tiles.
        train_labels: (N,) their class indices into ``classes``.
        heldout_images: (K, 3, S, S) uint8 held-out real tiles (other slides).
        heldout_labels: (K,) their class indices.
        synthetic_images: (M, 3, S, S) uint8 synthetic tiles of the rare class.
        classes: class names in index order.
        rare_class: the rare class's name.
        seeds: training seeds, at least :data:`MIN_SEEDS`.
        train: budget and recipe.
        quiet: no progress bars.
    """
    classes = [str(c) for c in classes]
    if rare_class not in classes:
        raise ValueError(f"rare class {rare_class!r} is not one of the classes {classes}")
    seeds = UtilitySettings(seeds=tuple(seeds)).seeds
    rare = classes.index(rare_class)
    t0 = time.perf_counter()
    regimes = build_regimes(train_images, torch.as_tensor(train_labels), synthetic_images, rare=rare)
    truth = torch.as_tensor(heldout_labels, dtype=torch.long).numpy()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in REGIMES}
    for seed in seeds:
        for name in REGIMES:
            regime = regimes[name]
            clf = train_classifier(regime.images, regime.labels, num_classes=len(classes), seed=seed, settings=train,
                                   desc=f"utility {name} seed {seed}", quiet=quiet)
            probs = predict_probabilities(clf, heldout_images, threads=train.threads)
            runs[name].append(classification_scores(truth, probs, classes=classes, rare=rare))
    section_regimes: dict[str, Any] = {}
    summaries = {name: [_summary(s, rare_class) for s in runs[name]] for name in REGIMES}
    for name in REGIMES:
        per_class = {c: {m: mean_std([s["per_class"][c][m] for s in runs[name]]) for m in _METRICS}
                     for c in classes}
        section_regimes[name] = {
            "description": regimes[name].description,
            "train_size": int(regimes[name].labels.numel()),
            "train_class_counts": dict(zip(classes, regimes[name].class_counts(len(classes)))),
            "per_class": per_class,
            **{k: mean_std([s[k] for s in summaries[name]]) for k in _SUMMARY},
        }
    differences = {f"{a}_minus_{b}": {k: paired_difference([s[k] for s in summaries[a]], [s[k] for s in summaries[b]])
                                      for k in _SUMMARY} for a, b in _PAIRS}
    beats, line = verdict(differences["synthetic_minus_oversampled"]["rare_recall"], rare_class=rare_class)
    return {
        "classes": classes,
        "rare_class": rare_class,
        "seeds": list(seeds),
        "settings": {**train.record(), "tile_size": int(train_images.shape[-1]),
                     "budget": f"{train.steps} steps x {train.batch_size} tiles in every regime"},
        "regimes": section_regimes,
        "differences": differences,
        "synthetic_beats_oversampling": beats,
        "verdict": line,
        "verdict_rule": VERDICT_RULE,
        "heldout_class_counts": dict(zip(classes, torch.bincount(torch.as_tensor(truth), minlength=len(classes))
                                         .tolist())),
        "synthetic_used": int(synthetic_images.shape[0]),
        "seconds": time.perf_counter() - t0,
    }


def _rare_class(train: LabelledTiles, given: str | None) -> str:
    counts = train.class_counts()
    if given is None:
        return min(sorted(counts), key=lambda c: counts[c])
    if given not in counts:
        raise ValueError(f"--rare-class {given!r}: no training tile has that class (classes: "
                         f"{', '.join(f'{c} ({n})' for c, n in counts.items())})")
    return given


def _tile_size(sets: Sequence[LabelledTiles], given: int | None) -> int:
    if given is not None:
        return int(given)
    return min(min(int(s) for s in t.load(0).shape[1:]) for t in sets)


def run_utility(train: LabelledTiles, heldout: LabelledTiles, synthetic: LabelledTiles, *,
                settings: UtilitySettings = UtilitySettings(), synthetic_manifest: Mapping[str, Any] | None = None,
                quiet: bool = True) -> dict[str, Any]:
    """The utility test from labelled tile sets; the report section (with the counts, slides and manifest).

    Args:
        train: real training tiles (class and slide per tile).
        heldout: held-out real tiles from other slides (class and slide per tile).
        synthetic: the synthetic set; its tiles labelled with the rare class are used.
        settings: seeds, rare class, tile size, the training budget.
        synthetic_manifest: the synthetic set's manifest summary (:func:`gan.utility.tiles.synthetic_manifest`),
            recorded in the section.
        quiet: no progress bars.

    Raises:
        ValueError: shared slides, a held-out class unknown to training, or no synthetic tile of the rare class.
    """
    check_disjoint_slides(train, heldout)
    classes = train.classes()
    unknown = sorted(set(heldout.classes()) - set(classes))
    if unknown:
        raise ValueError(f"--heldout has class(es) {unknown} that no training tile has (training classes: {classes})")
    rare_class = _rare_class(train, settings.rare_class)
    rare_positions = [i for i, label in enumerate(synthetic.labels) if label == rare_class]
    if not rare_positions:
        raise ValueError(f"--fake: no synthetic tile of the rare class {rare_class!r} (synthetic classes: "
                         f"{synthetic.class_counts()}); generate tiles of that class or name it with --rare-class")
    if settings.max_synthetic is not None:
        rare_positions = rare_positions[:int(settings.max_synthetic)]
    rare_synthetic = synthetic.subset(rare_positions)
    size = _tile_size([train, heldout, rare_synthetic], settings.size)
    index = {c: i for i, c in enumerate(classes)}
    section = utility_test(
        load_tiles(train, size=size), [index[c] for c in train.labels], load_tiles(heldout, size=size),
        [index[c] for c in heldout.labels], load_tiles(rare_synthetic, size=size), classes=classes,
        rare_class=rare_class, seeds=settings.seeds, train=settings.train, quiet=quiet)
    section["counts"] = {
        "train": train.class_counts(), "heldout": heldout.class_counts(), "train_slides": len(train.slide_ids()),
        "heldout_slides": len(heldout.slide_ids()), "synthetic_total": len(synthetic),
        "synthetic_classes": synthetic.class_counts(), "synthetic_used": len(rare_synthetic),
    }
    section["split"] = "by slide: train and held-out tiles come from disjoint slides (checked)"
    section["layouts"] = {"train": train.layout, "heldout": heldout.layout, "synthetic": synthetic.layout}
    section["synthetic_manifest"] = None if synthetic_manifest is None else dict(synthetic_manifest)
    return section
