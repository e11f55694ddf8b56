"""FIR resampling in plain PyTorch: the [1, 3, 3, 1] filter, ``upfirdn2d`` and the 2x up/down helpers.

Conventions (the same on both spatial axes, every channel filtered on its own):

* The kernel is the outer product of the taps with itself, normalised to sum 1 (:func:`fir_kernel`).
* :func:`upfirdn2d` = zero insertion (``up - 1`` zeros after every sample), zero padding by ``pad = (before, after)``
  (negative values crop), a *valid* true convolution with ``gain * kernel``, then keeping every ``down``-th sample.
* :func:`upsample2d`: up 2, pad ``((k + 1) // 2, (k - 2) // 2)`` = (2, 1) for 4 taps, gain 4 (zero insertion keeps a
  quarter of the samples, so the gain restores the mean): (H, W) -> (2H, 2W); output pixel ``j`` sits at input
  position ``(j - 0.5) / 2`` (pixel centres aligned, as bilinear upsampling with ``align_corners=False``).
* :func:`downsample2d`: pad ``((k - 1) // 2, (k - 2) // 2)`` = (1, 1), gain 1, keep every 2nd sample:
  (H, W) -> (H/2, W/2).
* :func:`blur_pad`: the padding a k x k convolution needs around a resampling filter (used by the 2x layers).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_TAPS: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)
"""The binomial filter of StyleGAN2 (its 1D taps; the 2D kernel is their outer product)."""


def fir_kernel(taps: Sequence[float] = DEFAULT_TAPS) -> Tensor:
    """2D FIR kernel: the outer product of ``taps`` with itself, normalised to sum 1 (float32).

    Args:
        taps: the 1D filter taps (at least one, positive sum).
    """
    t = torch.as_tensor(list(taps), dtype=torch.float32, device="cpu")
    if t.ndim != 1 or t.numel() < 1 or not float(t.sum()) > 0:
        raise ValueError(f"FIR taps must be a non-empty 1D sequence with a positive sum, got {taps!r}")
    k = torch.outer(t, t)
    return k / k.sum()


def upfirdn2d(
    x: Tensor, kernel: Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0), gain: float = 1.0
) -> Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample every channel of ``x``.

    Args:
        x: (N, C, H, W) images.
        kernel: (kh, kw) FIR kernel (applied as a true convolution: flipped, which changes nothing for a symmetric one).
        up: upsampling factor (``up - 1`` zeros inserted after every sample).
        down: downsampling factor (every ``down``-th sample kept, starting with the first).
        pad: zero padding (before, after) on each spatial axis after upsampling; negative values crop.
        gain: the kernel is multiplied by this (use ``up ** 2`` for upsampling).
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    p0, p1 = pad
    if p0 or p1:
        x = F.pad(x, (p0, p1, p0, p1))
    weight = (kernel.to(device=x.device, dtype=x.dtype) * gain).flip(0, 1)
    weight = weight[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, stride=down, groups=c)


def upsample2d(x: Tensor, kernel: Tensor) -> Tensor:
    """2x FIR upsampling (H, W) -> (2H, 2W), mean-preserving (gain 4); see the module docstring.

    Args:
        x: (N, C, H, W) images.
        kernel: square (k, k) FIR kernel, normally :func:`fir_kernel`.
    """
    k = kernel.shape[-1]
    return upfirdn2d(x, kernel, up=2, pad=((k + 1) // 2, (k - 2) // 2), gain=4.0)


def downsample2d(x: Tensor, kernel: Tensor) -> Tensor:
    """2x FIR downsampling (H, W) -> (H/2, W/2) for even sizes; see the module docstring.

    Args:
        x: (N, C, H, W) images.
        kernel: square (k, k) FIR kernel, normally :func:`fir_kernel`.
    """
    k = kernel.shape[-1]
    return upfirdn2d(x, kernel, down=2, pad=((k - 1) // 2, (k - 2) // 2))


def blur_pad(taps: int, conv_kernel: int, *, up: bool) -> tuple[int, int]:
    """Padding of the FIR blur that goes with a 2x-resampling ``conv_kernel`` x ``conv_kernel`` convolution.

    Down: blur with this padding, then a stride-2 convolution without padding gives (H/2, W/2).
    Up: a stride-2 transposed convolution without padding ((H - 1) * 2 + k samples), then a blur with this padding
    gives (2H, 2W).

    Args:
        taps: number of FIR taps (4 for [1, 3, 3, 1]).
        conv_kernel: the convolution's kernel size.
        up: True for the upsampling layer, False for the downsampling one.
    """
    if up:
        p = (taps - 2) - (conv_kernel - 1)
        return (p + 1) // 2 + 1, p // 2 + 1
    p = (taps - 2) + (conv_kernel - 1)
    return (p + 1) // 2, p // 2
