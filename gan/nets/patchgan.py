"""PatchGAN discriminator (pix2pix) and its multiscale version (pix2pixHD), for 2D or 3D images."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gan.nets.init import init_weights
from gan.nets.layers import (
    Norm,
    avg_pool_type,
    check_input_rank,
    check_norm,
    check_positive,
    check_spatial_dims,
    conv_bias,
    conv_type,
    norm_layer,
)

_KERNEL = 4


def receptive_field(n_layers: int) -> int:
    """Receptive field (pixels per axis) of one output of a PatchDiscriminator with ``n_layers``.

    The net has ``n_layers`` 4x4 stride-2 convs followed by two 4x4 stride-1 convs; walking back from one
    output pixel, a stride-1 conv adds 3 pixels and a stride-2 conv maps a field r to 2 r + 2.
    ``receptive_field(3) == 70`` (the "70x70 PatchGAN").

    Args:
        n_layers: number of stride-2 convs (>= 1).
    """
    check_positive("n_layers", n_layers)
    field = 1 + 2 * (_KERNEL - 1)
    for _ in range(n_layers):
        field = 2 * field + (_KERNEL - 2)
    return field


def min_input_size(n_layers: int) -> int:
    """Smallest spatial size for which a PatchDiscriminator with ``n_layers`` gives at least one output.

    Each stride-2 conv (kernel 4, padding 1) maps s to floor(s / 2), each stride-1 conv maps s to s - 1.

    Args:
        n_layers: number of stride-2 convs (>= 1).
    """
    check_positive("n_layers", n_layers)
    return 3 * 2**n_layers


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix ``NLayerDiscriminator``): one real/fake logit per overlapping patch.

    Layers: 4x4 stride-2 conv + LeakyReLU(0.2); ``n_layers - 1`` x (4x4 stride-2 conv, norm, LeakyReLU);
    4x4 stride-1 conv, norm, LeakyReLU; 4x4 stride-1 conv to 1 channel (raw logits, no sigmoid). Channels
    double per layer up to ``8 * features``. At the default ``n_layers=3`` each logit sees a 70x70 patch
    (see ``receptive_field``). With 64 features the parameter count is 2,764,737 (instance norm, 3 inputs)
    and 2,768,705 (batch norm, 6 inputs), as in the reference.

    Args:
        spatial_dims: 2 for (N, C, H, W) images, 3 for (N, C, D, H, W) volumes.
        in_channels: input channels (for a conditional GAN: condition + image channels).
        features: channels of the first conv.
        n_layers: number of stride-2 convs (>= 1).
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        spectral_norm: wrap every conv in spectral normalisation (usually with ``norm="none"``).
        init_gain: standard deviation of the N(0, gain) weight initialisation.
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int,
        features: int = 64,
        n_layers: int = 3,
        norm: Norm = "instance",
        spectral_norm: bool = False,
        init_gain: float = 0.02,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        check_positive("in_channels", in_channels)
        check_positive("features", features)
        check_positive("n_layers", n_layers)
        check_norm(norm)
        self.n_layers = n_layers

        conv = conv_type(spatial_dims)
        bias = conv_bias(norm)
        convs: list[nn.Module] = []
        layers: list[nn.Module] = []

        def add_conv(c_in: int, c_out: int, stride: int, use_bias: bool) -> None:
            c = conv(c_in, c_out, _KERNEL, stride=stride, padding=1, bias=use_bias)
            convs.append(c)
            layers.append(c)

        add_conv(in_channels, features, 2, True)
        layers.append(nn.LeakyReLU(0.2))
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            add_conv(features * prev, features * mult, 2 if n < n_layers else 1, bias)
            layers += [norm_layer(norm, spatial_dims, features * mult), nn.LeakyReLU(0.2)]
        add_conv(features * mult, 1, 1, True)
        self.model = nn.Sequential(*layers)
        init_weights(self, gain=init_gain)
        if spectral_norm:
            for i, module in enumerate(self.model):
                if module in convs:
                    self.model[i] = _spectral_norm(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score every patch of ``x``.

        Args:
            x: (N, in_channels, *spatial) input in [-1, 1]; every spatial size at least ``3 * 2**n_layers``.

        Returns:
            (N, 1, *patch_grid) logits.
        """
        name = type(self).__name__
        check_input_rank(x, self.spatial_dims, name)
        smallest = min_input_size(self.n_layers)
        if min(x.shape[2:]) < smallest:
            raise ValueError(
                f"{name}: input shape {tuple(x.shape)} is too small for n_layers={self.n_layers}; every "
                f"spatial size must be at least {smallest}"
            )
        return self.model(x)


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD multiscale discriminator: ``num_scales`` independent PatchDiscriminators, the k-th seeing the
    input average-pooled k times (3-wide window, stride 2, padding 1, ``count_include_pad=False``).

    Args:
        num_scales: number of discriminators / scales (>= 1).
        spatial_dims: 2 for (N, C, H, W) images, 3 for (N, C, D, H, W) volumes.
        in_channels: input channels.
        features: channels of each discriminator's first conv.
        n_layers: stride-2 convs per discriminator.
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        spectral_norm: wrap every conv in spectral normalisation.
        init_gain: standard deviation of the N(0, gain) weight initialisation.
    """

    def __init__(
        self,
        *,
        num_scales: int = 3,
        spatial_dims: int = 2,
        in_channels: int,
        features: int = 64,
        n_layers: int = 3,
        norm: Norm = "instance",
        spectral_norm: bool = False,
        init_gain: float = 0.02,
    ) -> None:
        super().__init__()
        check_positive("num_scales", num_scales)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(
                spatial_dims=spatial_dims, in_channels=in_channels, features=features, n_layers=n_layers,
                norm=norm, spectral_norm=spectral_norm, init_gain=init_gain,
            )
            for _ in range(num_scales)
        )
        self.downsample = avg_pool_type(spatial_dims)(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Score ``x`` at every scale.

        Args:
            x: (N, in_channels, *spatial) input in [-1, 1].

        Returns:
            One logit map per scale, full resolution first.
        """
        check_input_rank(x, self.spatial_dims, type(self).__name__)
        outputs = []
        for k, disc in enumerate(self.discriminators):
            if k > 0:
                x = self.downsample(x)
            outputs.append(disc(x))
        return outputs
