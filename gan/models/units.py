"""Network range [-1, 1] -> physical units, from the window parameters each batch carries.

The data layer maps physical values to [-1, 1] with ``(low, high, log)`` windows and puts those numbers in
every sample (``batch["window"][key]``); this is the inverse the models need for metrics and outputs, kept
here because models never import the data package.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch


def window_of(batch_window: Mapping[str, Any], index: int = 0) -> tuple[float, float, bool]:
    """(low, high, log) of sample ``index`` from a collated ``batch["window"][key]`` dict.

    Args:
        batch_window: ``{"low": ..., "high": ..., "log": ...}`` with scalars or batched tensors.
        index: sample in the batch.
    """
    def pick(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.reshape(-1)[index].item() if v.numel() > 1 else v.item()
        if isinstance(v, (list, tuple)):
            return v[index]
        return v
    return float(pick(batch_window["low"])), float(pick(batch_window["high"])), bool(pick(batch_window.get("log", False)))


def to_physical(y: torch.Tensor, window: tuple[float, float, bool]) -> torch.Tensor:
    """Map [-1, 1] values back to physical units (HU, SUV, MR a.u.) with a (low, high, log) window.

    Args:
        y: network-range tensor.
        window: the window the data layer used for this sample; or per-sample windows as tensors broadcastable
            against ``y`` (``log`` a bool tensor), e.g. shaped ``(N, 1)`` for ``y`` of shape ``(N, M)``.
    """
    low, high, log = window
    if isinstance(log, torch.Tensor):
        low, high = (torch.as_tensor(v, dtype=torch.float64, device=y.device) for v in (low, high))
        lo, hi = torch.where(log, torch.log1p(low), low), torch.where(log, torch.log1p(high), high)
        x = (y.double() + 1.0) * ((hi - lo) / 2.0) + lo
        return torch.where(log, torch.expm1(x), x)
    if log:
        low, high = math.log1p(low), math.log1p(high)
    x = (y.double() + 1.0) * ((high - low) / 2.0) + low
    return torch.expm1(x) if log else x
