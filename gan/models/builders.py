"""Build the translation networks from their config groups (plain numbers and two-way choices).

The modules take :class:`~gan.models.config.GeneratorConfig` / :class:`~gan.models.config.DiscriminatorConfig`
rather than injected ``nn.Module`` objects, so a checkpoint rebuilds its networks from its saved hyperparameters
alone (``weights_only=True``) and a sweep varies any setting as one CLI key.
"""
from __future__ import annotations

from torch import nn

from gan.models.config import DiscriminatorConfig, GeneratorConfig
from gan.nets import MultiscaleDiscriminator, PatchDiscriminator, ResnetGenerator, UnetGenerator


def build_generator(config: GeneratorConfig, *, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """A ResNet (CycleGAN default) or U-Net (pix2pix default) generator.

    Args:
        config: the generator group.
        spatial_dims: 2 or 3.
        in_channels: input channels (slices in 2.5D).
        out_channels: output channels.
    """
    c = config
    if c.arch == "resnet":
        return ResnetGenerator(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                               features=c.features, n_blocks=c.n_blocks, norm=c.norm, dropout=c.dropout,
                               upsample=c.upsample)
    if c.arch == "unet":
        return UnetGenerator(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                             num_downs=c.num_downs, features=c.features, norm=c.norm, dropout=c.dropout)
    raise ValueError(f"generator arch must be 'resnet' or 'unet', got {c.arch!r}")


def build_discriminator(config: DiscriminatorConfig, *, spatial_dims: int, in_channels: int) -> nn.Module:
    """A PatchGAN (``scales == 1``) or multi-scale PatchGAN discriminator.

    Args:
        config: the discriminator group.
        spatial_dims: 2 or 3.
        in_channels: input channels (pix2pix: input + output channels).
    """
    c = config
    kw = dict(spatial_dims=spatial_dims, in_channels=in_channels, features=c.features, n_layers=c.layers,
              norm=c.norm, spectral_norm=c.spectral_norm)
    return PatchDiscriminator(**kw) if c.scales == 1 else MultiscaleDiscriminator(num_scales=c.scales, **kw)
