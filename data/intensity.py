"""Modality intensity windows: physical units <-> network range [-1, 1], with an exact inverse.

* CT: Hounsfield units, window [-1024, 3000] by default.
* PET: SUV, window [0, 20] by default, optionally log-compressed (``log1p``) for high-uptake lesions.
* MR: arbitrary units, per-volume percentile normalisation (0.5, 99.5 by default); the fitted (low, high)
  travel with each sample (:class:`WindowParams`) so the inverse is exact for that volume.

Values inside the window map and map back exactly (to float32 rounding); values outside it are clipped
when ``clip=True`` (the default for training), so only in-window values round-trip.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class WindowParams:
    """The numbers that define one forward/inverse mapping, stored with each sample.

    Args:
        low: physical value mapped to -1.
        high: physical value mapped to +1.
        log: whether values are log1p-compressed before the linear map (PET option).
    """

    low: float
    high: float
    log: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (for manifests and batch collation)."""
        return asdict(self)


def _lib(x: ArrayLike):
    return torch if isinstance(x, torch.Tensor) else np


def to_unit(x: ArrayLike, params: WindowParams, clip: bool = True) -> ArrayLike:
    """Map physical values to [-1, 1] with ``params`` (numpy array or tensor, dtype kept floating).

    Args:
        x: values in physical units.
        params: the window.
        clip: clip to the window first, so the output lies in [-1, 1].
    """
    lib = _lib(x)
    low, high = params.low, params.high
    if clip:
        x = lib.clip(x, low, high)
    if params.log:
        x, low, high = lib.log1p(lib.clip(x, 0, None)), math.log1p(low), math.log1p(high)
    return (x - low) * (2.0 / (high - low)) - 1.0


def from_unit(y: ArrayLike, params: WindowParams) -> ArrayLike:
    """Inverse of :func:`to_unit`: map [-1, 1] back to physical units.

    Args:
        y: network-range values.
        params: the same window used by :func:`to_unit`; or per-sample windows whose ``low``/``high``/``log`` are
            tensors broadcastable against ``y`` (``log`` bool), e.g. shaped ``(N, 1)`` for ``y`` of shape
            ``(N, M)``, to invert a whole batch at once.
    """
    if isinstance(params.log, torch.Tensor):
        low, high = (torch.as_tensor(v, dtype=y.dtype, device=y.device) for v in (params.low, params.high))
        lo = torch.where(params.log, torch.log1p(low), low)
        hi = torch.where(params.log, torch.log1p(high), high)
        x = (y + 1.0) * ((hi - lo) / 2.0) + lo
        return torch.where(params.log, torch.expm1(x), x)
    lib = _lib(y)
    low, high = params.low, params.high
    if params.log:
        low, high = math.log1p(low), math.log1p(high)
    x = (y + 1.0) * ((high - low) / 2.0) + low
    return lib.expm1(x) if params.log else x


@dataclass(frozen=True)
class CTWindow:
    """Fixed Hounsfield-unit window for CT.

    Args:
        low: HU mapped to -1 (default -1024, air).
        high: HU mapped to +1 (default 3000, dense bone/metal).
    """

    low: float = -1024.0
    high: float = 3000.0

    def fit(self, volume: ArrayLike | None = None) -> WindowParams:
        """Window parameters (independent of the volume for CT).

        Args:
            volume: the volume the parameters are fitted to (unused by fixed windows).
        """
        _check_range(self.low, self.high)
        return WindowParams(float(self.low), float(self.high))


@dataclass(frozen=True)
class PETWindow:
    """Fixed SUV window for PET, optionally log-compressed.

    Args:
        low: SUV mapped to -1 (default 0).
        high: SUV mapped to +1 (default 20).
        log: apply log1p before the linear map (keeps contrast among low SUVs, compresses hot lesions).
    """

    low: float = 0.0
    high: float = 20.0
    log: bool = False

    def fit(self, volume: ArrayLike | None = None) -> WindowParams:
        """Window parameters (independent of the volume for PET).

        Args:
            volume: the volume the parameters are fitted to (unused by fixed windows).
        """
        _check_range(self.low, self.high)
        if self.log and self.low < 0:
            raise ValueError(f"log PET window needs low >= 0, got {self.low}")
        return WindowParams(float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class MRPercentileWindow:
    """Per-volume percentile normalisation for MR (arbitrary units).

    Args:
        lower: lower percentile mapped to -1 (default 0.5).
        upper: upper percentile mapped to +1 (default 99.5).
        foreground_only: compute percentiles over voxels > 0 only (ignores the air background).
    """

    lower: float = 0.5
    upper: float = 99.5
    foreground_only: bool = False

    def fit(self, volume: ArrayLike | None = None) -> WindowParams:
        """Percentiles of ``volume`` as window parameters; they must travel with the sample.

        Args:
            volume: the MR volume whose percentiles become the window (required).
        """
        if volume is None:
            raise ValueError("MRPercentileWindow.fit needs the volume to compute its percentiles")
        if not 0 <= self.lower < self.upper <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.lower}, {self.upper}")
        v = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
        v = v[v > 0] if self.foreground_only else v.ravel()
        if v.size == 0:
            raise ValueError("MR volume has no foreground voxels to normalise")
        low, high = (float(p) for p in np.percentile(v, [self.lower, self.upper]))
        if not high > low:
            high = low + 1.0  # constant image: any non-degenerate window maps it to -1 and back exactly
        return WindowParams(low, high)


Window = CTWindow | PETWindow | MRPercentileWindow


def default_window(modality: str) -> Window:
    """The project's default window for a DICOM modality code (``CT``, ``MR``, ``PT``).

    Args:
        modality: ``"CT"``, ``"MR"`` or ``"PT"``.
    """
    if modality == "CT":
        return CTWindow()
    if modality == "PT":
        return PETWindow()
    if modality == "MR":
        return MRPercentileWindow()
    raise ValueError(f"no default intensity window for modality {modality!r} (expected CT, MR or PT)")


def _check_range(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"window needs finite low < high, got ({low}, {high})")


#: Batch key of each image modality -> its DICOM modality code (the one copy; datasets, checkpoints and commands
#: use it).
MODALITY_CODES: dict[str, str] = {"ct": "CT", "mr": "MR", "pet": "PT"}


def modality_windows(
    *,
    ct_window: tuple[float, float] = (-1024.0, 3000.0),
    pet_window: tuple[float, float] = (0.0, 20.0),
    pet_log: bool = False,
    mr_percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[str, Window]:
    """The training window of every modality key, from the settings a volume datamodule takes.

    The volume datamodule builds its windows with this function, and a translation checkpoint (whose datamodule
    settings travel in ``datamodule_hyper_parameters``) rebuilds the same windows with it to translate new volumes.

    Args:
        ct_window: CT window in HU (low, high).
        pet_window: PET window in SUV (low, high).
        pet_log: log-compress PET before windowing.
        mr_percentiles: MR per-volume percentile normalisation (lower, upper).
    """
    return {"ct": CTWindow(*ct_window), "pet": PETWindow(*pet_window, log=pet_log),
            "mr": MRPercentileWindow(*mr_percentiles)}
