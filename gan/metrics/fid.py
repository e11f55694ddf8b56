"""FID and KID as torchmetrics Metrics on a pinned protocol, and cached feature statistics.

Every score carries its protocol record (see :func:`gan.metrics.features.protocol_record`) plus the
numbers of real and fake images. Reference statistics of a real set are cached as ``.npz`` in
pytorch-fid's format (``mu``, ``sigma``) with the protocol record as an extra JSON key; statistics of
different protocols or extractors are never compared (a ``ValueError`` says what differs), and neither are
statistics of random and pretrained weights (the record's ``"weights"`` stamp). FID is biased on small sets:
:func:`fid_is_biased` is the rule the composite metrics (2.5D, per class) flag with :class:`SmallSampleFIDWarning`;
:class:`SharedExtractorMetric` is their base (child FID/KID metrics sharing one extractor).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from data.files import atomic_write_bytes
from gan.metrics.features.extractor import FeatureExtractor, extract_features
from gan.metrics.features.inception import FIDInceptionV3
from gan.metrics.features.protocol import (
    FIDProtocol,
    protocol_record,
    pytorch_fid_protocol_record,
    with_weights_stamp,
)
from gan.metrics.frechet import frechet_distance, kid

PathLike = Union[str, Path]

__all__ = [
    "DEFAULT_MIN_IMAGES_FOR_FID",
    "FIDResult",
    "FeatureStats",
    "FrechetInceptionDistance",
    "KIDResult",
    "KernelInceptionDistance",
    "SharedExtractorMetric",
    "SmallSampleFIDWarning",
    "check_comparable",
    "fid_from_stats",
    "fid_is_biased",
    "resolve_extractor",
]

_COUNT_KEYS = frozenset({"n", "n_real", "n_fake"})

#: Below about this many images per set, FID is noticeably biased and KID is the better score.
DEFAULT_MIN_IMAGES_FOR_FID = 2000


class SmallSampleFIDWarning(UserWarning):
    """A FID was computed on fewer images than ``min_images_for_fid``: it is biased; report KID."""


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


@dataclass
class FIDResult:
    """A Fréchet distance with the protocol it was computed under.

    Args:
        value: the FID.
        protocol: protocol record plus ``n_real`` and ``n_fake``.
    """

    value: float
    protocol: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)


@dataclass
class KIDResult:
    """A Kernel Inception Distance (mean and std over subsets) with its protocol.

    Args:
        mean: mean unbiased MMD^2 over subsets.
        std: population standard deviation over subsets.
        protocol: protocol record plus ``n_real``, ``n_fake`` and the kernel/subset settings.
    """

    mean: float
    std: float
    protocol: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.mean)


def _same_weights(a: Any, b: Any) -> bool:
    """Equal weight identities; a hex sha256 prefix of >= 8 digits (hub file-name style) matches its full hash."""
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    short, long = sorted((a.lower(), b.lower()), key=len)
    is_hex = all(c in "0123456789abcdef" for c in short + long)
    return is_hex and len(short) >= 8 and long.startswith(short)


def check_comparable(a: Mapping[str, Any], b: Mapping[str, Any], *, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise unless two protocol records describe the same protocol and extractor (counts are ignored).

    Args:
        a: first protocol record.
        b: second protocol record.
        names: how the two are called in the error message (e.g. file names).

    Raises:
        ValueError: listing every differing setting.
    """
    a, b = with_weights_stamp(a), with_weights_stamp(b)  # records written before the stamp get it derived
    diffs = []
    for key in sorted((set(a) | set(b)) - _COUNT_KEYS):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if key == "weights_sha256" and _same_weights(va, vb):
            continue
        if va != vb:
            diffs.append(f"{key}: {va!r} vs {vb!r}")
    if diffs:
        raise ValueError(
            f"FID/KID statistics are not comparable ({names[0]} vs {names[1]}): " + "; ".join(diffs)
            + ". Scores of different protocols or extractors cannot be compared; recompute both with one setting."
        )


@dataclass(eq=False)
class FeatureStats:
    """Mean and covariance (float64) of a set's features, with the protocol they were computed under.

    Args:
        mu: (d,) mean feature vector.
        sigma: (d, d) covariance (ddof = 1, as ``np.cov``).
        n: number of images, or None when unknown (plain pytorch-fid files).
        protocol: protocol record (without counts; a record written before the weights stamp gets it derived).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    protocol: dict[str, Any]

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(f"FeatureStats needs mu (d,) and sigma (d, d), got {self.mu.shape} and {self.sigma.shape}")
        self.protocol = {k: v for k, v in with_weights_stamp(self.protocol).items() if k not in _COUNT_KEYS}

    @classmethod
    def from_features(cls, features: np.ndarray | Tensor, protocol: Mapping[str, Any]) -> FeatureStats:
        """Statistics of an (n, d) feature matrix, as pytorch-fid computes them (``np.mean``, ``np.cov``).

        Args:
            features: (n, d) features, n >= 2.
            protocol: protocol record of the features.
        """
        if isinstance(features, Tensor):
            features = features.detach().to("cpu", torch.float64).numpy()
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"need an (n, d) feature matrix with n >= 2, got shape {f.shape}")
        return cls(mu=f.mean(axis=0), sigma=np.cov(f, rowvar=False), n=f.shape[0], protocol=dict(protocol))

    def save(self, path: PathLike) -> Path:
        """Write a pytorch-fid-compatible ``.npz`` (``mu``, ``sigma``) plus ``n`` and ``protocol`` (JSON), atomically.

        Args:
            path: destination ending in ``.npz``; its folder must exist.
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: statistics files must end in .npz (pytorch-fid recognises them by it)")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            mu=self.mu,
            sigma=self.sigma,
            n=np.int64(-1 if self.n is None else self.n),
            protocol=np.array(json.dumps(self.protocol, sort_keys=True)),
        )
        atomic_write_bytes(path, buf.getvalue(), fsync=True)
        return path

    @classmethod
    def load(cls, path: PathLike, *, assume_protocol: FIDProtocol | str | None = None) -> FeatureStats:
        """Read a statistics ``.npz`` written by :meth:`save` or, with ``assume_protocol``, by pytorch-fid.

        Args:
            path: the ``.npz`` file.
            assume_protocol: for a file without a protocol record (made by pytorch-fid itself), state that
                it follows ``"pytorch-fid"`` with pytorch-fid's default 2048-d Inception features. No other
                value is accepted: a plain file's protocol cannot be known otherwise.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is unreadable, lacks ``mu``/``sigma``, or has no protocol record and no
                ``assume_protocol``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: statistics file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # zipfile/numpy raise several types
            raise ValueError(f"{path}: not a readable .npz statistics file ({exc})") from exc
        if "mu" not in arrays or "sigma" not in arrays:
            raise ValueError(f"{path}: missing 'mu' and/or 'sigma' (keys found: {sorted(arrays)})")
        mu, sigma = arrays["mu"], arrays["sigma"]
        if "protocol" in arrays:
            try:
                protocol = json.loads(str(arrays["protocol"]))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: the 'protocol' entry is not valid JSON ({exc})") from exc
            if assume_protocol is not None and protocol.get("protocol") != FIDProtocol(assume_protocol).value:
                raise ValueError(
                    f"{path}: records protocol {protocol.get('protocol')!r}, "
                    f"not the assumed {FIDProtocol(assume_protocol).value!r}"
                )
        elif assume_protocol is None:
            raise ValueError(
                f"{path}: has no protocol record (a plain pytorch-fid file?). If it was made by pytorch-fid with "
                "its default 2048-d features, load it with assume_protocol='pytorch-fid'."
            )
        elif FIDProtocol(assume_protocol) is not FIDProtocol.PYTORCH_FID:
            raise ValueError(f"{path}: a file without a protocol record can only be assumed to be 'pytorch-fid'")
        else:
            protocol = pytorch_fid_protocol_record(feature_dim=int(np.atleast_1d(mu).shape[0]))
        n = int(arrays["n"]) if "n" in arrays and int(arrays["n"]) >= 0 else None
        try:
            return cls(mu=mu, sigma=sigma, n=n, protocol=protocol)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


def fid_from_stats(real: FeatureStats, fake: FeatureStats) -> FIDResult:
    """FID between two cached statistics; refuses statistics of different protocols or extractors.

    Args:
        real: statistics of the real (reference) set.
        fake: statistics of the generated set.
    """
    check_comparable(real.protocol, fake.protocol, names=("real statistics", "fake statistics"))
    value = frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)
    protocol = dict(real.protocol)
    protocol["weights_sha256"] = max(real.protocol["weights_sha256"], fake.protocol["weights_sha256"], key=len)
    return FIDResult(value=value, protocol={**protocol, "n_real": real.n, "n_fake": fake.n})


def resolve_extractor(extractor: FeatureExtractor | None) -> FeatureExtractor:
    """The extractor a metric uses: ``extractor`` itself (checked), or :class:`FIDInceptionV3` from the hub cache.

    Args:
        extractor: a :class:`FeatureExtractor`, or None for the FID Inception (its file is never downloaded).

    Raises:
        ValueError: ``extractor`` is not a :class:`FeatureExtractor`.
    """
    if extractor is None:
        extractor = FIDInceptionV3()
    if not isinstance(extractor, FeatureExtractor):
        raise ValueError(
            f"extractor must be a gan.metrics.features.FeatureExtractor, got {type(extractor).__name__}; "
            "wrap a plain nn.Module with ModuleExtractor(module, name=...)"
        )
    return extractor


class _ExtractorMetric(Metric):
    """Shared machinery of FID and KID: the extractor, the protocol, and feature extraction.

    The extractor is deliberately not a registered submodule: its weights do not go into checkpoints,
    DDP does not broadcast its buffers, and ``.half()``/``.double()`` on a parent module leave it as it is.
    It follows the metric across devices.

    Args:
        extractor: a :class:`FeatureExtractor`; None loads :class:`FIDInceptionV3` from the hub cache.
        protocol: :class:`FIDProtocol` or its value.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self, *, extractor: FeatureExtractor | None, protocol: FIDProtocol | str, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.protocol = FIDProtocol(protocol)
        object.__setattr__(self, "_extractor", resolve_extractor(extractor))  # bypass nn.Module registration

    @property
    def extractor(self) -> FeatureExtractor:
        """The feature extractor."""
        return self._extractor

    def protocol_record(self) -> dict[str, Any]:
        """The protocol record of this metric (without counts)."""
        return protocol_record(self.protocol, self._extractor)

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> _ExtractorMetric:
        this = super()._apply(fn, *args, **kwargs)
        extractor = self._extractor
        target = fn(torch.zeros(1, device=extractor.device)).device
        if target != extractor.device:
            extractor.to(target)
        return this

    def _features(self, images: Tensor) -> Tensor:
        """Features of a batch of images under this metric's protocol.

        Args:
            images: (N, 1 or 3, H, W) float in [-1, 1] or uint8.
        """
        return extract_features(images, self._extractor, self.protocol)


class FrechetInceptionDistance(_ExtractorMetric):
    """FID with float64 sum states (DDP-synced by summation), independent of batch size.

    ``update(images, real)`` adds a batch; ``compute()`` returns a :class:`FIDResult` whose ``protocol``
    names the protocol, extractor, weights hash, ``n_real`` and ``n_fake``. Reference statistics of the real
    set can be given instead of real images (a :class:`FeatureStats` or its ``.npz`` path); they must have
    been made under the same protocol and extractor.

    Args:
        extractor: a :class:`FeatureExtractor`; None loads :class:`FIDInceptionV3` from the hub cache.
        protocol: ``"pytorch-fid"`` (default, comparable with published numbers) or ``"clean"``.
        real_stats: cached statistics of the real set, or None to accumulate real images.
        reset_real_features: whether ``reset()`` also clears the accumulated real features.
        kwargs: torchmetrics ``Metric`` options.
    """

    real_sum: Tensor
    real_outer: Tensor
    real_n: Tensor
    fake_sum: Tensor
    fake_outer: Tensor
    fake_n: Tensor

    def __init__(
        self,
        *,
        extractor: FeatureExtractor | None = None,
        protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID,
        real_stats: FeatureStats | PathLike | None = None,
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(extractor=extractor, protocol=protocol, **kwargs)
        if real_stats is not None and not isinstance(real_stats, FeatureStats):
            real_stats = FeatureStats.load(real_stats)
        if real_stats is not None:
            check_comparable(real_stats.protocol, self.protocol_record(), names=("real_stats", "this metric"))
        self._real_stats = real_stats
        self.reset_real_features = bool(reset_real_features)
        d = self._extractor.dim
        for prefix in ("real", "fake"):
            self.add_state(f"{prefix}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{prefix}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{prefix}_n", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, images: Tensor, real: bool, precomputed: bool = False) -> None:
        """Add a batch of real or generated images.

        Args:
            images: (N, 1 or 3, H, W) float in [-1, 1] or uint8 in [0, 255]; with ``precomputed``, (N, dim)
                features already extracted with this metric's extractor and protocol (so one extraction pass can
                feed FID, KID and the memorization audit).
            real: True for real images, False for generated ones.
            precomputed: ``images`` holds features.
        """
        if real and self._real_stats is not None:
            raise ValueError("this metric was given cached real_stats; update(real=True) would mix two real sets")
        feats = (_check_features(images, self._extractor.dim) if precomputed else self._features(images)).to(
            self.real_sum.device, torch.float64)
        prefix = "real" if real else "fake"
        setattr(self, f"{prefix}_sum", getattr(self, f"{prefix}_sum") + feats.sum(dim=0))
        setattr(self, f"{prefix}_outer", getattr(self, f"{prefix}_outer") + feats.T @ feats)
        setattr(self, f"{prefix}_n", getattr(self, f"{prefix}_n") + feats.shape[0])

    def _stats_from_state(self, real: bool) -> FeatureStats:
        """Statistics from the (already synced) sums.

        Args:
            real: which set.
        """
        if real and self._real_stats is not None:
            return self._real_stats
        prefix = "real" if real else "fake"
        n = int(getattr(self, f"{prefix}_n"))
        if n < 2:
            raise ValueError(f"FID needs at least 2 {prefix} images, got {n}")
        total = getattr(self, f"{prefix}_sum").cpu().numpy()
        outer = getattr(self, f"{prefix}_outer").cpu().numpy()
        mu = total / n
        sigma = (outer - n * np.outer(mu, mu)) / (n - 1)
        return FeatureStats(mu=mu, sigma=sigma, n=n, protocol=self.protocol_record())

    def _synced_stats(self, real: bool) -> FeatureStats:
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=True):
            return self._stats_from_state(real)

    def real_stats(self) -> FeatureStats:
        """Statistics of the real set (synced across DDP ranks), e.g. to cache with ``.save(path)``."""
        return self._synced_stats(real=True)

    def fake_stats(self) -> FeatureStats:
        """Statistics of the generated set (synced across DDP ranks)."""
        return self._synced_stats(real=False)

    def compute(self) -> FIDResult:
        """FID between the real and generated sets, with its protocol record."""
        return fid_from_stats(self._stats_from_state(real=True), self._stats_from_state(real=False))

    def reset(self) -> None:
        """Clear the states (the real ones only if ``reset_real_features``)."""
        if self.reset_real_features:
            super().reset()
            return
        kept = {k: getattr(self, k).clone() for k in ("real_sum", "real_outer", "real_n")}
        super().reset()
        for key, value in kept.items():
            setattr(self, key, value)


class KernelInceptionDistance(_ExtractorMetric):
    """KID (unbiased polynomial MMD^2 over random subsets, mean ± std); keeps the features (DDP: cat).

    Suited to small or rare classes, where FID is biased. A ``subset_size`` larger than a set is
    reduced with a warning.

    Args:
        extractor: a :class:`FeatureExtractor`; None loads :class:`FIDInceptionV3` from the hub cache.
        protocol: ``"pytorch-fid"`` (default) or ``"clean"``.
        subsets: number of random subsets.
        subset_size: samples per subset from each set.
        degree: polynomial kernel degree.
        gamma: kernel scale; None means 1 / dim.
        coef: kernel offset.
        seed: seed of the subset draws.
        reset_real_features: whether ``reset()`` also clears the real features.
        kwargs: torchmetrics ``Metric`` options.
    """

    real_features: list[Tensor]
    fake_features: list[Tensor]

    def __init__(
        self,
        *,
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
        super().__init__(extractor=extractor, protocol=protocol, **kwargs)
        if subsets < 1 or subset_size < 2 or degree < 1:
            raise ValueError(
                f"KID needs subsets >= 1, subset_size >= 2 and degree >= 1, got {subsets}, {subset_size}, {degree}"
            )
        self.subsets, self.subset_size, self.degree = int(subsets), int(subset_size), int(degree)
        self.gamma, self.coef, self.seed = gamma, float(coef), int(seed)
        self.reset_real_features = bool(reset_real_features)
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, images: Tensor, real: bool, precomputed: bool = False) -> None:
        """Add a batch of real or generated images.

        Args:
            images: (N, 1 or 3, H, W) float in [-1, 1] or uint8 in [0, 255]; with ``precomputed``, (N, dim)
                features from this metric's extractor and protocol.
            real: True for real images, False for generated ones.
            precomputed: ``images`` holds features.
        """
        feats = _check_features(images, self._extractor.dim) if precomputed else self._features(images)
        if feats.dtype in (torch.float16, torch.bfloat16):
            feats = feats.float()
        (self.real_features if real else self.fake_features).append(feats.detach())

    def compute(self) -> KIDResult:
        """KID mean and std over subsets, with its protocol record."""
        # after a DDP sync the list states are already concatenated tensors
        real, fake = (s if isinstance(s, Tensor) else dim_zero_cat(s) if s else None
                      for s in (self.real_features, self.fake_features))  # fmt: skip
        if real is None or fake is None:
            raise ValueError("KID needs both real and generated images; call update(images, real=...) for each")
        mean, std = kid(
            real, fake, subsets=self.subsets, subset_size=self.subset_size, degree=self.degree,
            gamma=self.gamma, coef=self.coef, seed=self.seed,
        )  # fmt: skip
        gamma = self.gamma if self.gamma is not None else 1.0 / real.shape[1]
        protocol = {
            **self.protocol_record(),
            "n_real": int(real.shape[0]),
            "n_fake": int(fake.shape[0]),
            "kid_subsets": self.subsets,
            "kid_subset_size": min(self.subset_size, int(real.shape[0]), int(fake.shape[0])),
            "kid_kernel": f"poly(degree={self.degree}, gamma={gamma}, coef={self.coef})",
            "kid_seed": self.seed,
        }
        return KIDResult(mean=mean, std=std, protocol=protocol)

    def reset(self) -> None:
        """Clear the features (the real ones only if ``reset_real_features``)."""
        if self.reset_real_features:
            super().reset()
            return
        kept = list(self.real_features)
        super().reset()
        self.real_features = kept


def _check_features(feats: Tensor, dim: int) -> Tensor:
    """Validate precomputed features: a finite (N, dim) tensor."""
    if feats.ndim != 2 or feats.shape[1] != dim:
        raise ValueError(f"precomputed features must be (N, {dim}) for this extractor, got {tuple(feats.shape)}")
    if not torch.isfinite(feats).all():
        raise ValueError("precomputed features contain NaN or Inf")
    return feats


class SharedExtractorMetric(Metric):
    """Base of metrics made of child FID/KID metrics that share one extractor (2.5D FID, per-class FID/KID).

    The extractor is not a registered submodule (not in ``state_dict``, not broadcast by DDP); every child syncs
    itself, and the parent's own counts are sum states. ``forward()`` is refused: a per-batch FID is meaningless.

    Args:
        extractor: the shared feature extractor; None loads :class:`FIDInceptionV3` from the hub cache.
        kwargs: torchmetrics ``Metric`` options, also given to every child.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, *, extractor: FeatureExtractor | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        object.__setattr__(self, "_extractor", resolve_extractor(extractor))  # not in state_dict, not broadcast

    @property
    def extractor(self) -> FeatureExtractor:
        """The shared feature extractor."""
        return self._extractor

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported (a per-batch FID is meaningless); use ``update()`` then ``compute()``.

        Args:
            args: ignored.
            kwargs: ignored.
        """
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
