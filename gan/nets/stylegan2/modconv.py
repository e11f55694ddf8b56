"""Modulated (and demodulated) convolution, the core of the StyleGAN2 synthesis network.

For sample ``n`` with styles ``s_n`` (one per input channel) the kernel is ``w'_n[o, i] = w[o, i] * s_n[i]``;
demodulation divides it by ``sqrt(sum_{i, ky, kx} w'_n[o, i, ky, kx]^2 + eps)`` per output channel, so unit-variance
i.i.d. inputs give (close to) unit-variance outputs whatever the styles (Karras et al. 2020, eq. 1-3).

Two equal implementations: ``fused=True`` builds the per-sample kernels and runs one grouped convolution
(``groups=N``); ``fused=False`` scales the input by the styles, runs one ordinary convolution with the shared
kernel and scales the output by the demodulation coefficients. They agree to float rounding; which is faster
depends on the device and batch (``benchmarks/bench_stylegan2_nets.py`` measures both). On the CPU the unfused
one was faster for training and inference alike, so it is the default here and in the generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gan.nets.stylegan2.resample import blur_pad, upfirdn2d

DEMOD_EPS = 1e-8


def demodulation_coefficients(weight: Tensor, styles: Tensor, *, eps: float = DEMOD_EPS) -> Tensor:
    """(N, O) factors ``1 / sqrt(sum_{i,ky,kx} (w[o, i, ky, kx] * s_n[i])^2 + eps)``.

    Args:
        weight: (O, I, k, k) shared kernel.
        styles: (N, I) per-sample input-channel scales.
        eps: added under the square root.
    """
    return torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + eps)


def _check(x: Tensor, weight: Tensor, styles: Tensor) -> None:
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise ValueError(
            f"modulated_conv2d expects x (N, I, H, W), weight (O, I, k, k), styles (N, I); got "
            f"{tuple(x.shape)}, {tuple(weight.shape)}, {tuple(styles.shape)}"
        )
    n, i = x.shape[:2]
    if weight.shape[1] != i or styles.shape != (n, i):
        raise ValueError(
            f"modulated_conv2d: x has {i} channels and batch {n}, weight {tuple(weight.shape)}, styles "
            f"{tuple(styles.shape)} do not match"
        )


def _per_sample_kernels(weight: Tensor, styles: Tensor, demodulate: bool) -> Tensor:
    """(N, O, I, k, k) modulated (and demodulated) kernels."""
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + DEMOD_EPS)
    return w


def modulated_conv2d(
    x: Tensor, weight: Tensor, styles: Tensor, *, demodulate: bool = True, padding: int = 1, fused: bool = False
) -> Tensor:
    """Stride-1 modulated convolution (see the module docstring).

    Args:
        x: (N, I, H, W) input.
        weight: (O, I, k, k) shared kernel (any run-time weight gain already applied, or folded into ``styles``).
        styles: (N, I) per-sample scales of the input channels.
        demodulate: normalise each output channel's per-sample kernel to unit norm.
        padding: zero padding of the convolution.
        fused: one grouped convolution with per-sample kernels (True) or scale-convolve-scale (False).
    """
    _check(x, weight, styles)
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    if fused:
        kernels = _per_sample_kernels(weight, styles, demodulate).reshape(n * o, i, kh, kw)
        out = F.conv2d(x.reshape(1, n * i, h, w), kernels, padding=padding, groups=n)
        return out.reshape(n, o, out.shape[2], out.shape[3])
    out = F.conv2d(x * styles[:, :, None, None], weight, padding=padding)
    if demodulate:
        out = out * demodulation_coefficients(weight, styles)[:, :, None, None]
    return out


def modulated_conv2d_up(
    x: Tensor, weight: Tensor, styles: Tensor, fir: Tensor, *, demodulate: bool = True, fused: bool = False
) -> Tensor:
    """Modulated convolution with 2x upsampling: (N, I, H, W) -> (N, O, 2H, 2W).

    Per sample: ``conv_transpose2d(x_n, w'_n, stride=2)`` (no padding, (H - 1) * 2 + k samples), then the FIR
    ``fir`` with gain 4 and the padding of :func:`~gan.nets.stylegan2.resample.blur_pad` ((1, 1) for k = 3 and
    4 taps), as in StyleGAN2.

    Args:
        x: (N, I, H, W) input.
        weight: (O, I, k, k) shared kernel.
        styles: (N, I) per-sample scales of the input channels.
        fir: (t, t) FIR kernel of the upsampling filter.
        demodulate: normalise each output channel's per-sample kernel to unit norm.
        fused: grouped transposed convolution with per-sample kernels (True) or scale-convolve-scale (False).
    """
    _check(x, weight, styles)
    n, i, h, w = x.shape
    o, _, kh, kw = weight.shape
    pad = blur_pad(fir.shape[-1], kh, up=True)
    if fused:
        kernels = _per_sample_kernels(weight, styles, demodulate).transpose(1, 2).reshape(n * i, o, kh, kw)
        out = F.conv_transpose2d(x.reshape(1, n * i, h, w), kernels, stride=2, groups=n)
        out = out.reshape(n, o, out.shape[2], out.shape[3])
    else:
        out = F.conv_transpose2d(x * styles[:, :, None, None], weight.transpose(0, 1), stride=2)
        if demodulate:
            out = out * demodulation_coefficients(weight, styles)[:, :, None, None]
    return upfirdn2d(out, fir, pad=pad, gain=4.0)
