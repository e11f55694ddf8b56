"""The Inception-v3 feature extractors of FID/KID, from local weights files or seeded random weights.

* :class:`FIDInceptionV3` - the Inception-v3 port that pytorch-fid uses (2048-d pool features), from its
  weights file ``pt_inception-2015-12-05-6726825d.pth``;
* :class:`TorchvisionInceptionExtractor` - torchvision's ImageNet Inception-v3 pool features.

Weights are located, checksummed and read by ``gan.weights`` (an explicit file or folder, or the torch hub
cache; never downloaded). ``pretrained=False`` builds a seeded random network instead (tests, benchmarks, smoke
runs): it is stamped ``"weights": "random(seed=N)"`` in every protocol record, so its scores say they compare
with nothing.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
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

from gan.metrics.features.extractor import FeatureExtractor
from gan.metrics.features.protocol import PRETRAINED, random_weights
from gan.weights import FID_INCEPTION, TORCHVISION_INCEPTION, WeightsFile, load, load_into

PathLike = Union[str, Path]

FID_WEIGHTS_FILENAME = FID_INCEPTION.filename
FID_WEIGHTS_URL = FID_INCEPTION.url
FID_WEIGHTS_SHA256_PREFIX = str(FID_INCEPTION.sha256_prefix)

TORCHVISION_INCEPTION_FILENAME = TORCHVISION_INCEPTION.filename
TORCHVISION_INCEPTION_URL = TORCHVISION_INCEPTION.url
TORCHVISION_INCEPTION_SHA256_PREFIX = str(TORCHVISION_INCEPTION.sha256_prefix)

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_SHA256_PREFIX",
    "FID_WEIGHTS_URL",
    "TORCHVISION_INCEPTION_FILENAME",
    "TORCHVISION_INCEPTION_SHA256_PREFIX",
    "TORCHVISION_INCEPTION_URL",
    "FIDInceptionV3",
    "TorchvisionInceptionExtractor",
]


def _load_or_init(module: nn.Module, *, pretrained: bool, spec: WeightsFile, weights_path: PathLike | None,
                  sha256_prefix: str | None, seed: int) -> tuple[str, str]:
    """Load checked pretrained weights into ``module``, or seed a random init; return ``(weights_sha256, weights)``.

    Args:
        module: the network to fill in place.
        pretrained: load the weights file; False initialises randomly with ``seed`` and reads no file.
        spec: the weights file (name, address, expected hash).
        weights_path: explicit file or folder, or None for the hub cache.
        sha256_prefix: required start of the file's sha256 (replaces the spec's), or None to accept any file.
        seed: seed of the random init.
    """
    if not pretrained:
        _seeded_random_init(module, seed)
        return f"random-init-seed-{int(seed)}", random_weights(seed)
    weights = load(replace(spec, sha256_prefix=sha256_prefix), weights_path)
    load_into(module, weights, what=spec.what)
    return weights.sha256, PRETRAINED


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
        pretrained: False builds a seeded random network (tests, benchmarks, smoke runs) and reads no file; its
            records are stamped ``"weights": "random(seed=N)"``, ``"comparable": False``.
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
            weights_sha256="",  # set below, from the file or the seed
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

        self.weights_sha256, self.weights = _load_or_init(self, pretrained=pretrained, spec=FID_INCEPTION,
                                                          weights_path=weights_path, sha256_prefix=sha256_prefix,
                                                          seed=seed)
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
        pretrained: False builds a seeded random network and reads no file (stamped ``"random(seed=N)"``).
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
            weights_sha256="",  # set below, from the file or the seed
            dim=2048,
            input_size=299,
            input_normalisation="2x-1",
        )
        net = Inception3(num_classes=1000, aux_logits=True, transform_input=False, init_weights=False)
        self.weights_sha256, self.weights = _load_or_init(net, pretrained=pretrained, spec=TORCHVISION_INCEPTION,
                                                          weights_path=weights_path, sha256_prefix=sha256_prefix,
                                                          seed=seed)
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
