"""Generators and discriminators: parameter counts and outputs against a reference-style nn.Sequential build of
the pytorch-CycleGAN-and-pix2pix architectures (written here with explicit padding layers), receptive fields
measured by autograd, spectral norm against numpy's SVD, init statistics against numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan.nets import (
    MultiscaleDiscriminator,
    PatchDiscriminator,
    ResnetGenerator,
    UnetGenerator,
    init_weights,
    receptive_field,
)

torch.set_num_threads(1)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- reference-style builds (test only)
def _layers(dims: int):
    if dims == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.ReflectionPad2d, nn.BatchNorm2d, nn.InstanceNorm2d
    return nn.Conv3d, nn.ConvTranspose3d, nn.ReflectionPad3d, nn.BatchNorm3d, nn.InstanceNorm3d


def _norm(kind: str, dims: int):
    _, _, _, bn, inorm = _layers(dims)
    if kind == "batch":
        return lambda c: bn(c, affine=True)
    if kind == "instance":
        return lambda c: inorm(c, affine=False)
    return lambda c: nn.Identity()


class _RefResBlock(nn.Module):
    def __init__(self, dim, dims, norm, bias, dropout):
        super().__init__()
        conv, _, pad, _, _ = _layers(dims)
        nl = _norm(norm, dims)
        seq = [pad(1), conv(dim, dim, 3, bias=bias), nl(dim), nn.ReLU()]
        if dropout:
            seq.append(nn.Dropout(dropout))
        seq += [pad(1), conv(dim, dim, 3, bias=bias), nl(dim)]
        self.conv_block = nn.Sequential(*seq)

    def forward(self, x):
        return x + self.conv_block(x)


def ref_resnet(dims, cin, cout, ngf, n_blocks, norm, dropout=0.0):
    conv, convt, pad, _, _ = _layers(dims)
    nl = _norm(norm, dims)
    bias = norm != "batch"
    m = [pad(3), conv(cin, ngf, 7, bias=bias), nl(ngf), nn.ReLU()]
    for i in range(2):
        mult = 2**i
        m += [conv(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias), nl(ngf * mult * 2), nn.ReLU()]
    m += [_RefResBlock(ngf * 4, dims, norm, bias, dropout) for _ in range(n_blocks)]
    for i in range(2):
        mult = 2 ** (2 - i)
        m += [convt(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
              nl(ngf * mult // 2), nn.ReLU()]
    m += [pad(3), conv(ngf, cout, 7), nn.Tanh()]
    return nn.Sequential(*m)


class _RefUnetBlock(nn.Module):
    def __init__(self, outer, inner, dims, norm, input_nc=None, sub=None, outermost=False, innermost=False,
                 dropout=0.0):
        super().__init__()
        conv, convt, _, _, _ = _layers(dims)
        nl = _norm(norm, dims)
        bias = norm != "batch"
        self.outermost = outermost
        input_nc = outer if input_nc is None else input_nc
        down = conv(input_nc, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            model = [down, sub, nn.ReLU(), convt(inner * 2, outer, 4, stride=2, padding=1), nn.Tanh()]
        elif innermost:
            model = [nn.LeakyReLU(0.2), down, nn.ReLU(), convt(inner, outer, 4, stride=2, padding=1, bias=bias),
                     nl(outer)]
        else:
            model = [nn.LeakyReLU(0.2), down, nl(inner), sub, nn.ReLU(),
                     convt(inner * 2, outer, 4, stride=2, padding=1, bias=bias), nl(outer)]
            if dropout:
                model.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


def ref_unet(dims, cin, cout, num_downs, ngf, norm, dropout):
    b = _RefUnetBlock(ngf * 8, ngf * 8, dims, norm, innermost=True)
    for _ in range(num_downs - 5):
        b = _RefUnetBlock(ngf * 8, ngf * 8, dims, norm, sub=b, dropout=dropout)
    b = _RefUnetBlock(ngf * 4, ngf * 8, dims, norm, sub=b)
    b = _RefUnetBlock(ngf * 2, ngf * 4, dims, norm, sub=b)
    b = _RefUnetBlock(ngf, ngf * 2, dims, norm, sub=b)
    return _RefUnetBlock(cout, ngf, dims, norm, input_nc=cin, sub=b, outermost=True)


def ref_patchgan(dims, cin, ndf, n_layers, norm):
    conv = _layers(dims)[0]
    nl = _norm(norm, dims)
    bias = norm != "batch"
    seq = [conv(cin, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
    mult = 1
    for n in range(1, n_layers):
        prev, mult = mult, min(2**n, 8)
        seq += [conv(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=bias), nl(ndf * mult), nn.LeakyReLU(0.2)]
    prev, mult = mult, min(2**n_layers, 8)
    seq += [conv(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=bias), nl(ndf * mult), nn.LeakyReLU(0.2)]
    seq += [conv(ndf * mult, 1, 4, stride=1, padding=1)]
    return nn.Sequential(*seq)


def copy_params(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters in registration order (both builds register layers top to bottom)."""
    ps, pd = list(src.parameters()), list(dst.parameters())
    assert [p.shape for p in ps] == [p.shape for p in pd]
    with torch.no_grad():
        for a, b in zip(ps, pd):
            b.copy_(a)


# --------------------------------------------------------------------------- parameter counts (reference values)
def test_reference_parameter_counts():
    resnet = ResnetGenerator(in_channels=3, out_channels=3, features=64, n_blocks=9, norm="instance")
    assert n_params(resnet) == 11_378_179
    assert n_params(PatchDiscriminator(in_channels=3, features=64, n_layers=3, norm="instance")) == 2_764_737
    assert n_params(PatchDiscriminator(in_channels=6, features=64, n_layers=3, norm="batch")) == 2_768_705


def test_unet_reference_parameter_count():
    net = UnetGenerator(in_channels=3, out_channels=3, num_downs=8, features=64, norm="batch")
    assert n_params(net) == 54_413_955


# --------------------------------------------------------------------------- outputs equal the reference structure
@pytest.mark.parametrize(
    "dims,norm,shape",
    [(2, "instance", (2, 3, 32, 24)), (2, "batch", (2, 3, 16, 16)), (2, "none", (1, 2, 16, 20)),
     (3, "instance", (1, 1, 8, 16, 12))],
)
def test_resnet_matches_reference(dims, norm, shape):
    torch.manual_seed(0)
    ours = ResnetGenerator(spatial_dims=dims, in_channels=shape[1], out_channels=2, features=4, n_blocks=2, norm=norm)
    ref = ref_resnet(dims, shape[1], 2, 4, 2, norm)
    assert n_params(ours) == n_params(ref)
    copy_params(ours, ref)
    x = torch.rand(shape) * 2 - 1
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


def test_resnet_dropout_positions_match_reference():
    torch.manual_seed(0)
    ours = ResnetGenerator(in_channels=1, out_channels=1, features=4, n_blocks=3, dropout=0.5).train()
    ref = ref_resnet(2, 1, 1, 4, 3, "instance", dropout=0.5).train()
    copy_params(ours, ref)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    torch.manual_seed(123)
    a = ours(x)
    torch.manual_seed(123)
    b = ref(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours(x), a)  # dropout active in training mode


@pytest.mark.parametrize("dims,num_downs,shape", [(2, 7, (2, 3, 128, 128)), (3, 5, (2, 1, 32, 32, 64))])
def test_unet_matches_reference_including_dropout(dims, num_downs, shape):
    torch.manual_seed(0)
    ours = UnetGenerator(spatial_dims=dims, in_channels=shape[1], out_channels=1, num_downs=num_downs, features=2,
                         norm="batch", dropout=0.5).train()
    ref = ref_unet(dims, shape[1], 1, num_downs, 2, "batch", 0.5).train()
    copy_params(ours, ref)
    x = torch.rand(shape) * 2 - 1
    torch.manual_seed(7)
    a = ours(x)
    torch.manual_seed(7)
    b = ref(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert sum(isinstance(m, nn.Dropout) for m in ours.modules()) == num_downs - 5


@pytest.mark.parametrize(
    "dims,norm,n_layers,shape",
    [(2, "instance", 3, (2, 3, 64, 48)), (2, "batch", 2, (2, 6, 32, 32)), (3, "instance", 2, (1, 2, 16, 24, 20))],
)
def test_patchgan_matches_reference(dims, norm, n_layers, shape):
    torch.manual_seed(0)
    ours = PatchDiscriminator(spatial_dims=dims, in_channels=shape[1], features=4, n_layers=n_layers, norm=norm)
    ref = ref_patchgan(dims, shape[1], 4, n_layers, norm)
    copy_params(ours, ref)
    x = torch.rand(shape) * 2 - 1
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


def test_multiscale_discriminator_feeds_avg_pooled_inputs():
    torch.manual_seed(0)
    net = MultiscaleDiscriminator(num_scales=3, in_channels=2, features=4, n_layers=2, norm="none")
    x = torch.rand(2, 2, 96, 80) * 2 - 1
    outs = net(x)
    assert len(outs) == 3
    xi = x
    for k, out in enumerate(outs):
        if k:
            xi = F.avg_pool2d(xi, 3, stride=2, padding=1, count_include_pad=False)
        torch.testing.assert_close(out, net.discriminators[k].model(xi))
    # the three discriminators are independent (different weights)
    w = [d.model[0].weight for d in net.discriminators]
    assert not torch.equal(w[0], w[1])


# --------------------------------------------------------------------------- receptive field
def _measured_field(dims: int, n_layers: int) -> list[int]:
    """Extent of input voxels with non-zero gradient for one central output voxel."""
    torch.manual_seed(0)
    net = PatchDiscriminator(spatial_dims=dims, in_channels=1, features=2, n_layers=n_layers, norm="none")
    side = receptive_field(n_layers) + 2**n_layers * 4
    x = torch.randn((1, 1) + (side,) * dims, dtype=torch.float64, requires_grad=True)
    out = net.double()(x)
    centre = tuple(s // 2 for s in out.shape[2:])
    out[(0, 0) + centre].backward()
    nz = np.nonzero(x.grad[0, 0].numpy())
    return [int(a.max() - a.min() + 1) for a in nz]


def test_receptive_field_default_is_70():
    assert receptive_field(3) == 70


@pytest.mark.parametrize("dims,n_layers", [(2, 1), (2, 2), (2, 3), (2, 4), (3, 1)])
def test_receptive_field_matches_autograd(dims, n_layers):
    assert _measured_field(dims, n_layers) == [receptive_field(n_layers)] * dims


# --------------------------------------------------------------------------- 3D forward, ranges, errors
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_resnet_3d_forward(upsample):
    net = ResnetGenerator(spatial_dims=3, in_channels=1, out_channels=2, features=4, n_blocks=1, upsample=upsample)
    x = torch.rand(1, 1, 16, 32, 32) * 2 - 1
    y = net(x)
    assert y.shape == (1, 2, 16, 32, 32)
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_unet_and_patchgan_3d_forward():
    u = UnetGenerator(spatial_dims=3, in_channels=1, out_channels=1, num_downs=5, features=2)
    assert u(torch.rand(2, 1, 32, 32, 64) * 2 - 1).shape == (2, 1, 32, 32, 64)
    d = PatchDiscriminator(spatial_dims=3, in_channels=2, features=2, n_layers=3)
    # each axis: floor(s / 8) - 2 logits
    assert d(torch.rand(1, 2, 24, 32, 40)).shape == (1, 1, 1, 2, 3)
    m = MultiscaleDiscriminator(spatial_dims=3, num_scales=2, in_channels=1, features=2, n_layers=1)
    assert [o.shape for o in m(torch.rand(1, 1, 16, 16, 16))] == [(1, 1, 6, 6, 6), (1, 1, 2, 2, 2)]


def test_generator_outputs_in_unit_range():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32) * 50  # extreme input drives tanh to saturation
    for net in (ResnetGenerator(in_channels=1, out_channels=1, features=4, n_blocks=1, init_gain=1.0),
                UnetGenerator(in_channels=1, out_channels=1, num_downs=5, features=2, init_gain=1.0)):
        y = net(x)
        assert y.abs().max() <= 1.0
        assert y.abs().max() > 0.99


def test_channels_last_gives_same_output():
    torch.manual_seed(0)
    net = ResnetGenerator(in_channels=3, out_channels=3, features=4, n_blocks=1).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), net(x), rtol=1e-5, atol=1e-6)


def test_bad_shapes_raise_clear_errors():
    u = UnetGenerator(in_channels=1, out_channels=1, num_downs=5, features=2)
    with pytest.raises(ValueError, match=r"\(1, 1, 48, 40\).*divisible by 32"):
        u(torch.zeros(1, 1, 48, 40))
    r = ResnetGenerator(in_channels=1, out_channels=1, features=2, n_blocks=1)
    with pytest.raises(ValueError, match=r"\(1, 1, 18, 16\).*divisible by 4"):
        r(torch.zeros(1, 1, 18, 16))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(1, 1, 1, 16, 16\)"):
        r(torch.zeros(1, 1, 1, 16, 16))
    d = PatchDiscriminator(in_channels=1, features=2)
    with pytest.raises(ValueError, match=r"\(1, 1, 16, 64\).*at least 24"):
        d(torch.zeros(1, 1, 16, 64))


@pytest.mark.parametrize(
    "build",
    [
        lambda: ResnetGenerator(spatial_dims=1, in_channels=1, out_channels=1),
        lambda: ResnetGenerator(in_channels=1, out_channels=1, norm="group"),
        lambda: ResnetGenerator(in_channels=1, out_channels=1, upsample="bilinear"),
        lambda: ResnetGenerator(in_channels=1, out_channels=1, padding_mode="circular"),
        lambda: UnetGenerator(in_channels=1, out_channels=1, num_downs=4),
        lambda: UnetGenerator(in_channels=1, out_channels=1, dropout=1.0),
        lambda: PatchDiscriminator(in_channels=0),
        lambda: MultiscaleDiscriminator(in_channels=1, num_scales=0),
    ],
)
def test_bad_arguments_raise(build):
    with pytest.raises(ValueError):
        build()


# --------------------------------------------------------------------------- init and spectral norm
def test_init_weights_statistics():
    torch.manual_seed(0)
    d = PatchDiscriminator(in_channels=6, features=64, n_layers=3, norm="batch")
    conv4 = d.model[8].weight.detach().numpy()  # 512x256x4x4 = 2.1M weights
    assert abs(conv4.std() - 0.02) < 0.0005
    assert abs(conv4.mean()) < 0.0005
    bn = np.concatenate([m.weight.detach().numpy() for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.size == 128 + 256 + 512
    assert abs(bn.mean() - 1.0) < 0.003 and abs(bn.std() - 0.02) < 0.003
    biases = [m.bias for m in d.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and m.bias is not None]
    assert biases and all(np.all(b.detach().numpy() == 0) for b in biases)
    big = init_weights(nn.Linear(1000, 1000), gain=0.05)
    assert abs(big.weight.detach().numpy().std() - 0.05) < 0.001


def test_spectral_norm_bounds_each_conv():
    torch.manual_seed(0)
    d = PatchDiscriminator(in_channels=1, features=4, n_layers=2, norm="none", spectral_norm=True).train()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        for _ in range(30):  # power iterations run once per training forward
            d(x)
    d.eval()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 + 2  # n_layers stride-2 convs + two stride-1 convs
    for conv in convs:
        assert torch.nn.utils.parametrize.is_parametrized(conv, "weight")
        w = conv.weight.detach().reshape(conv.weight.shape[0], -1).numpy()
        assert np.linalg.svd(w, compute_uv=False)[0] == pytest.approx(1.0, abs=1e-3)
