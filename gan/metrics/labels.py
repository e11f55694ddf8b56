"""The classes of a per-class metric: its settings and the labels its ``update`` receives, checked once for every
such metric."""
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


def class_settings(num_classes: int | None, class_names: Sequence[str] | None) -> tuple[int | None, list[str] | None]:
    """A per-class metric's ``num_classes`` and ``class_names``, checked.

    Args:
        num_classes: number of class labels (None: overall scores only).
        class_names: optional name per label.

    Raises:
        ValueError: ``num_classes`` below 1, or names that do not match it.
    """
    if num_classes is not None and int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1 or None, got {num_classes}")
    count = None if num_classes is None else int(num_classes)
    if class_names is not None and (count is None or len(class_names) != count):
        raise ValueError(f"class_names needs num_classes={len(class_names)}, got num_classes={num_classes}")
    return count, None if class_names is None else [str(c) for c in class_names]


__all__ = ["batch_labels", "class_settings"]
