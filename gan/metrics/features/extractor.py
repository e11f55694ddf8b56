"""Feature extractors: the base every extractor follows, a wrapper for any ``nn.Module``, and feature extraction.

An extractor is an ``nn.Module`` that maps float32 RGB images in [0, 1] at ``input_size`` x ``input_size`` to
``(N, dim)`` features and exposes ``name``, ``weights_sha256``, ``weights``, ``dim`` and ``input_size``; it always
stays in eval mode and never needs gradients. :class:`ModuleExtractor` wraps a user network (for example a
pathology foundation model); the Inception-v3 extractors live in ``gan.metrics.features.inception``.
:func:`extract_features` applies a protocol's pre-processing (``gan.metrics.features.protocol``) and an extractor.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from gan.metrics.features.protocol import PRETRAINED, USER_MODULE, FIDProtocol, preprocess_images
from gan.weights import state_dict_sha256

__all__ = ["FeatureExtractor", "ModuleExtractor", "extract_features"]


class FeatureExtractor(nn.Module):
    """Base class of feature extractors: fixed in eval mode, no gradients.

    Subclasses set ``name``, ``weights_sha256``, ``weights``, ``dim``, ``input_size``, ``input_normalisation`` and
    implement ``forward(x)`` for float32 RGB images in [0, 1] of shape (N, 3, input_size, input_size),
    returning (N, dim) features.

    Args:
        name: identifier of the network (recorded with every score).
        weights_sha256: sha256 of the weights file, or a description of where the weights come from.
        dim: feature dimension.
        input_size: square input resolution the network expects.
        input_normalisation: how [0, 1] images are mapped to the network input (recorded).
        weights: the weights stamp recorded with every score: ``"pretrained"``, ``"module"`` or
            ``"random(seed=N)"`` (see ``gan.metrics.features.protocol``).
    """

    def __init__(self, *, name: str, weights_sha256: str, dim: int, input_size: int, input_normalisation: str,
                 weights: str = PRETRAINED) -> None:
        super().__init__()
        self.name = name
        self.weights_sha256 = weights_sha256
        self.weights = weights
        self.dim = int(dim)
        self.input_size = int(input_size)
        self.input_normalisation = input_normalisation

    def _freeze(self) -> None:
        """Switch to eval mode and disable gradients of every parameter."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in eval mode whatever is asked (batch-norm statistics must not change).

        Args:
            mode: ignored.
        """
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the first parameter or buffer (float32 if there is none)."""
        for t in list(self.parameters()) + list(self.buffers()):
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    @property
    def device(self) -> torch.device:
        """Device of the first parameter or buffer (CPU if there is none)."""
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")


class ModuleExtractor(FeatureExtractor):
    """Wrap any ``nn.Module`` that maps normalised images to features, e.g. a pathology foundation model.

    Inputs in [0, 1] are normalised with ``(x - mean) / std`` per channel before the module. The module's
    output must be (N, dim) (trailing singleton dimensions are flattened). Its weights are stamped ``"module"``
    and identified by ``weights_sha256``.

    Args:
        module: the network; it is frozen and kept in eval mode.
        name: identifier recorded with every score (use a name that identifies the model and version).
        input_size: square input resolution; images are resized to it by the protocol's filter.
        mean: per-channel mean subtracted from [0, 1] images.
        std: per-channel std dividing [0, 1] images.
        dim: feature dimension; None runs one dummy image to find it.
        weights_sha256: identity of the weights; None hashes the module's state dict.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        input_size: int = 224,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        dim: int | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values with std > 0, got mean={tuple(mean)} std={tuple(std)}")
        if int(input_size) < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        super().__init__(
            name=name,
            weights_sha256=weights_sha256 or state_dict_sha256(module),
            dim=dim or 1,
            input_size=input_size,
            input_normalisation=f"(x-{tuple(float(m) for m in mean)})/{tuple(float(s) for s in std)}",
            weights=USER_MODULE,
        )
        self.module = module
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1), persistent=False)
        self._freeze()
        if dim is None:
            with torch.no_grad():
                probe = torch.full((1, 3, self.input_size, self.input_size), 0.5, device=self.device, dtype=self.dtype)
                self.dim = int(self.forward(probe).shape[1])

    def forward(self, x: Tensor) -> Tensor:
        """Features of images in [0, 1].

        Args:
            x: (N, 3, input_size, input_size) float images in [0, 1].
        """
        if any(m.training for m in self.module.modules()):
            self.module.eval()  # the wrapped module may have been switched to training mode elsewhere
        mean, std = self.mean.to(x.dtype), self.std.to(x.dtype)
        out = self.module((x - mean) / std)
        if not isinstance(out, Tensor):
            raise ValueError(f"extractor '{self.name}': module returned {type(out).__name__}, expected a tensor")
        if out.ndim > 2 and all(s == 1 for s in out.shape[2:]):
            out = out.flatten(1)
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"extractor '{self.name}': module must return (N, dim) features, got shape {tuple(out.shape)}; "
                "wrap it with a pooling/flatten head"
            )
        return out


def extract_features(images: Tensor, extractor: FeatureExtractor, protocol: FIDProtocol | str) -> Tensor:
    """Pre-process images by the protocol and return the extractor's (N, dim) features.

    Runs without gradients and with autocast disabled (mixed precision would change the numbers), in the
    extractor's dtype and on its device.

    Args:
        images: (N, 1 or 3, H, W) float in [-1, 1] or uint8 in [0, 255].
        extractor: the feature extractor.
        protocol: :class:`FIDProtocol` or its value.
    """
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    device = extractor.device
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        x = preprocess_images(images.to(device), protocol, extractor.input_size)
        feats = extractor(x.to(extractor.dtype))
    if feats.ndim != 2 or feats.shape != (images.shape[0], extractor.dim):
        raise ValueError(
            f"extractor '{extractor.name}' returned shape {tuple(feats.shape)}, expected ({images.shape[0]}, "
            f"{extractor.dim})"
        )
    return feats
