"""The class labels a per-class metric's ``update`` receives, checked once for every such metric."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def batch_labels(labels: Tensor | Sequence[int] | None, n: int, num_classes: int | None) -> Tensor:
    """``labels`` of a batch of ``n`` samples as (n,) int64, checked; ``-1`` for every sample without classes.

    Args:
        labels: (n,) class labels in [0, num_classes), or None when the metric has no classes.
        n: batch size.
        num_classes: the metric's classes (None: not per class; the labels are ignored).

    Raises:
        ValueError: labels missing, of the wrong shape or dtype, or out of range.
    """
    if num_classes is None:
        return torch.full((n,), -1, dtype=torch.long)
    if labels is None:
        raise ValueError("labels are required: this metric scores per class (num_classes is set)")
    lab = torch.as_tensor(labels).reshape(-1)
    if lab.shape[0] != n or lab.is_floating_point():
        raise ValueError(f"labels must be ({n},) integers, got {tuple(lab.shape)} {lab.dtype}")
    if n and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got [{int(lab.min())}, {int(lab.max())}]")
    return lab.long()


__all__ = ["batch_labels"]
