"""Per-patient metrics on a whole reassembled volume in physical units, and lesion SUV errors.

``volume_metrics`` scores ONE patient's volume; average the returned values over patients (never over
slices or patches) -- ``gan.metrics.VolumeMetrics`` does that across DDP ranks. Protocols:

* ``"default"``: MAE over the mask on unclipped values; PSNR over the mask with both volumes clipped to
  the evaluation window and ``R = high - low``; Gaussian SSIM (sigma 1.5, population covariance, as
  Wang et al. and skimage with ``gaussian_weights=True, use_sample_covariance=False``) on the clipped
  volume measured from ``low``, its map averaged over the mask after skimage's 5-voxel border crop
  (see ``gan.metrics.image``). Window default: the CT window [-1024, 3000] HU.
* ``"synthrad2023"`` / ``"synthrad2025"``: the challenges' evaluation code, step by step
  (see ``gan.metrics.synthrad``), windows [-1024, 3000] and [-1024, 3071].

Every step is per-axis and identical along each axis, so a volume given as z-y-x or x-y-z (transposed,
with its mask transposed the same way) gets the same numbers.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, Union, get_args

import numpy as np
from scipy import ndimage
from torch import Tensor

from gan.metrics.image import ArrayLike, DataRange, check_images, mae, parse_data_range, psnr, ssim
from gan.metrics.synthrad import (
    SYNTHRAD2023_WINDOW,
    SYNTHRAD2025_WINDOW,
    synthrad2023_metrics,
    synthrad2025_metrics,
)

Protocol = Literal["default", "synthrad2023", "synthrad2025"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)

CT_EVAL_WINDOW: tuple[float, float] = (-1024.0, 3000.0)
"""Default evaluation window of the ``"default"`` protocol (HU)."""

__all__ = [
    "CT_EVAL_WINDOW",
    "PROTOCOLS",
    "Protocol",
    "default_data_range",
    "lesion_suv_errors",
    "metric_names",
    "volume_metric_tensors",
    "volume_metrics",
]


def _check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def default_data_range(protocol: Protocol) -> tuple[float, float]:
    """The evaluation window a protocol uses when ``data_range`` is not given.

    Args:
        protocol: ``"default"``, ``"synthrad2023"`` or ``"synthrad2025"``.
    """
    _check_protocol(protocol)
    if protocol == "synthrad2025":
        return SYNTHRAD2025_WINDOW
    if protocol == "synthrad2023":
        return SYNTHRAD2023_WINDOW
    return CT_EVAL_WINDOW


def metric_names(protocol: Protocol) -> tuple[str, ...]:
    """Keys of the dict ``volume_metrics`` returns for a protocol.

    Args:
        protocol: ``"default"``, ``"synthrad2023"`` or ``"synthrad2025"``.
    """
    _check_protocol(protocol)
    return ("mae", "psnr", "ms_ssim") if protocol == "synthrad2025" else ("mae", "psnr", "ssim")


def volume_metric_tensors(
    pred: ArrayLike,
    target: ArrayLike,
    mask: Optional[ArrayLike] = None,
    *,
    protocol: Protocol = "default",
    data_range: Optional[DataRange] = None,
) -> dict[str, Tensor]:
    """Like ``volume_metrics`` but returns 0-d float64 tensors on the inputs' device (no host sync).

    Args:
        pred: predicted volume in physical units.
        target: reference volume, same shape.
        mask: body mask (bool, or numeric ``> 0``); whole volume when None.
        protocol: ``"default"``, ``"synthrad2023"`` or ``"synthrad2025"``.
        data_range: evaluation window ``(low, high)``, or a float range for the default protocol (no
            clipping); None uses the protocol's window.
    """
    _check_protocol(protocol)
    dr = default_data_range(protocol) if data_range is None else data_range
    if protocol == "default":
        parse_data_range(dr)
        p, t, m = check_images(pred, target, mask)
        return {"mae": mae(p, t, None, m), "psnr": psnr(p, t, dr, m), "ssim": ssim(p, t, dr, m)}
    if not isinstance(dr, (tuple, list)):
        raise ValueError(
            f"data_range: protocol {protocol!r} needs a (low, high) window, got {dr!r}"
        )
    if protocol == "synthrad2023":
        return synthrad2023_metrics(pred, target, mask, window=dr)
    return synthrad2025_metrics(pred, target, mask, window=dr)


def volume_metrics(
    pred: ArrayLike,
    target: ArrayLike,
    mask: Optional[ArrayLike] = None,
    *,
    protocol: Protocol = "default",
    data_range: Optional[DataRange] = None,
) -> dict[str, float]:
    """MAE, PSNR and SSIM (or MS-SSIM for SynthRAD2025) of ONE patient's whole volume.

    Args:
        pred: predicted volume in physical units (numpy or torch; z-y-x or x-y-z alike).
        target: reference volume, same shape and axis order.
        mask: body mask (bool, or numeric ``> 0``); whole volume when None.
        protocol: ``"default"``, ``"synthrad2023"`` or ``"synthrad2025"`` (module docstring).
        data_range: evaluation window ``(low, high)``; None uses the protocol's window
            ([-1024, 3000] for default and 2023, [-1024, 3071] for 2025). The default protocol also
            accepts a float range (no clipping). Never inferred from the data.

    Returns:
        ``{"mae", "psnr", "ssim"}``, or ``{"mae", "psnr", "ms_ssim"}`` for ``"synthrad2025"``.
    """
    out = volume_metric_tensors(pred, target, mask, protocol=protocol, data_range=data_range)
    return {k: float(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------------
# lesion SUV errors (CT -> PET)

_SUV_KEYS = ("suvmax", "suvmean")


def _suv_errors(pred_max: float, target_max: float, pred_mean: float, target_mean: float) -> dict:
    return {
        "target_suvmax": target_max,
        "pred_suvmax": pred_max,
        "suvmax_abs_error": abs(pred_max - target_max),
        "suvmax_rel_error": abs(pred_max - target_max) / target_max,
        "target_suvmean": target_mean,
        "pred_suvmean": pred_mean,
        "suvmean_abs_error": abs(pred_mean - target_mean),
        "suvmean_rel_error": abs(pred_mean - target_mean) / target_mean,
    }


def lesion_suv_errors(
    pred_suv: ArrayLike,
    target_suv: ArrayLike,
    lesion_mask: ArrayLike,
    *,
    connectivity: int = 2,
) -> dict[str, Union[float, int, list[dict[str, float]]]]:
    """SUVmax and SUVmean errors of a synthetic PET inside lesion masks, overall and per lesion.

    Lesions are the connected components of ``lesion_mask > 0`` (``scipy.ndimage.label``). Relative errors
    are ``|pred - target| / target``.

    Args:
        pred_suv: predicted PET in SUV (2D or 3D).
        target_suv: reference PET in SUV, same shape.
        lesion_mask: lesion segmentation (bool, or numeric ``> 0``).
        connectivity: neighbourhood rank of ``scipy.ndimage.generate_binary_structure``; the default 2 is
            18-connectivity in 3D (autoPET's lesion evaluation) and 8-connectivity in 2D.

    Returns:
        ``num_lesions``; over the whole lesion mask ``target_suvmax``, ``pred_suvmax``,
        ``suvmax_abs_error``, ``suvmax_rel_error`` and the same four for ``suvmean``; and ``lesions``, a
        list of per-lesion dicts with those keys plus ``label`` and ``num_voxels``. With no lesion voxel,
        ``num_lesions`` is 0, the errors are NaN and ``lesions`` is empty.
    """
    p, t, _ = check_images(pred_suv, target_suv, None)
    m = lesion_mask.detach().cpu().numpy() if isinstance(lesion_mask, Tensor) else np.asarray(lesion_mask)
    if m.dtype == object or np.iscomplexobj(m):
        raise ValueError(f"lesion_mask: expected a boolean or numeric array, got dtype {m.dtype}")
    if m.shape != tuple(p.shape):
        raise ValueError(
            f"lesion_mask: shape {m.shape} differs from the PET shape {tuple(p.shape)}"
        )
    if (m < 0).any():
        raise ValueError("lesion_mask: contains negative values; expected a boolean or label mask")
    if not 1 <= connectivity <= m.ndim:
        raise ValueError(f"connectivity: must be between 1 and {m.ndim}, got {connectivity}")
    pn, tn = p.cpu().numpy(), t.cpu().numpy()
    labels, n = ndimage.label(m > 0, structure=ndimage.generate_binary_structure(m.ndim, connectivity))
    nan = math.nan
    if n == 0:
        empty = {f"{kind}_{k}": nan for k in _SUV_KEYS for kind in ("target", "pred")}
        empty.update({f"{k}_{e}_error": nan for k in _SUV_KEYS for e in ("abs", "rel")})
        return {"num_lesions": 0, **empty, "lesions": []}
    index = np.arange(1, n + 1)
    t_max = ndimage.maximum(tn, labels, index)
    p_max = ndimage.maximum(pn, labels, index)
    t_mean = ndimage.mean(tn, labels, index)
    p_mean = ndimage.mean(pn, labels, index)
    sizes = ndimage.sum_labels(np.ones_like(tn), labels, index)
    bad = [int(i) for i, tm, tx in zip(index, t_mean, t_max) if tm <= 0 or tx <= 0]
    if bad:
        raise ValueError(
            f"target_suv: lesion(s) {bad} have target SUVmean or SUVmax <= 0; relative errors are "
            "undefined (is the lesion mask aligned with the PET?)"
        )
    lesions = []
    for i in range(n):
        entry = {"label": int(index[i]), "num_voxels": int(sizes[i])}
        entry.update(_suv_errors(float(p_max[i]), float(t_max[i]), float(p_mean[i]), float(t_mean[i])))
        lesions.append(entry)
    inside = labels > 0
    overall = _suv_errors(
        float(pn[inside].max()), float(tn[inside].max()), float(pn[inside].mean()), float(tn[inside].mean())
    )
    return {"num_lesions": int(n), **overall, "lesions": lesions}
