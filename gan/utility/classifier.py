"""The classifier the downstream-utility test trains: a torchvision ResNet-18 from scratch, a tiny CNN, or a timm
backbone with local weights.

:func:`build_classifier` returns a :class:`TileClassifier`: the network plus its input normalisation, so every
regime feeds it uint8 tiles the same way. Randomness of the initialisation comes from ``seed`` alone (the global RNG
is forked, so the caller's stream is untouched): the three regimes of one seed start from identical weights.
``"timm:<model>"`` builds ``timm.create_model(model, num_classes=C)`` and fills its backbone from a local weights
file through :class:`gan.metrics.features.TimmExtractor`'s loader (head keys in the file are ignored; nothing is
downloaded; a missing file names the exact path to place it at).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch
from torch import Tensor, nn

PathLike = Union[str, Path]

__all__ = ["CLASSIFIERS", "TileClassifier", "build_classifier", "classifier_kind"]

#: Built-in classifier kinds; ``"timm:<model>"`` names any timm model.
CLASSIFIERS: tuple[str, ...] = ("resnet18", "tiny")
_TIMM = "timm:"


class TileClassifier(nn.Module):
    """A classification network with its input normalisation: uint8 (or [0, 1] float) tiles in, logits out.

    Args:
        net: maps normalised (N, 3, H, W) float images to (N, num_classes) logits.
        name: recorded name (``"resnet18"``, ``"tiny"``, ``"timm:<model>"``).
        mean: per-channel mean of [0, 1] inputs.
        std: per-channel std of [0, 1] inputs.
        weights: where the initial weights come from (``"scratch(seed=N)"`` or the file and its sha256).
    """

    def __init__(self, net: nn.Module, *, name: str, mean: Sequence[float], std: Sequence[float],
                 weights: str) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.weights = weights
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch of tiles.

        Args:
            x: (N, 3, H, W) uint8 in [0, 255] or float in [0, 1].
        """
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        return self.net((x - self.mean) / self.std)


def _tiny(num_classes: int) -> nn.Module:
    """Two strided 3x3 convolutions with batch norm, global average pooling and a linear head (tests, smoke runs)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def classifier_kind(text: str) -> str:
    """Check a classifier name: ``"resnet18"``, ``"tiny"`` or ``"timm:<model>"``; return it.

    Args:
        text: the name.

    Raises:
        ValueError: for another name.
    """
    if text in CLASSIFIERS or (text.startswith(_TIMM) and len(text) > len(_TIMM)):
        return text
    raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)} or timm:<model>, got {text!r}")


def _timm_classifier(model: str, num_classes: int, weights_path: PathLike | None) -> TileClassifier:
    """A timm model with a fresh ``num_classes`` head and its backbone from a local file (or from scratch)."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError("a timm classifier needs the timm package: pip install timm") from exc
    from gan.metrics.features.domain import IMAGENET_MEAN, IMAGENET_STD, read_weights, timm_weights_file
    from gan.weights import locate, verify

    net = timm.create_model(model, pretrained=False, num_classes=num_classes)
    cfg = dict(getattr(net, "pretrained_cfg", {}) or {})
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    if weights_path is None:
        return TileClassifier(net, name=f"timm:{model}", mean=mean, std=std, weights="scratch")
    spec = timm_weights_file(model, cfg)
    path = locate(spec, weights_path, option="--classifier-weights")
    digest = verify(path, what=spec.what)
    head = str(cfg.get("classifier", "") or "")

    def is_head(key: str) -> bool:
        return bool(head) and (key == head or key.startswith(head + "."))

    state = {k: v for k, v in read_weights(path, what=spec.what).items() if not is_head(k)}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{path}: does not hold {spec.what}: {exc}") from exc
    missing = [k for k in missing if not is_head(k)]
    if missing or unexpected:
        raise ValueError(f"{path}: does not hold {spec.what}: missing keys {missing[:5]}, unexpected keys "
                         f"{list(unexpected)[:5]}")
    return TileClassifier(net, name=f"timm:{model}", mean=mean, std=std, weights=f"{path} (sha256 {digest})")


def build_classifier(kind: str, num_classes: int, *, seed: int, weights_path: PathLike | None = None) -> TileClassifier:
    """The classifier of ``kind`` with a seeded initialisation.

    Args:
        kind: ``"resnet18"`` (torchvision, from scratch: the default of the test), ``"tiny"`` (a small CNN for tests
            and smoke runs) or ``"timm:<model>"`` (backbone weights from ``weights_path``).
        num_classes: number of classes.
        seed: seed of the initialisation (of the head, for a pretrained backbone).
        weights_path: timm only: the backbone's local weights file (or a folder holding ``<model>.pth``); None trains
            it from scratch.

    Raises:
        ValueError: an unknown kind, fewer than 2 classes, or weights for a kind that takes none.
    """
    kind = classifier_kind(kind)
    if int(num_classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if weights_path is not None and not kind.startswith(_TIMM):
        raise ValueError(f"classifier {kind!r} is trained from scratch; classifier weights apply to timm:<model>")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if kind == "tiny":
            return TileClassifier(_tiny(num_classes), name="tiny", mean=(0.5,) * 3, std=(0.5,) * 3,
                                  weights=f"scratch(seed={int(seed)})")
        if kind == "resnet18":
            import torchvision

            net = torchvision.models.resnet18(weights=None, num_classes=int(num_classes))
            return TileClassifier(net, name="resnet18", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                  weights=f"scratch(seed={int(seed)})")
        clf = _timm_classifier(kind[len(_TIMM):], int(num_classes), weights_path)
        if weights_path is None:
            clf.weights = f"scratch(seed={int(seed)})"
        return clf
