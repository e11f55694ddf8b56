"""One place that builds a feature network by name: the FID Inception, torchvision's Inception, or a domain encoder
(``timm:<model>`` / ``torchvision:<model>``), from a local weights file (never downloaded) or seeded random."""
from __future__ import annotations

from pathlib import Path

from gan.metrics.features.domain import TimmExtractor, TorchvisionExtractor
from gan.metrics.features.extractor import FeatureExtractor
from gan.metrics.features.inception import FIDInceptionV3, TorchvisionInceptionExtractor

#: ``weights="random"``: a seeded random network (smoke runs; its protocol record says it is not comparable).
RANDOM_WEIGHTS = "random"
#: Prefixes of domain extractors: any timm or torchvision backbone from a local weights file.
DOMAIN_EXTRACTOR_PREFIXES: tuple[str, ...] = ("timm:", "torchvision:")


def build_extractor(kind: str, weights: str | Path | None, device: str = "cpu") -> FeatureExtractor:
    """The feature network ``kind`` from a local weights file, or seeded random.

    Args:
        kind: ``"fid-inception"``, ``"torchvision-inception"``, ``"timm:<model>"`` or ``"torchvision:<model>"``.
        weights: weights file or folder; ``"random"`` for a seeded random network (``pretrained=False, seed=0``);
            None for the torch hub cache.
        device: torch device.

    Raises:
        ValueError: an unknown kind.
    """
    random = weights == RANDOM_WEIGHTS
    if kind.startswith(DOMAIN_EXTRACTOR_PREFIXES):
        family, model = kind.split(":", 1)
        domain = TimmExtractor if family == "timm" else TorchvisionExtractor
        net: FeatureExtractor = domain(model, pretrained=False, seed=0) if random else domain(model, weights)
        return net.to(device)
    if kind not in ("fid-inception", "torchvision-inception"):
        raise ValueError(f"unknown feature extractor {kind!r}: fid-inception, torchvision-inception, timm:<model> or "
                         "torchvision:<model>")
    cls = FIDInceptionV3 if kind == "fid-inception" else TorchvisionInceptionExtractor
    net = cls(pretrained=False, seed=0) if random else cls(weights_path=weights)
    return net.to(device)


__all__ = ["DOMAIN_EXTRACTOR_PREFIXES", "RANDOM_WEIGHTS", "build_extractor"]
