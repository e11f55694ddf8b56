"""Feature extraction and any-module extractors (gan.metrics.features.extractor)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan.metrics.features import FIDProtocol, ModuleExtractor, extract_features
from tests.gan.metrics.helpers import tiny_extractor as _tiny_extractor

pytestmark = pytest.mark.usefixtures("no_network")


def test_bad_images_are_rejected() -> None:
    ext = _tiny_extractor()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        extract_features(torch.full((1, 3, 8, 8), 200.0), ext, "pytorch-fid")
    with pytest.raises(ValueError, match="C in"):
        extract_features(torch.zeros(1, 4, 8, 8), ext, "pytorch-fid")
    with pytest.raises(ValueError, match="dtype"):
        extract_features(torch.zeros(1, 3, 8, 8, dtype=torch.int32), ext, "pytorch-fid")
    with pytest.raises(ValueError):
        FIDProtocol("bicubic")


def test_module_extractor_checks_output_and_hashes_weights() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"\(N, dim\)"):
        ModuleExtractor(conv, name="conv", input_size=16)
    a, b = _tiny_extractor(0), _tiny_extractor(1)
    assert a.dim == 32 and a.weights_sha256 != b.weights_sha256
