"""Pixel/voxel reconstruction losses: masked and weighted L1, cycle and identity terms, lesion-weighted L1."""
from __future__ import annotations

import torch


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")


def _broadcast(name: str, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    try:
        return t.expand(shape)
    except RuntimeError:
        raise ValueError(
            f"{name} shape {tuple(t.shape)} cannot be broadcast to the image shape {tuple(shape)}"
        ) from None


def l1_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean absolute error, optionally restricted to a mask and weighted per voxel.

    Computes ``sum(w * m * |pred - target|) / sum(w * m)`` with ``m`` and ``w`` broadcast to the image shape
    (so a (N, 1, ...) mask covers every channel). Without mask and weight this is plain mean L1. An empty
    mask gives 0 (still connected to the graph).

    Args:
        pred: predicted image, any shape.
        target: reference image of the same shape.
        mask: boolean or {0, 1} region to score, broadcastable to ``pred``.
        weight: non-negative per-voxel weights, broadcastable to ``pred``.
    """
    _check_pair(pred, target)
    diff = (pred - target).abs()
    if mask is None and weight is None:
        return diff.mean()
    w = torch.ones((), dtype=diff.dtype, device=diff.device)
    if mask is not None:
        w = w * _broadcast("mask", mask, diff.shape).to(diff.dtype)
    if weight is not None:
        w = w * _broadcast("weight", weight, diff.shape).to(diff.dtype)
    w = w.expand(diff.shape)
    total = w.sum()
    return (w * diff).sum() / total.clamp_min(torch.finfo(diff.dtype).tiny)


def cycle_loss(
    reconstructed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """CycleGAN cycle-consistency term: L1 between ``G_BA(G_AB(a))`` and ``a``.

    Args:
        reconstructed: the image after a round trip through both generators.
        original: the input image.
        mask: optional region to score, broadcastable to the images.
    """
    return l1_loss(reconstructed, original, mask=mask)


def identity_loss(
    mapped: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """CycleGAN identity term: L1 between ``G_AB(b)`` and ``b`` (a generator should leave its target domain alone).

    Args:
        mapped: the target-domain image passed through the generator.
        original: that image unchanged.
        mask: optional region to score, broadcastable to the images.
    """
    return l1_loss(mapped, original, mask=mask)


def lesion_weighted_l1(
    pred: torch.Tensor, target: torch.Tensor, lesion_mask: torch.Tensor, lesion_weight: float = 5.0
) -> torch.Tensor:
    """L1 in which voxels inside lesions weigh ``lesion_weight`` times more than the rest.

    Computes ``sum(w * |pred - target|) / sum(w)`` with ``w = 1 + (lesion_weight - 1) * lesion_mask``, so the
    value is a weighted mean and ``lesion_weight=1`` equals plain mean L1.

    Args:
        pred: predicted image (e.g. synthetic PET).
        target: reference image of the same shape.
        lesion_mask: boolean or {0, 1} lesion mask, broadcastable to ``pred``.
        lesion_weight: weight of lesion voxels relative to background (> 0).
    """
    if not lesion_weight > 0:
        raise ValueError(f"lesion_weight must be > 0, got {lesion_weight!r}")
    _check_pair(pred, target)
    m = _broadcast("lesion_mask", lesion_mask, pred.shape).to(pred.dtype)
    return l1_loss(pred, target, weight=1.0 + (lesion_weight - 1.0) * m)
