"""U-Net generator of pix2pix (recursive skip-connection blocks), for 2D or 3D images."""
from __future__ import annotations

import torch
from torch import nn

from gan.nets.init import init_weights
from gan.nets.layers import (
    Norm,
    check_divisible,
    check_norm,
    check_positive,
    check_probability,
    check_spatial_dims,
    conv_bias,
    conv_transpose_type,
    conv_type,
    norm_layer,
)


class UnetBlock(nn.Module):
    """One U-Net level: downsample, the inner levels, upsample, then concatenate the skip connection.

    Down path: [LeakyReLU 0.2], 4x4 stride-2 conv, [norm]; up path: ReLU, 4x4 stride-2 transposed conv,
    norm (or tanh at the outermost level), [dropout]. Every level except the outermost returns
    ``cat([x, up(inner(down(x)))], dim=1)``; the outermost returns the image.

    Args:
        spatial_dims: 2 or 3.
        outer_channels: channels this level returns to its parent (before the skip concatenation).
        inner_channels: channels after this level's downsampling conv.
        in_channels: channels of this level's input; defaults to ``outer_channels``.
        inner: the next-deeper level, or None for the innermost level.
        outermost: True for the top level (no activation before the first conv, tanh output, no skip).
        norm: normalisation name.
        dropout: dropout probability at the end of the up path (0 disables it).
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        outer_channels: int,
        inner_channels: int,
        in_channels: int | None = None,
        inner: UnetBlock | None = None,
        outermost: bool = False,
        norm: Norm = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        in_channels = outer_channels if in_channels is None else in_channels
        bias = conv_bias(norm)
        innermost = inner is None
        down_conv = conv_type(spatial_dims)(in_channels, inner_channels, 4, stride=2, padding=1, bias=bias)
        up_in = inner_channels if innermost else inner_channels * 2
        up_conv = conv_transpose_type(spatial_dims)(
            up_in, outer_channels, 4, stride=2, padding=1, bias=True if outermost else bias
        )
        if outermost:
            down: list[nn.Module] = [down_conv]
            up: list[nn.Module] = [nn.ReLU(), up_conv, nn.Tanh()]
        elif innermost:
            down = [nn.LeakyReLU(0.2), down_conv]
            up = [nn.ReLU(), up_conv, norm_layer(norm, spatial_dims, outer_channels)]
        else:
            down = [nn.LeakyReLU(0.2), down_conv, norm_layer(norm, spatial_dims, inner_channels)]
            up = [nn.ReLU(), up_conv, norm_layer(norm, spatial_dims, outer_channels)]
        if dropout > 0 and not (outermost or innermost):
            up.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*down, *([] if innermost else [inner]), *up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply this level and everything inside it.

        Args:
            x: (N, C, *spatial) features.
        """
        y = self.model(x)
        return y if self.outermost else torch.cat([x, y], dim=1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net generator with ``num_downs`` stride-2 levels and skip connections.

    Channels go ``features, 2f, 4f, 8f, 8f, ...`` down to the 1x1 bottleneck of a 2**num_downs input; the
    ``num_downs - 5`` inner ``8f`` levels (not the innermost) end with dropout, as in the reference. Output in
    [-1, 1] (tanh). With the reference settings (8 downsamplings, 64 features, batch norm, 3->3 channels) the
    parameter count is 54,413,955, equal to the reference's ``unet_256``.

    Args:
        spatial_dims: 2 for (N, C, H, W) images, 3 for (N, C, D, H, W) volumes.
        in_channels: input channels.
        out_channels: output channels.
        num_downs: number of stride-2 downsamplings (>= 5); every input size must be divisible by 2**num_downs.
        features: channels after the first conv.
        norm: ``"batch"`` (the reference), ``"instance"`` or ``"none"``. The innermost level has no norm on its
            down path, so the 1x1 bottleneck is never normalised and batch size 1 works.
        dropout: dropout probability in the inner ``8 * features`` levels (0 disables it).
        init_gain: standard deviation of the N(0, gain) weight initialisation.
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int,
        out_channels: int,
        num_downs: int = 8,
        features: int = 64,
        norm: Norm = "batch",
        dropout: float = 0.5,
        init_gain: float = 0.02,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        check_positive("in_channels", in_channels)
        check_positive("out_channels", out_channels)
        check_positive("num_downs", num_downs, minimum=5)
        check_positive("features", features)
        check_norm(norm)
        check_probability("dropout", dropout)
        self.num_downs = num_downs

        f = features
        block = UnetBlock(spatial_dims=spatial_dims, outer_channels=8 * f, inner_channels=8 * f, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetBlock(
                spatial_dims=spatial_dims, outer_channels=8 * f, inner_channels=8 * f, inner=block, norm=norm,
                dropout=dropout,
            )
        for outer, inner_ch in ((4 * f, 8 * f), (2 * f, 4 * f), (f, 2 * f)):
            block = UnetBlock(
                spatial_dims=spatial_dims, outer_channels=outer, inner_channels=inner_ch, inner=block, norm=norm
            )
        self.model = UnetBlock(
            spatial_dims=spatial_dims, outer_channels=out_channels, inner_channels=f, in_channels=in_channels,
            inner=block, outermost=True, norm=norm,
        )
        init_weights(self, gain=init_gain)

    @property
    def size_multiple(self) -> int:
        """Every spatial input size must be a multiple of this (inference pads to it)."""
        return 2**self.num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate an image.

        Args:
            x: (N, in_channels, *spatial) input in [-1, 1]; every spatial size divisible by 2**num_downs.
        """
        check_divisible(x, self.spatial_dims, self.size_multiple, type(self).__name__)
        return self.model(x)
