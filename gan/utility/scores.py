"""Scores of the downstream-utility test: per-class precision/recall/F1, balanced accuracy, the rare class's AUROC,
their mean ± std over seeds, and the verdict line.

Definitions are scikit-learn's (the tests compare with it): precision/recall/F1 per class with ``zero_division=0``,
balanced accuracy the mean of the per-class recalls (over the classes present in the truth), AUROC one-vs-rest from
the rare class's probability (the Mann-Whitney statistic with average ranks for ties; None when the held-out set
has only one side). Over seeds the std is the sample std (ddof = 1).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "VERDICT_RULE",
    "auroc",
    "classification_scores",
    "mean_std",
    "paired_difference",
    "verdict",
]

#: How the verdict is decided, as written in every report.
VERDICT_RULE = ("synthetic beats oversampling when the paired difference of rare-class recall (synthetic minus "
                "oversampled, same seed) has a positive mean larger than twice its standard error over seeds")


def auroc(scores: Sequence[float] | np.ndarray, positive: Sequence[bool] | np.ndarray) -> float | None:
    """Area under the ROC curve of ``scores`` for the ``positive`` samples (ties count half), or None with one class.

    Args:
        scores: (N,) scores, higher meaning more likely positive.
        positive: (N,) truth.
    """
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = np.empty(s.shape[0], dtype=np.float64)
    ranks[np.argsort(s, kind="mergesort")] = np.arange(1, s.shape[0] + 1)
    _, tie_group, tie_count = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.bincount(tie_group, weights=ranks) / tie_count)[tie_group]  # ties share their average rank
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_scores(truth: Sequence[int] | np.ndarray, probabilities: np.ndarray, *, classes: Sequence[str],
                          rare: int) -> dict[str, Any]:
    """Scores of one classifier on held-out tiles.

    Args:
        truth: (N,) true class indices.
        probabilities: (N, C) class probabilities; the prediction is the arg-max.
        classes: class names, in index order.
        rare: index of the rare class (its AUROC is reported).

    Returns:
        ``per_class`` (name -> precision, recall, f1, support), ``balanced_accuracy``, ``accuracy``, ``rare_auroc``.
    """
    y = np.asarray(truth, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape != (y.shape[0], len(classes)):
        raise ValueError(f"probabilities must be ({y.shape[0]}, {len(classes)}), got {p.shape}")
    pred = p.argmax(axis=1)
    per_class: dict[str, dict[str, float]] = {}
    recalls = []
    for c, name in enumerate(classes):
        tp = int(((pred == c) & (y == c)).sum())
        n_pred, n_true = int((pred == c).sum()), int((y == c).sum())
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": n_true}
        if n_true:
            recalls.append(recall)
    return {
        "per_class": per_class,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else 0.0,
        "accuracy": float((pred == y).mean()) if y.size else 0.0,
        "rare_auroc": auroc(p[:, rare], y == rare),
    }


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` of per-seed values (None values left out; std ddof = 1, 0 for one value).

    Args:
        values: one value per seed.
    """
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    mean = float(np.mean(kept)) if kept else None
    std = float(np.std(kept, ddof=1)) if len(kept) > 1 else (0.0 if kept else None)
    return {"mean": mean, "std": std, "n": len(kept), "values": [None if v is None else float(v) for v in values]}


def paired_difference(a: Sequence[float | None], b: Sequence[float | None]) -> dict[str, Any]:
    """Mean ± std of ``a - b`` seed by seed (seeds where either is None are left out).

    Args:
        a: per-seed values of one regime.
        b: per-seed values of the other, same seeds in the same order.
    """
    return mean_std([None if x is None or y is None else float(x) - float(y) for x, y in zip(a, b)])


def verdict(difference: Mapping[str, Any], *, rare_class: str) -> tuple[bool, str]:
    """Whether synthetic beats oversampling on rare-class recall, and the plain line that says so.

    Args:
        difference: :func:`paired_difference` of rare-class recall, synthetic minus oversampled.
        rare_class: its name, for the line.
    """
    mean, std, n = difference["mean"], difference["std"], int(difference["n"])
    if mean is None or n == 0:
        return False, f"synthetic does not beat oversampling on rare-class ({rare_class}) recall: no seed scored"
    se = std / math.sqrt(n) if n > 1 else float("inf")
    beats = mean > 0 and mean > 2 * se
    spread = f"{mean:+.3f} ± {std:.3f} (mean ± std of the paired difference over {n} seeds)"
    if beats:
        return True, f"synthetic beats oversampling on rare-class ({rare_class}) recall by {spread}"
    return False, f"synthetic does not beat oversampling on rare-class ({rare_class}) recall: difference {spread}"
