"""Synthetic tiles, a fixed flip-invariant random feature net and a random LPIPS for the memorization tests.

The feature extractor is a small seeded random conv net made flip-invariant (features of x plus features of
its mirror image), as a pretrained network trained with flip augmentation roughly is; LPIPS uses random
weights. Nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.distance import cdist
from torch import nn

from gan.losses.perceptual import LPIPSLoss

SIZE = 32
N = 200


def texture_params(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Parameters of n random textures: 4 coloured sinusoid gratings and a colour offset each."""
    g = torch.Generator().manual_seed(seed)
    return {
        "freq": 1 + 7 * torch.rand(n, 4, generator=g),
        "angle": math.pi * torch.rand(n, 4, generator=g),
        "phase": 2 * math.pi * torch.rand(n, 4, generator=g),
        "colour": torch.rand(n, 4, 3, generator=g) * 2 - 1,
        "offset": 0.3 * (torch.rand(n, 3, generator=g) * 2 - 1),
    }


def render(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, 3, SIZE, SIZE) textures in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    direction = torch.cos(p["angle"])[..., None, None] * xx + torch.sin(p["angle"])[..., None, None] * yy
    waves = torch.sin(2 * math.pi * p["freq"][..., None, None] * direction + p["phase"][..., None, None])
    img = (p["colour"][..., None, None] * waves[:, :, None]).sum(dim=1) + p["offset"][..., None, None]
    return torch.tanh(0.6 * img)


def tiles(n: int, seed: int) -> torch.Tensor:
    return render(texture_params(n, seed))


class FlipInvariantRandomNet(nn.Module):
    """Seeded random conv net; features of x plus features of x mirrored left-right."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.body(x.flip(-1))


def random_lpips(reduction: str = "none") -> LPIPSLoss:
    """LPIPS with a seeded random backbone and random linear heads made non-negative (as trained heads are)."""
    torch.manual_seed(0)
    lpips = LPIPSLoss(net="alex", pretrained=False, reduction=reduction)
    with torch.no_grad():
        for lin in lpips.lpips.lins:
            lin.model[1].weight.abs_()
    return lpips


def brute_nn(q: np.ndarray, r: np.ndarray, metric: str) -> np.ndarray:
    """(nq, nr) float64 distance matrix from scipy."""
    return cdist(q.astype(np.float64), r.astype(np.float64), metric=metric)

