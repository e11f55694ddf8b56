"""StyleGAN2 residual discriminator with minibatch standard deviation and projection conditioning.

Blocks at resolutions ``resolution, ..., 8`` (each: two 3x3 convolutions, the second downsampling by 2 through the
FIR filter, plus a 1x1 downsampling skip; both branches scaled by sqrt(0.5)), then an epilogue at 4x4:
minibatch standard deviation, a 3x3 convolution, an FC layer and the output FC layer. A conditional discriminator
maps the label through its own FC stack to ``cmap`` and returns ``<out, cmap> / sqrt(cmap_dim)`` (projection
discriminator, Miyato & Koyama 2018), as the reference does.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from gan.nets.stylegan2.layers import (
    EqualConv2d,
    EqualLinear,
    channels_at,
    check_resolution,
    fc_stack,
    label_weights,
    normalize_2nd_moment,
)

_SQRT_HALF = math.sqrt(0.5)


def mbstd_group_size(batch: int, group_size: int) -> int:
    """Group size used for a batch: the largest divisor of ``batch`` that is at most ``min(group_size, batch)``.

    The reference uses ``min(group_size, batch)`` and requires it to divide the batch; this equals it whenever the
    reference works, and picks a smaller divisor (down to 1) instead of failing otherwise (e.g. batch 6, group 4 -> 3).

    Args:
        batch: the batch size N.
        group_size: the requested group size.
    """
    g = max(1, min(group_size, batch))
    while batch % g:
        g -= 1
    return g


class MinibatchStdDev(nn.Module):
    """Append the minibatch standard deviation as extra feature channels.

    The batch of N samples is split into ``G = mbstd_group_size(N, group_size)`` interleaved groups' members:
    sample ``n`` is grouped with the samples whose index equals ``n`` modulo ``N / G``. For each group and each of
    ``num_channels`` channel slices, the std over the group's members (population variance + 1e-8, then the square
    root) is averaged over the slice's channels and all pixels; every member of the group gets that value as a
    constant extra channel.

    Args:
        group_size: requested group size (4 in the reference).
        num_channels: number of extra channels (the features are split into this many slices).
    """

    def __init__(self, *, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"group_size={self.group_size}, num_channels={self.num_channels}"

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C + num_channels, H, W).

        Args:
            x: features.
        """
        n, c, h, w = x.shape
        g = mbstd_group_size(n, self.group_size)
        f = self.num_channels
        y = x.reshape(g, n // g, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))
        y = y.reshape(n // g, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: ``(skip(x) + conv1(conv0(x))) * sqrt(0.5)``, downsampling by 2.

    The first block also holds the FromRGB 1x1 convolution.

    Args:
        in_channels: channels coming in (0 for the first block, which reads the image).
        tmp_channels: channels of this resolution.
        out_channels: channels of the next (half) resolution.
        img_channels: image channels.
        conv_clamp: clamp the activations to this magnitude (None: no clamp).
    """

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        *,
        img_channels: int,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.fromrgb = EqualConv2d(img_channels, tmp_channels, 1, conv_clamp=conv_clamp) if in_channels == 0 else None
        self.conv0 = EqualConv2d(tmp_channels, tmp_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(tmp_channels, out_channels, 3, down=True, conv_clamp=conv_clamp)
        self.skip = EqualConv2d(tmp_channels, out_channels, 1, bias=False, lrelu=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, r, r) -> (N, out_channels, r/2, r/2).

        Args:
            x: the image (first block) or the previous block's features.
        """
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        y = self.skip(x, gain=_SQRT_HALF)
        x = self.conv1(self.conv0(x), gain=_SQRT_HALF)
        return x + y


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, 3x3 convolution, FC, output FC (1 logit, or ``cmap_dim`` for projection).

    Args:
        in_channels: channels at 4x4.
        cmap_dim: output width for projection conditioning (0: unconditional, one logit).
        mbstd_group: minibatch-std group size.
        mbstd_channels: minibatch-std extra channels.
        conv_clamp: clamp the activations to this magnitude (None: no clamp).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        cmap_dim: int = 0,
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.mbstd = MinibatchStdDev(group_size=mbstd_group, num_channels=mbstd_channels) if mbstd_channels else None
        self.conv = EqualConv2d(in_channels + mbstd_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.fc = EqualLinear(in_channels * 16, in_channels, lrelu=True)
        self.out = EqualLinear(in_channels, cmap_dim or 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, 4, 4) -> (N, cmap_dim or 1).

        Args:
            x: the last block's features.
        """
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """StyleGAN2 discriminator (residual), optionally class-conditional; returns (N, 1) raw logits.

    Parameter counts equal the reference architecture (unconditional, channel_max 512): 24,001,089 at 256 px and
    23,407,361 at 64 px with channel_base 16384; 29,012,513 at 1024 px with channel_base 32768. ``D.config`` keeps
    the constructor arguments (a JSON-able dict).

    Args:
        resolution: input size, a power of 2 in [32, 1024].
        img_channels: image channels.
        num_classes: number of classes (0: unconditional). Labels are (N,) class indices or (N, num_classes)
            float weights.
        channel_base: overall capacity; channels at resolution r are ``min(channel_base // r, channel_max)``.
        channel_max: maximum channels per layer.
        mbstd_group: minibatch-std group size (see :func:`mbstd_group_size` for batches it does not divide).
        mbstd_channels: minibatch-std extra channels.
        mapping_layers: FC layers of the label mapping (conditional only).
        cmap_dim: width of the label projection (None: the channels at 4x4).
        mapping_lr_mul: learning-rate multiplier of the label mapping.
        conv_clamp: clamp the activations to this magnitude (None: no clamp).
    """

    def __init__(
        self,
        *,
        resolution: int,
        img_channels: int = 3,
        num_classes: int = 0,
        channel_base: int = 16384,
        channel_max: int = 512,
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
        mapping_layers: int = 8,
        cmap_dim: int | None = None,
        mapping_lr_mul: float = 0.01,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "resolution": check_resolution(resolution), "img_channels": int(img_channels),
            "num_classes": int(num_classes), "channel_base": int(channel_base), "channel_max": int(channel_max),
            "mbstd_group": int(mbstd_group), "mbstd_channels": int(mbstd_channels),
            "mapping_layers": int(mapping_layers), "cmap_dim": None if cmap_dim is None else int(cmap_dim),
            "mapping_lr_mul": float(mapping_lr_mul), "conv_clamp": None if conv_clamp is None else float(conv_clamp),
        }
        self.resolution, self.img_channels, self.num_classes = resolution, img_channels, num_classes
        ch = {r: channels_at(r, channel_base=channel_base, channel_max=channel_max) for r in _powers(resolution)}
        blocks = []
        for r in _powers(resolution)[::-1]:
            if r == 4:
                break
            in_ch = 0 if r == resolution else ch[r]
            block = DiscriminatorBlock(in_ch, ch[r], ch[r // 2], img_channels=img_channels, conv_clamp=conv_clamp)
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)
        self.cmap_dim = (ch[4] if cmap_dim is None else cmap_dim) if num_classes else 0
        if num_classes:
            self.embed = EqualLinear(num_classes, self.cmap_dim)
            self.mapping = fc_stack(self.cmap_dim, self.cmap_dim, mapping_layers, lr_mul=mapping_lr_mul)
        else:
            self.embed = self.mapping = None
        self.epilogue = DiscriminatorEpilogue(
            ch[4], cmap_dim=self.cmap_dim, mbstd_group=mbstd_group, mbstd_channels=mbstd_channels,
            conv_clamp=conv_clamp,
        )

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"resolution={self.resolution}, num_classes={self.num_classes}"

    def forward(self, images: Tensor, label: Tensor | None = None) -> Tensor:
        """Real/fake logits (N, 1) for (N, img_channels, resolution, resolution) images.

        Args:
            images: images in [-1, 1].
            label: None (unconditional), (N,) class indices or (N, num_classes) float weights.
        """
        expected = (self.img_channels, self.resolution, self.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"Discriminator expects (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        weights = label_weights(label, self.num_classes, batch=images.shape[0], where="Discriminator")
        x = images
        for block in self.blocks:
            x = block(x)
        out = self.epilogue(x)
        if self.mapping is None:
            return out
        cmap = self.mapping(normalize_2nd_moment(self.embed(weights.to(out.dtype))))
        return (out * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)


def _powers(resolution: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(resolution)) + 1)]
