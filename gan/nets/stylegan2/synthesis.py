"""StyleGAN2 synthesis network: learned 4x4 constant, modulated 3x3 convolutions with per-layer noise, skip ToRGB.

Each resolution ``r`` (4, 8, ..., resolution) is one :class:`SynthesisBlock`: the first holds the learned constant
and one convolution, the others a 2x-upsampling convolution and a plain one; each block adds its ToRGB output to
the 2x FIR-upsampled image of the blocks before it ("skip" architecture). Layer ``j`` of the network reads
``ws[:, j]``; a block's ToRGB reads the same w as the next block's first convolution, so there are
``num_ws = 2 * log2(resolution) - 2`` ws in all.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from gan.nets.stylegan2.layers import EqualLinear, channels_at, check_resolution, lrelu_act
from gan.nets.stylegan2.modconv import modulated_conv2d, modulated_conv2d_up
from gan.nets.stylegan2.resample import fir_kernel, upsample2d

NoiseMode = Literal["const", "random", "none"]
"""Per-layer noise: the layer's fixed buffer (reproducible), fresh N(0, 1) per call, or no noise."""
_NOISE_MODES: tuple[str, ...] = get_args(NoiseMode)


def check_noise_mode(noise_mode: str) -> str:
    """Return ``noise_mode`` if it is ``"const"``, ``"random"`` or ``"none"``, else raise a ValueError.

    Args:
        noise_mode: the noise mode.
    """
    if noise_mode not in _NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {_NOISE_MODES}, got {noise_mode!r}")
    return noise_mode


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally 2x upsampling), noise with a learned strength, bias, leaky ReLU.

    ``out = lrelu(modconv(x, W / sqrt(in * 9), affine(w)) + strength * noise + b) * sqrt(2)``; the equalised-LR
    gain is folded into the styles. The noise is one (H, W) map per sample, shared by all channels.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        w_dim: width of w.
        resolution: output size of this layer (the size of its noise map).
        up: upsample by 2 before the convolution's output (transposed convolution + FIR).
        use_noise: add per-pixel noise (a learned strength, initialised to 0, and a fixed ``noise_const`` buffer).
        conv_clamp: clamp the activations to this magnitude (None: no clamp).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        w_dim: int,
        resolution: int,
        up: bool = False,
        use_noise: bool = True,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.use_noise, self.conv_clamp = use_noise, conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros(()))
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
        if up:
            self.register_buffer("fir", fir_kernel(), persistent=False)

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"{self.in_channels}, {self.out_channels}, resolution={self.resolution}, up={self.up}"

    def forward(
        self,
        x: Tensor,
        w: Tensor,
        *,
        noise_mode: NoiseMode = "const",
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        fused: bool = False,
    ) -> Tensor:
        """Apply the layer.

        Args:
            x: (N, in_channels, H, W) features (H = resolution, or resolution / 2 when ``up``).
            w: (N, w_dim) the layer's w.
            noise_mode: ``"const"``, ``"random"`` or ``"none"`` (ignored when ``noise`` is given).
            noise: explicit noise, broadcastable to (N, 1, resolution, resolution); overrides ``noise_mode``.
            generator: source of the ``"random"`` noise (None: the global torch RNG).
            fused: grouped-convolution implementation of the modulated convolution (see ``modconv``).
        """
        styles = self.affine(w) * self.weight_gain
        if self.up:
            x = modulated_conv2d_up(x, self.weight, styles, self.fir, fused=fused)
        else:
            x = modulated_conv2d(x, self.weight, styles, padding=1, fused=fused)
        if self.use_noise:
            n = _noise(x, self, noise_mode=noise_mode, noise=noise, generator=generator)
            if n is not None:
                x = x + n * self.noise_strength
        return lrelu_act(x + self.bias[None, :, None, None], clamp=self.conv_clamp)


def _noise(
    x: Tensor,
    layer: SynthesisLayer,
    *,
    noise_mode: NoiseMode,
    noise: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor | None:
    """The noise a layer adds: explicit, its constant buffer, fresh N(0, 1) (N, 1, H, W) draws, or None."""
    if noise is not None:
        return noise
    if noise_mode == "const":
        return layer.noise_const
    if noise_mode == "random":
        size = (x.shape[0], 1, layer.resolution, layer.resolution)
        device = generator.device if generator is not None else x.device
        return torch.randn(size, generator=generator, device=device, dtype=x.dtype).to(x.device)
    return None


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation, plus bias (linear).

    Args:
        in_channels: input channels.
        img_channels: output (image) channels.
        w_dim: width of w.
        conv_clamp: clamp the output to this magnitude (None: no clamp).
    """

    def __init__(self, in_channels: int, img_channels: int, *, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor, *, fused: bool = False) -> Tensor:
        """Apply the layer.

        Args:
            x: (N, in_channels, H, W) features.
            w: (N, w_dim) the layer's w.
            fused: grouped-convolution implementation of the modulated convolution.
        """
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, padding=0, fused=fused)
        x = x + self.bias[None, :, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network (see the module docstring).

    Args:
        in_channels: channels coming from the previous block (0 for the 4x4 block, which has the learned constant).
        out_channels: channels of this block.
        w_dim: width of w.
        resolution: this block's resolution.
        img_channels: image channels.
        use_noise: per-layer noise.
        conv_clamp: clamp the activations to this magnitude (None: no clamp).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        w_dim: int,
        resolution: int,
        img_channels: int,
        use_noise: bool = True,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        kw = {"w_dim": w_dim, "resolution": resolution, "use_noise": use_noise, "conv_clamp": conv_clamp}
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=True, **kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **kw)
        self.torgb = ToRGB(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.register_buffer("fir", fir_kernel(), persistent=False)
        self.num_conv = 1 if self.conv0 is None else 2

    def convs(self) -> list[SynthesisLayer]:
        """The block's convolution layers in order."""
        return [self.conv1] if self.conv0 is None else [self.conv0, self.conv1]

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        *,
        noise_mode: NoiseMode = "const",
        noise: Sequence[Tensor | None] = (None, None),
        generator: torch.Generator | None = None,
        fused: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Run the block; returns (features, image so far).

        Args:
            x: (N, in_channels, r/2, r/2) features of the previous block (None for the first block).
            img: (N, img_channels, r/2, r/2) image of the previous blocks (None for the first block).
            ws: (N, num_conv + 1, w_dim): one w per convolution, then the ToRGB's.
            noise_mode: ``"const"``, ``"random"`` or ``"none"``.
            noise: explicit noise per convolution (None entries follow ``noise_mode``).
            generator: source of random noise.
            fused: grouped-convolution implementation of the modulated convolutions.
        """
        kw = {"noise_mode": noise_mode, "generator": generator, "fused": fused}
        if self.conv0 is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, ws[:, 0], noise=noise[0], **kw)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise=noise[self.num_conv - 1], **kw)
        y = self.torgb(x, ws[:, self.num_conv], fused=fused)
        img = y if img is None else upsample2d(img, self.fir) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, img_channels, resolution, resolution); see the module docstring.

    Channels at resolution ``r``: ``min(channel_base // r, channel_max)``.

    Args:
        w_dim: width of w.
        resolution: output size (power of 2 in [32, 1024]).
        img_channels: image channels.
        channel_base: overall capacity.
        channel_max: maximum channels per layer.
        use_noise: per-layer noise inputs.
        conv_clamp: clamp the activations to this magnitude (None: no clamp).
        fused_modconv: default implementation of the modulated convolutions (True: grouped convolution with
            per-sample kernels; False: scale-convolve-scale); both give the same images.
    """

    def __init__(
        self,
        *,
        w_dim: int,
        resolution: int,
        img_channels: int = 3,
        channel_base: int = 16384,
        channel_max: int = 512,
        use_noise: bool = True,
        conv_clamp: float | None = None,
        fused_modconv: bool = False,
    ) -> None:
        super().__init__()
        self.fused_modconv = fused_modconv
        self.w_dim, self.resolution, self.img_channels = w_dim, check_resolution(resolution), img_channels
        resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        blocks, in_ch = [], 0
        for r in resolutions:
            out_ch = channels_at(r, channel_base=channel_base, channel_max=channel_max)
            blocks.append(
                SynthesisBlock(
                    in_ch, out_ch, w_dim=w_dim, resolution=r, img_channels=img_channels, use_noise=use_noise,
                    conv_clamp=conv_clamp,
                )
            )
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1
        self.use_noise = use_noise

    def noise_layers(self) -> list[SynthesisLayer]:
        """Every convolution layer in order (the order of the ``noise`` argument of :meth:`forward`)."""
        return [layer for block in self.blocks for layer in block.convs()]

    def forward(
        self,
        ws: Tensor,
        *,
        noise_mode: NoiseMode = "const",
        noise: Sequence[Tensor | None] | None = None,
        generator: torch.Generator | None = None,
        fused: bool | None = None,
    ) -> Tensor:
        """Synthesise images from per-layer ws.

        Args:
            ws: (N, num_ws, w_dim).
            noise_mode: ``"const"`` (each layer's fixed buffer: the same ws give the same image), ``"random"``
                (fresh N(0, 1) noise, drawn from ``generator``) or ``"none"``.
            noise: explicit noise, one entry per layer of :meth:`noise_layers` (each broadcastable to
                (N, 1, r, r); None entries follow ``noise_mode``), for example maps optimised by a projector.
            generator: source of random noise (None: the global torch RNG).
            fused: modulated-convolution implementation (None: the constructor's ``fused_modconv``).
        """
        check_noise_mode(noise_mode)
        fused = self.fused_modconv if fused is None else fused
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        n_layers = len(self.noise_layers())
        if noise is None:
            noise = [None] * n_layers
        elif len(noise) != n_layers:
            raise ValueError(f"noise must have one entry per layer ({n_layers}), got {len(noise)}")
        x = img = None
        w_idx = layer_idx = 0
        for block in self.blocks:
            block_ws = ws[:, w_idx : w_idx + block.num_conv + 1]
            block_noise = noise[layer_idx : layer_idx + block.num_conv]
            x, img = block(
                x, img, block_ws, noise_mode=noise_mode, noise=block_noise, generator=generator, fused=fused
            )
            w_idx += block.num_conv
            layer_idx += block.num_conv
        return img
