"""Build the translation networks from flat, typed hyperparameters.

The modules take plain numbers and two-way architecture choices (rather than injected ``nn.Module`` objects) so
a checkpoint rebuilds its networks from its saved hyperparameters alone, loadable with ``weights_only=True``,
and a sweep can vary any of them as a flat LightningCLI argument.
"""
from __future__ import annotations

from typing import Literal

from torch import nn

from gan.nets import MultiscaleDiscriminator, PatchDiscriminator, ResnetGenerator, UnetGenerator

GeneratorArch = Literal["resnet", "unet"]
Norm = Literal["instance", "batch", "none"]


def build_generator(
    *,
    arch: GeneratorArch,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    features: int,
    n_blocks: int,
    num_downs: int,
    norm: Norm,
    dropout: float,
    upsample: Literal["transpose", "resize"],
) -> nn.Module:
    """A ResNet (CycleGAN default) or U-Net (pix2pix default) generator.

    Args:
        arch: ``"resnet"`` or ``"unet"``.
        spatial_dims: 2 or 3.
        in_channels: input channels (slices in 2.5D).
        out_channels: output channels.
        features: filters of the first layer.
        n_blocks: residual blocks (ResNet).
        num_downs: downsamplings (U-Net); inputs must be divisible by ``2**num_downs``.
        norm: normalisation layer.
        dropout: dropout (ResNet blocks; U-Net inner blocks).
        upsample: ``"transpose"`` convolutions or ``"resize"`` + conv (ResNet; avoids checkerboard artefacts).
    """
    if arch == "resnet":
        return ResnetGenerator(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                               features=features, n_blocks=n_blocks, norm=norm, dropout=dropout, upsample=upsample)
    if arch == "unet":
        return UnetGenerator(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                             num_downs=num_downs, features=features, norm=norm, dropout=dropout)
    raise ValueError(f"generator arch must be 'resnet' or 'unet', got {arch!r}")


def build_discriminator(
    *, spatial_dims: int, in_channels: int, features: int, n_layers: int, norm: Norm, spectral_norm: bool, num_scales: int
) -> nn.Module:
    """A PatchGAN (``num_scales == 1``) or multi-scale PatchGAN discriminator.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (pix2pix: input + output channels).
        features: filters of the first layer.
        n_layers: strided layers (3 gives the 70x70 receptive field).
        norm: normalisation layer.
        spectral_norm: spectral normalisation on every conv.
        num_scales: number of image scales (pix2pixHD uses 2-3).
    """
    kw = dict(spatial_dims=spatial_dims, in_channels=in_channels, features=features, n_layers=n_layers, norm=norm,
              spectral_norm=spectral_norm)
    return PatchDiscriminator(**kw) if num_scales == 1 else MultiscaleDiscriminator(num_scales=num_scales, **kw)


def required_multiple(arch: GeneratorArch, num_downs: int) -> int:
    """Spatial sizes a generator accepts are multiples of this (inputs are padded to it at inference)."""
    return 4 if arch == "resnet" else 2**num_downs
