"""SynthRAD challenge evaluation protocols, reproduced step by step (quirks included).

Written from reading the challenges' published evaluation code (not copied):

SynthRAD2023 -- repository ``SynthRAD2023/metrics``, file ``functions/image_metrics.py``
(``ImageMetrics.score_patient`` with ``dynamic_range = [-1024., 3000.]``); images are cast to float32 by
SimpleITK before scoring.

1. MAE: ``sum(|gt*mask - pred*mask|) / sum(mask)`` with ``mask = mask > 0``, on UNclipped values.
2. PSNR: gt and pred clipped to [-1024, 3000], voxels with ``mask == 1`` selected, then
   ``skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=4024)``.
3. SSIM: gt and pred clipped to [-1024, 3000]; voxels outside the mask set to -1024; both shifted by +1024
   (non-negative); ``structural_similarity(gt, pred, data_range=4024, full=True)`` with skimage's defaults
   (uniform 7-voxel window, sample covariance, K1=0.01, K2=0.03, ``mode='reflect'``) on the whole 3D
   volume; the map is averaged over ``crop(mask, 3)`` after ``crop(ssim_map, 3)``. (One published
   revision hands ``ssim`` the SimpleITK mask image instead of its array; the array is meant and used.)

SynthRAD2025 -- repository ``SynthRAD2025/evaluation``, file ``image_metrics.py``
(``ImageMetrics.score_patient`` with ``dynamic_range = [-1024., 3071.]``):

1. Voxels outside the mask are set to -1024 in gt and pred first.
2. MAE as in 2023 (unclipped, over the mask).
3. PSNR as in 2023 with the window [-1024, 3071] (``data_range = 4095``).
4. Masked MS-SSIM (``ImageMetrics.ms_ssim``): clip to the window; outside the mask := -1024; shift by
   +1024; edge-pad every axis to at least 97 voxels (``before = (97 - n) // 2``, the rest after, mask
   padded the same way); then for 5 levels with weights ``w = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``:

   * local moments with a uniform 7-voxel window, sample covariance, ``mode='reflect'``;
   * ``L = max(0, (2 ux uy + C1) / (ux^2 + uy^2 + C1))``,
     ``C = max(0, (2 sx sy + C2) / (vx + vy + C2))``, ``S = max(0, (vxy + C3) / (sx sy + C3))`` with
     ``sx = sqrt(max(vx, 0))``, ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``, ``C3 = C2 / 2``, ``R = 4095``;
   * level map ``L^w * C^w * S^w`` -- quirk: the luminance exponent is the level's scale weight at EVERY
     level (the code's ``[0, 0, 0, 0, 0, 0.1333]`` luminance weights are dead code, because
     ``scale_weights`` was already filled in when the test ``scale_weights is None`` runs);
   * level value = mean of ``crop(map, 3)`` over ``crop(mask, 3)`` (NaN when no mask voxel survives);
   * downsample: ``fftconvolve(x, ones((2,2,2))/8, mode='same')[::2, ::2, ::2]`` -- quirk: 'same' with
     an even kernel averages voxels ``(i-1, i)`` with zero padding in front, so the first voxel of every
     axis is averaged with zeros; the mask is just subsampled ``[::2, ::2, ::2]``.

   MS-SSIM = product over levels of ``clip(level value, 0, 1)``.

   With 97 voxels per axis the levels are 97, 49, 25, 13 and 7 voxels wide, so after the crop the last
   level holds a single voxel: the padded volume's centre must lie in the mask, else the value is NaN.

Both challenges run in float32 or the files' dtypes; this module computes in float64, so results agree
with the challenge code to float32 rounding (below 1e-6 relative; about 1e-8 on the test phantoms).
Filtering, downsampling and padding are per-axis and identical for every axis, so the values do not
depend on z-y-x versus x-y-z order (the 2025 code transposes to x-y-z, the 2023 code does not).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import torch
from torch import Tensor

from gan.metrics.image import (
    ArrayLike,
    check_images,
    crop_border,
    local_moments,
    mae,
    masked_mean,
    parse_data_range,
    psnr,
    ssim,
)

SYNTHRAD2023_WINDOW: tuple[float, float] = (-1024.0, 3000.0)
"""HU window of SynthRAD2023's PSNR and SSIM (``data_range = 4024``)."""

SYNTHRAD2025_WINDOW: tuple[float, float] = (-1024.0, 3071.0)
"""HU window of SynthRAD2025's PSNR and MS-SSIM (``data_range = 4095``)."""

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Per-level exponents of SynthRAD2025's MS-SSIM (Wang et al. 2003, Eq. 7)."""

MS_SSIM_MIN_SIZE = 97
"""SynthRAD2025 edge-pads every axis to at least this many voxels before MS-SSIM."""

_LEVEL_WIN = 7  # uniform window at every MS-SSIM level (skimage's default)
_LEVEL_PAD = 3  # the code's hard-coded crop

__all__ = [
    "MS_SSIM_MIN_SIZE",
    "MS_SSIM_WEIGHTS",
    "SYNTHRAD2023_WINDOW",
    "SYNTHRAD2025_WINDOW",
    "synthrad2023_metrics",
    "synthrad2023_ssim",
    "synthrad2025_metrics",
    "synthrad2025_ms_ssim",
]


def _window(window: Sequence[float], *, name: str = "window") -> tuple[float, float]:
    if isinstance(window, (int, float)) or len(window) != 2:
        raise ValueError(
            f"{name}: the SynthRAD protocols need a (low, high) HU window (outside-mask voxels are set "
            f"to low), got {window!r}"
        )
    _, win = parse_data_range((float(window[0]), float(window[1])))
    assert win is not None
    return win


def _masked_shifted(
    p: Tensor, t: Tensor, m: Optional[Tensor], window: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """Clip to the window, set voxels outside the mask to low, shift so that low becomes 0."""
    low, high = window
    p, t = p.clamp(low, high), t.clamp(low, high)
    if m is not None:
        p = torch.where(m, p, torch.full_like(p, low))
        t = torch.where(m, t, torch.full_like(t, low))
    return p - low, t - low


def synthrad2023_ssim(
    pred: ArrayLike,
    target: ArrayLike,
    mask: Optional[ArrayLike] = None,
    *,
    window: Sequence[float] = SYNTHRAD2023_WINDOW,
) -> Tensor:
    """SynthRAD2023 masked SSIM (steps in the module docstring).

    Args:
        pred: synthetic CT in HU (2D or 3D, at least 7 voxels per axis).
        target: reference CT in HU, same shape.
        mask: body mask (bool, or numeric ``> 0``); whole image when None.
        window: HU window; the challenge's is (-1024, 3000).

    Returns:
        A 0-d float64 tensor.
    """
    win = _window(window)
    p, t, m = check_images(pred, target, mask)
    p, t = _masked_shifted(p, t, m, win)
    return ssim(
        p, t, win[1] - win[0], m, gaussian=False, win_size=_LEVEL_WIN, sample_covariance=True
    )


def synthrad2023_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    mask: Optional[ArrayLike] = None,
    *,
    window: Sequence[float] = SYNTHRAD2023_WINDOW,
) -> dict[str, Tensor]:
    """SynthRAD2023 ``score_patient``: MAE, PSNR and SSIM of one patient's volume.

    Args:
        pred: synthetic CT in HU (2D or 3D).
        target: reference CT in HU, same shape.
        mask: body mask (bool, or numeric ``> 0``); whole volume when None.
        window: HU window; the challenge's is (-1024, 3000).

    Returns:
        ``{"mae", "psnr", "ssim"}`` as 0-d float64 tensors.
    """
    win = _window(window)
    p, t, m = check_images(pred, target, mask)
    return {
        "mae": mae(p, t, None, m),
        "psnr": psnr(p, t, win, m),
        "ssim": synthrad2023_ssim(p, t, m, window=win),
    }


def _edge_pad_to(x: Tensor, min_size: int) -> Tensor:
    """Like numpy's ``np.pad(x, ((b, a), ...), mode='edge')`` with ``b = max((S - n) // 2, 0)``, rest after."""
    for axis, n in enumerate(x.shape):
        before = max((min_size - n) // 2, 0)
        after = max(min_size - n - (min_size - n) // 2, 0)
        if before or after:
            idx = torch.arange(-before, n + after, device=x.device).clamp(0, n - 1)
            x = x.index_select(axis, idx)
    return x


def _downsample_same_even(x: Tensor) -> Tensor:
    """``fftconvolve(x, ones((2,)*ndim) / 2**ndim, mode='same')[::2, ...]`` for real x.

    'same' keeps the first n samples of the full convolution, so output i averages inputs (i-1, i) with
    a zero in front; keeping every other sample gives pairs (-1, 0), (1, 2), (3, 4), ...
    """
    for axis, n in enumerate(x.shape):
        shape = list(x.shape)
        shape[axis] = 1
        padded = torch.cat([x.new_zeros(shape), x], dim=axis)  # length n + 1
        m = (n + 1) // 2  # len(range(0, n, 2))
        idx = torch.arange(0, 2 * m, 2, device=x.device)
        x = 0.5 * (padded.index_select(axis, idx) + padded.index_select(axis, idx + 1))
    return x


def _level_map(x: Tensor, y: Tensor, r: float, weight: float) -> Tensor:
    mom = local_moments(x, y, gaussian=False, win_size=_LEVEL_WIN, sample_covariance=True)
    c1 = (0.01 * r) ** 2
    c2 = (0.03 * r) ** 2
    c3 = c2 / 2
    mx, my, vx, vy, cxy = mom  # owned here: combined in place to bound peak memory
    sx = vx.clamp(min=0).sqrt_()
    sy = vy.clamp(min=0).sqrt_()
    # L = (2 ux uy + C1) / (ux^2 + uy^2 + C1), C = (2 sx sy + C2) / (vx + vy + C2),
    # S = (vxy + C3) / (sx sy + C3), each clipped at 0
    lum = (mx * my).mul_(2.0).add_(c1).div_(mx.square_().add_(my.square_()).add_(c1)).clamp_(min=0)
    con = (sx * sy).mul_(2.0).add_(c2).div_(vx.add_(vy).add_(c2)).clamp_(min=0)
    struct = cxy.add_(c3).div_(sx.mul_(sy).add_(c3)).clamp_(min=0)
    # quirk: luminance exponent == scale weight at every level (see module docstring)
    return lum.pow_(weight).mul_(con.pow_(weight)).mul_(struct.pow_(weight))


def synthrad2025_ms_ssim(
    pred: ArrayLike,
    target: ArrayLike,
    mask: Optional[ArrayLike] = None,
    *,
    window: Sequence[float] = SYNTHRAD2025_WINDOW,
    scale_weights: Sequence[float] = MS_SSIM_WEIGHTS,
    min_size: int = MS_SSIM_MIN_SIZE,
) -> Tensor:
    """SynthRAD2025 masked 3D MS-SSIM (steps in the module docstring).

    Args:
        pred: synthetic CT volume in HU (3D).
        target: reference CT volume in HU, same shape.
        mask: body mask (bool, or numeric ``> 0``); whole volume when None (the challenge code requires
            a mask; an all-ones mask gives the same value as its unmasked branch).
        window: HU window; the challenge's is (-1024, 3071).
        scale_weights: per-level exponents; the number of levels is their count.
        min_size: every axis is edge-padded to at least this size (97 for 5 levels).

    Returns:
        A 0-d float64 tensor; NaN when at some level no mask voxel survives the 3-voxel border crop
        (the challenge code then averages an empty selection too).
    """
    win = _window(window)
    p, t, m = check_images(pred, target, mask, ndims=(3,))
    weights = [float(w) for w in scale_weights]
    if not weights:
        raise ValueError("scale_weights: needs at least one level")
    if min_size < _LEVEL_WIN:
        raise ValueError(f"min_size: must be at least {_LEVEL_WIN}, got {min_size}")
    if m is None:
        m = torch.ones_like(p, dtype=torch.bool)
    p, t = _masked_shifted(p, t, m, win)
    r = win[1] - win[0]
    p, t = _edge_pad_to(p, min_size), _edge_pad_to(t, min_size)
    m = _edge_pad_to(m.to(torch.uint8), min_size).bool()
    values = []
    for level, weight in enumerate(weights):
        if min(p.shape) < _LEVEL_WIN:
            raise ValueError(
                f"pred: volume of padded shape at level {level} is {tuple(p.shape)}, smaller than the "
                f"{_LEVEL_WIN}-voxel window; use fewer levels or a larger min_size"
            )
        smap = _level_map(p, t, r, weight)
        cm = crop_border(m, _LEVEL_PAD)
        if bool(cm.any()):
            values.append(masked_mean(crop_border(smap, _LEVEL_PAD), cm))
        else:
            warnings.warn(
                f"synthrad2025_ms_ssim: no mask voxel survives the border crop at level {level}; "
                "MS-SSIM is NaN (as in the challenge code)",
                RuntimeWarning,
                stacklevel=2,
            )
            values.append(torch.tensor(math.nan, dtype=torch.float64, device=p.device))
        if level + 1 < len(weights):
            p, t = _downsample_same_even(p), _downsample_same_even(t)
            m = m[::2, ::2, ::2]
    return torch.stack([v.clamp(0, 1) for v in values]).prod()


def synthrad2025_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    mask: Optional[ArrayLike] = None,
    *,
    window: Sequence[float] = SYNTHRAD2025_WINDOW,
) -> dict[str, Tensor]:
    """SynthRAD2025 ``score_patient``: MAE, PSNR and masked MS-SSIM of one patient's volume.

    Args:
        pred: synthetic CT volume in HU (3D).
        target: reference CT volume in HU, same shape.
        mask: body mask (bool, or numeric ``> 0``); whole volume when None.
        window: HU window; the challenge's is (-1024, 3071).

    Returns:
        ``{"mae", "psnr", "ms_ssim"}`` as 0-d float64 tensors.
    """
    win = _window(window)
    p, t, m = check_images(pred, target, mask, ndims=(3,))
    if m is not None:  # step 1: outside the mask := low (no effect on the masked MAE/PSNR below)
        p = torch.where(m, p, torch.full_like(p, win[0]))
        t = torch.where(m, t, torch.full_like(t, win[0]))
    return {
        "mae": mae(p, t, None, m),
        "psnr": psnr(p, t, win, m),
        "ms_ssim": synthrad2025_ms_ssim(p, t, m, window=win),
    }
