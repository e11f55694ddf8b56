"""Precision, recall, density and coverage of generated samples on k-NN manifolds of features.

Definitions (Kynkäänniemi et al. 2019 for precision/recall, Naeem et al. 2020 for density/coverage; exactly those of
the ``prdc`` package, which the tests compare with). With ``r_k(x)`` the distance from ``x`` to its k-th nearest
neighbour inside its own set (the point itself not counted) and ``B(x, r)`` the open ball:

* precision = fraction of fakes inside ``B(real_i, r_k(real_i))`` for some real ``i`` (fidelity);
* recall = fraction of reals inside ``B(fake_j, r_k(fake_j))`` for some fake ``j`` (diversity, mode coverage);
* density = mean over fakes of the number of real balls holding it, divided by k (about 1 for matching sets; above
  1 when fakes crowd in dense real regions);
* coverage = fraction of reals whose ball holds at least one fake (robust to outliers of either set).

One call gives both neighbourhood sizes of the literature: ``k=(3, 5)`` (the default) uses k = 3 for precision and
recall (Kynkäänniemi's setting) and k = 5 for density and coverage (Naeem's); the within-set distances are computed
once and the 3rd and 5th radii read from them. ``k=K`` uses one K for all four, as ``prdc.compute_prdc(nearest_k=K)``.
Distances are Euclidean in float64 by the matrix-product formula (as ``sklearn.metrics.pairwise_distances``, which
``prdc`` uses; exact for small integer coordinates), computed in chunks of ``chunk_size`` rows (memory
``chunk_size x N``).

:class:`PrecisionRecallDensityCoverage` is the torchmetrics class: it keeps features and labels as ``cat`` states
(DDP gathers them; ``compute()`` on every rank gives the same numbers), scores overall and per class, and with an
extractor takes images (its protocol record travels with the result, as for FID).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from gan.metrics.features.extractor import FeatureExtractor, extract_features
from gan.metrics.features.protocol import FIDProtocol, protocol_record
from gan.metrics.labels import batch_labels, class_settings
from gan.metrics.ragged import gather_ragged

__all__ = [
    "DEFAULT_K",
    "PRDC_KEYS",
    "PRDCResult",
    "PrecisionRecallDensityCoverage",
    "precision_recall_density_coverage",
    "prdc_neighbourhoods",
]

#: Neighbourhood sizes of the default call: k = 3 for precision/recall, k = 5 for density/coverage.
DEFAULT_K: tuple[int, int] = (3, 5)
#: Keys of every result dict, in order.
PRDC_KEYS: tuple[str, ...] = ("precision", "recall", "density", "coverage")


def prdc_neighbourhoods(k: int | Sequence[int]) -> tuple[int, int]:
    """``(k for precision/recall, k for density/coverage)`` from ``k`` (one value sets both).

    Args:
        k: an int, or a pair ``(k_pr, k_dc)``.

    Raises:
        ValueError: a value below 1 or not an integer, or a sequence not of length 2.
    """
    pair = (k, k) if isinstance(k, int) else tuple(k)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"k must be a positive int or a pair (k_precision_recall, k_density_coverage), got {k!r}")
    return int(pair[0]), int(pair[1])


def _as_features(x: Tensor | Any, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be an (N, dim) feature matrix, got shape {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return t


def _cdist(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances of the rows of two float64 matrices (matrix-product formula, clamped at 0)."""
    return torch.cdist(a, b, compute_mode="use_mm_for_euclid_dist")


def _radii(x: Tensor, ks: Sequence[int], chunk_size: int) -> dict[int, Tensor]:
    """Distance of every row of ``x`` to its k-th nearest other row, for each k in ``ks``."""
    kmax = max(ks)
    rows = []
    for start in range(0, x.shape[0], chunk_size):
        d = _cdist(x[start:start + chunk_size], x)
        idx = torch.arange(d.shape[0])
        d[idx, idx + start] = 0.0  # the point itself: exactly 0, the smallest (prdc counts it, then takes k + 1)
        rows.append(d.topk(kmax + 1, dim=1, largest=False).values)
    kth = torch.cat(rows)
    return {k: kth[:, k] for k in ks}


def _scores(real: Tensor, fake: Tensor, k_pr: int, k_dc: int, chunk_size: int) -> dict[str, float]:
    """The four scores of two checked feature matrices (float64, CPU)."""
    for name, x, need in (("real", real, max(k_pr, k_dc)), ("fake", fake, k_pr)):
        if x.shape[0] <= need:
            raise ValueError(f"precision/recall/density/coverage need more than k={need} {name} samples, "
                             f"got {x.shape[0]}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    r_real = _radii(real, (k_pr, k_dc), chunk_size)
    r_fake = _radii(fake, (k_pr,), chunk_size)[k_pr]
    in_real_pr = torch.zeros(fake.shape[0], dtype=torch.bool)
    density_counts = torch.zeros(fake.shape[0], dtype=torch.float64)
    in_fake = torch.zeros(real.shape[0], dtype=torch.bool)
    nearest_fake = torch.full((real.shape[0],), float("inf"), dtype=torch.float64)
    for start in range(0, fake.shape[0], chunk_size):
        d = _cdist(real, fake[start:start + chunk_size])  # (n_real, chunk)
        stop = start + d.shape[1]
        in_real_pr[start:stop] = (d < r_real[k_pr][:, None]).any(dim=0)
        density_counts[start:stop] = (d < r_real[k_dc][:, None]).sum(dim=0).double()
        in_fake |= (d < r_fake[start:stop][None, :]).any(dim=1)
        nearest_fake = torch.minimum(nearest_fake, d.min(dim=1).values)
    return {
        "precision": float(in_real_pr.double().mean()),
        "recall": float(in_fake.double().mean()),
        "density": float(density_counts.mean() / k_dc),
        "coverage": float((nearest_fake < r_real[k_dc]).double().mean()),
    }


def precision_recall_density_coverage(real_features: Tensor, fake_features: Tensor, *,
                                      k: int | Sequence[int] = DEFAULT_K,
                                      chunk_size: int = 2048) -> dict[str, float]:
    """Precision, recall, density and coverage of generated features against real ones.

    Args:
        real_features: (N, dim) features of real samples (tensor or array), N > k.
        fake_features: (M, dim) features of generated samples, M > k for precision/recall.
        k: ``(k_pr, k_dc)``: k-NN size for precision/recall and for density/coverage (default ``(3, 5)``, the
            literature's settings, from one call); one int uses it for all four (``prdc.compute_prdc(nearest_k=k)``).
        chunk_size: rows per distance block (bounds memory at ``chunk_size x max(N, M)`` float64).

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as floats.
    """
    k_pr, k_dc = prdc_neighbourhoods(k)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    real = _as_features(real_features, "real_features")
    fake = _as_features(fake_features, "fake_features")
    return _scores(real, fake, k_pr, k_dc, int(chunk_size))


@dataclass
class PRDCResult:
    """Precision/recall/density/coverage overall and per class, with the settings and counts.

    Args:
        overall: the four scores on all samples.
        per_class: class index -> the four scores, or None for a class with too few samples on a side.
        counts: ``{"real": N, "fake": M, "real_per_class": [...], "fake_per_class": [...]}``.
        protocol: ``k_precision_recall``, ``k_density_coverage``, the class names, and the extractor's protocol
            record when the metric extracted the features.
    """

    overall: dict[str, float]
    per_class: dict[int, dict[str, float] | None] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)

    def scalars(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{name: value}`` for a logger: ``<prefix>precision`` ... and ``<prefix><class>/precision`` ...

        Args:
            prefix: key prefix (e.g. ``"val/"``); classes are named by ``protocol["class_names"]`` or their index.
        """
        names = self.protocol.get("class_names")
        out = {f"{prefix}{k}": float(v) for k, v in self.overall.items()}
        for c, scores in self.per_class.items():
            if scores is not None:
                label = names[c] if names else str(c)
                out.update({f"{prefix}{label}/{k}": float(v) for k, v in scores.items()})
        return out


class PrecisionRecallDensityCoverage(Metric):
    """Precision, recall, density and coverage (see the module docstring), overall and per class.

    ``update(inputs, real, labels=None)`` adds real or generated samples: features (N, dim), or images when an
    ``extractor`` is given (pre-processed by ``protocol`` as for FID; ``precomputed=True`` passes features of that
    extractor). ``compute()`` returns a :class:`PRDCResult`. States are the features and labels themselves
    (``dist_reduce_fx="cat"``): memory grows with N, as for KID.

    Args:
        k: ``(k_pr, k_dc)`` as in :func:`precision_recall_density_coverage` (default ``(3, 5)``).
        num_classes: number of class labels for per-class scores (labels 0 .. num_classes - 1); None: overall only.
        class_names: optional name per label (recorded).
        extractor: feature network for image inputs; None: ``update`` takes features.
        protocol: pre-processing protocol of image inputs (``"pytorch-fid"`` or ``"clean"``).
        chunk_size: rows per distance block.
        reset_real_features: whether ``reset()`` also clears the real samples (False: score another fake set, e.g.
            held-out real tiles for the floor, against the same reals).
        kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    real_features: list[Tensor]
    fake_features: list[Tensor]
    real_labels: list[Tensor]
    fake_labels: list[Tensor]

    def __init__(self, *, k: int | Sequence[int] = DEFAULT_K, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, extractor: FeatureExtractor | None = None,
                 protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID, chunk_size: int = 2048,
                 reset_real_features: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_ragged)  # a rank may have seen no image of a side
        super().__init__(**kwargs)
        self.k_pr, self.k_dc = prdc_neighbourhoods(k)
        self.num_classes, self.class_names = class_settings(num_classes, class_names)
        if extractor is not None and not isinstance(extractor, FeatureExtractor):
            raise ValueError(f"extractor must be a gan.metrics.features.FeatureExtractor, got {type(extractor)}")
        object.__setattr__(self, "_extractor", extractor)  # not a submodule: not in state_dict, not broadcast
        self.protocol = FIDProtocol(protocol)
        self.chunk_size = int(chunk_size)
        self.reset_real_features = bool(reset_real_features)
        for name in ("real_features", "fake_features", "real_labels", "fake_labels"):
            self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, inputs: Tensor, real: bool, labels: Tensor | Sequence[int] | None = None,
               precomputed: bool = False) -> None:
        """Add real or generated samples.

        Args:
            inputs: (N, dim) features; with an extractor, (N, 1 or 3, H, W) images (float in [-1, 1] or uint8)
                unless ``precomputed``.
            real: True for real samples.
            labels: (N,) class labels in [0, num_classes) (required when ``num_classes`` is set).
            precomputed: ``inputs`` are features although the metric has an extractor.
        """
        if self._extractor is not None and not precomputed:
            feats = extract_features(inputs, self._extractor, self.protocol)
        else:
            feats = torch.as_tensor(inputs)
            if feats.ndim != 2:
                raise ValueError(f"features must be (N, dim), got shape {tuple(feats.shape)}; pass an extractor "
                                 "to score images")
        feats = feats.detach().float()
        if not torch.isfinite(feats).all():
            raise ValueError("features contain NaN or Inf")
        n = feats.shape[0]
        lab = batch_labels(labels, n, self.num_classes)
        side = "real" if real else "fake"
        getattr(self, f"{side}_features").append(feats.to(self.device))
        getattr(self, f"{side}_labels").append(lab.to(self.device))

    def _state(self, name: str) -> Tensor | None:
        value = getattr(self, name)  # after a DDP sync a list state is already one tensor
        if isinstance(value, Tensor):
            return value
        return dim_zero_cat(value) if value else None

    def compute(self) -> PRDCResult:
        """The four scores overall and per class (classes with too few samples on a side are None, warned)."""
        real, fake = self._state("real_features"), self._state("fake_features")
        if real is None or fake is None:
            raise ValueError("precision/recall need real and generated samples: call update(..., real=True/False)")
        real, fake = real.cpu().double(), fake.cpu().double()
        overall = _scores(real, fake, self.k_pr, self.k_dc, self.chunk_size)
        per_class: dict[int, dict[str, float] | None] = {}
        counts: dict[str, Any] = {"real": int(real.shape[0]), "fake": int(fake.shape[0])}
        if self.num_classes is not None:
            real_lab = self._state("real_labels").cpu()  # type: ignore[union-attr]
            fake_lab = self._state("fake_labels").cpu()  # type: ignore[union-attr]
            counts["real_per_class"] = torch.bincount(real_lab, minlength=self.num_classes).tolist()
            counts["fake_per_class"] = torch.bincount(fake_lab, minlength=self.num_classes).tolist()
            short = []
            for c in range(self.num_classes):
                r, f = real[real_lab == c], fake[fake_lab == c]
                if r.shape[0] <= max(self.k_pr, self.k_dc) or f.shape[0] <= self.k_pr:
                    per_class[c] = None
                    short.append(f"{self._describe(c)}: {r.shape[0]} real / {f.shape[0]} generated")
                    continue
                per_class[c] = _scores(r, f, self.k_pr, self.k_dc, self.chunk_size)
            if short:
                warnings.warn(f"precision/recall/density/coverage: no score for {len(short)} class(es) with at most "
                              f"k={max(self.k_pr, self.k_dc)} real or k={self.k_pr} generated samples "
                              f"({'; '.join(short)})", UserWarning, stacklevel=2)
        protocol: dict[str, Any] = {"k_precision_recall": self.k_pr, "k_density_coverage": self.k_dc,
                                    "distance": "euclidean (float64)", "class_names": self.class_names}
        if self._extractor is not None:
            protocol["features"] = protocol_record(self.protocol, self._extractor)
        return PRDCResult(overall=overall, per_class=per_class, counts=counts, protocol=protocol)

    def _describe(self, label: int) -> str:
        return f"class {label}" + (f" ({self.class_names[label]!r})" if self.class_names else "")

    def reset(self) -> None:
        """Clear the states (the real ones only if ``reset_real_features``)."""
        if self.reset_real_features:
            super().reset()
            return
        kept = {k: list(getattr(self, k)) if isinstance(getattr(self, k), list) else [getattr(self, k)]
                for k in ("real_features", "real_labels")}
        super().reset()
        for key, value in kept.items():
            setattr(self, key, value)
