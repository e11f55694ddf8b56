"""Augmentation of H&E tiles given as [-1, 1] tensors: flips, 90-degree rotations and HED stain jitter.

Stain jitter follows Tellez et al. (2018, "Whole-slide mitosis detection in H&E breast histology using
PHH3 as a reference to train distilled stain-invariant convolutional networks"): the image is unmixed into
haematoxylin / eosin / DAB optical densities with the Ruifrok-Johnston matrix (the one in
``skimage.color.rgb_from_hed``), each stain is scaled by ``alpha ~ U(1 - sigma, 1 + sigma)`` and shifted by
``beta ~ U(-bias, bias)``, and the result is mixed back to RGB. Optical density here is ``-ln(rgb)`` with
rgb in [0, 1] (clamped at 1e-6), so stains are in natural OD units: ``skimage.color.rgb2hed`` returns the
same stains divided by ``-ln(1e-6)`` (and clipped at 0). With ``alpha = 1, beta = 0`` the transform is
the identity.

All randomness comes from an explicit ``torch.Generator`` when one is given (``TileDataset`` passes one
seeded from its seed, the epoch and the item index; :meth:`TileAugment.seeded` does the same on a batch
on the device), else from torch's global generator.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["HED_FROM_RGB", "RGB_FROM_HED", "TileAugment", "hed_to_rgb", "rgb_to_hed", "stain_jitter"]

#: Ruifrok-Johnston stain matrix: rows are the RGB optical densities of haematoxylin, eosin and DAB.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_EPS = 1e-6


def rgb_to_hed(image: torch.Tensor) -> torch.Tensor:
    """Stain densities (natural OD units) of an RGB image in [-1, 1], channel-first.

    Args:
        image: (..., 3, H, W) tensor in [-1, 1].
    """
    rgb = ((image + 1.0) / 2.0).clamp(min=_EPS)
    od = -torch.log(rgb)
    m = HED_FROM_RGB.to(image.dtype).to(image.device)
    return torch.einsum("...chw,cs->...shw", od, m)


def hed_to_rgb(stains: torch.Tensor) -> torch.Tensor:
    """RGB image in [-1, 1] (channel-first) from stain densities in natural OD units.

    Args:
        stains: (..., 3, H, W) haematoxylin, eosin, DAB densities.
    """
    m = RGB_FROM_HED.to(stains.dtype).to(stains.device)
    od = torch.einsum("...shw,sc->...chw", stains, m)
    rgb = torch.exp(-od).clamp(0.0, 1.0)
    return rgb * 2.0 - 1.0


def stain_jitter(image: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Scale and shift each stain density: ``hed' = alpha * hed + beta``, mixed back to RGB in [-1, 1].

    Args:
        image: (3, H, W) or (B, 3, H, W) tensor in [-1, 1].
        alpha: per-stain scale, shape (3,) or (B, 3).
        beta: per-stain shift in OD units, shape (3,) or (B, 3).
    """
    hed = rgb_to_hed(image)
    a = alpha.to(device=hed.device, dtype=hed.dtype)[..., :, None, None]
    b = beta.to(device=hed.device, dtype=hed.dtype)[..., :, None, None]
    return hed_to_rgb(hed * a + b)


class TileAugment(nn.Module):
    """Random flips, 90-degree rotations and HED stain jitter of [-1, 1] tiles.

    Non-square tiles are only rotated by 0 or 180 degrees, so their shape is kept.

    Args:
        flips: flip horizontally and vertically, each with probability 1/2.
        rot90: rotate by a random multiple of 90 degrees.
        stain_sigma: half-width of the per-stain scale ``alpha ~ U(1 - sigma, 1 + sigma)``; 0 disables.
        stain_bias: half-width of the per-stain shift ``beta ~ U(-bias, bias)`` in OD units; 0 disables.
    """

    def __init__(self, flips: bool = True, rot90: bool = True, stain_sigma: float = 0.05,
                 stain_bias: float = 0.02) -> None:
        super().__init__()
        if stain_sigma < 0 or stain_bias < 0:
            raise ValueError(f"stain_sigma and stain_bias must be >= 0, got {stain_sigma}, {stain_bias}")
        self.flips = flips
        self.rot90 = rot90
        self.stain_sigma = float(stain_sigma)
        self.stain_bias = float(stain_bias)

    def forward(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment one tile (3, H, W) or a batch (B, 3, H, W), each sample with its own draws.

        Args:
            image: tensor in [-1, 1].
            generator: source of randomness (default: torch's global generator).
        """
        if image.dim() == 3:
            return self._one(image, generator)
        if image.dim() == 4:
            return torch.stack([self._one(x, generator) for x in image])
        raise ValueError(f"TileAugment expects (3, H, W) or (B, 3, H, W), got shape {tuple(image.shape)}")

    def _one(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        if x.shape[0] != 3:
            raise ValueError(f"TileAugment expects 3 channels (RGB), got shape {tuple(x.shape)}")
        u = torch.rand(9, generator=g, dtype=torch.float64)  # fixed number of draws per call
        if self.flips:
            if u[0] < 0.5:
                x = x.flip(-1)
            if u[1] < 0.5:
                x = x.flip(-2)
        if self.rot90:
            k = int(u[2] * 4) % 4
            if x.shape[-1] != x.shape[-2]:
                k = 2 * (k // 2)
            if k:
                x = torch.rot90(x, k, dims=(-2, -1))
        if self.stain_sigma > 0 or self.stain_bias > 0:
            alpha = 1.0 + self.stain_sigma * (2.0 * u[3:6] - 1.0)
            beta = self.stain_bias * (2.0 * u[6:9] - 1.0)
            x = stain_jitter(x, alpha, beta).to(x.dtype)
        return x.contiguous()

    def seeded(self, images: torch.Tensor, seeds: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Augment a batch (B, 3, H, W), sample ``j`` with a generator seeded by ``seeds[j]`` (on any device).

        This is what a :class:`data.slides.datasets.TileDataset` does per item, so tiles delivered as uint8
        (``uint8=True``) and augmented here after :func:`data.slides.grid.uint8_to_unit` equal the float path.

        Args:
            images: tensor in [-1, 1].
            seeds: one seed per sample (the items' ``seed``).
        """
        seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
        if images.dim() != 4 or len(seeds) != images.shape[0]:
            raise ValueError(f"expected (B, 3, H, W) images and B seeds, got {tuple(images.shape)} and {len(seeds)}")
        return torch.stack([self._one(x, torch.Generator().manual_seed(s)) for x, s in zip(images, seeds)])

    def extra_repr(self) -> str:
        """The settings, shown in ``repr``."""
        return (f"flips={self.flips}, rot90={self.rot90}, stain_sigma={self.stain_sigma}, "
                f"stain_bias={self.stain_bias}")
