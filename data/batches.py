"""The batch protocol the data layer's loaders and the models share (a leaf: torch only).

An evaluation batch flagged ``"padding": True`` is the stand-in :class:`data.loading.StridedBatches` gives a DDP
rank that has no item of its own (fewer held-out items than ranks): the rank still runs the evaluation epoch, so
its metric sync meets the other ranks', and the model skips the batch. Every evaluation item also carries its
position in the split (``"eval_index"``).
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["EVAL_INDEX_KEY", "PADDING_KEY", "is_padding"]

#: Key of an evaluation item's position in its split (dict batches of :func:`data.loading.eval_loader`): the same
#: whichever rank evaluates the item, so a metric that picks or seeds by it does not depend on the number of ranks.
EVAL_INDEX_KEY = "eval_index"

#: Key of the padding flag in a dict batch.
PADDING_KEY = "padding"


def is_padding(batch: Any) -> bool:
    """Whether an evaluation batch is the padding batch of a rank without items (skip it; still run the epoch).

    Args:
        batch: a collated batch.
    """
    if not isinstance(batch, dict) or PADDING_KEY not in batch:
        return False
    flag = batch[PADDING_KEY]
    return bool(flag.all()) if isinstance(flag, torch.Tensor) else bool(flag)
