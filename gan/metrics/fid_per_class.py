"""Per-class FID/KID for conditional generators (e.g. StyleGAN2 on pathology tile classes).

:class:`ClassConditionalFID` / :class:`ClassConditionalKID` keep one FID/KID per class label and report each class
with its numbers of real and generated images plus a macro average over classes. FID is biased for small sets (it
grows as N shrinks), so a class with fewer than ``min_images_for_fid`` (about 2,000) real or generated images is
flagged ``fid_biased`` (:func:`~gan.metrics.fid.fid_is_biased`) and a
:class:`~gan.metrics.fid.SmallSampleFIDWarning` recommends KID. A class seen on one side only is reported as
missing (:class:`MissingClassWarning`) rather than failing the whole evaluation.

These metrics compose the existing FID/KID metrics (no new math). Under DDP every child metric syncs itself; the
per-class counts are synced sum states of the parent, so all ranks take the same decisions. ``forward()`` is not
supported: use ``update()`` and ``compute()``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gan.metrics.features.extractor import FeatureExtractor
from gan.metrics.features.protocol import FIDProtocol, quantize_uint8
from gan.metrics.fid import (
    DEFAULT_MIN_IMAGES_FOR_FID,
    FIDResult,
    FrechetInceptionDistance,
    KernelInceptionDistance,
    KIDResult,
    SharedExtractorMetric,
    SmallSampleFIDWarning,
    fid_is_biased,
)

__all__ = [
    "ClassConditionalFID",
    "ClassConditionalFIDResult",
    "ClassConditionalKID",
    "ClassConditionalKIDResult",
    "ClassFID",
    "ClassKID",
    "MissingClassWarning",
]


class MissingClassWarning(UserWarning):
    """A class has fewer than 2 real or generated images, so no score could be computed for it."""

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


class _ClassConditional(SharedExtractorMetric):
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
