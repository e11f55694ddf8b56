"""DiffAugment (Zhao et al. 2020): colour, translation and cutout, applied to every image the discriminator sees.

Per sample, in this order (each group switched on or off; when on it is always applied, as in the paper):

* colour: brightness ``x + (u - 0.5)``; saturation ``(x - m_c) * 2u + m_c`` with ``m_c`` the per-pixel channel mean;
  contrast ``(x - m) * (u + 0.5) + m`` with ``m`` the image mean (``u ~ U(0, 1)``, a fresh draw each);
* translation by integers ``dx, dy ~ U{-s, ..., s}``, ``s = int(size * translation_ratio + 0.5)``, filling with 0
  (mid grey in [-1, 1]);
* cutout: a ``int(size * cutout_ratio + 0.5)`` square (clipped at the borders) set to 0, centred at a uniformly
  drawn pixel.

Randomness comes only from the ``generator`` argument (a fixed number of draws per sample), so the same generator
state gives the same augmentation and a global-batch draw can be sliced by rank (:meth:`DiffAugmentParams.select`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class DiffAugmentParams:
    """Per-sample parameters of one DiffAugment draw (batch first).

    Attributes:
        brightness: (N,) added offset.
        saturation: (N,) factor on the deviation from the channel mean.
        contrast: (N,) factor on the deviation from the image mean.
        shift: (N, 2) int64 ``(dx, dy)``.
        cutout: (N, 4) int64 box ``(x0, y0, x1, y1)``, half-open, clipped to the image.
    """

    brightness: Tensor
    saturation: Tensor
    contrast: Tensor
    shift: Tensor
    cutout: Tensor

    @property
    def batch_size(self) -> int:
        """N."""
        return self.brightness.shape[0]

    def select(self, index: slice | Tensor) -> DiffAugmentParams:
        """The parameters of a subset of the samples.

        Args:
            index: a slice or an index tensor along the batch.
        """
        return DiffAugmentParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


class DiffAugment(nn.Module):
    """DiffAugment as an ``nn.Module`` (see the module docstring).

    Args:
        color: apply the brightness, saturation and contrast changes.
        translation: apply the integer translation.
        cutout: apply the cutout.
        translation_ratio: largest shift as a fraction of the size.
        cutout_ratio: cutout side as a fraction of the size.
    """

    def __init__(
        self,
        *,
        color: bool = True,
        translation: bool = True,
        cutout: bool = True,
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        self.color, self.translation, self.cutout = color, translation, cutout
        self.translation_ratio, self.cutout_ratio = float(translation_ratio), float(cutout_ratio)

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"color={self.color}, translation={self.translation}, cutout={self.cutout}"

    def forward(self, images: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch (draw from ``generator``, then :meth:`apply`).

        Args:
            images: (N, C, H, W) images in [-1, 1].
            generator: source of the random parameters (None: the global torch RNG).
        """
        n, _, h, w = images.shape
        return self.apply(images, self.sample_params(n, height=h, width=w, generator=generator))

    def sample_params(
        self, batch_size: int, *, height: int, width: int, generator: torch.Generator | None = None
    ) -> DiffAugmentParams:
        """Draw the parameters of ``batch_size`` samples (on the generator's device; 9 draws per sample).

        Args:
            batch_size: N.
            height: image height.
            width: image width.
            generator: source of the random draws (None: the global torch RNG).
        """
        dev = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((batch_size, 9), generator=generator, device=dev)
        size = torch.tensor([width, height], device=dev)
        s = (size * self.translation_ratio + 0.5).long()
        shift = (u[:, 3:5] * (2 * s + 1)).floor().long().minimum(2 * s) - s
        side = (size * self.cutout_ratio + 0.5).long()
        centre = (u[:, 5:7] * (size + 1 - side % 2)).floor().long().minimum(size - side % 2)
        lo = (centre - side // 2).clamp(min=0)
        hi = (centre - side // 2 + side).minimum(size).clamp(min=0)
        return DiffAugmentParams(
            brightness=u[:, 0] - 0.5, saturation=u[:, 1] * 2, contrast=u[:, 2] + 0.5, shift=shift,
            cutout=torch.cat([lo, hi], dim=1),
        )

    def apply(self, images: Tensor, params: DiffAugmentParams) -> Tensor:
        """Apply drawn parameters (differentiable in ``images``).

        Args:
            images: (N, C, H, W) images.
            params: parameters for these N samples.
        """
        if params.batch_size != images.shape[0]:
            raise ValueError(f"params are for {params.batch_size} samples, images has {images.shape[0]}")
        x = images
        dev, dt = x.device, x.dtype
        if self.color:
            x = x + params.brightness.to(dev, dt)[:, None, None, None]
            mean_c = x.mean(dim=1, keepdim=True)
            x = (x - mean_c) * params.saturation.to(dev, dt)[:, None, None, None] + mean_c
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * params.contrast.to(dev, dt)[:, None, None, None] + mean
        if self.translation:
            x = _translate_zero(x, params.shift.to(dev))
        if self.cutout:
            x = x * _box_mask(x, params.cutout.to(dev))
        return x


def _translate_zero(x: Tensor, shift: Tensor) -> Tensor:
    """Move the content by ``(dx, dy)`` (right, down), filling with zeros (one gather + a mask)."""
    n, c, h, w = x.shape
    cols = torch.arange(w, device=x.device)[None] - shift[:, 0:1]  # (N, W) source columns
    rows = torch.arange(h, device=x.device)[None] - shift[:, 1:2]  # (N, H) source rows
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    index = (rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]).reshape(n, 1, h * w)
    out = x.reshape(n, c, h * w).gather(2, index.expand(n, c, h * w)).reshape(n, c, h, w)
    return out * valid[:, None].to(x.dtype)


def _box_mask(x: Tensor, box: Tensor) -> Tensor:
    """(N, 1, H, W) mask: 0 inside each sample's half-open box ``(x0, y0, x1, y1)``, 1 elsewhere."""
    h, w = x.shape[-2:]
    cols = torch.arange(w, device=x.device)[None]
    rows = torch.arange(h, device=x.device)[None]
    in_x = (cols >= box[:, 0:1]) & (cols < box[:, 2:3])
    in_y = (rows >= box[:, 1:2]) & (rows < box[:, 3:4])
    return (~(in_y[:, :, None] & in_x[:, None, :]))[:, None].to(x.dtype)
