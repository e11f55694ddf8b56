"""Whole-volume inference of a translation generator, in network range (no Lightning, no data layer).

Validation, ``medsynth translate`` and ``medsynth generate`` all translate volumes through
:func:`translate_volume`, so what is evaluated is exactly what is written.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Mode = Literal["2d", "2.5d", "3d"]


@torch.no_grad()
def translate_volume(
    generator: nn.Module,
    volume: torch.Tensor,
    *,
    mode: Mode,
    slices: int = 1,
    roi_size: Sequence[int] | None = None,
    batch: int = 16,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Translate a whole volume ``(1, 1, I, J, K)`` in [-1, 1] into one of the same shape.

    2D/2.5D: axial slices (with ``slices // 2`` neighbours each side in 2.5D, edges repeated) in batches, padded
    with -1 to the generator's ``size_multiple`` and cropped back; a multi-channel output's centre channel is the
    slice. 3D: MONAI sliding-window inference (``roi_size``, overlap 0.25, Gaussian blending, padding -1).
    The generator is put in eval mode for the call and restored afterwards.

    Args:
        generator: the network (any ``nn.Module``; ``size_multiple`` attribute read when present, else 1).
        volume: input volume in [-1, 1], shape ``(1, 1, I, J, K)``.
        mode: ``"2d"``, ``"2.5d"`` or ``"3d"``.
        slices: input slices in 2.5D (odd).
        roi_size: sliding-window size in 3D.
        batch: slices per forward pass (2D/2.5D).
        memory_format: memory format of the generator's inputs (channels-last when the net is).
    """
    if volume.dim() != 5 or volume.shape[:2] != (1, 1):
        raise ValueError(f"translate_volume expects one volume shaped (1, 1, I, J, K), got {tuple(volume.shape)}")
    was_training = generator.training
    generator.eval()

    def fmt(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=memory_format) if memory_format != torch.contiguous_format else x

    try:
        if mode == "3d":
            if roi_size is None or len(roi_size) != 3:
                raise ValueError(f"3D inference needs roi_size with 3 sizes, got {roi_size}")
            from monai.inferers import sliding_window_inference

            return sliding_window_inference(volume, roi_size=tuple(roi_size), sw_batch_size=2,
                                            predictor=lambda p: generator(fmt(p)), overlap=0.25, mode="gaussian",
                                            padding_mode="constant", cval=-1.0)
        vol = volume[0, 0]  # (I, J, K)
        n_i, n_j, n_k = vol.shape
        m = int(getattr(generator, "size_multiple", 1))
        pi, pj = (-n_i) % m, (-n_j) % m
        half = (slices if mode == "2.5d" else 1) // 2
        offsets = torch.arange(-half, half + 1, device=vol.device)
        out = torch.empty_like(vol)
        for k0 in range(0, n_k, batch):
            ks = torch.arange(k0, min(k0 + batch, n_k), device=vol.device)
            idx = (ks[:, None] + offsets[None, :]).clamp(0, n_k - 1)
            stack = vol[:, :, idx].permute(2, 3, 0, 1)  # (B, slices, I, J)
            stack = F.pad(stack, (0, pj, 0, pi), value=-1.0)
            y = generator(fmt(stack))
            y = y[:, y.shape[1] // 2] if y.shape[1] > 1 else y[:, 0]
            out[:, :, k0:k0 + len(ks)] = y[:, :n_i, :n_j].permute(1, 2, 0)
        return out[None, None]
    finally:
        generator.train(was_training)


__all__ = ["Mode", "translate_volume"]
