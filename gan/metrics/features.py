"""Feature extractors and the pinned image pre-processing of the FID/KID protocols.

An extractor is an ``nn.Module`` that maps float32 RGB images in [0, 1] at ``input_size`` x ``input_size``
to ``(N, dim)`` features and exposes ``name``, ``weights_sha256``, ``dim`` and ``input_size``; it always
stays in eval mode and never needs gradients. Three are provided:

* :class:`FIDInceptionV3` - the Inception-v3 port that pytorch-fid uses (2048-d pool features), from its
  weights file ``pt_inception-2015-12-05-6726825d.pth``;
* :class:`TorchvisionInceptionExtractor` - torchvision's ImageNet Inception-v3 pool features;
* :class:`ModuleExtractor` - any user ``nn.Module`` (for example a pathology foundation model).

:func:`extract_features` applies a protocol's pre-processing (quantisation to uint8, resize filter) and
an extractor. Weights are never downloaded: they come from a local path or the torch hub cache folder.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.models.inception import (
    BasicConv2d,
    Inception3,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
)

PathLike = Union[str, Path]

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILENAME
FID_WEIGHTS_SHA256_PREFIX = "6726825d"

TORCHVISION_INCEPTION_FILENAME = "inception_v3_google-0cc3c7bd.pth"
TORCHVISION_INCEPTION_URL = "https://download.pytorch.org/models/" + TORCHVISION_INCEPTION_FILENAME
TORCHVISION_INCEPTION_SHA256_PREFIX = "0cc3c7bd"

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_SHA256_PREFIX",
    "FIDInceptionV3",
    "FIDProtocol",
    "FeatureExtractor",
    "ModuleExtractor",
    "TorchvisionInceptionExtractor",
    "extract_features",
    "locate_weights",
    "preprocess_images",
    "protocol_record",
    "pytorch_fid_protocol_record",
    "quantize_uint8",
    "sha256_file",
]


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


# ----------------------------------------------------------------------------------------------
# weights files


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file.

    Args:
        path: the file.
        chunk_size: bytes read at a time.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def locate_weights(filename: str, weights_path: PathLike | None, url: str) -> Path:
    """Find a weights file: an explicit file, ``filename`` inside an explicit folder, or the hub cache.

    Args:
        filename: the canonical file name (used inside folders and in the error message).
        weights_path: a file, a folder holding ``filename``, or None for ``torch.hub.get_dir()/checkpoints``.
        url: where the file can be downloaded by hand (quoted in the error; never fetched).

    Raises:
        FileNotFoundError: naming the exact file and folder expected.
    """
    if weights_path is None:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        candidate = folder / filename
    else:
        given = Path(weights_path).expanduser()
        if given.is_dir():
            folder, candidate = given, given / filename
        else:
            folder, candidate = given.parent, given
    if not candidate.is_file():
        raise FileNotFoundError(
            f"weights file not found: {candidate} (expected file '{candidate.name}' in folder '{folder}'). "
            f"Nothing is downloaded at run time: fetch {url} on a machine with internet access and place it "
            f"at {folder / filename}, or pass weights_path=<file or folder>."
        )
    return candidate


def _load_checked_state_dict(path: Path, sha256_prefix: str | None, what: str) -> tuple[dict[str, Tensor], str]:
    """Hash a weights file, check its sha256 prefix, and load its state dict without executing code.

    Args:
        path: the weights file.
        sha256_prefix: required start of the file's sha256 (hub convention), or None to accept any file.
        what: a short description of the expected network, for error messages.
    """
    digest = sha256_file(path)
    if sha256_prefix is not None and not digest.startswith(sha256_prefix.lower()):
        raise ValueError(
            f"{path}: sha256 {digest[:16]}... does not start with '{sha256_prefix}', the hash of {what}; "
            "the file is corrupt or holds another network. Replace it, or pass sha256_prefix=None to use a "
            "custom file on purpose (its hash is then recorded with every score)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable/unsafe files
        raise ValueError(f"{path}: cannot be read as a PyTorch state dict ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor) of {what}, got {type(state).__name__}")
    return state, digest


def _load_strict(module: nn.Module, state: dict[str, Tensor], path: Path, what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file.

    Args:
        module: the network to fill.
        state: the state dict read from ``path``.
        path: the file, for the message.
        what: a short description of the expected network.
    """
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: does not hold {what}: {exc}") from exc


def _load_or_init(module: nn.Module, *, pretrained: bool, filename: str, weights_path: PathLike | None, url: str,
                  sha256_prefix: str | None, what: str, seed: int) -> str | None:
    """Load checked pretrained weights into ``module`` (returns their sha256), or seed a random init (returns None).

    Args:
        module: the network to fill in place.
        pretrained: load the weights file; False initialises randomly with ``seed``.
        filename: the weights file's name (as in the torch hub cache).
        weights_path: explicit file or folder, or None for the hub cache.
        url: where the file is published (named in the error when it is missing).
        sha256_prefix: required start of the file's sha256, or None.
        what: the weights' description for messages.
        seed: seed of the random init.
    """
    if not pretrained:
        _seeded_random_init(module, seed)
        return None
    path = locate_weights(filename, weights_path, url)
    state, sha = _load_checked_state_dict(path, sha256_prefix, what)
    _load_strict(module, state, path, what)
    return sha


@torch.no_grad()
def _seeded_random_init(module: nn.Module, seed: int) -> None:
    """Deterministic random weights with activations of order one (for tests and benchmarks).

    Convolutions get He-normal weights; batch-norm layers get random affine parameters and running
    statistics, so that loading them is exercised too.

    Args:
        module: the network to initialise in place.
        seed: seed of the CPU generator used for every tensor.
    """
    gen = torch.Generator().manual_seed(int(seed))

    def normal(t: Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float32) * std + mean)

    def uniform(t: Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float32) * (high - low) + low)

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            normal(m.weight, (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                normal(m.bias, 0.01)
        elif isinstance(m, nn.BatchNorm2d):
            uniform(m.weight, 0.8, 1.2)
            normal(m.bias, 0.05)
            normal(m.running_mean, 0.05)
            uniform(m.running_var, 0.8, 1.25)


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
# extractors


class FeatureExtractor(nn.Module):
    """Base class of feature extractors: fixed in eval mode, no gradients.

    Subclasses set ``name``, ``weights_sha256``, ``dim``, ``input_size``, ``input_normalisation`` and
    implement ``forward(x)`` for float32 RGB images in [0, 1] of shape (N, 3, input_size, input_size),
    returning (N, dim) features.

    Args:
        name: identifier of the network (recorded with every score).
        weights_sha256: sha256 of the weights file, or a description of where the weights come from.
        dim: feature dimension.
        input_size: square input resolution the network expects.
        input_normalisation: how [0, 1] images are mapped to the network input (recorded).
    """

    def __init__(self, *, name: str, weights_sha256: str, dim: int, input_size: int, input_normalisation: str) -> None:
        super().__init__()
        self.name = name
        self.weights_sha256 = weights_sha256
        self.dim = int(dim)
        self.input_size = int(input_size)
        self.input_normalisation = input_normalisation

    def _freeze(self) -> None:
        """Switch to eval mode and disable gradients of every parameter."""
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Stay in eval mode whatever is asked (batch-norm statistics must not change).

        Args:
            mode: ignored.
        """
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the first parameter or buffer (float32 if there is none)."""
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


def _tf_avg_pool(x: Tensor) -> Tensor:
    """3x3 average pool, stride 1, whose border averages ignore the zero padding (TensorFlow style)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _FIDInceptionA(InceptionA):
    """InceptionA whose pool branch averages without the padded zeros, as in the TF FID graph."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))]


class _FIDInceptionC(InceptionC):
    """InceptionC whose pool branch averages without the padded zeros, as in the TF FID graph."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        return [self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))]


class _FIDInceptionE(InceptionE):
    """InceptionE of the TF FID graph: TF-style average pool, or a 3x3 max pool in the last block.

    Args:
        in_channels: input channels.
        max_pool: use a max pool in the pool branch (the final block of the TF graph does).
    """

    def __init__(self, in_channels: int, *, max_pool: bool) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x: Tensor) -> list[Tensor]:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return [self.branch1x1(x), b3, bd, self.branch_pool(pooled)]


class FIDInceptionV3(FeatureExtractor):
    """The Inception-v3 of the TF FID graph (as ported by pytorch-fid), returning 2048-d pool features.

    Built on torchvision's Inception blocks with the FID-specific changes (pool branches that ignore
    padding, a max pool in the last block, 1008 classes); parameter names match torchvision's
    ``Inception3`` so pytorch-fid's weights file loads strictly. Inputs in [0, 1] are mapped to
    [-1, 1] with ``2 x - 1`` as pytorch-fid does.

    Args:
        weights_path: the weights file, a folder holding ``pt_inception-2015-12-05-6726825d.pth``, or
            None for ``torch.hub.get_dir()/checkpoints``. Never downloaded.
        pretrained: False builds a seeded random network (tests, benchmarks) and reads no file.
        seed: seed of the random network when ``pretrained`` is False.
        sha256_prefix: required start of the file's sha256; None accepts any file with the right layout.
        channels_last: run convolutions in NHWC memory format (about 1.5x faster on CPU); features differ
            from the NCHW ones only by float32 round-off (~1e-6).
    """

    def __init__(
        self,
        weights_path: PathLike | None = None,
        *,
        pretrained: bool = True,
        seed: int = 0,
        sha256_prefix: str | None = FID_WEIGHTS_SHA256_PREFIX,
        channels_last: bool = True,
    ) -> None:
        super().__init__(
            name="fid-inception-v3",
            weights_sha256=f"random-init-seed-{int(seed)}",
            dim=2048,
            input_size=299,
            input_normalisation="2x-1",
        )
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = _FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = _FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = _FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = _FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = _FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = _FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = _FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = _FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = _FIDInceptionE(2048, max_pool=True)
        # The logits layer of the TF graph (1008 classes): unused for features, kept so the file loads strictly.
        self.fc = nn.Linear(2048, 1008)

        sha = _load_or_init(self, pretrained=pretrained, filename=FID_WEIGHTS_FILENAME, weights_path=weights_path,
                            url=FID_WEIGHTS_URL, sha256_prefix=sha256_prefix, seed=seed,
                            what="pytorch-fid's FID Inception-v3 weights")
        self.weights_sha256 = sha or self.weights_sha256
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self._freeze()

    def forward(self, x: Tensor) -> Tensor:
        """Pool features of images in [0, 1].

        Args:
            x: (N, 3, 299, 299) float images in [0, 1].
        """
        x = 2 * x - 1
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3):
            x = layer(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
            self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):  # fmt: skip
            x = block(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


class TorchvisionInceptionExtractor(FeatureExtractor):
    """torchvision's ImageNet Inception-v3 (``inception_v3_google-0cc3c7bd.pth``), 2048-d pool features.

    Not the FID network: its scores are comparable only with scores of this extractor.

    Args:
        weights_path: the weights file, a folder holding ``inception_v3_google-0cc3c7bd.pth``, or None for
            ``torch.hub.get_dir()/checkpoints``. Never downloaded.
        pretrained: False builds a seeded random network and reads no file.
        seed: seed of the random network when ``pretrained`` is False.
        sha256_prefix: required start of the file's sha256; None accepts any file with the right layout.
        channels_last: run convolutions in NHWC memory format (faster on CPU; round-off differences only).
    """

    def __init__(
        self,
        weights_path: PathLike | None = None,
        *,
        pretrained: bool = True,
        seed: int = 0,
        sha256_prefix: str | None = TORCHVISION_INCEPTION_SHA256_PREFIX,
        channels_last: bool = True,
    ) -> None:
        super().__init__(
            name="torchvision-inception-v3-imagenet",
            weights_sha256=f"random-init-seed-{int(seed)}",
            dim=2048,
            input_size=299,
            input_normalisation="2x-1",
        )
        net = Inception3(num_classes=1000, aux_logits=True, transform_input=False, init_weights=False)
        sha = _load_or_init(net, pretrained=pretrained, filename=TORCHVISION_INCEPTION_FILENAME,
                            weights_path=weights_path, url=TORCHVISION_INCEPTION_URL, sha256_prefix=sha256_prefix,
                            what="torchvision's ImageNet Inception-v3 weights", seed=seed)
        self.weights_sha256 = sha or self.weights_sha256
        net.AuxLogits = None
        net.aux_logits = False
        self.net = net
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self._freeze()

    def forward(self, x: Tensor) -> Tensor:
        """Pool features of images in [0, 1] (the Google weights expect inputs in [-1, 1]).

        Args:
            x: (N, 3, 299, 299) float images in [0, 1].
        """
        n = self.net
        x = 2 * x - 1
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1, n.Conv2d_3b_1x1,
                      n.Conv2d_4a_3x3, n.maxpool2, n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b,
                      n.Mixed_6c, n.Mixed_6d, n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c, n.avgpool):  # fmt: skip
            x = layer(x)
        return x.flatten(1)


def _state_dict_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and raw bytes, in name order).

    Args:
        module: the module to fingerprint.
    """
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().to("cpu").contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ModuleExtractor(FeatureExtractor):
    """Wrap any ``nn.Module`` that maps normalised images to features, e.g. a pathology foundation model.

    Inputs in [0, 1] are normalised with ``(x - mean) / std`` per channel before the module. The module's
    output must be (N, dim) (trailing singleton dimensions are flattened).

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
            weights_sha256=weights_sha256 or _state_dict_sha256(module),
            dim=dim or 1,
            input_size=input_size,
            input_normalisation=f"(x-{tuple(float(m) for m in mean)})/{tuple(float(s) for s in std)}",
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


# ----------------------------------------------------------------------------------------------
# protocol + extraction


def _record(
    protocol: FIDProtocol,
    *,
    extractor: str,
    weights_sha256: str,
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
        "feature_dim": int(feature_dim),
        "input_size": int(input_size),
        "input_normalisation": input_normalisation,
        "extractor_dtype": extractor_dtype,
        "value_range": "[-1,1] float or [0,255] uint8",
        "quantisation": "uint8",
        "resize_filter": _RESIZE_FILTER[protocol],
    }


def protocol_record(protocol: FIDProtocol | str, extractor: FeatureExtractor) -> dict[str, Any]:
    """The settings that must be equal for two FID/KID statistics to be comparable.

    Protocol name, extractor name, weights hash, feature dimension, input size and normalisation,
    extractor dtype, accepted value range, quantisation and resize filter.

    Args:
        protocol: :class:`FIDProtocol` or its value.
        extractor: the feature extractor.
    """
    return _record(
        FIDProtocol(protocol),
        extractor=extractor.name,
        weights_sha256=extractor.weights_sha256,
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
        weights_sha256=FID_WEIGHTS_SHA256_PREFIX,
        feature_dim=feature_dim,
        input_size=299,
        input_normalisation="2x-1",
        extractor_dtype="float32",
    )


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
