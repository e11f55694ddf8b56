"""Patient averages of the volume metrics: the torchmetrics classes beside their functional twins in ``volume``.

:class:`VolumeMetrics` (MAE, PSNR, SSIM per patient) and :class:`LesionSUVMetrics` (SUVmax/SUVmean errors inside
lesions) average per-patient values over patients, across DDP ranks. Each ``update`` takes ONE patient's whole
volume, scores it with the functional twin in ``gan.metrics.volume`` and adds the values to sums held with
``dist_reduce_fx="sum"``; after DDP sync every rank holds the totals of all patients, so ``compute`` gives the same
patient mean on every rank, whichever rank scored which patient.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor
from torchmetrics import Metric

from gan.metrics.image import ArrayLike, DataRange, parse_data_range
from gan.metrics.volume import (
    Protocol,
    default_data_range,
    lesion_suv_errors,
    metric_names,
    volume_metric_tensors,
)

__all__ = ["LesionSUVMetrics", "VolumeMetrics"]

_SUV_ERRORS = ("suvmax_abs_error", "suvmax_rel_error", "suvmean_abs_error", "suvmean_rel_error")


def _zero() -> Tensor:
    return torch.tensor(0.0, dtype=torch.float64)


class VolumeMetrics(Metric):
    """Patient-averaged MAE, PSNR and SSIM (or MS-SSIM) of whole volumes in physical units.

    ``compute()`` returns, for each metric ``k`` of the protocol, ``k`` (mean over patients) and
    ``k_std`` (population standard deviation over patients, from the sum of squares), plus
    ``num_patients``. Every patient counts once, whatever its size. Before any update the values are NaN.

    Args:
        protocol: ``"default"``, ``"synthrad2023"`` or ``"synthrad2025"`` (see ``gan.metrics.volume``).
        data_range: evaluation window ``(low, high)`` (or a float range for the default protocol);
            None uses the protocol's window. Never inferred from the data.
        kwargs: passed to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``, ``process_group``).
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        *,
        protocol: Protocol = "default",
        data_range: Optional[DataRange] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.names = metric_names(protocol)
        self.protocol = protocol
        self.data_range = default_data_range(protocol) if data_range is None else data_range
        if isinstance(self.data_range, list):
            self.data_range = tuple(self.data_range)
        parse_data_range(self.data_range)
        if protocol != "default" and not isinstance(self.data_range, tuple):
            raise ValueError(
                f"data_range: protocol {protocol!r} needs a (low, high) window, got {data_range!r}"
            )
        for name in self.names:
            self.add_state(f"{name}_sum", default=_zero(), dist_reduce_fx="sum")
            self.add_state(f"{name}_sq_sum", default=_zero(), dist_reduce_fx="sum")
        self.add_state("num_patients", default=_zero(), dist_reduce_fx="sum")

    def update(
        self,
        pred: ArrayLike,
        target: ArrayLike,
        mask: Optional[ArrayLike] = None,
        data_range: Optional[DataRange] = None,
    ) -> None:
        """Score one patient's whole volume and add it to the running sums.

        Args:
            pred: predicted volume in physical units (one patient, no batch axis).
            target: reference volume, same shape.
            mask: body mask (bool, or numeric ``> 0``); whole volume when None.
            data_range: this patient's evaluation window, for modalities without a fixed one (MR in arbitrary
                units is evaluated in each patient's own normalisation window); default: the metric's window.
        """
        values = volume_metric_tensors(
            pred, target, mask, protocol=self.protocol,
            data_range=self.data_range if data_range is None else data_range,
        )
        for name in self.names:
            v = values[name].to(device=self.device, dtype=torch.float64)
            setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + v)
            setattr(self, f"{name}_sq_sum", getattr(self, f"{name}_sq_sum") + v * v)
        self.num_patients = self.num_patients + 1

    def compute(self) -> dict[str, Tensor]:
        """Patient means and standard deviations of each metric, and ``num_patients``."""
        n = self.num_patients
        out: dict[str, Tensor] = {}
        for name in self.names:
            mean = getattr(self, f"{name}_sum") / n
            var = (getattr(self, f"{name}_sq_sum") / n - mean * mean).clamp(min=0)
            out[name] = mean
            out[f"{name}_std"] = var.sqrt()
        out["num_patients"] = n
        return out


class LesionSUVMetrics(Metric):
    """Patient- and lesion-averaged SUVmax/SUVmean errors of synthetic PET inside lesion masks.

    ``compute()`` returns ``suvmax_abs_error``, ``suvmax_rel_error``, ``suvmean_abs_error`` and
    ``suvmean_rel_error`` averaged over patients (each patient's whole lesion mask; patients without
    lesions are skipped), the same four prefixed ``lesion_`` averaged over all connected lesions of all
    patients, and ``num_patients`` / ``num_lesions`` counted. NaN where nothing was counted.

    Args:
        connectivity: lesion connectivity for ``scipy.ndimage.label`` (see ``lesion_suv_errors``).
        kwargs: passed to ``torchmetrics.Metric``.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, *, connectivity: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connectivity = connectivity
        for name in _SUV_ERRORS:
            self.add_state(f"patient_{name}_sum", default=_zero(), dist_reduce_fx="sum")
            self.add_state(f"lesion_{name}_sum", default=_zero(), dist_reduce_fx="sum")
        self.add_state("num_patients", default=_zero(), dist_reduce_fx="sum")
        self.add_state("num_lesions", default=_zero(), dist_reduce_fx="sum")

    def update(self, pred_suv: ArrayLike, target_suv: ArrayLike, lesion_mask: ArrayLike) -> None:
        """Score one patient's PET volume inside its lesion mask.

        Args:
            pred_suv: predicted PET in SUV (one patient).
            target_suv: reference PET in SUV, same shape.
            lesion_mask: lesion segmentation (bool, or numeric ``> 0``).
        """
        res = lesion_suv_errors(pred_suv, target_suv, lesion_mask, connectivity=self.connectivity)
        if res["num_lesions"] == 0:
            return
        for name in _SUV_ERRORS:
            key = f"patient_{name}_sum"
            setattr(self, key, getattr(self, key) + float(res[name]))
            key = f"lesion_{name}_sum"
            setattr(self, key, getattr(self, key) + math.fsum(les[name] for les in res["lesions"]))
        self.num_patients = self.num_patients + 1
        self.num_lesions = self.num_lesions + res["num_lesions"]

    def compute(self) -> dict[str, Tensor]:
        """Patient- and lesion-averaged errors and the counts."""
        out: dict[str, Tensor] = {}
        for name in _SUV_ERRORS:
            out[name] = getattr(self, f"patient_{name}_sum") / self.num_patients
            out[f"lesion_{name}"] = getattr(self, f"lesion_{name}_sum") / self.num_lesions
        out["num_patients"] = self.num_patients
        out["num_lesions"] = self.num_lesions
        return out
