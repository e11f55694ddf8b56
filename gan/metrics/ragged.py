"""Metric-state sync for ranks that saw different amounts of data, some none at all.

torchmetrics stands in ``torch.tensor([])`` (shape ``(0,)``) for the list state of a rank without data, and its
all-gather then fails against the other ranks' ``(N, D)`` states. :func:`gather_ragged` first agrees on the trailing
shape and dtype, so an empty rank contributes ``(0, D)``; pass it as ``dist_sync_fn`` of a cat-state metric.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics.utilities.distributed import gather_all_tensors

__all__ = ["agree_on", "gather_ragged"]


def agree_on(value: Any, group: Any = None) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` outside a process group. Call on every rank.

    Args:
        value: this rank's value.
        group: the process group (None: the world).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, value, group=group)
    return out


def gather_ragged(tensor: Tensor, group: Any = None) -> list[Tensor]:
    """All ranks' ``tensor`` (dim 0 may differ, and be 0 on a rank without data), in rank order.

    Args:
        tensor: this rank's concatenated state.
        group: the process group (None: the world).
    """
    empty = tensor.numel() == 0
    shapes = agree_on(None if empty else (tuple(tensor.shape[1:]), str(tensor.dtype)), group)
    known = [s for s in shapes if s is not None]
    if not known:
        return gather_all_tensors(tensor, group=group)
    trailing, dtype = known[0]
    if empty:
        tensor = torch.zeros((0, *trailing), dtype=getattr(torch, dtype.replace("torch.", "")), device=tensor.device)
    return gather_all_tensors(tensor, group=group)
