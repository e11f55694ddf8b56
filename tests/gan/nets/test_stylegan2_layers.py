"""StyleGAN2 building blocks against independent references: FIR resampling against numpy/scipy convolution,
modulated convolution against an explicit per-sample loop, demodulation's unit variance, equalised-LR scales."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from gan.nets.stylegan2 import (
    EqualConv2d,
    EqualLinear,
    downsample2d,
    fir_kernel,
    modulated_conv2d,
    modulated_conv2d_up,
    upfirdn2d,
    upsample2d,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------- FIR references
def _np_kernel() -> np.ndarray:
    t = np.array([1.0, 3.0, 3.0, 1.0])
    k = np.outer(t, t)
    return k / k.sum()


def _np_upfirdn(x: np.ndarray, *, up: int, down: int, pad: tuple[int, int], gain: float) -> np.ndarray:
    """Per-channel zero insertion, zero padding, valid convolution (scipy), decimation."""
    n, c, h, w = x.shape
    z = np.zeros((n, c, h * up, w * up))
    z[:, :, ::up, ::up] = x
    z = np.pad(z, ((0, 0), (0, 0), pad, pad))
    k = _np_kernel() * gain
    out = np.stack([np.stack([scipy.signal.convolve2d(z[i, j], k, mode="valid") for j in range(c)]) for i in range(n)])
    return out[:, :, ::down, ::down]


def test_fir_kernel_is_the_normalised_outer_product():
    np.testing.assert_allclose(fir_kernel().numpy(), _np_kernel(), rtol=0, atol=1e-7)
    assert fir_kernel().sum().item() == pytest.approx(1.0)


def test_upsample2d_equals_zero_insertion_then_fir_with_gain_4_and_padding_2_1():
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    got = upsample2d(x, fir_kernel().double())
    assert got.shape == (2, 3, 10, 12)
    ref = _np_upfirdn(x.numpy(), up=2, down=1, pad=(2, 1), gain=4.0)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


def test_upsample2d_interior_is_bilinear_interpolation_and_keeps_the_mean_level():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    got = upsample2d(x, fir_kernel().double())
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(got[..., 1:-1, 1:-1], bilinear[..., 1:-1, 1:-1], atol=1e-12, rtol=0)
    flat = upsample2d(torch.full((1, 1, 6, 6), 0.7, dtype=torch.float64), fir_kernel().double())
    torch.testing.assert_close(flat[..., 1:-1, 1:-1], torch.full_like(flat[..., 1:-1, 1:-1], 0.7))


def test_downsample2d_equals_fir_with_padding_1_1_then_every_second_sample():
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    got = downsample2d(x, fir_kernel().double())
    assert got.shape == (2, 3, 4, 5)
    ref = _np_upfirdn(x.numpy(), up=1, down=2, pad=(1, 1), gain=1.0)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)


def test_upfirdn2d_general_case_and_negative_padding_crops():
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    k = fir_kernel().double()
    np.testing.assert_allclose(
        upfirdn2d(x, k, up=2, down=3, pad=(1, 2), gain=4.0).numpy(),
        _np_upfirdn(x.numpy(), up=2, down=3, pad=(1, 2), gain=4.0),
        atol=1e-12,
    )
    cropped = upfirdn2d(x, k, pad=(-1, 2))
    full = _np_upfirdn(x.numpy(), up=1, down=1, pad=(0, 2), gain=1.0)[..., 1:, 1:]
    np.testing.assert_allclose(cropped.numpy(), full, atol=1e-12)


def test_equal_conv_down_equals_blur_then_strided_conv():
    torch.manual_seed(0)
    conv = EqualConv2d(3, 4, 3, down=True, lrelu=False).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    blurred = torch.from_numpy(_np_upfirdn(x.numpy(), up=1, down=1, pad=(2, 2), gain=1.0))
    ref = F.conv2d(blurred, conv.weight / math.sqrt(3 * 9), conv.bias, stride=2)
    assert ref.shape == (2, 4, 4, 4)
    torch.testing.assert_close(conv(x), ref, atol=1e-12, rtol=0)
    skip = EqualConv2d(3, 4, 1, down=True, lrelu=False, bias=False).double()
    blurred = torch.from_numpy(_np_upfirdn(x.numpy(), up=1, down=2, pad=(1, 1), gain=1.0))
    torch.testing.assert_close(skip(x), F.conv2d(blurred, skip.weight / math.sqrt(3)), atol=1e-12, rtol=0)


# --------------------------------------------------------------------------------------- modulated convolution
def _loop_modconv(x, weight, styles, *, demodulate, padding, transpose=False):
    """One F.conv2d per sample on weight * style, demodulated by hand."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].view(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if transpose:
            outs.append(F.conv_transpose2d(x[n : n + 1], w.transpose(0, 1), stride=2))
        else:
            outs.append(F.conv2d(x[n : n + 1], w, padding=padding))
    return torch.cat(outs)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("kernel, padding", [(3, 1), (1, 0)])
def test_modulated_conv2d_equals_an_explicit_per_sample_convolution(fused, demodulate, kernel, padding):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 6, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 5, kernel, kernel, generator=g, dtype=torch.float64)
    styles = torch.randn(3, 5, generator=g, dtype=torch.float64) + 1
    got = modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=padding, fused=fused)
    ref = _loop_modconv(x, weight, styles, demodulate=demodulate, padding=padding)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_upsampling_modulated_conv_equals_per_sample_transposed_conv_then_fir(fused, demodulate):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.randn(2, 3, generator=g, dtype=torch.float64) + 1
    got = modulated_conv2d_up(x, weight, styles, fir_kernel().double(), demodulate=demodulate, fused=fused)
    t = _loop_modconv(x, weight, styles, demodulate=demodulate, padding=0, transpose=True)
    assert t.shape[-1] == 11
    ref = _np_upfirdn(t.numpy(), up=1, down=1, pad=(1, 1), gain=4.0)
    assert got.shape == (2, 4, 10, 10)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)


def test_demodulation_gives_unit_output_variance_for_unit_variance_iid_input():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 64, 24, 24, generator=g)
    weight = torch.randn(32, 64, 3, 3, generator=g) * 0.3
    styles = torch.exp(torch.randn(4, 64, generator=g))  # styles spread over an order of magnitude
    out = modulated_conv2d(x, weight, styles, demodulate=True)[..., 1:-1, 1:-1]  # away from the zero padding
    assert out.var().item() == pytest.approx(1.0, abs=0.03)
    per_channel = out.transpose(0, 1).flatten(1).var(dim=1)
    assert per_channel.min().item() > 0.85 and per_channel.max().item() < 1.15
    raw = modulated_conv2d(x, weight, styles, demodulate=False)[..., 1:-1, 1:-1]
    assert abs(raw.var().item() - 1.0) > 0.5  # without demodulation the scale follows the weights and styles


# ------------------------------------------------------------------------------------------- equalised LR
def test_equal_linear_scales_its_stored_weight_by_lr_mul_over_sqrt_fan_in_at_run_time():
    torch.manual_seed(0)
    layer = EqualLinear(200, 300, lr_mul=0.01, bias_init=0.5)
    # stored as N(0, 1) / lr_mul, effective bias = bias_init
    assert (layer.weight * 0.01).std().item() == pytest.approx(1.0, abs=0.02)
    assert torch.allclose(layer.bias * 0.01, torch.full((300,), 0.5))
    x = torch.randn(5, 200)
    ref = x @ (layer.weight * 0.01 / math.sqrt(200)).t() + layer.bias * 0.01
    torch.testing.assert_close(layer(x), ref)
    act = EqualLinear(200, 300, lr_mul=0.01, lrelu=True)
    ref = F.leaky_relu(x @ (act.weight * 0.01 / math.sqrt(200)).t() + act.bias * 0.01, 0.2) * math.sqrt(2)
    torch.testing.assert_close(act(x), ref)


def test_equal_conv_scales_its_stored_weight_by_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    conv = EqualConv2d(6, 5, 3)
    x = torch.randn(2, 6, 7, 7)
    ref = F.leaky_relu(F.conv2d(x, conv.weight / math.sqrt(6 * 9), conv.bias, padding=1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(conv(x), ref)
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.2)
