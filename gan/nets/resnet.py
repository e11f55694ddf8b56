"""ResNet generator of pytorch-CycleGAN-and-pix2pix (Johnson et al.), for 2D or 3D images."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from gan.nets.init import init_weights
from gan.nets.layers import (
    Norm,
    PaddingMode,
    check_divisible,
    check_norm,
    check_padding_mode,
    check_positive,
    check_probability,
    check_spatial_dims,
    conv_bias,
    conv_transpose_type,
    conv_type,
    norm_layer,
)

Upsample = Literal["transpose", "resize"]
"""Generator upsampling: stride-2 transposed conv (the reference) or nearest resize followed by a 3x3 conv."""


class ResnetBlock(nn.Module):
    """Residual block: pad, 3x3 conv, norm, ReLU, [dropout], pad, 3x3 conv, norm; output ``x + block(x)``.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        norm: normalisation after each conv.
        dropout: dropout probability after the first conv (0 disables it).
        padding_mode: how the convs pad (``"reflect"``, ``"replicate"`` or ``"zeros"``).
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        channels: int,
        norm: Norm = "instance",
        dropout: float = 0.0,
        padding_mode: PaddingMode = "reflect",
    ) -> None:
        super().__init__()
        conv = conv_type(spatial_dims)
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            conv(channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias),
            norm_layer(norm, spatial_dims, channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            conv(channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias),
            norm_layer(norm, spatial_dims, channels),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: (N, C, *spatial) features.
        """
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """ResNet image-to-image generator as in pytorch-CycleGAN-and-pix2pix.

    7x7 conv (padded by ``padding_mode``), two stride-2 3x3 downsamplings, ``n_blocks`` residual blocks, two 2x
    upsamplings, 7x7 conv and tanh, so outputs lie in [-1, 1]. Convs before batch norm have no bias (as the
    reference); with instance norm (affine=False) or no norm they keep it. Every spatial input size must be a
    multiple of 4. With the reference settings (9 blocks, 64 features, instance norm, 3->3 channels) the
    parameter count is 11,378,179, equal to the reference's ``resnet_9blocks``.

    Args:
        spatial_dims: 2 for (N, C, H, W) images, 3 for (N, C, D, H, W) volumes.
        in_channels: input channels.
        out_channels: output channels.
        features: channels after the first conv (doubled at each downsampling).
        n_blocks: number of residual blocks at 1/4 resolution.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        dropout: dropout probability inside the residual blocks (0 disables it; the reference uses 0.5 when on).
        upsample: ``"transpose"`` (stride-2 transposed conv, the reference) or ``"resize"`` (nearest-neighbour
            resize then a 3x3 conv, which avoids checkerboard artefacts).
        padding_mode: padding of the 7x7 and 3x3 convs: ``"reflect"`` (the reference), ``"replicate"`` or
            ``"zeros"``.
        init_gain: standard deviation of the N(0, gain) weight initialisation.
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int,
        out_channels: int,
        features: int = 64,
        n_blocks: int = 9,
        norm: Norm = "instance",
        dropout: float = 0.0,
        upsample: Upsample = "transpose",
        padding_mode: PaddingMode = "reflect",
        init_gain: float = 0.02,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        check_positive("in_channels", in_channels)
        check_positive("out_channels", out_channels)
        check_positive("features", features)
        check_positive("n_blocks", n_blocks, minimum=0)
        check_norm(norm)
        check_probability("dropout", dropout)
        check_padding_mode(padding_mode)
        if upsample not in ("transpose", "resize"):
            raise ValueError(f"upsample must be 'transpose' or 'resize', got {upsample!r}")

        conv = conv_type(spatial_dims)
        bias = conv_bias(norm)
        n_down = 2

        self.stem = nn.Sequential(
            conv(in_channels, features, 7, padding=3, padding_mode=padding_mode, bias=bias),
            norm_layer(norm, spatial_dims, features),
            nn.ReLU(inplace=True),
        )
        down: list[nn.Module] = []
        for i in range(n_down):
            c_in, c_out = features * 2**i, features * 2 ** (i + 1)
            down += [
                conv(c_in, c_out, 3, stride=2, padding=1, bias=bias),
                norm_layer(norm, spatial_dims, c_out),
                nn.ReLU(inplace=True),
            ]
        self.down = nn.Sequential(*down)
        width = features * 2**n_down
        self.blocks = nn.Sequential(
            *(
                ResnetBlock(
                    spatial_dims=spatial_dims, channels=width, norm=norm, dropout=dropout, padding_mode=padding_mode
                )
                for _ in range(n_blocks)
            )
        )
        up: list[nn.Module] = []
        for i in range(n_down):
            c_in = features * 2 ** (n_down - i)
            c_out = c_in // 2
            if upsample == "transpose":
                up.append(
                    conv_transpose_type(spatial_dims)(
                        c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias
                    )
                )
            else:
                up += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    conv(c_in, c_out, 3, padding=1, padding_mode=padding_mode, bias=bias),
                ]
            up += [norm_layer(norm, spatial_dims, c_out), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(
            conv(features, out_channels, 7, padding=3, padding_mode=padding_mode, bias=True),
            nn.Tanh(),
        )
        init_weights(self, gain=init_gain)

    #: Every spatial input size must be a multiple of this (two stride-2 levels; inference pads to it).
    size_multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate an image.

        Args:
            x: (N, in_channels, *spatial) input in [-1, 1]; every spatial size a multiple of 4.
        """
        check_divisible(x, self.spatial_dims, self.size_multiple, type(self).__name__)
        return self.head(self.up(self.blocks(self.down(self.stem(x)))))
