"""Small layer helpers shared by the 2D/3D networks: layer classes picked by ``spatial_dims`` and the norm choice."""
from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

Norm = Literal["instance", "batch", "none"]
"""Normalisation after a convolution: instance norm (affine=False), batch norm (affine=True) or none."""

PaddingMode = Literal["reflect", "replicate", "zeros"]
"""How the generator pads before its convolutions (PyTorch ``Conv*d(padding_mode=...)`` names)."""

_NORMS: tuple[str, ...] = get_args(Norm)
_PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise a ValueError.

    Args:
        spatial_dims: number of spatial axes of the images the network sees (2: N,C,H,W; 3: N,C,D,H,W).
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def check_norm(norm: str) -> str:
    """Return ``norm`` if it is one of ``"instance"``, ``"batch"``, ``"none"``, else raise a ValueError.

    Args:
        norm: the normalisation name.
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    return norm


def check_padding_mode(padding_mode: str) -> str:
    """Return ``padding_mode`` if it is one of ``"reflect"``, ``"replicate"``, ``"zeros"``, else raise a ValueError.

    Args:
        padding_mode: the padding name.
    """
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    return padding_mode


def check_positive(name: str, value: int, minimum: int = 1) -> int:
    """Return the integer ``value`` if it is at least ``minimum``, else raise a ValueError naming ``name``.

    Args:
        name: argument name used in the message.
        value: the value to check.
        minimum: the smallest allowed value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_probability(name: str, value: float) -> float:
    """Return ``value`` if it lies in [0, 1), else raise a ValueError naming ``name``.

    Args:
        name: argument name used in the message.
        value: the dropout probability to check.
    """
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def conv_type(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """Convolution class for the number of spatial axes.

    Args:
        spatial_dims: 2 or 3.
    """
    return nn.Conv2d if check_spatial_dims(spatial_dims) == 2 else nn.Conv3d


def conv_transpose_type(spatial_dims: int) -> type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]:
    """Transposed-convolution class for the number of spatial axes.

    Args:
        spatial_dims: 2 or 3.
    """
    return nn.ConvTranspose2d if check_spatial_dims(spatial_dims) == 2 else nn.ConvTranspose3d


def avg_pool_type(spatial_dims: int) -> type[nn.AvgPool2d] | type[nn.AvgPool3d]:
    """Average-pooling class for the number of spatial axes.

    Args:
        spatial_dims: 2 or 3.
    """
    return nn.AvgPool2d if check_spatial_dims(spatial_dims) == 2 else nn.AvgPool3d


def norm_layer(norm: Norm, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer as in pytorch-CycleGAN-and-pix2pix.

    Instance norm has ``affine=False`` and no running statistics; batch norm has ``affine=True`` and running
    statistics; ``"none"`` gives ``nn.Identity``.

    Args:
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
        spatial_dims: 2 or 3.
        channels: number of feature channels normalised.
    """
    check_norm(norm)
    two_d = check_spatial_dims(spatial_dims) == 2
    if norm == "instance":
        cls = nn.InstanceNorm2d if two_d else nn.InstanceNorm3d
        return cls(channels, affine=False, track_running_stats=False)
    if norm == "batch":
        cls = nn.BatchNorm2d if two_d else nn.BatchNorm3d
        return cls(channels, affine=True, track_running_stats=True)
    return nn.Identity()


def conv_bias(norm: Norm) -> bool:
    """Whether a convolution followed by ``norm`` needs its own bias.

    Batch norm has a learned shift that makes a conv bias redundant; instance norm here is not affine, and
    ``"none"`` has no shift at all, so both keep the conv bias.

    Args:
        norm: ``"instance"``, ``"batch"`` or ``"none"``.
    """
    return check_norm(norm) != "batch"


def check_divisible(x: torch.Tensor, spatial_dims: int, factor: int, net: str) -> None:
    """Raise a ValueError unless ``x`` is (N, C, *spatial) with every spatial size divisible by ``factor``.

    Args:
        x: the network input.
        spatial_dims: expected number of spatial axes.
        factor: every spatial size must be a multiple of this.
        net: the network's name, for the message.
    """
    check_input_rank(x, spatial_dims, net)
    sizes = tuple(x.shape[2:])
    if any(s % factor for s in sizes):
        raise ValueError(
            f"{net}: input shape {tuple(x.shape)} has spatial size {sizes}; every spatial size must be "
            f"divisible by {factor}"
        )


def check_input_rank(x: torch.Tensor, spatial_dims: int, net: str) -> None:
    """Raise a ValueError unless ``x`` has ``spatial_dims + 2`` axes (N, C, *spatial).

    Args:
        x: the network input.
        spatial_dims: expected number of spatial axes.
        net: the network's name, for the message.
    """
    if x.dim() != spatial_dims + 2:
        layout = "(N, C, H, W)" if spatial_dims == 2 else "(N, C, D, H, W)"
        raise ValueError(f"{net}: expected a {layout} tensor, got shape {tuple(x.shape)}")
