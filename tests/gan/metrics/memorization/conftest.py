"""Fixtures of the memorization tests: the feature extractor and the tile sets (training, held-out, generated)."""

from __future__ import annotations

import pytest
import torch

from gan.metrics.features import ModuleExtractor
from tests.gan.metrics.memorization.helpers import SIZE, N
from tests.gan.metrics.memorization.helpers import FlipInvariantRandomNet as _FlipInvariantRandomNet
from tests.gan.metrics.memorization.helpers import tiles as _tiles


@pytest.fixture(scope="module")
def extractor() -> ModuleExtractor:
    return ModuleExtractor(_FlipInvariantRandomNet(), name="test-random-conv", input_size=SIZE,
                           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # fmt: skip


@pytest.fixture(scope="module")
def tile_sets() -> dict[str, torch.Tensor]:
    """Training, held-out and clean generated tiles (same distribution), and planted copies."""
    train, heldout, clean = _tiles(N, 1), _tiles(N, 2), _tiles(N, 3)
    g = torch.Generator().manual_seed(9)
    source = torch.randperm(N, generator=g)[:40]
    exact = train[source[:20]]
    augmented = (train[source[20:]].flip(-1) + 0.03 * torch.randn(20, 3, SIZE, SIZE, generator=g)).clamp(-1, 1)
    leaky = torch.cat([exact, augmented, clean[:160]])  # 10 % exact, 10 % augmented copies
    mostly = torch.cat([
        (train[:160].flip(-1) + 0.03 * torch.randn(160, 3, SIZE, SIZE, generator=g)).clamp(-1, 1), clean[:40]
    ])  # fmt: skip
    return {"train": train, "heldout": heldout, "clean": clean, "leaky": leaky, "mostly": mostly,
            "source": source}  # fmt: skip
