"""Weight initialisation as in pytorch-CycleGAN-and-pix2pix (``init_type='normal'``)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

_CONV_OR_LINEAR = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
)
_NORMS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm,
)


def _raw_weight(m: nn.Module) -> torch.Tensor | None:
    """The stored weight tensor of ``m``, looking through a parametrization such as spectral norm."""
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original
    return getattr(m, "weight", None)


@torch.no_grad()
def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Initialise a network in place: conv/linear weights ~ N(0, gain), their biases 0, norm weights ~ N(1, gain),
    norm biases 0. Norm layers without affine parameters are left alone. Returns ``module``.

    Args:
        module: the network (all submodules are visited).
        gain: standard deviation of the normal distributions.
    """
    if not gain > 0:
        raise ValueError(f"init gain must be > 0, got {gain!r}")
    for m in module.modules():
        if isinstance(m, _CONV_OR_LINEAR):
            weight = _raw_weight(m)
            if weight is not None:
                nn.init.normal_(weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS):
            weight = _raw_weight(m)
            if weight is not None:
                nn.init.normal_(weight, 1.0, gain)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return module
