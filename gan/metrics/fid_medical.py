"""Medical FID specifics: 2.5D FID for volumes and per-class FID/KID for conditional generators.

* :func:`volume_slices` cuts a volume in [-1, 1] into 2D slices along each axis (optionally reoriented to
  RAS+ from its affine first, so axis 0/1/2 give sagittal/coronal/axial slices).
* :class:`Volume25DFID` is the 2.5D FID: one :class:`~gan.metrics.fid.FrechetInceptionDistance` per axis over
  the slices of every volume, reported per axis and averaged. Grey slices become RGB in the protocol's
  pre-processing (:func:`~gan.metrics.features.preprocess_images` repeats one channel) and are resized to the
  extractor input, so the three planes may have different sizes.
* :class:`ClassConditionalFID` / :class:`ClassConditionalKID` keep one FID/KID per class label and report
  each class with its numbers of real and generated images plus a macro average over classes. FID is biased
  for small sets (it grows as N shrinks), so a class with fewer than ``min_images_for_fid`` (about 2,000)
  real or generated images is flagged ``fid_biased`` and a :class:`SmallSampleFIDWarning` recommends KID.
  A class seen on one side only is reported as missing rather than failing the whole evaluation.

These metrics compose the existing FID/KID metrics (no new math). Under DDP every child metric syncs itself;
the per-class and per-axis counts are synced sum states of the parent, so all ranks take the same decisions.
``forward()`` is not supported: use ``update()`` and ``compute()``.
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
from torchmetrics import Metric

from gan.metrics.features import FeatureExtractor, FIDInceptionV3, FIDProtocol, extract_features, quantize_uint8
from gan.metrics.fid import (
    FeatureStats,
    FIDResult,
    FrechetInceptionDistance,
    KernelInceptionDistance,
    KIDResult,
)

PathLike = Union[str, Path]

__all__ = [
    "AXIS_PLANES",
    "DEFAULT_MIN_IMAGES_FOR_FID",
    "ClassConditionalFID",
    "ClassConditionalFIDResult",
    "ClassConditionalKID",
    "ClassConditionalKIDResult",
    "ClassFID",
    "ClassKID",
    "MissingClassWarning",
    "SmallSampleFIDWarning",
    "Volume25DFID",
    "Volume25DFIDResult",
    "fid_is_biased",
    "volume_slices",
]

#: Anatomical plane of the slices taken along each axis of a RAS+-ordered volume.
AXIS_PLANES: dict[int, str] = {0: "sagittal", 1: "coronal", 2: "axial"}

#: Below about this many images per set, FID is noticeably biased and KID is the better score.
DEFAULT_MIN_IMAGES_FOR_FID = 2000

#: Voxels above this value are foreground: a PNG of the slice would not store them as black (0).
_DEFAULT_FOREGROUND_THRESHOLD = -1.0 + 1.0 / 255.0


class SmallSampleFIDWarning(UserWarning):
    """A FID was computed on fewer images than ``min_images_for_fid``: it is biased; report KID."""


class MissingClassWarning(UserWarning):
    """A class has fewer than 2 real or generated images, so no score could be computed for it."""


def fid_is_biased(
    n_real: int | None, n_fake: int | None, min_images_for_fid: int = DEFAULT_MIN_IMAGES_FOR_FID
) -> bool:
    """Whether a FID on these set sizes is biased enough that KID should be reported instead.

    Args:
        n_real: number of real images (None when unknown, e.g. cached statistics without a count).
        n_fake: number of generated images (None when unknown).
        min_images_for_fid: the smallest set size for which FID is considered reliable.
    """
    return any(n is not None and n < min_images_for_fid for n in (n_real, n_fake))


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


def _select(stack: Tensor, max_slices: int | None, min_foreground: float | None, foreground_threshold: float) -> np.ndarray:
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
# shared parent machinery


class _CompositeMetric(Metric):
    """A Metric that owns child FID/KID metrics sharing one extractor (not a registered submodule).

    Args:
        extractor: the shared feature extractor; None loads :class:`FIDInceptionV3` from the hub cache.
        kwargs: torchmetrics ``Metric`` options, also given to every child.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, *, extractor: FeatureExtractor | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if extractor is None:
            extractor = FIDInceptionV3()
        if not isinstance(extractor, FeatureExtractor):
            raise ValueError(
                f"extractor must be a gan.metrics.features.FeatureExtractor, got {type(extractor).__name__}; "
                "wrap a plain nn.Module with ModuleExtractor(module, name=...)"
            )
        object.__setattr__(self, "_extractor", extractor)  # not in state_dict, not broadcast by DDP

    @property
    def extractor(self) -> FeatureExtractor:
        """The shared feature extractor."""
        return self._extractor

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported (a per-batch FID is meaningless); use ``update()`` then ``compute()``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no per-batch forward(); call update(...) for each batch and compute() "
            "at the end"
        )

    def _reset_own_states(self, keep: Sequence[str]) -> None:
        """Reset this metric's own states except those named in ``keep``.

        Args:
            keep: state names to preserve.
        """
        kept = {k: getattr(self, k).clone() for k in keep}
        super().reset()
        for key, value in kept.items():
            setattr(self, key, value)


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


class Volume25DFID(_CompositeMetric):
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


# ----------------------------------------------------------------------------------------------
# per-class FID / KID


@dataclass
class ClassFID:
    """FID of one class.

    Args:
        label: the class label.
        name: the class name, if names were given.
        n_real: number of real images of the class.
        n_fake: number of generated images of the class.
        value: the FID, or None when the class is missing.
        fid_biased: True when ``n_real`` or ``n_fake`` is below ``min_images_for_fid`` (report KID instead).
        missing: True when the class has fewer than 2 real or 2 generated images (no FID).
        result: the full :class:`FIDResult`, or None when missing.
    """

    label: int
    name: str | None
    n_real: int
    n_fake: int
    value: float | None
    fid_biased: bool
    missing: bool
    result: FIDResult | None = None


@dataclass
class ClassKID:
    """KID of one class.

    Args:
        label: the class label.
        name: the class name, if names were given.
        n_real: number of real images of the class.
        n_fake: number of generated images of the class.
        mean: mean KID over subsets, or None when the class is missing.
        std: standard deviation over subsets, or None when the class is missing.
        missing: True when the class has fewer than 2 real or 2 generated images (no KID).
        result: the full :class:`KIDResult`, or None when missing.
    """

    label: int
    name: str | None
    n_real: int
    n_fake: int
    mean: float | None
    std: float | None
    missing: bool
    result: KIDResult | None = None


@dataclass
class ClassConditionalFIDResult:
    """Per-class FID and their macro average.

    Args:
        macro: mean FID over the classes that have one (``protocol["macro_over"]``).
        per_class: ``{label: ClassFID}`` for every class, missing ones included.
        protocol: protocol record plus ``num_classes``, ``min_images_for_fid``, ``macro_over``, ``missing``
            and ``fid_biased`` (lists of labels).
    """

    macro: float
    per_class: dict[int, ClassFID]
    protocol: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.macro)


@dataclass
class ClassConditionalKIDResult:
    """Per-class KID and their macro average.

    Args:
        macro: mean of the per-class KID means over the classes that have one (``protocol["macro_over"]``).
        per_class: ``{label: ClassKID}`` for every class, missing ones included.
        protocol: protocol record plus ``num_classes``, ``macro_over`` and ``missing`` (lists of labels).
    """

    macro: float
    per_class: dict[int, ClassKID]
    protocol: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.macro)


class _ClassConditional(_CompositeMetric):
    """Shared logic of the per-class metrics: label checks, routing, counts and missing classes.

    Args:
        num_classes: number of class labels (labels are 0 .. num_classes - 1).
        class_names: optional name per label, used in results and warnings.
        extractor: shared feature extractor; None loads :class:`FIDInceptionV3` from the hub cache.
        reset_real_features: whether ``reset()`` also clears the real images.
        kwargs: torchmetrics ``Metric`` options (passed to the per-class metrics too).
    """

    real_counts: Tensor
    fake_counts: Tensor
    _score_name = "score"

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: Sequence[str] | None,
        extractor: FeatureExtractor | None,
        reset_real_features: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(extractor=extractor, **kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        if class_names is not None:
            class_names = [str(n) for n in class_names]
            if len(class_names) != self.num_classes:
                raise ValueError(f"class_names has {len(class_names)} names for num_classes={self.num_classes}")
        self.class_names = class_names
        self.reset_real_features = bool(reset_real_features)
        self.add_state("real_counts", torch.zeros(self.num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("fake_counts", torch.zeros(self.num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def _describe(self, label: int) -> str:
        """'class 3' or "class 3 ('tumour')" for messages.

        Args:
            label: the class label.
        """
        return f"class {label}" + (f" ({self.class_names[label]!r})" if self.class_names else "")

    def _name(self, label: int) -> str | None:
        return self.class_names[label] if self.class_names else None

    def update(self, images: Tensor, labels: Tensor | Sequence[int], real: bool) -> None:
        """Add a batch of real or generated images with their class labels.

        Args:
            images: (N, 1 or 3, H, W) float in [-1, 1] or uint8 in [0, 255].
            labels: (N,) integer class labels in [0, num_classes).
            real: True for real images, False for generated ones.
        """
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be an (N, C, H, W) tensor with C in (1, 3), got {shape}")
        labels = torch.as_tensor(labels, device=images.device)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must be ({images.shape[0]},) integers, one per image, got shape {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes - 1}] (num_classes={self.num_classes}), "
                f"got values in [{int(labels.min())}, {int(labels.max())}]"
            )
        # quantise once (checks dtype, range and finiteness for the whole batch before any class is updated);
        # the protocols quantise to uint8 first anyway, so the features are unchanged
        images = quantize_uint8(images)
        counts = torch.bincount(labels, minlength=self.num_classes)
        for label in torch.nonzero(counts).flatten().tolist():
            self.class_metrics[label].update(images[labels == label], real=real)
        prefix = "real" if real else "fake"
        setattr(self, f"{prefix}_counts", getattr(self, f"{prefix}_counts") + counts.to(self.real_counts.device))

    def _present(self) -> tuple[list[int], list[int]]:
        """(labels with >= 2 real and >= 2 generated images, the other labels), from synced counts."""
        ok = [c for c in range(self.num_classes) if int(self.real_counts[c]) >= 2 and int(self.fake_counts[c]) >= 2]
        return ok, [c for c in range(self.num_classes) if c not in ok]

    def _warn_missing(self, missing: list[int]) -> None:
        """Warn, naming the classes that have no score and their counts.

        Args:
            missing: labels without a score.
        """
        if not missing:
            return
        details = ", ".join(
            f"{self._describe(c)}: {int(self.real_counts[c])} real / {int(self.fake_counts[c])} generated"
            for c in missing
        )
        warnings.warn(
            f"per-class {self._score_name}: no score for {len(missing)} class(es) with fewer than 2 real or "
            f"generated images ({details}); they are reported as missing and left out of the macro average",
            MissingClassWarning,
            stacklevel=4,
        )

    def _check_any(self, present: list[int]) -> None:
        if not present:
            counts = ", ".join(
                f"{c}: {int(self.real_counts[c])}/{int(self.fake_counts[c])}" for c in range(self.num_classes)
            )
            raise ValueError(
                f"per-class {self._score_name}: no class has at least 2 real and 2 generated images "
                f"(real/generated per class: {counts})"
            )

    def _base_protocol(self, result_protocol: Mapping[str, Any], present: list[int], missing: list[int]) -> dict:
        protocol = {k: v for k, v in result_protocol.items() if k not in ("n_real", "n_fake")}
        protocol.update(
            {
                "num_classes": self.num_classes,
                "class_names": list(self.class_names) if self.class_names else None,
                "macro_over": present,
                "missing": missing,
                "n_real_per_class": [int(n) for n in self.real_counts.tolist()],
                "n_fake_per_class": [int(n) for n in self.fake_counts.tolist()],
            }
        )
        return protocol

    def reset(self) -> None:
        """Clear the states (the real ones only if ``reset_real_features``)."""
        for m in self.class_metrics:
            m.reset()
        if self.reset_real_features:
            super().reset()
        else:
            self._reset_own_states(keep=("real_counts",))


class ClassConditionalFID(_ClassConditional):
    """FID per class of a conditional generator, with the number of images per class and a macro average.

    ``update(images, labels, real)`` routes each image to its class's :class:`FrechetInceptionDistance` (one
    shared extractor). ``compute`` returns a :class:`ClassConditionalFIDResult`. A class with fewer than
    ``min_images_for_fid`` real or generated images is flagged ``fid_biased`` and a
    :class:`SmallSampleFIDWarning` names it with its counts and recommends KID
    (:class:`ClassConditionalKID`); a class with fewer than 2 images on either side is reported as missing
    (with a :class:`MissingClassWarning`) and left out of the macro average.

    Memory: each class holds a d x d float64 sum (32 MiB per set for 2048-d Inception features).

    Args:
        num_classes: number of class labels (labels are 0 .. num_classes - 1).
        class_names: optional name per label, used in results and warnings.
        extractor: shared feature extractor; None loads :class:`FIDInceptionV3` from the hub cache.
        protocol: ``"pytorch-fid"`` (default) or ``"clean"``.
        min_images_for_fid: classes with fewer real or generated images get ``fid_biased`` (default 2000).
        reset_real_features: whether ``reset()`` also clears the real images.
        kwargs: torchmetrics ``Metric`` options (passed to the per-class metrics too).
    """

    _score_name = "FID"

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        extractor: FeatureExtractor | None = None,
        protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID,
        min_images_for_fid: int = DEFAULT_MIN_IMAGES_FOR_FID,
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            class_names=class_names,
            extractor=extractor,
            reset_real_features=reset_real_features,
            **kwargs,
        )
        if int(min_images_for_fid) < 2:
            raise ValueError(f"min_images_for_fid must be >= 2, got {min_images_for_fid}")
        self.min_images_for_fid = int(min_images_for_fid)
        self.class_metrics = nn.ModuleList(
            FrechetInceptionDistance(
                extractor=self._extractor, protocol=protocol, reset_real_features=reset_real_features, **kwargs
            )
            for _ in range(self.num_classes)
        )

    def compute(self) -> ClassConditionalFIDResult:
        """Per-class FID (missing classes included), the macro average and the protocol."""
        present, missing = self._present()
        self._check_any(present)
        per_class: dict[int, ClassFID] = {}
        biased_labels = []
        record: Mapping[str, Any] = {}
        for c in range(self.num_classes):
            n_real, n_fake = int(self.real_counts[c]), int(self.fake_counts[c])
            biased = fid_is_biased(n_real, n_fake, self.min_images_for_fid)
            if c in missing:
                per_class[c] = ClassFID(c, self._name(c), n_real, n_fake, None, biased, True, None)
                continue
            result = self.class_metrics[c].compute()
            record = result.protocol
            per_class[c] = ClassFID(c, self._name(c), n_real, n_fake, result.value, biased, False, result)
            if biased:
                biased_labels.append(c)
                warnings.warn(
                    f"per-class FID: {self._describe(c)} has {n_real} real and {n_fake} generated images, fewer "
                    f"than min_images_for_fid={self.min_images_for_fid}; its FID is biased (it grows as N "
                    "shrinks) and not comparable across classes of different sizes; report KID "
                    "(ClassConditionalKID) for this class",
                    SmallSampleFIDWarning,
                    stacklevel=3,
                )
        self._warn_missing(missing)
        protocol = self._base_protocol(record, present, missing)
        protocol.update({"min_images_for_fid": self.min_images_for_fid, "fid_biased": biased_labels})
        macro = float(np.mean([per_class[c].value for c in present]))
        return ClassConditionalFIDResult(macro=macro, per_class=per_class, protocol=protocol)


class ClassConditionalKID(_ClassConditional):
    """KID per class of a conditional generator, with the number of images per class and a macro average.

    The score to report for small or rare classes, where FID is biased. Each class has its own
    :class:`KernelInceptionDistance` with the same kernel and subset settings and the same ``seed``; a
    ``subset_size`` larger than a class is reduced to that class's size (warned, naming the class). A class
    with fewer than 2 images on either side is reported as missing and left out of the macro average.

    Args:
        num_classes: number of class labels (labels are 0 .. num_classes - 1).
        class_names: optional name per label, used in results and warnings.
        extractor: shared feature extractor; None loads :class:`FIDInceptionV3` from the hub cache.
        protocol: ``"pytorch-fid"`` (default) or ``"clean"``.
        subsets: number of random subsets per class.
        subset_size: samples per subset from each set (reduced to a smaller class's size).
        degree: polynomial kernel degree.
        gamma: kernel scale; None means 1 / dim.
        coef: kernel offset.
        seed: seed of the subset draws (the same for every class).
        reset_real_features: whether ``reset()`` also clears the real features.
        kwargs: torchmetrics ``Metric`` options (passed to the per-class metrics too).
    """

    _score_name = "KID"

    def __init__(
        self,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        extractor: FeatureExtractor | None = None,
        protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID,
        subsets: int = 100,
        subset_size: int = 1000,
        degree: int = 3,
        gamma: float | None = None,
        coef: float = 1.0,
        seed: int = 0,
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            class_names=class_names,
            extractor=extractor,
            reset_real_features=reset_real_features,
            **kwargs,
        )
        self.class_metrics = nn.ModuleList(
            KernelInceptionDistance(
                extractor=self._extractor, protocol=protocol, subsets=subsets, subset_size=subset_size,
                degree=degree, gamma=gamma, coef=coef, seed=seed, reset_real_features=reset_real_features,
                **kwargs,
            )  # fmt: skip
            for _ in range(self.num_classes)
        )

    def compute(self) -> ClassConditionalKIDResult:
        """Per-class KID (missing classes included), the macro average and the protocol."""
        present, missing = self._present()
        self._check_any(present)
        per_class: dict[int, ClassKID] = {}
        record: Mapping[str, Any] = {}
        for c in range(self.num_classes):
            n_real, n_fake = int(self.real_counts[c]), int(self.fake_counts[c])
            if c in missing:
                per_class[c] = ClassKID(c, self._name(c), n_real, n_fake, None, None, True, None)
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = self.class_metrics[c].compute()
            for w in caught:  # re-issue (e.g. a reduced subset size) naming the class
                warnings.warn(f"per-class KID, {self._describe(c)}: {w.message}", w.category, stacklevel=3)
            record = {k: v for k, v in result.protocol.items() if k != "kid_subset_size"}
            per_class[c] = ClassKID(c, self._name(c), n_real, n_fake, result.mean, result.std, False, result)
        self._warn_missing(missing)
        protocol = self._base_protocol(record, present, missing)
        macro = float(np.mean([per_class[c].mean for c in present]))
        return ClassConditionalKIDResult(macro=macro, per_class=per_class, protocol=protocol)
