"""Image similarity metrics in physical units, with masks: MAE, PSNR and SSIM.

Every function takes ``(pred, target, data_range, mask=None)`` for one 2D image or one 3D volume, given
as numpy arrays or torch tensors (any real dtype; the arithmetic runs in float64 on the tensors' device).

``data_range`` is never inferred from the data:

* a float ``R`` is the peak-to-peak range of the values as given (no clipping, no shift);
* a window ``(low, high)`` clips both images to ``[low, high]`` first and uses ``R = high - low``. SSIM then
  measures values from ``low`` (``x - low``), which equals SSIM of the window rescaled to ``[0, 1]`` with
  ``data_range=1`` -- the usual convention, and the one of the SynthRAD challenge code.

SSIM follows ``skimage.metrics.structural_similarity`` exactly (Wang et al. 2004):

* ``gaussian=True`` (default): Gaussian weights with ``sigma=1.5`` truncated at ``3.5 sigma`` (an 11-tap
  kernel), population covariance -- skimage's ``gaussian_weights=True, use_sample_covariance=False``;
* ``gaussian=False``: a uniform ``win_size`` window (default 7) -- skimage's defaults; pass
  ``sample_covariance=True`` to match skimage's default ``use_sample_covariance=True``.

Border handling: local statistics are computed with scipy's ``mode="reflect"`` (half-sample symmetric
extension, ``d c b a | a b c d``), like skimage. The SSIM map is then averaged after cropping
``pad = (win_size - 1) // 2`` voxels from every side of every axis (skimage's ``crop(S, pad)``); with a
mask, the mean runs over the mask voxels that survive the crop. A mask that touches the image border
therefore loses its outermost ``pad`` voxels, exactly as skimage's mean does.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[np.ndarray, Tensor]
DataRange = Union[float, tuple[float, float]]

GAUSSIAN_TRUNCATE = 3.5
"""skimage truncates the SSIM Gaussian at 3.5 sigma (11 taps for sigma 1.5)."""

__all__ = [
    "ArrayLike",
    "DataRange",
    "LocalMoments",
    "as_float64",
    "check_images",
    "crop_border",
    "local_moments",
    "mae",
    "masked_mean",
    "parse_data_range",
    "psnr",
    "ssim",
    "ssim_map",
]


# ----------------------------------------------------------------------------------------------------
# input handling


def _device_of(*arrays: object) -> torch.device:
    for a in arrays:
        if isinstance(a, Tensor):
            return a.device
    return torch.device("cpu")


def as_float64(x: ArrayLike, *, name: str, device: Optional[torch.device] = None) -> Tensor:
    """Convert a numpy array or tensor of real numbers to a float64 tensor.

    Args:
        x: the array; bool and complex arrays are rejected.
        name: the argument's name, used in error messages.
        device: target device (default: the tensor's own device, CPU for numpy input).
    """
    if isinstance(x, Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        if arr.dtype.kind == "b":
            raise ValueError(f"{name}: expected real-valued intensities, got dtype bool")
        # numpy does the cast: handles any byte order (NIfTI data can be big-endian) and integer width
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    else:
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: expected real-valued intensities, got dtype {t.dtype}")
    return t.to(device=device if device is not None else t.device, dtype=torch.float64)


def _as_mask(mask: ArrayLike, *, shape: torch.Size, device: torch.device) -> Tensor:
    if isinstance(mask, Tensor):
        m = mask.detach().to(device)
    else:
        arr = np.asarray(mask)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise ValueError(f"mask: expected a boolean or numeric array, got dtype {arr.dtype}")
        if arr.dtype.kind != "b":
            if (arr < 0).any():
                raise ValueError("mask: contains negative values; expected a boolean or 0/1 body mask")
            arr = arr > 0
        m = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
    if m.shape != shape:
        raise ValueError(f"mask: shape {tuple(m.shape)} differs from the image shape {tuple(shape)}")
    if m.dtype != torch.bool:
        if m.is_complex():
            raise ValueError(f"mask: expected a boolean or numeric array, got dtype {m.dtype}")
        if bool((m < 0).any()):
            raise ValueError("mask: contains negative values; expected a boolean or 0/1 body mask")
        m = m > 0
    return m


def check_images(
    pred: ArrayLike,
    target: ArrayLike,
    mask: Optional[ArrayLike] = None,
    *,
    ndims: tuple[int, ...] = (2, 3),
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Validate one image pair (and mask) and return float64 tensors and a bool mask on one device.

    Args:
        pred: predicted image or volume.
        target: reference image or volume of the same shape.
        mask: optional region of interest; bool, or numeric with voxels ``> 0`` selected.
        ndims: accepted numbers of spatial dimensions.
    """
    device = _device_of(pred, target, mask)
    p = as_float64(pred, name="pred", device=device)
    t = as_float64(target, name="target", device=device)
    if p.shape != t.shape:
        raise ValueError(f"pred: shape {tuple(p.shape)} differs from target shape {tuple(t.shape)}")
    if p.ndim not in ndims:
        raise ValueError(
            f"pred: expected a single image with {' or '.join(map(str, ndims))} spatial dimensions "
            f"(no batch or channel axis), got shape {tuple(p.shape)}"
        )
    if p.numel() == 0:
        raise ValueError(f"pred: empty image of shape {tuple(p.shape)}")
    for name, x in (("pred", p), ("target", t)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
    m = None if mask is None else _as_mask(mask, shape=p.shape, device=device)
    if m is not None and not bool(m.any()):
        raise ValueError("mask: selects no voxels")
    return p, t, m


def parse_data_range(data_range: DataRange) -> tuple[float, Optional[tuple[float, float]]]:
    """Split ``data_range`` into the range ``R`` and an optional clipping window.

    Args:
        data_range: a positive float ``R`` (no clipping) or a window ``(low, high)`` with ``low < high``.

    Returns:
        ``(R, window)`` where ``window`` is ``None`` for a float ``data_range``.
    """
    if isinstance(data_range, bool) or data_range is None:
        raise ValueError(f"data_range: expected a positive float or a (low, high) window, got {data_range!r}")
    if isinstance(data_range, (tuple, list)):
        if len(data_range) != 2:
            raise ValueError(f"data_range: a window must be (low, high), got {data_range!r}")
        low, high = float(data_range[0]), float(data_range[1])
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"data_range: window needs finite low < high, got {data_range!r}")
        return high - low, (low, high)
    try:
        r = float(data_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"data_range: expected a positive float or a (low, high) window, got {data_range!r}"
        ) from None
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"data_range: must be a finite positive number, got {data_range!r}")
    return r, None


def masked_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean of ``x`` over ``mask`` (all elements when ``mask`` is None).

    Args:
        x: values.
        mask: bool tensor of the same shape, or None.
    """
    return x.mean() if mask is None else x[mask].mean()


def crop_border(x: Tensor, pad: int) -> Tensor:
    """Drop ``pad`` elements from both ends of every axis, like ``skimage.util.crop(x, pad)``.

    Args:
        x: tensor to crop.
        pad: number of elements removed at each end of each axis.
    """
    if pad == 0:
        return x
    return x[tuple(slice(pad, s - pad) for s in x.shape)]


# ----------------------------------------------------------------------------------------------------
# MAE and PSNR


def mae(
    pred: ArrayLike,
    target: ArrayLike,
    data_range: Optional[DataRange] = None,
    mask: Optional[ArrayLike] = None,
) -> Tensor:
    """Mean absolute error over the mask, in the images' units.

    Args:
        pred: predicted image or volume (2D or 3D).
        target: reference of the same shape.
        data_range: a ``(low, high)`` window clips both images first; a float or None leaves the values
            as they are (MAE has no range to normalise by). Both SynthRAD protocols use unclipped MAE.
        mask: voxels to include (bool, or numeric ``> 0``); all voxels when None.

    Returns:
        A 0-d float64 tensor.
    """
    p, t, m = check_images(pred, target, mask)
    if data_range is not None:
        _, window = parse_data_range(data_range)
        if window is not None:
            p, t = p.clamp(*window), t.clamp(*window)
    return masked_mean((p - t).abs(), m)


def psnr(
    pred: ArrayLike,
    target: ArrayLike,
    data_range: DataRange,
    mask: Optional[ArrayLike] = None,
) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(R^2 / MSE)`` with the MSE taken over the mask.

    Args:
        pred: predicted image or volume (2D or 3D).
        target: reference of the same shape.
        data_range: the fixed range ``R`` (float), or a window ``(low, high)`` that clips both images and
            gives ``R = high - low``. Never inferred from the data.
        mask: voxels to include (bool, or numeric ``> 0``); all voxels when None.

    Returns:
        A 0-d float64 tensor in dB (``inf`` for identical images).
    """
    p, t, m = check_images(pred, target, mask)
    r, window = parse_data_range(data_range)
    if window is not None:
        p, t = p.clamp(*window), t.clamp(*window)
    mse = masked_mean((p - t) ** 2, m)
    return 10.0 * torch.log10(r**2 / mse)


# ----------------------------------------------------------------------------------------------------
# SSIM


class LocalMoments(NamedTuple):
    """Windowed first and second moments of two images (the ingredients of SSIM).

    Args:
        mean_x: local mean of x.
        mean_y: local mean of y.
        var_x: local variance of x.
        var_y: local variance of y.
        cov_xy: local covariance of x and y.
    """

    mean_x: Tensor
    mean_y: Tensor
    var_x: Tensor
    var_y: Tensor
    cov_xy: Tensor


def _gaussian_taps(sigma: float) -> list[float]:
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)  # as scipy.ndimage.gaussian_filter
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return (phi / phi.sum()).tolist()


def _window_taps(gaussian: bool, sigma: float, win_size: Optional[int]) -> tuple[list[float], int]:
    """1D filter taps and the window size used for the border crop and the covariance normalisation."""
    if gaussian:
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma: must be a positive number, got {sigma!r}")
        taps = _gaussian_taps(sigma)
        if win_size is not None and win_size != len(taps):
            raise ValueError(
                f"win_size: with gaussian=True the window is set by sigma ({len(taps)} taps for "
                f"sigma={sigma}); got win_size={win_size}. Leave win_size=None or use gaussian=False."
            )
        return taps, len(taps)
    size = 7 if win_size is None else int(win_size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"win_size: must be a positive odd integer, got {win_size!r}")
    return [1.0 / size] * size, size


def _reflect_indices(n: int, radius: int, device: torch.device) -> Tensor:
    """Indices of scipy's ``mode='reflect'`` extension (d c b a | a b c d | d c b a) by ``radius``."""
    idx = torch.arange(-radius, n + radius, device=device)
    idx = torch.remainder(idx, 2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _correlate_axis(x: Tensor, taps: list[float], axis: int) -> Tensor:
    n = x.shape[axis]
    radius = (len(taps) - 1) // 2
    xp = x.index_select(axis, _reflect_indices(n, radius, x.device))
    out = xp.narrow(axis, 0, n) * taps[0]
    for j in range(1, len(taps)):
        out.add_(xp.narrow(axis, j, n), alpha=taps[j])
    return out


def _separable_filter(x: Tensor, taps: list[float]) -> Tensor:
    for axis in range(x.ndim):
        x = _correlate_axis(x, taps, axis)
    return x


def local_moments(
    x: Tensor,
    y: Tensor,
    *,
    gaussian: bool = True,
    sigma: float = 1.5,
    win_size: Optional[int] = None,
    sample_covariance: bool = False,
) -> LocalMoments:
    """Windowed means, variances and covariance of two float tensors, as skimage's SSIM computes them.

    Args:
        x: first image (float64 tensor, any number of dimensions).
        y: second image of the same shape.
        gaussian: Gaussian weights (truncated at 3.5 sigma) instead of a uniform window.
        sigma: Gaussian standard deviation in voxels.
        win_size: uniform window size (odd, default 7); must be None or match the Gaussian's taps.
        sample_covariance: scale (co)variances by ``NP / (NP - 1)`` with ``NP = win_size ** ndim``.
    """
    taps, size = _window_taps(gaussian, sigma, win_size)
    n_points = size**x.ndim
    norm = n_points / (n_points - 1) if sample_covariance else 1.0
    mx = _separable_filter(x, taps)
    my = _separable_filter(y, taps)
    # in place where possible: whole CT volumes are large and everything here is float64
    vx = _separable_filter(x * x, taps).addcmul_(mx, mx, value=-1.0)
    vy = _separable_filter(y * y, taps).addcmul_(my, my, value=-1.0)
    cxy = _separable_filter(x * y, taps).addcmul_(mx, my, value=-1.0)
    if norm != 1.0:
        for v in (vx, vy, cxy):
            v.mul_(norm)
    return LocalMoments(mx, my, vx, vy, cxy)


def _ssim_window_size(gaussian: bool, sigma: float, win_size: Optional[int]) -> int:
    return _window_taps(gaussian, sigma, win_size)[1]


def _prepare_ssim(
    pred: ArrayLike,
    target: ArrayLike,
    data_range: DataRange,
    mask: Optional[ArrayLike],
    win: int,
) -> tuple[Tensor, Tensor, Optional[Tensor], float]:
    p, t, m = check_images(pred, target, mask)
    if any(s < win for s in p.shape):
        raise ValueError(
            f"pred: shape {tuple(p.shape)} is smaller than the SSIM window ({win}) along some axis"
        )
    r, window = parse_data_range(data_range)
    if window is not None:
        p, t = p.clamp(*window) - window[0], t.clamp(*window) - window[0]
    return p, t, m, r


def ssim_map(
    pred: ArrayLike,
    target: ArrayLike,
    data_range: DataRange,
    *,
    gaussian: bool = True,
    sigma: float = 1.5,
    win_size: Optional[int] = None,
    k1: float = 0.01,
    k2: float = 0.03,
    sample_covariance: bool = False,
) -> Tensor:
    """Full (uncropped) SSIM map, equal to skimage's ``structural_similarity(..., full=True)[1]``.

    Args:
        pred: predicted image or volume (2D or 3D).
        target: reference of the same shape.
        data_range: fixed range ``R`` (float) or window ``(low, high)`` (clips, then measures from low).
        gaussian: Gaussian window (default) or uniform window.
        sigma: Gaussian standard deviation in voxels.
        win_size: uniform window size (odd, default 7); leave None with ``gaussian=True``.
        k1: luminance constant, ``C1 = (k1 R)^2``.
        k2: contrast constant, ``C2 = (k2 R)^2``.
        sample_covariance: use ``NP / (NP - 1)`` normalised (co)variances (skimage's default) instead of
            population ones (Wang et al.).

    Returns:
        A float64 tensor of the images' shape.
    """
    win = _ssim_window_size(gaussian, sigma, win_size)
    p, t, _, r = _prepare_ssim(pred, target, data_range, None, win)
    return _ssim_map_from(p, t, r, gaussian, sigma, win_size, k1, k2, sample_covariance)


def _ssim_map_from(
    p: Tensor,
    t: Tensor,
    r: float,
    gaussian: bool,
    sigma: float,
    win_size: Optional[int],
    k1: float,
    k2: float,
    sample_covariance: bool,
) -> Tensor:
    if k1 < 0 or k2 < 0:
        raise ValueError(f"k1, k2: must be non-negative, got k1={k1}, k2={k2}")
    mom = local_moments(
        p, t, gaussian=gaussian, sigma=sigma, win_size=win_size, sample_covariance=sample_covariance
    )
    c1 = (k1 * r) ** 2
    c2 = (k2 * r) ** 2
    mx, my, vx, vy, cxy = mom  # owned here: combined in place to bound peak memory
    num = (mx * my).mul_(2.0).add_(c1).mul_(cxy.mul_(2.0).add_(c2))
    den = mx.square_().add_(my.square_()).add_(c1).mul_(vx.add_(vy).add_(c2))
    return num.div_(den)


def ssim(
    pred: ArrayLike,
    target: ArrayLike,
    data_range: DataRange,
    mask: Optional[ArrayLike] = None,
    *,
    gaussian: bool = True,
    sigma: float = 1.5,
    win_size: Optional[int] = None,
    k1: float = 0.01,
    k2: float = 0.03,
    sample_covariance: bool = False,
) -> Tensor:
    """Structural similarity: the SSIM map averaged over the mask after skimage's border crop.

    The default (Gaussian, sigma 1.5, population covariance) is Wang et al.'s SSIM and equals skimage's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` when no mask
    is given. The map is computed on the whole image; with a mask, only its mean is restricted.

    Args:
        pred: predicted image or volume (2D or 3D), at least ``win_size`` voxels along every axis.
        target: reference of the same shape.
        data_range: fixed range ``R`` (float) or window ``(low, high)`` (clips, then measures from low).
        mask: voxels whose SSIM values are averaged (bool, or numeric ``> 0``); all when None.
        gaussian: Gaussian window (default) or uniform window.
        sigma: Gaussian standard deviation in voxels.
        win_size: uniform window size (odd, default 7); leave None with ``gaussian=True``.
        k1: luminance constant, ``C1 = (k1 R)^2``.
        k2: contrast constant, ``C2 = (k2 R)^2``.
        sample_covariance: skimage's ``use_sample_covariance``.

    Returns:
        A 0-d float64 tensor.
    """
    win = _ssim_window_size(gaussian, sigma, win_size)
    p, t, m, r = _prepare_ssim(pred, target, data_range, mask, win)
    smap = _ssim_map_from(p, t, r, gaussian, sigma, win_size, k1, k2, sample_covariance)
    pad = (win - 1) // 2
    cropped_mask = None if m is None else crop_border(m, pad)
    if cropped_mask is not None and not bool(cropped_mask.any()):
        raise ValueError(
            f"mask: no mask voxel lies inside the SSIM evaluation region (the border of {pad} voxels "
            "is excluded, as in skimage)"
        )
    return masked_mean(crop_border(smap, pad), cropped_mask)
