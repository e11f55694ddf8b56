"""What one evaluation stage of a translation model scores on whole volumes: the model's metrics, the same metrics
for the trivial baseline beside them, lesion SUV errors for PET, and (optionally) 2.5D FID/KID, as one module.

A translation module holds one :class:`VolumeEvaluation` per stage (``val``, ``test``) instead of parallel metric
attributes. Every part is a torchmetrics ``Metric`` (sums with ``dist_reduce_fx="sum"``), so under DDP each rank
scores its own patients and :meth:`VolumeEvaluation.compute`, called on every rank, returns the totals of all.

The trivial baselines scored beside the model have one definition, :func:`copy_baseline` and
:func:`mean_baseline`, shared by the translation modules and ``medsynth evaluate``.
"""
from __future__ import annotations

import warnings
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from data.intensity import WindowParams, from_unit
from gan.metrics.fid_volume import Volume25DFID
from gan.metrics.image import DataRange
from gan.metrics.patient_average import LesionSUVMetrics, VolumeMetrics
from gan.metrics.volume import Protocol

__all__ = ["VolumeEvaluation", "copy_baseline", "fid_extractor", "mean_baseline"]

#: A volume as a numpy array or a tensor (the baselines return the kind they are given).
VolumeArray = TypeVar("VolumeArray", np.ndarray, Tensor)


def copy_baseline(source_unit: VolumeArray, target_window: WindowParams) -> VolumeArray:
    """The ``copy`` baseline: the input volume, in network range, read as if it were the target, i.e. mapped to the
    target's physical units through the target's window (:func:`data.intensity.from_unit`), in float64.

    Args:
        source_unit: the source volume in [-1, 1] (through the source's training window).
        target_window: the target's window (for MR, the patient's own percentile window).
    """
    if isinstance(source_unit, Tensor):
        return from_unit(source_unit.double(), target_window)
    return np.asarray(from_unit(np.asarray(source_unit, dtype=np.float64), target_window), dtype=np.float64)


def mean_baseline(mask: VolumeArray, mean: float, background: float) -> VolumeArray:
    """The ``mean`` baseline: the mean training target inside the body, ``background`` (the target window's low
    value) outside, in float64.

    Args:
        mask: body mask (bool, or anything whose nonzero voxels are the body when a numpy array).
        mean: mean training target inside the body, in physical units.
        background: the value outside the body, in physical units.
    """
    if isinstance(mask, Tensor):
        inside = mask.to(torch.bool)
        return torch.where(inside, torch.full_like(inside, mean, dtype=torch.float64),
                           torch.full_like(inside, background, dtype=torch.float64))
    return np.where(np.asarray(mask, dtype=bool), float(mean), float(background)).astype(np.float64)


def fid_extractor(weights: str | None) -> nn.Module | None:
    """The Inception feature extractor named by a ``fid_weights`` setting, or None when FID is off.

    Args:
        weights: None (off), a weights file or folder, ``"hub"`` (torch hub cache) or ``"random"`` (a seeded random
            Inception for smoke tests: its scores compare with nothing, and its protocol record says so).
    """
    if weights is None:
        return None
    from gan.metrics.features import FIDInceptionV3

    if weights == "random":
        return FIDInceptionV3(pretrained=False, seed=0)
    return FIDInceptionV3(weights_path=None if weights == "hub" else weights)


class VolumeEvaluation(nn.Module):
    """Model metrics, baseline metrics, lesion SUV errors and optional 2.5D FID/KID of one stage.

    Args:
        protocol: metric protocol (``"default"``, ``"synthrad2023"``, ``"synthrad2025"``).
        data_range: fixed evaluation window; None when every patient brings its own (MR), passed to :meth:`update`.
        fid_weights: enables 2.5D FID/KID with this Inception (see :func:`fid_extractor`); None disables.
        fid_max_slices: evenly spaced slices per axis and volume fed to the FID extractor.
        extractor: an already built extractor to share between stages (overrides ``fid_weights``).
    """

    def __init__(
        self,
        *,
        protocol: Protocol = "default",
        data_range: DataRange | None = None,
        fid_weights: str | None = None,
        fid_max_slices: int = 32,
        extractor: nn.Module | None = None,
    ) -> None:
        super().__init__()
        metric_range = data_range
        if metric_range is None and protocol == "default":
            metric_range = (0.0, 1.0)  # replaced per patient by the window passed to update()
        self.model = VolumeMetrics(protocol=protocol, data_range=metric_range)
        self.baseline = VolumeMetrics(protocol=protocol, data_range=metric_range)
        self.lesion = LesionSUVMetrics()
        extractor = extractor if extractor is not None else fid_extractor(fid_weights)
        # KID (subsets of up to 100 slices per axis) on the same features: unbiased at validation-set sizes
        self.fid = None if extractor is None else Volume25DFID(
            extractor=extractor, max_slices_per_axis=fid_max_slices, batch_size=16, min_images_for_fid=2,
            kid=True, kid_subsets=50, kid_subset_size=100)

    def update(
        self,
        *,
        pred: Tensor,
        target: Tensor,
        mask: Tensor,
        baseline: Tensor,
        data_range: DataRange | None = None,
        lesion_mask: Tensor | None = None,
        pred_unit: Tensor | None = None,
        target_unit: Tensor | None = None,
    ) -> None:
        """Score one patient.

        Args:
            pred: translated volume in physical units ``(I, J, K)``.
            target: reference volume in physical units.
            mask: body mask (bool).
            baseline: the trivial baseline's volume in physical units.
            data_range: this patient's evaluation window (MR); None uses the fixed one.
            lesion_mask: lesion mask (bool) for PET SUV errors; skipped when None or empty.
            pred_unit: the translation in network range ``(1, I, J, K)``, for FID (needed when FID is on).
            target_unit: the windowed target in network range, for FID.
        """
        self.model.update(pred, target, mask, data_range=data_range)
        self.baseline.update(baseline, target, mask, data_range=data_range)
        if lesion_mask is not None and bool(lesion_mask.any()):
            self.lesion.update(pred, target, lesion_mask)
        if self.fid is not None:
            if pred_unit is None or target_unit is None:
                raise ValueError("VolumeEvaluation with FID needs pred_unit and target_unit (network range volumes)")
            self.fid.update(target_unit.clamp(-1, 1), real=True)
            self.fid.update(pred_unit.clamp(-1, 1), real=False)

    @property
    def num_patients(self) -> int:
        """Patients scored so far on this rank (before any DDP sync)."""
        return int(self.model.num_patients)

    def compute(self) -> dict[str, Tensor]:
        """Patient-averaged metrics as scalar tensors: ``<m>``, ``<m>_std``, ``baseline_<m>``, ``lesion_*`` (when
        lesions were scored), ``fid_2p5d``/``fid_axis<a>``/``kid_2p5d``/``kid_axis<a>`` (when FID is on), and
        ``num_patients``. Call on every rank (torchmetrics syncs the sums)."""
        model = self.model.compute()
        out: dict[str, Tensor] = {k: v for k, v in model.items() if k != "num_patients"}
        out.update({f"baseline_{k}": v for k, v in self.baseline.compute().items() if k != "num_patients"})
        with warnings.catch_warnings():  # no lesion scored on this rank is normal; every rank must still compute
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method")
            lesion = self.lesion.compute()
        if float(lesion["num_patients"]) > 0:
            out.update({f"lesion_{k}": v for k, v in lesion.items() if not k.startswith("num_")})
        out["num_patients"] = model["num_patients"]
        if self.fid is not None:
            with warnings.catch_warnings():  # small validation sets: KID subsets shrink to the set size, as intended
                warnings.filterwarnings("ignore", message="KID: subset_size")
                res = self.fid.compute()
            out["fid_2p5d"] = torch.tensor(float(res.mean))
            out.update({f"fid_axis{a}": torch.tensor(float(r.value)) for a, r in res.per_axis.items()})
            if res.kid_per_axis:
                out["kid_2p5d"] = torch.tensor(float(res.kid_mean))
                out.update({f"kid_axis{a}": torch.tensor(float(r.mean)) for a, r in res.kid_per_axis.items()})
        return out

    def reset(self) -> None:
        """Forget every patient (called after each stage's epoch)."""
        for m in (self.model, self.baseline, self.lesion):
            m.reset()
        if self.fid is not None:
            self.fid.reset()

    def extra_repr(self) -> str:
        """Protocol and whether FID is on (printed with the module)."""
        return f"protocol={self.model.protocol!r}, fid={'on' if self.fid is not None else 'off'}"
