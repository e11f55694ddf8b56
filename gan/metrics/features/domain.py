"""Domain feature extractors: any timm or torchvision backbone from a local weights file (e.g. a pathology encoder).

An ImageNet Inception is a poor judge of H&E texture, so precision/recall/density/coverage (and FID/KID, under
their own record) can be scored on a domain encoder instead. :class:`TimmExtractor` builds
``timm.create_model(name, pretrained=False, num_classes=0)`` (pooled features); :class:`TorchvisionExtractor` builds
``torchvision.models.get_model(name, weights=None)`` and replaces its last ``nn.Linear`` by the identity (features
are that layer's input: ResNet pool features, a ViT's class token, VGG's fc7). Weights come ONLY from a local file
(``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``, or ``.safetensors``), located and hashed
by ``gan.weights``; nothing is downloaded, and a missing file raises ``FileNotFoundError`` naming the exact path
to place it at. Keys of the classification head in the file are ignored; any other missing or unexpected key is
an error naming the file.

The extractor's name (``timm:<model>`` / ``torchvision:<model>``), the file's sha256, the input size and the
normalisation go into the protocol record exactly as for the Inception extractors (the resize filter is the
protocol's), so scores of different extractors or weights are never compared. ``pretrained=False`` builds a seeded
random network (tests, smoke runs), stamped ``"weights": "random(seed=N)"``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from gan.metrics.features.extractor import FeatureExtractor
from gan.metrics.features.protocol import PRETRAINED, random_weights
from gan.weights import WeightsFile, hub_checkpoints_dir, load_state_dict, locate, verify

PathLike = Union[str, Path]

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TimmExtractor",
    "TorchvisionExtractor",
    "load_backbone",
    "read_weights",
    "timm_weights_file",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def read_weights(path: Path, *, what: str) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` (safetensors) or a PyTorch file (``torch.load(weights_only=True)``).

    Args:
        path: the file.
        what: what it should hold, for messages.
    """
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises several types for a bad file
            raise ValueError(f"{path}: cannot be read as a safetensors state dict of {what} ({exc})") from exc
    return load_state_dict(path, what=what)


def _seeded_init(module: nn.Module, seed: int) -> None:
    """Re-initialise every parameter and buffer of ``module`` from ``seed`` (deterministic smoke-run weights)."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, t in sorted(module.state_dict().items()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=gen))
            elif t.ndim >= 2:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif name.endswith(("weight", "gamma")):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.copy_(0.02 * torch.randn(t.shape, generator=gen))


class _BackboneExtractor(FeatureExtractor):
    """A backbone (head removed) whose weights come from a local file or a seed; shared by timm and torchvision.

    Args:
        net: the backbone, returning (N, dim) features.
        name: recorded name (``timm:resnet50``).
        spec: the weights file looked for when ``weights_path`` is None (its default folder: the hub cache).
        head: name prefix of head keys in the file, ignored when loading ("" for none).
        weights_path: the weights file or a folder holding ``spec.filename``; None: ``spec.default_path()``.
        pretrained: False: seeded random weights, no file read.
        seed: seed of the random weights.
        sha256_prefix: required start of the file's sha256, or None.
        input_size: square input side.
        mean: per-channel mean of [0, 1] inputs.
        std: per-channel std of [0, 1] inputs.
    """

    def __init__(self, net: nn.Module, *, name: str, spec: WeightsFile, head: str, weights_path: PathLike | None,
                 pretrained: bool, seed: int, sha256_prefix: str | None, input_size: int, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values with std > 0, got mean={tuple(mean)} std={tuple(std)}")
        mean_t, std_t = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        super().__init__(name=name, weights_sha256="", dim=1, input_size=int(input_size),
                         input_normalisation=f"(x-{mean_t})/{std_t}")
        if pretrained:
            path = locate(replace(spec, sha256_prefix=sha256_prefix), weights_path, option="--weights")
            self.weights_sha256 = verify(path, sha256_prefix=sha256_prefix, what=spec.what)
            self.weights = PRETRAINED
            self.weights_file = str(path)
            load_backbone(net, read_weights(path, what=spec.what), head=head, path=path, what=spec.what)
        else:
            _seeded_init(net, seed)
            self.weights_sha256 = f"random-init-seed-{int(seed)}"
            self.weights = random_weights(seed)
            self.weights_file = None
        self.net = net
        self.register_buffer("mean", torch.tensor(mean_t).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_t).view(1, 3, 1, 1), persistent=False)
        self._freeze()
        with torch.no_grad():
            self.dim = int(self.forward(torch.full((1, 3, self.input_size, self.input_size), 0.5)).shape[1])

    def forward(self, x: Tensor) -> Tensor:
        """Features of images in [0, 1].

        Args:
            x: (N, 3, input_size, input_size) float images in [0, 1].
        """
        out = self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
        if out.ndim > 2:
            out = out.flatten(1)
        return out


def load_backbone(net: nn.Module, state: dict[str, Tensor], *, head: str, path: Path, what: str) -> None:
    """Load ``state`` into a headless ``net``: keys under ``head`` in the file are ignored, every other key must match.

    Args:
        net: the network without its classification head.
        state: the file's state dict.
        head: name prefix of the head's keys (``"fc"``, ``"head"``); "" for none.
        path: the file, named in errors.
        what: what the file should hold, for messages.

    Raises:
        ValueError: a key is missing or unexpected, or a shape differs.
    """
    ignored = {k for k in state if head and (k == head or k.startswith(head + "."))}
    try:
        missing, unexpected = net.load_state_dict({k: v for k, v in state.items() if k not in ignored}, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{path}: does not hold {what}: {exc}") from exc
    if missing or unexpected:
        raise ValueError(f"{path}: does not hold {what}: missing keys {list(missing)[:5]}, unexpected keys "
                         f"{list(unexpected)[:5]}")


class TimmExtractor(_BackboneExtractor):
    """Pooled features of a timm model (``timm.create_model(model, pretrained=False, num_classes=0)``), weights from a
    local file.

    Args:
        model: timm model name (``"resnet50"``, ``"vit_small_patch16_224"``, a pathology encoder's architecture).
        weights_path: the weights file (``.pth``/``.bin``/``.safetensors``) or a folder holding ``<model>.pth``;
            None: ``<torch hub>/checkpoints/timm/<model>.pth``. Never downloaded.
        pretrained: False: seeded random weights (smoke runs; records say ``"comparable": false``).
        seed: seed of the random weights.
        sha256_prefix: required start of the file's sha256, or None to accept any file (its hash is recorded).
        input_size: square input side; None: the model's ``pretrained_cfg`` input size.
        mean: per-channel mean of [0, 1] inputs; None: the model's ``pretrained_cfg``.
        std: per-channel std of [0, 1] inputs; None: the model's ``pretrained_cfg``.
    """

    def __init__(self, model: str, weights_path: PathLike | None = None, *, pretrained: bool = True, seed: int = 0,
                 sha256_prefix: str | None = None, input_size: int | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        try:
            import timm
        except ImportError as exc:
            raise ImportError("TimmExtractor needs the timm package: pip install timm") from exc
        net = timm.create_model(model, pretrained=False, num_classes=0)
        cfg = dict(getattr(net, "pretrained_cfg", {}) or {})
        spec = timm_weights_file(model, cfg)
        super().__init__(net, name=f"timm:{model}", spec=spec, head=str(cfg.get("classifier", "") or ""),
                         weights_path=weights_path, pretrained=pretrained, seed=seed, sha256_prefix=sha256_prefix,
                         input_size=int(input_size or cfg.get("input_size", (3, 224, 224))[-1]),
                         mean=mean or cfg.get("mean", IMAGENET_MEAN), std=std or cfg.get("std", IMAGENET_STD))


def timm_weights_file(model: str, pretrained_cfg: Mapping[str, Any]) -> WeightsFile:
    """Where a timm model's local weights are looked for (``<torch hub>/checkpoints/timm/<model>.pth``) and how to get
    them (quoted in the error when the file is missing).

    Args:
        model: timm model name.
        pretrained_cfg: the model's ``pretrained_cfg`` (its hub id or address is quoted).
    """
    hub_id = pretrained_cfg.get("hf_hub_id")
    source = (f"https://huggingface.co/{hub_id}" if hub_id else pretrained_cfg.get("url")) or \
        f"the published weights of timm model {model!r}"
    return WeightsFile(
        filename=f"{model}.pth", url=str(source), what=f"timm model {model!r} weights",
        folder=hub_checkpoints_dir() / "timm",
        fetch_hint=(f" (on that machine: torch.save(timm.create_model({model!r}, pretrained=True).state_dict(), "
                    f"'{model}.pth'))"))


def _strip_last_linear(net: nn.Module) -> str:
    """Replace the last ``nn.Linear`` of ``net`` by the identity; return its qualified name."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(net).__name__}: has no nn.Linear head to remove")
    name = names[-1]
    parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
    setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
    return name


class TorchvisionExtractor(_BackboneExtractor):
    """Features of a torchvision model (``get_model(model, weights=None)``, last ``nn.Linear`` removed), weights
    from a local file.

    Args:
        model: torchvision model name (``"resnet50"``, ``"convnext_tiny"``, ``"vit_b_16"``).
        weights_path: the weights file or a folder holding torchvision's file name for it (e.g.
            ``resnet50-11ad3fa6.pth``); None: the torch hub cache. Never downloaded.
        pretrained: False: seeded random weights (smoke runs; records say ``"comparable": false``).
        seed: seed of the random weights.
        sha256_prefix: required start of the file's sha256, or None (the prefix in torchvision's file names is
            checked anyway).
        input_size: square input side (224).
        mean: per-channel mean of [0, 1] inputs (ImageNet).
        std: per-channel std of [0, 1] inputs (ImageNet).
    """

    def __init__(self, model: str, weights_path: PathLike | None = None, *, pretrained: bool = True, seed: int = 0,
                 sha256_prefix: str | None = None, input_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        import torchvision

        net = torchvision.models.get_model(model, weights=None)
        try:
            url = torchvision.models.get_model_weights(model).DEFAULT.url
        except (ValueError, AttributeError, KeyError):
            url = f"the published weights of torchvision model {model!r}"
        head = _strip_last_linear(net)
        spec = WeightsFile(filename=url.rsplit("/", 1)[-1] if url.endswith(".pth") else f"{model}.pth", url=url,
                           what=f"torchvision model {model!r} weights")
        super().__init__(net, name=f"torchvision:{model}", spec=spec, head=head, weights_path=weights_path,
                         pretrained=pretrained, seed=seed, sha256_prefix=sha256_prefix, input_size=input_size,
                         mean=mean, std=std)
