"""2.5D FID/KID for volumes, and the slice selection behind it (the project's one ``volume_slices``).

* :func:`volume_slices` cuts a volume in [-1, 1] into 2D slices along each axis (optionally reoriented to
  RAS+ from its affine first, so axis 0/1/2 give sagittal/coronal/axial slices), keeping the slices that pass a
  foreground rule and then at most ``max_slices_per_axis`` evenly spaced ones; :func:`slice_indices` names the
  slices that rule keeps along one axis (for callers that cut, window or display the slices themselves).
* :class:`Volume25DFID` is the 2.5D FID: one :class:`~gan.metrics.fid.FrechetInceptionDistance` per axis over
  the slices of every volume, reported per axis and averaged (and, with ``kid=True``, a KID per axis on the same
  features). Grey slices become RGB in the protocol's pre-processing
  (:func:`~gan.metrics.features.preprocess_images` repeats one channel) and are resized to the extractor input,
  so the three planes may have different sizes.

The metric composes the existing FID/KID metrics (no new math). Under DDP every child metric syncs itself; the
per-axis counts are synced sum states of the parent, so all ranks take the same decisions. ``forward()`` is not
supported: use ``update()`` and ``compute()``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from nibabel.orientations import io_orientation
from torch import Tensor, nn

from gan.metrics.features.extractor import FeatureExtractor, extract_features
from gan.metrics.features.protocol import FIDProtocol
from gan.metrics.fid import (
    DEFAULT_MIN_IMAGES_FOR_FID,
    FeatureStats,
    FIDResult,
    FrechetInceptionDistance,
    KernelInceptionDistance,
    KIDResult,
    SharedExtractorMetric,
    SmallSampleFIDWarning,
    fid_is_biased,
)

PathLike = Union[str, Path]

__all__ = [
    "AXIS_PLANES",
    "Volume25DFID",
    "Volume25DFIDResult",
    "slice_indices",
    "volume_slices",
]

#: Anatomical plane of the slices taken along each axis of a RAS+-ordered volume.
AXIS_PLANES: dict[int, str] = {0: "sagittal", 1: "coronal", 2: "axial"}

#: Voxels above this value are foreground: a PNG of the slice would not store them as black (0).
_DEFAULT_FOREGROUND_THRESHOLD = -1.0 + 1.0 / 255.0


# ----------------------------------------------------------------------------------------------
# slicing


def _as_volume(volume: Tensor | np.ndarray, what: str = "volume") -> Tensor:
    """A (I, J, K) float tensor from a (I, J, K) or (1, I, J, K) volume in [-1, 1], checked.

    Args:
        volume: the volume.
        what: how the volume is called in error messages.
    """
    if isinstance(volume, np.ndarray):
        volume = torch.from_numpy(np.ascontiguousarray(volume))
    if not isinstance(volume, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor or numpy array, got {type(volume).__name__}")
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise ValueError(
            f"{what} must be (I, J, K) or (1, I, J, K) (one grey channel), got shape {tuple(volume.shape)}"
        )
    if not volume.is_floating_point():
        raise ValueError(f"{what} must be a float volume in [-1, 1] (windowed by data.intensity), got {volume.dtype}")
    if volume.numel():
        if not torch.isfinite(volume).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        lo, hi = float(volume.min()), float(volume.max())
        if lo < -1.01 or hi > 1.01:
            raise ValueError(
                f"{what} values lie in [{lo:.4g}, {hi:.4g}], not in [-1, 1]: window it first "
                "(data.intensity maps HU/SUV/MR to [-1, 1])"
            )
    return volume


def _reorient_to_ras(volume: Tensor, affine: Tensor | np.ndarray) -> Tensor:
    """Flip and permute the axes of an (I, J, K) volume so they run along R, A and S (closest canonical).

    Args:
        volume: (I, J, K) volume.
        affine: its 4x4 voxel-to-RAS+ matrix.
    """
    a = affine.detach().cpu().numpy() if isinstance(affine, Tensor) else np.asarray(affine)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {a.shape}")
    ornt = io_orientation(a.astype(np.float64))
    if np.isnan(ornt).any():
        raise ValueError(f"affine {a.tolist()} is degenerate: its axes do not map to R/A/S directions")
    flips = [int(i) for i in range(3) if ornt[i, 1] < 0]
    if flips:
        volume = torch.flip(volume, dims=flips)
    # input axis i goes to output axis ornt[i, 0]; output axis j reads input axis argsort(...)[j]
    return volume.permute(*[int(i) for i in np.argsort(ornt[:, 0])])


def _evenly_spaced(n: int, m: int | None) -> np.ndarray:
    """Indices of ``m`` of ``n`` items at the centres of ``m`` equal bins (all ``n`` if ``m`` is None or >= n).

    Args:
        n: number of items.
        m: how many to keep.
    """
    if m is None or m >= n:
        return np.arange(n)
    return np.floor((np.arange(m) + 0.5) * n / m).astype(np.int64)


def _check_selection(
    axes: Sequence[int], max_slices_per_axis: int | None, min_foreground: float | None
) -> tuple[int, ...]:
    """Validate the slice-selection settings and return the axes as a tuple of ints.

    Args:
        axes: slicing axes.
        max_slices_per_axis: at most this many slices per axis, or None.
        min_foreground: minimum foreground fraction, or None.
    """
    axes = tuple(int(a) for a in axes)
    if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"axes must be distinct values among 0, 1, 2, got {axes}")
    if max_slices_per_axis is not None and int(max_slices_per_axis) < 1:
        raise ValueError(f"max_slices_per_axis must be >= 1 or None, got {max_slices_per_axis}")
    if min_foreground is not None and not 0.0 <= float(min_foreground) <= 1.0:
        raise ValueError(f"min_foreground must be a fraction in [0, 1] or None, got {min_foreground}")
    return axes


def _select(
    stack: Tensor, max_slices: int | None, min_foreground: float | None, foreground_threshold: float
) -> np.ndarray:
    """Indices along dim 0 of ``stack`` kept by the foreground rule, then evenly spaced."""
    candidates = np.arange(stack.shape[0])
    if min_foreground is not None:
        fraction = (stack > foreground_threshold).flatten(1).double().mean(dim=1).cpu().numpy()
        candidates = candidates[fraction >= float(min_foreground)]
    return candidates[_evenly_spaced(len(candidates), max_slices)]


def slice_indices(
    volume: Tensor | np.ndarray,
    axis: int,
    *,
    max_slices: int | None = None,
    min_foreground: float | None = None,
    foreground_threshold: float = _DEFAULT_FOREGROUND_THRESHOLD,
) -> np.ndarray:
    """Indices of the slices along ``axis`` that :func:`volume_slices` keeps (same rule, in array order).

    Args:
        volume: (I, J, K) or (1, I, J, K) float volume already windowed to [-1, 1].
        axis: 0, 1 or 2.
        max_slices: keep at most this many, evenly spaced among the eligible ones; None keeps all.
        min_foreground: keep only slices with at least this fraction of voxels above ``foreground_threshold``.
        foreground_threshold: voxels above this value count as foreground.
    """
    vol = _as_volume(volume)
    (axis,) = _check_selection((axis,), max_slices, min_foreground)
    return _select(vol.movedim(axis, 0), max_slices, min_foreground, foreground_threshold)


def volume_slices(
    volume: Tensor | np.ndarray,
    *,
    axes: Sequence[int] = (0, 1, 2),
    max_slices_per_axis: int | None = None,
    min_foreground: float | None = None,
    foreground_threshold: float = _DEFAULT_FOREGROUND_THRESHOLD,
    affine: Tensor | np.ndarray | None = None,
) -> dict[int, Tensor]:
    """2D slices of a volume along each axis, as (N, 1, H, W) image batches for FID.

    Slicing along axis 0 gives ``volume[i, :, :]`` (J x K images), along axis 1 ``volume[:, j, :]`` and along
    axis 2 ``volume[:, :, k]``, in index order. For a RAS+-ordered volume (or with ``affine`` given) axis 0/1/2
    are the sagittal/coronal/axial planes (see :data:`AXIS_PLANES`).

    Args:
        volume: (I, J, K) or (1, I, J, K) float volume already windowed to [-1, 1].
        axes: which axes to slice along (a subset of 0, 1, 2).
        max_slices_per_axis: keep at most this many slices per axis, evenly spaced (the centres of equal bins)
            among the eligible ones; None keeps all.
        min_foreground: keep only slices whose fraction of foreground voxels is at least this (in [0, 1]);
            None keeps all. Applied before ``max_slices_per_axis``.
        foreground_threshold: voxels above this value count as foreground (default: not black once quantised
            to uint8).
        affine: 4x4 voxel-to-RAS+ matrix; when given, the volume is first flipped/permuted to the closest
            RAS+ orientation (as ``nibabel.as_closest_canonical``) so the axes are anatomical planes.

    Returns:
        ``{axis: (N_axis, 1, H, W) tensor}`` (views of the volume where possible).
    """
    vol = _as_volume(volume)
    axes = _check_selection(axes, max_slices_per_axis, min_foreground)
    if affine is not None:
        vol = _reorient_to_ras(vol, affine)
    out: dict[int, Tensor] = {}
    for axis in axes:
        stack = vol.movedim(axis, 0)  # (n, H, W) view
        keep = _select(stack, max_slices_per_axis, min_foreground, foreground_threshold)
        if len(keep) == stack.shape[0]:
            out[axis] = stack.unsqueeze(1)
        else:
            out[axis] = stack[torch.as_tensor(keep, dtype=torch.long, device=stack.device)].unsqueeze(1)
    return out


# ----------------------------------------------------------------------------------------------
# 2.5D FID


@dataclass
class Volume25DFIDResult:
    """2.5D FID: one FID per slicing axis and their mean.

    Args:
        mean: mean of the per-axis FIDs (the 2.5D FID).
        per_axis: ``{axis: FIDResult}`` (each with its own ``n_real``/``n_fake`` slice counts).
        fid_biased: ``{axis: bool}``, True where an axis had fewer than ``min_images_for_fid`` slices.
        protocol: protocol record plus the 2.5D settings (axes, planes, orientation, slice selection,
            numbers of volumes and slices).
        kid_mean: mean of the per-axis KIDs (the 2.5D KID), when the metric was built with ``kid=True``.
        kid_per_axis: ``{axis: KIDResult}`` on the same slices, when built with ``kid=True``.
    """

    mean: float
    per_axis: dict[int, FIDResult]
    fid_biased: dict[int, bool]
    protocol: dict[str, Any] = field(default_factory=dict)
    kid_mean: float | None = None
    kid_per_axis: dict[int, KIDResult] | None = None

    def __float__(self) -> float:
        return float(self.mean)


class Volume25DFID(SharedExtractorMetric):
    """2.5D FID for volumes: FID over the sagittal, coronal and axial slices of real vs generated volumes.

    Every volume given to ``update`` is cut by :func:`volume_slices`; the slices of each axis go to that axis's
    :class:`FrechetInceptionDistance` (one shared extractor, fed in chunks of ``batch_size``). ``compute``
    returns each axis's FID and their mean. With ``kid=True`` each axis also gets a
    :class:`KernelInceptionDistance` fed the same features (extracted once), the unbiased choice for the few
    hundred slices of a validation set. Volumes must already be windowed to [-1, 1] (``data.intensity``);
    real and generated volumes must be windowed the same way.

    Args:
        extractor: feature extractor shared by the axes; None loads :class:`FIDInceptionV3` from the hub cache.
        protocol: ``"pytorch-fid"`` (default) or ``"clean"``.
        axes: slicing axes (subset of 0, 1, 2).
        max_slices_per_axis: per volume, keep at most this many evenly spaced slices per axis (None: all).
        min_foreground: per volume, keep only slices with at least this fraction of foreground (None: all).
            The rule is applied to real and generated volumes alike.
        foreground_threshold: voxel value above which a voxel is foreground.
        reorient_to_ras: if True, ``update`` requires each volume's affine and reorients it to RAS+ first, so
            axis 0/1/2 are the sagittal/coronal/axial planes whatever the storage order; if False, volumes are
            sliced in array order (and an affine is refused, to keep one convention per metric).
        batch_size: slices fed to the extractor at once.
        min_images_for_fid: an axis with fewer real or generated slices is flagged ``fid_biased`` with a warning.
        real_stats: cached per-axis statistics of the real set (``{axis: FeatureStats or .npz path}``), or None.
        reset_real_features: whether ``reset()`` also clears the accumulated real slices.
        kid: also compute KID per axis on the same features (not with ``real_stats``: KID needs real features).
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size (reduced with a warning when an axis has fewer slices).
        kid_seed: seed of the KID subset draws.
        kwargs: torchmetrics ``Metric`` options (passed to the per-axis metrics too).
    """

    real_volumes: Tensor
    fake_volumes: Tensor
    real_slices: Tensor
    fake_slices: Tensor

    def __init__(
        self,
        *,
        extractor: FeatureExtractor | None = None,
        protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID,
        axes: Sequence[int] = (0, 1, 2),
        max_slices_per_axis: int | None = None,
        min_foreground: float | None = None,
        foreground_threshold: float = _DEFAULT_FOREGROUND_THRESHOLD,
        reorient_to_ras: bool = False,
        batch_size: int = 32,
        min_images_for_fid: int = DEFAULT_MIN_IMAGES_FOR_FID,
        real_stats: Mapping[int, FeatureStats | PathLike] | None = None,
        reset_real_features: bool = True,
        kid: bool = False,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        kid_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(extractor=extractor, **kwargs)
        self.axes = _check_selection(axes, max_slices_per_axis, min_foreground)
        if kid and real_stats:
            raise ValueError("kid=True needs the real slices' features; it cannot be combined with cached real_stats")
        self.protocol = FIDProtocol(protocol)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(min_images_for_fid) < 2:
            raise ValueError(f"min_images_for_fid must be >= 2, got {min_images_for_fid}")
        real_stats = dict(real_stats or {})
        unknown = sorted(set(real_stats) - set(self.axes))
        if unknown:
            raise ValueError(f"real_stats has axes {unknown} that are not among the metric's axes {self.axes}")
        if real_stats and set(real_stats) != set(self.axes):
            raise ValueError(
                f"real_stats must cover every axis {self.axes} or none, got axes {sorted(real_stats)}"
            )
        self.max_slices_per_axis = None if max_slices_per_axis is None else int(max_slices_per_axis)
        self.min_foreground = None if min_foreground is None else float(min_foreground)
        self.foreground_threshold = float(foreground_threshold)
        self.reorient_to_ras = bool(reorient_to_ras)
        self.batch_size = int(batch_size)
        self.min_images_for_fid = int(min_images_for_fid)
        self.reset_real_features = bool(reset_real_features)
        self.axis_metrics = nn.ModuleList(
            FrechetInceptionDistance(
                extractor=self._extractor,
                protocol=protocol,
                real_stats=real_stats.get(axis),
                reset_real_features=reset_real_features,
                **kwargs,
            )
            for axis in self.axes
        )
        self.axis_kid = nn.ModuleList(
            KernelInceptionDistance(extractor=self._extractor, protocol=protocol, subsets=kid_subsets,
                                    subset_size=kid_subset_size, seed=kid_seed, reset_real_features=reset_real_features,
                                    **kwargs)
            for axis in (self.axes if kid else ())
        )  # fmt: skip
        self.add_state("real_volumes", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("fake_volumes", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("real_slices", torch.zeros(len(self.axes), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("fake_slices", torch.zeros(len(self.axes), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, volume: Tensor, real: bool, affine: Tensor | np.ndarray | None = None) -> None:
        """Add one volume, or a batch of volumes, to the real or generated set.

        Args:
            volume: (I, J, K), (1, I, J, K) or a batch (B, 1, I, J, K), float in [-1, 1].
            real: True for real volumes, False for generated ones.
            affine: 4x4 voxel-to-RAS+ matrix (or (B, 4, 4) for a batch); required when ``reorient_to_ras``,
                refused otherwise.
        """
        if not isinstance(volume, Tensor):
            raise ValueError(f"volume must be a torch.Tensor, got {type(volume).__name__}")
        if self.reorient_to_ras and affine is None:
            raise ValueError("this metric reorients volumes to RAS+ (reorient_to_ras=True): pass each volume's affine")
        if not self.reorient_to_ras and affine is not None:
            raise ValueError(
                "an affine was given but reorient_to_ras=False: volumes are sliced in array order; build the "
                "metric with reorient_to_ras=True to slice anatomical planes"
            )
        if volume.ndim == 5:
            if volume.shape[1] != 1:
                raise ValueError(f"a batch of volumes must be (B, 1, I, J, K), got shape {tuple(volume.shape)}")
            volumes = list(volume)
            affines: list[Any] = [None] * len(volumes)
            if affine is not None:
                aff = torch.as_tensor(affine)
                if aff.shape != (len(volumes), 4, 4):
                    raise ValueError(
                        f"a batch of {len(volumes)} volumes needs affines of shape (B, 4, 4), got {tuple(aff.shape)}"
                    )
                affines = list(aff)
        else:
            volumes, affines = [volume], [affine]
        if real and any(m._real_stats is not None for m in self.axis_metrics):
            raise ValueError("this metric was given cached real_stats; update(real=True) would mix two real sets")
        # check every volume before adding any, so a bad volume leaves the metric unchanged
        volumes = [_as_volume(vol, "volume" if len(volumes) == 1 else f"volume {i} of the batch")
                   for i, vol in enumerate(volumes)]  # fmt: skip
        prefix = "real" if real else "fake"
        for vol, aff in zip(volumes, affines):
            slices = volume_slices(
                vol,
                axes=self.axes,
                max_slices_per_axis=self.max_slices_per_axis,
                min_foreground=self.min_foreground,
                foreground_threshold=self.foreground_threshold,
                affine=aff,
            )
            counts = torch.zeros(len(self.axes), dtype=torch.long)
            for k, axis in enumerate(self.axes):
                images = slices[axis]
                counts[k] = images.shape[0]
                for start in range(0, images.shape[0], self.batch_size):
                    chunk = images[start : start + self.batch_size]
                    if len(self.axis_kid):  # one feature pass for both metrics
                        feats = extract_features(chunk, self._extractor, self.protocol)
                        self.axis_metrics[k].update(feats, real=real, precomputed=True)
                        self.axis_kid[k].update(feats, real=real, precomputed=True)
                    else:
                        self.axis_metrics[k].update(chunk, real=real)
            setattr(self, f"{prefix}_slices", getattr(self, f"{prefix}_slices") + counts.to(self.real_slices.device))
            setattr(self, f"{prefix}_volumes", getattr(self, f"{prefix}_volumes") + 1)

    def real_stats(self) -> dict[int, FeatureStats]:
        """Per-axis statistics of the real slices (synced across DDP ranks), e.g. to cache with ``.save(path)``."""
        return {axis: m.real_stats() for axis, m in zip(self.axes, self.axis_metrics)}

    def compute(self) -> Volume25DFIDResult:
        """Per-axis FID, their mean, and the protocol (with counts of volumes and slices)."""
        has_cached_real = [m._real_stats is not None for m in self.axis_metrics]
        for k, axis in enumerate(self.axes):
            n_real, n_fake = int(self.real_slices[k]), int(self.fake_slices[k])
            if (n_real < 2 and not has_cached_real[k]) or n_fake < 2:
                raise ValueError(
                    f"2.5D FID: axis {axis} ({AXIS_PLANES[axis]}) has {n_real} real and {n_fake} generated slices; "
                    "FID needs at least 2 of each (check min_foreground and that update() saw real and fake volumes)"
                )
        per_axis = {axis: m.compute() for axis, m in zip(self.axes, self.axis_metrics)}
        biased: dict[int, bool] = {}
        for axis, res in per_axis.items():
            n_real, n_fake = res.protocol["n_real"], res.protocol["n_fake"]
            biased[axis] = fid_is_biased(n_real, n_fake, self.min_images_for_fid)
            if biased[axis]:
                warnings.warn(
                    f"2.5D FID: axis {axis} ({AXIS_PLANES[axis]}) has {n_real} real and {n_fake} generated slices, "
                    f"fewer than min_images_for_fid={self.min_images_for_fid}; FID is biased at this size, "
                    "compare KID on the same slices instead",
                    SmallSampleFIDWarning,
                    stacklevel=3,
                )
        first = next(iter(per_axis.values())).protocol
        protocol = {k: v for k, v in first.items() if k not in ("n_real", "n_fake")}
        protocol.update(
            {
                "fid_kind": "2.5D",
                "axes": list(self.axes),
                "planes": [AXIS_PLANES[a] for a in self.axes],
                "orientation": "RAS+ from each volume's affine" if self.reorient_to_ras else "array order",
                "max_slices_per_axis": self.max_slices_per_axis,
                "min_foreground": self.min_foreground,
                "foreground_threshold": self.foreground_threshold,
                "n_real_volumes": None if all(has_cached_real) else int(self.real_volumes),
                "n_fake_volumes": int(self.fake_volumes),
                "n_real_slices": {a: r.protocol["n_real"] for a, r in per_axis.items()},
                "n_fake_slices": {a: r.protocol["n_fake"] for a, r in per_axis.items()},
                "min_images_for_fid": self.min_images_for_fid,
            }
        )
        mean = float(np.mean([r.value for r in per_axis.values()]))
        kid_per_axis = {axis: m.compute() for axis, m in zip(self.axes, self.axis_kid)} if len(self.axis_kid) else None
        kid_mean = float(np.mean([r.mean for r in kid_per_axis.values()])) if kid_per_axis else None
        return Volume25DFIDResult(mean=mean, per_axis=per_axis, fid_biased=biased, protocol=protocol,
                                  kid_mean=kid_mean, kid_per_axis=kid_per_axis)

    def reset(self) -> None:
        """Clear the states (the real ones only if ``reset_real_features``)."""
        for m in list(self.axis_metrics) + list(self.axis_kid):
            m.reset()
        if self.reset_real_features:
            super().reset()
        else:
            self._reset_own_states(keep=("real_volumes", "real_slices"))
