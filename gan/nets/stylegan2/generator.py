"""The StyleGAN2 generator: :class:`~gan.nets.stylegan2.mapping.MappingNetwork` + synthesis network."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gan.nets.stylegan2.layers import check_resolution
from gan.nets.stylegan2.mapping import MappingNetwork
from gan.nets.stylegan2.synthesis import NoiseMode, SynthesisNetwork


class Generator(nn.Module):
    """StyleGAN2 generator (Karras et al. 2020, config E/F with the skip generator), optionally class-conditional.

    ``G.mapping(z, label, psi=...)`` gives ws (N, G.num_ws, w_dim), ``G.synthesis(ws, noise_mode=...)`` images,
    and ``G(z, label, psi=..., noise_mode=...)`` both. ``G.num_ws = 2 * log2(resolution) - 2``. The default noise
    mode is ``"const"`` (the same z and label give the same image); training passes ``noise_mode="random"`` with an
    explicit ``generator``. The tracked average w is updated only on request: ``G.mapping.w_stats`` then
    ``G.mapping.update_w_avg`` (see :mod:`gan.nets.stylegan2.mapping`).

    Output range: the images are the raw sum of the ToRGB layers (no tanh, as in the reference); a model trained on
    data in [-1, 1] stays close to that range but may overshoot. Clamp to [-1, 1] before quantising for display
    or export, ``uint8 = floor((clamp(x, -1, 1) + 1) * 127.5 + 0.5)`` (what a PNG of the image stores).

    Parameter counts equal the reference architecture (unconditional, z = w = 512, 8 mapping layers,
    channel_max 512): 24,767,458 at 256 px with channel_base 16384; 23,819,544 at 64 px with channel_base 16384;
    30,370,060 at 1024 px with channel_base 32768 (config F).

    Args:
        resolution: output size, a power of 2 in [32, 1024].
        img_channels: image channels.
        z_dim: latent width.
        w_dim: width of w.
        num_classes: number of classes (0: unconditional). Labels are (N,) class indices or (N, num_classes)
            float weights (to mix class embeddings).
        mapping_layers: FC layers of the mapping network.
        channel_base: overall capacity; channels at resolution r are ``min(channel_base // r, channel_max)``.
        channel_max: maximum channels per layer.
        mapping_lr_mul: learning-rate multiplier of the mapping network.
        w_avg_beta: decay of the tracked average w (see :class:`~gan.nets.stylegan2.mapping.MappingNetwork`).
        use_noise: per-layer noise inputs.
        conv_clamp: clamp the synthesis activations to this magnitude (None: no clamp; the reference uses 256
            with mixed precision).
        fused_modconv: default implementation of the modulated convolutions (True: grouped convolution; False:
            scale-convolve-scale). Both give the same images; see ``benchmarks/bench_stylegan2_nets.py``.
    """

    def __init__(
        self,
        *,
        resolution: int,
        img_channels: int = 3,
        z_dim: int = 512,
        w_dim: int = 512,
        num_classes: int = 0,
        mapping_layers: int = 8,
        channel_base: int = 16384,
        channel_max: int = 512,
        mapping_lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
        use_noise: bool = True,
        conv_clamp: float | None = None,
        fused_modconv: bool = False,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "resolution": check_resolution(resolution),
            "img_channels": int(img_channels),
            "z_dim": int(z_dim),
            "w_dim": int(w_dim),
            "num_classes": int(num_classes),
            "mapping_layers": int(mapping_layers),
            "channel_base": int(channel_base),
            "channel_max": int(channel_max),
            "mapping_lr_mul": float(mapping_lr_mul),
            "w_avg_beta": float(w_avg_beta),
            "use_noise": bool(use_noise),
            "conv_clamp": None if conv_clamp is None else float(conv_clamp),
            "fused_modconv": bool(fused_modconv),
        }
        self.resolution, self.img_channels, self.z_dim, self.w_dim = resolution, img_channels, z_dim, w_dim
        self.num_classes = num_classes
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, resolution=resolution, img_channels=img_channels, channel_base=channel_base,
            channel_max=channel_max, use_noise=use_noise, conv_clamp=conv_clamp, fused_modconv=fused_modconv,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, w_dim=w_dim, num_ws=self.num_ws, num_classes=num_classes, num_layers=mapping_layers,
            lr_mul=mapping_lr_mul, w_avg_beta=w_avg_beta,
        )

    def extra_repr(self) -> str:
        """The summary shown by ``print(module)``."""
        return f"resolution={self.resolution}, num_ws={self.num_ws}, num_classes={self.num_classes}"

    def forward(
        self,
        z: Tensor,
        label: Tensor | None = None,
        *,
        psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode = "const",
        generator: torch.Generator | None = None,
        fused: bool | None = None,
    ) -> Tensor:
        """Images (N, img_channels, resolution, resolution) for latents ``z`` (and labels).

        Args:
            z: (N, z_dim) latents.
            label: None (unconditional), (N,) class indices or (N, num_classes) float weights.
            psi: truncation towards the (class's) average w (1: none).
            truncation_cutoff: truncate only the first this many ws (None: all).
            noise_mode: ``"const"`` (reproducible: the same z gives the same image), ``"random"`` or ``"none"``.
            generator: source of ``"random"`` noise (None: the global torch RNG).
            fused: modulated-convolution implementation (None: the constructor's ``fused_modconv``).
        """
        ws = self.mapping(z, label, psi=psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator, fused=fused)

    def truncate(self, ws: Tensor, psi: float, label: Tensor | None = None, *, cutoff: int | None = None) -> Tensor:
        """Pull ws towards the (class's) average w: ``c + psi * (ws - c)``; see :meth:`MappingNetwork.truncate`.

        Args:
            ws: (N, num_ws, w_dim) or (N, w_dim).
            psi: truncation strength.
            label: the samples' labels (required for a conditional model).
            cutoff: truncate only the first ``cutoff`` ws (None: all).
        """
        return self.mapping.truncate(ws, psi, label, cutoff=cutoff)
