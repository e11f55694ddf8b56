"""FID/KID protocols: the pinned image pre-processing of each, and the record that makes two statistics comparable.

A protocol fixes how images in [-1, 1] (or uint8) become extractor inputs: quantisation to uint8 (as a PNG of
them would store them), grey to RGB, and the resize filter. :func:`protocol_record` lists every setting that must
be equal for two FID/KID statistics to be comparable, including the extractor's weights: their hash, and a stamp
(``"weights"``, ``"comparable"``) that says whether the scores compare with anything outside this run. A seeded
random network (smoke runs, tests) is stamped ``"weights": "random(seed=0)"``, ``"comparable": false``.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Mapping, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from gan.weights import FID_INCEPTION

__all__ = [
    "FIDProtocol",
    "PRETRAINED",
    "USER_MODULE",
    "DescribedExtractor",
    "preprocess_images",
    "protocol_record",
    "pytorch_fid_protocol_record",
    "quantize_uint8",
    "random_weights",
    "with_weights_stamp",
]

#: ``"weights"`` stamp of an extractor whose weights were read from a pretrained file.
PRETRAINED = "pretrained"
#: ``"weights"`` stamp of a user module (:class:`~gan.metrics.features.extractor.ModuleExtractor`), identified by hash.
USER_MODULE = "module"
_RANDOM_PREFIX = "random(seed="
_LEGACY_RANDOM_SHA = "random-init-seed-"  # weights_sha256 of a seeded random extractor
_PRETRAINED_EXTRACTORS = ("fid-inception-v3", "torchvision-inception-v3-imagenet")


class FIDProtocol(str, Enum):
    """Named pre-processing protocols. Scores of different protocols are never comparable.

    ``PYTORCH_FID``: images quantised to uint8, then resized to the extractor input with
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``, exactly what pytorch-fid does
    with PNG files; use it to put numbers beside published ones.
    ``CLEAN``: images quantised to uint8, then resized per channel with PIL's bicubic filter in float
    mode ``"F"`` (the resize clean-fid recommends), without re-quantising. This pins clean-fid's resize,
    not the clean-fid library's numbers: that library feeds a different Inception port (TF graph via
    TorchScript, inputs normalised as (x - 128) / 128), so its published values are not reproduced exactly.
    """

    PYTORCH_FID = "pytorch-fid"
    CLEAN = "clean"


_RESIZE_FILTER = {
    FIDProtocol.PYTORCH_FID: "torch-bilinear-align_corners=False-antialias=False",
    FIDProtocol.CLEAN: "pil-bicubic-float32-per-channel",
}


class DescribedExtractor(Protocol):
    """What a protocol record reads from a feature extractor (see ``gan.metrics.features.extractor``)."""

    name: str
    weights_sha256: str
    weights: str
    dim: int
    input_size: int
    input_normalisation: str

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the extractor runs in."""
        ...


def random_weights(seed: int) -> str:
    """The ``"weights"`` stamp of a seeded random network, ``"random(seed=<seed>)"``.

    Args:
        seed: the seed of its initialisation.
    """
    return f"{_RANDOM_PREFIX}{int(seed)})"


def _is_random(weights: str) -> bool:
    return weights.startswith(_RANDOM_PREFIX)


# ----------------------------------------------------------------------------------------------
# pre-processing


def quantize_uint8(images: Tensor) -> Tensor:
    """Quantise images to uint8 the way a PNG of them would store them.

    Float images in [-1, 1] become ``uint8(clamp((x + 1) / 2 * 255 + 0.5, 0, 255))``, which is exactly
    what ``torchvision.utils.save_image(x, normalize=True, value_range=(-1, 1))`` writes. uint8 images are
    returned unchanged.

    Args:
        images: (N, C, H, W) float tensor in [-1, 1] or uint8 tensor in [0, 255].

    Raises:
        ValueError: for another dtype, non-finite values, or values clearly outside [-1, 1]
            (for example images still in [0, 255]).
    """
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [-1, 1] or uint8 in [0, 255], got dtype {images.dtype}")
    if images.numel():
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1.01 or hi > 1.01:
            raise ValueError(
                f"float images must lie in [-1, 1] (the network range), got values in [{lo:.4g}, {hi:.4g}]; "
                "pass uint8 tensors for 0-255 images"
            )
    x = images.float().clamp(-1.0, 1.0).add(1.0).div(2.0)
    return x.mul(255.0).add(0.5).clamp(0.0, 255.0).to(torch.uint8)


def _resize_pil_bicubic(images_u8: Tensor, size: int) -> Tensor:
    """Per-image, per-channel PIL bicubic resize in float mode, clipped to [0, 255], returned in [0, 1].

    Args:
        images_u8: (N, 3, H, W) uint8 tensor.
        size: output height and width.
    """
    arr = images_u8.detach().cpu().numpy()
    out = np.empty((arr.shape[0], arr.shape[1], size, size), dtype=np.float32)
    for i in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            channel = Image.fromarray(arr[i, c].astype(np.float32), mode="F")
            out[i, c] = np.asarray(channel.resize((size, size), resample=Image.BICUBIC), dtype=np.float32)
    out = np.clip(out, 0.0, 255.0)
    return torch.from_numpy(out).to(images_u8.device).div_(255.0)


def preprocess_images(images: Tensor, protocol: FIDProtocol | str, size: int) -> Tensor:
    """Apply a protocol's quantisation and resize; return float32 RGB images in [0, 1] at size x size.

    Args:
        images: (N, C, H, W) with C = 1 (repeated to RGB, as PIL's ``convert('RGB')`` does) or C = 3;
            float in [-1, 1] or uint8 in [0, 255].
        protocol: :class:`FIDProtocol` or its value.
        size: the extractor's input size.
    """
    protocol = FIDProtocol(protocol)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C in (1, 3), got shape {tuple(images.shape)}")
    x = quantize_uint8(images)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if protocol is FIDProtocol.PYTORCH_FID:
        # pytorch-fid: ToTensor (uint8 / 255 in float32), then bilinear interpolation to 299.
        x = x.to(torch.float32).div(255.0)
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return _resize_pil_bicubic(x, size)


# ----------------------------------------------------------------------------------------------
# protocol records


def _record(
    protocol: FIDProtocol,
    *,
    extractor: str,
    weights_sha256: str,
    weights: str,
    feature_dim: int,
    input_size: int,
    input_normalisation: str,
    extractor_dtype: str,
) -> dict[str, Any]:
    """Build a protocol record from its fields (see :func:`protocol_record`)."""
    return {
        "protocol": protocol.value,
        "extractor": extractor,
        "weights_sha256": weights_sha256,
        "weights": weights,
        "comparable": not _is_random(weights),
        "feature_dim": int(feature_dim),
        "input_size": int(input_size),
        "input_normalisation": input_normalisation,
        "extractor_dtype": extractor_dtype,
        "value_range": "[-1,1] float or [0,255] uint8",
        "quantisation": "uint8",
        "resize_filter": _RESIZE_FILTER[protocol],
    }


def protocol_record(protocol: FIDProtocol | str, extractor: DescribedExtractor) -> dict[str, Any]:
    """The settings that must be equal for two FID/KID statistics to be comparable.

    Protocol name, extractor name, weights hash and stamp (``"weights"``: ``"pretrained"``, ``"module"`` or
    ``"random(seed=N)"``; ``"comparable"``: False for random weights, whose scores compare with nothing outside
    the run), feature dimension, input size and normalisation, extractor dtype, accepted value range,
    quantisation and resize filter.

    Args:
        protocol: :class:`FIDProtocol` or its value.
        extractor: the feature extractor.
    """
    return _record(
        FIDProtocol(protocol),
        extractor=extractor.name,
        weights_sha256=extractor.weights_sha256,
        weights=extractor.weights,
        feature_dim=extractor.dim,
        input_size=extractor.input_size,
        input_normalisation=extractor.input_normalisation,
        extractor_dtype=str(extractor.dtype).replace("torch.", ""),
    )


def pytorch_fid_protocol_record(feature_dim: int = 2048) -> dict[str, Any]:
    """The record that statistics made by pytorch-fid itself (default settings) correspond to.

    The weights are identified by the sha256 prefix in their file name, ``6726825d``.

    Args:
        feature_dim: dimension of the stored mean (2048 for pool features).
    """
    return _record(
        FIDProtocol.PYTORCH_FID,
        extractor="fid-inception-v3",
        weights_sha256=str(FID_INCEPTION.sha256_prefix),
        weights=PRETRAINED,
        feature_dim=feature_dim,
        input_size=299,
        input_normalisation="2x-1",
        extractor_dtype="float32",
    )


def with_weights_stamp(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a record with its ``"weights"`` / ``"comparable"`` stamp, derived for records written before it.

    A record without the stamp gets it from its ``weights_sha256`` (``"random-init-seed-N"`` is a seeded random
    network) and extractor name; a record that has it is returned as a plain copy.

    Args:
        record: a protocol record (counts may be included).
    """
    out = dict(record)
    sha = out.get("weights_sha256")
    if "weights" not in out and isinstance(sha, str):
        if sha.startswith(_LEGACY_RANDOM_SHA) and sha[len(_LEGACY_RANDOM_SHA):].lstrip("-").isdigit():
            out["weights"] = random_weights(int(sha[len(_LEGACY_RANDOM_SHA):]))
        else:
            out["weights"] = PRETRAINED if out.get("extractor") in _PRETRAINED_EXTRACTORS else USER_MODULE
    if "comparable" not in out and isinstance(out.get("weights"), str):
        out["comparable"] = not _is_random(out["weights"])
    return out
