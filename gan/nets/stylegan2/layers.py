"""Equalised-learning-rate layers and small helpers shared by the StyleGAN2 generator and discriminator.

Equalised learning rate (Karras et al. 2018): a parameter is stored as N(0, 1) / ``lr_mul`` and multiplied at run
time by ``lr_mul / sqrt(fan_in)`` (weights) or ``lr_mul`` (biases), so Adam's step is the same for every layer and
``lr_mul`` scales that layer's learning rate (0.01 in the mapping network).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.nets.stylegan2.resample import blur_pad, fir_kernel, upfirdn2d

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
"""Leaky ReLU (slope 0.2) outputs are multiplied by sqrt(2) to keep unit variance."""

MIN_RESOLUTION = 32
MAX_RESOLUTION = 1024


def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if it is a power of two in [32, 1024], else raise a ValueError.

    Args:
        resolution: output (generator) or input (discriminator) image size in pixels.
    """
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int)
        or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION
        or resolution & (resolution - 1)
    ):
        raise ValueError(
            f"resolution must be a power of 2 in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution!r}"
        )
    return resolution


def channels_at(resolution: int, *, channel_base: int, channel_max: int) -> int:
    """Feature channels at one resolution: ``min(channel_base // resolution, channel_max)``.

    Args:
        resolution: the feature map size (4, 8, ...).
        channel_base: overall capacity (16384 in the paper's 256 px configuration, 32768 in config F).
        channel_max: upper bound on the channels of any layer.
    """
    return min(channel_base // resolution, channel_max)


def normalize_2nd_moment(x: Tensor, *, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``x / sqrt(mean(x^2) + eps)`` along ``dim`` (pixel norm of the mapping network's inputs).

    Args:
        x: input tensor.
        dim: axis normalised.
        eps: added to the mean square.
    """
    return x * torch.rsqrt(x.square().mean(dim=dim, keepdim=True) + eps)


def lrelu_act(x: Tensor, *, gain: float = 1.0, clamp: float | None = None) -> Tensor:
    """Leaky ReLU (0.2) times ``sqrt(2) * gain``, optionally clamped to [-clamp, clamp].

    Args:
        x: pre-activation (bias already added).
        gain: extra output gain (sqrt(0.5) on the discriminator's residual branch).
        clamp: clamp the result to this magnitude (None: no clamp).
    """
    x = F.leaky_relu(x, LRELU_SLOPE) * (LRELU_GAIN * gain)
    return x.clamp(-clamp, clamp) if clamp is not None else x


def label_weights(label: Tensor | None, num_classes: int, *, batch: int, where: str) -> Tensor | None:
    """Labels as (N, num_classes) float weights: class indices become one-hot rows, float rows pass through.

    Float rows allow mixing classes (interpolating between class embeddings); training uses indices.

    Args:
        label: None, (N,) integer class indices in [0, num_classes), or (N, num_classes) float weights.
        num_classes: number of classes of the network (0: unconditional, ``label`` must be None).
        batch: expected N.
        where: the network's name, for messages.
    """
    if num_classes == 0:
        if label is not None:
            raise ValueError(f"{where} is unconditional (num_classes=0) but a label was given")
        return None
    if label is None:
        raise ValueError(f"{where} is conditional (num_classes={num_classes}): pass a label")
    if label.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        if label.shape != (batch,):
            raise ValueError(f"{where}: class indices must have shape ({batch},), got {tuple(label.shape)}")
        # checked on the CPU only (no device sync in training); F.one_hot checks on other devices
        if label.device.type == "cpu" and label.numel() and (int(label.min()) < 0 or int(label.max()) >= num_classes):
            raise ValueError(f"{where}: class indices must lie in [0, {num_classes}), got {label.tolist()}")
        return F.one_hot(label.long(), num_classes).float()
    if not label.is_floating_point() or label.shape != (batch, num_classes):
        raise ValueError(
            f"{where}: label must be ({batch},) class indices or ({batch}, {num_classes}) float weights, "
            f"got {tuple(label.shape)} {label.dtype}"
        )
    return label


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate: ``act(x @ (W * lr_mul / sqrt(in)).T + b * lr_mul)``.

    ``W`` is stored as N(0, 1) / lr_mul and ``b`` as ``bias_init / lr_mul``, so the effective initial bias is
    ``bias_init``.

    Args:
        in_features: input width.
        out_features: output width.
        bias: learn a bias.
        bias_init: effective initial bias (1 for the style affine layers, so styles start around 1).
        lr_mul: learning-rate multiplier (0.01 in the mapping network).
        lrelu: apply leaky ReLU (0.2) with gain sqrt(2); otherwise linear.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        lrelu: bool = False,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.lr_mul, self.lrelu = float(lr_mul), lrelu
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"{self.in_features}, {self.out_features}, lr_mul={self.lr_mul}, lrelu={self.lrelu}"

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to (N, in_features) inputs.

        Args:
            x: (N, in_features).
        """
        bias = self.bias * self.lr_mul if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, bias)
        return lrelu_act(x) if self.lrelu else x


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate (weight times 1/sqrt(in * k * k)), optional 2x FIR downsampling.

    ``down=True``: FIR blur (padding from :func:`~gan.nets.stylegan2.resample.blur_pad`), then a stride-2
    convolution without padding, so (H, W) -> (H/2, W/2). Otherwise a stride-1 convolution with padding k // 2.
    The output is ``act(conv + b) * gain`` with the leaky ReLU's sqrt(2) when ``lrelu``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (1 or 3 here).
        bias: learn a bias.
        lrelu: apply leaky ReLU (0.2) with gain sqrt(2); otherwise linear.
        down: downsample by 2 (FIR blur + stride 2).
        conv_clamp: clamp the output to this magnitude (None: no clamp).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        lrelu: bool = True,
        down: bool = False,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.lrelu, self.down, self.conv_clamp = lrelu, down, conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        if down:
            self.register_buffer("fir", fir_kernel(), persistent=False)
            self.fir_pad = blur_pad(self.fir.shape[-1], kernel_size, up=False)

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, down={self.down}, "
            f"lrelu={self.lrelu}, bias={self.bias is not None}"
        )

    def forward(self, x: Tensor, *, gain: float = 1.0) -> Tensor:
        """Apply the layer.

        Args:
            x: (N, in_channels, H, W).
            gain: extra output gain (sqrt(0.5) on the residual branches of the discriminator).
        """
        weight = self.weight * self.weight_gain
        if self.down:
            x = upfirdn2d(x, self.fir, pad=self.fir_pad)
            x = F.conv2d(x, weight, stride=2)
        else:
            x = F.conv2d(x, weight, padding=self.kernel_size // 2)
        if self.bias is not None:
            x = x + self.bias[None, :, None, None]
        if self.lrelu:
            return lrelu_act(x, gain=gain, clamp=self.conv_clamp)
        x = x * gain if gain != 1.0 else x
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


def fc_stack(in_features: int, width: int, num_layers: int, *, lr_mul: float) -> nn.Sequential:
    """``num_layers`` leaky-ReLU :class:`EqualLinear` layers ``in_features -> width -> ... -> width``.

    Args:
        in_features: input width of the first layer.
        width: width of every layer's output.
        num_layers: number of layers (>= 1).
        lr_mul: learning-rate multiplier of every layer.
    """
    if num_layers < 1:
        raise ValueError(f"mapping_layers must be >= 1, got {num_layers!r}")
    dims = [in_features] + [width] * num_layers
    return nn.Sequential(*(EqualLinear(a, b, lr_mul=lr_mul, lrelu=True) for a, b in zip(dims[:-1], dims[1:])))
