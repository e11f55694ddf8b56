"""StyleGAN2 generator and discriminator: reference parameter counts, num_ws, truncation (psi = 0 collapses every
seed onto the (class) centre), reproducible noise, the label's effect, the tracked w averages against their EMA
formula, and minibatch standard deviation against a direct numpy computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gan.nets.stylegan2 import Discriminator, Generator, MinibatchStdDev, mbstd_group_size

torch.set_num_threads(1)

TINY = {"resolution": 32, "channel_base": 256, "channel_max": 16, "z_dim": 16, "w_dim": 16, "mapping_layers": 2}
TINY_D = {"resolution": 32, "channel_base": 256, "channel_max": 16, "mapping_layers": 2}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def tiny_generator(num_classes: int = 0, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(num_classes=num_classes, **TINY).eval()
    with torch.no_grad():  # noise strengths start at 0; make the noise matter for the tests
        for layer in G.synthesis.noise_layers():
            layer.noise_strength.fill_(0.5)
    return G


# ------------------------------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize(
    "resolution, channel_base, g_count, d_count",
    [
        (256, 16384, 24_767_458, 24_001_089),
        (64, 16384, 23_819_544, 23_407_361),
        (1024, 32768, 30_370_060, 29_012_513),
    ],
)
def test_parameter_counts_equal_the_reference_architecture(resolution, channel_base, g_count, d_count):
    with torch.device("meta"):  # count without allocating or running
        G = Generator(resolution=resolution, channel_base=channel_base)
        D = Discriminator(resolution=resolution, channel_base=channel_base)
    assert n_params(G) == g_count
    assert n_params(D) == d_count


@pytest.mark.parametrize("resolution", [32, 64, 128, 256, 512, 1024])
def test_num_ws_is_2_log2_resolution_minus_2(resolution):
    with torch.device("meta"):
        G = Generator(resolution=resolution, channel_base=1024, channel_max=8, z_dim=8, w_dim=8, mapping_layers=1)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2


@pytest.mark.parametrize("resolution", [16, 48, 2048, 64.0])
def test_resolution_must_be_a_power_of_two_in_32_to_1024(resolution):
    with pytest.raises(ValueError, match="power of 2"):
        Generator(resolution=resolution)
    with pytest.raises(ValueError, match="power of 2"):
        Discriminator(resolution=resolution)


def test_channels_per_resolution_follow_min_base_over_res_and_max():
    with torch.device("meta"):
        G = Generator(resolution=256, channel_base=16384, channel_max=512)
    got = {b.resolution: b.conv1.out_channels for b in G.synthesis.blocks}
    assert got == {r: min(16384 // r, 512) for r in (4, 8, 16, 32, 64, 128, 256)}


# ----------------------------------------------------------------------------------------------- generator
def test_output_shape_and_same_z_gives_the_same_image_with_const_noise():
    G = tiny_generator()
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = G(z, noise_mode="const"), G(z, noise_mode="const")
        c = G(z, noise_mode="random", generator=torch.Generator().manual_seed(5))
        d = G(z, noise_mode="random", generator=torch.Generator().manual_seed(5))
        e = G(z, noise_mode="random", generator=torch.Generator().manual_seed(6))
        f = G(z, noise_mode="none")
    assert a.shape == (3, 3, 32, 32)
    assert torch.equal(a, b)
    assert torch.equal(c, d)  # random noise is reproducible from its generator
    assert not torch.allclose(c, e) and not torch.allclose(a, c) and not torch.allclose(a, f)


def test_fused_and_unfused_modulated_convolutions_give_the_same_images():
    G = tiny_generator().double()
    z = torch.randn(2, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(G(z, fused=True), G(z, fused=False), atol=1e-10, rtol=1e-10)


def test_forward_equals_mapping_then_synthesis_and_explicit_noise_overrides_the_mode():
    G = tiny_generator()
    z = torch.randn(2, 16)
    with torch.no_grad():
        ws = G.mapping(z, psi=0.7)
        assert ws.shape == (2, G.num_ws, 16)
        torch.testing.assert_close(G(z, psi=0.7), G.synthesis(ws))
        consts = [layer.noise_const for layer in G.synthesis.noise_layers()]
        torch.testing.assert_close(G.synthesis(ws, noise_mode="none", noise=consts), G.synthesis(ws))
    with pytest.raises(ValueError, match="ws must have shape"):
        G.synthesis(ws[:, :-1])


def test_each_layer_reads_its_own_w():
    G = tiny_generator()
    ws = G.mapping(torch.randn(1, 16)).detach()
    base = G.synthesis(ws).detach()
    for j in range(G.num_ws):
        other = ws.clone()
        other[:, j] += 1.0
        assert not torch.allclose(G.synthesis(other), base), f"w {j} is not used"


def test_psi_zero_gives_every_seed_the_same_image_unconditional():
    G = tiny_generator()
    G.mapping.update_w_avg(*G.mapping.w_stats(G.mapping(torch.randn(64, 16))))
    z = torch.randn(5, 16)
    with torch.no_grad():
        imgs = G(z, psi=0.0)
        ws = G.mapping(z, psi=0.0)
    for i in range(1, 5):
        assert torch.equal(imgs[i], imgs[0])
    torch.testing.assert_close(ws, G.mapping.w_avg.expand_as(ws))


def test_psi_zero_gives_every_seed_of_a_class_its_class_centre_image():
    G = tiny_generator(num_classes=3)
    with torch.no_grad():
        labels = torch.arange(3).repeat(20)
        G.mapping.update_w_avg(*G.mapping.w_stats(G.mapping(torch.randn(60, 16), labels), labels), beta=0.0)
        z = torch.randn(4, 16)
        per_class = [G(z, torch.full((4,), k), psi=0.0) for k in range(3)]
    for k in range(3):
        for i in range(1, 4):
            assert torch.equal(per_class[k][i], per_class[k][0])
    assert not torch.allclose(per_class[0][0], per_class[1][0])
    # the centre is the class's own w average
    ws = G.mapping(z, torch.full((4,), 2), psi=0.0)
    torch.testing.assert_close(ws, G.mapping.class_w_avg[2].expand_as(ws))


def test_truncation_formula_and_cutoff():
    G = tiny_generator()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(16))
        z = torch.randn(2, 16)
        ws = G.mapping(z)
        half = G.mapping(z, psi=0.5)
        cut = G.mapping(z, psi=0.5, truncation_cutoff=3)
    c = G.mapping.w_avg
    torch.testing.assert_close(half, c + 0.5 * (ws - c))
    torch.testing.assert_close(cut[:, :3], half[:, :3])
    torch.testing.assert_close(cut[:, 3:], ws[:, 3:])
    torch.testing.assert_close(G.truncate(ws, 0.5), half)


def test_label_changes_the_output_and_is_required_exactly_when_conditional():
    G = tiny_generator(num_classes=4)
    z = torch.randn(2, 16).repeat(2, 1)
    labels = torch.tensor([0, 0, 3, 3])
    with torch.no_grad():
        imgs = G(z, labels)
        one_hot = G(z, torch.nn.functional.one_hot(labels, 4).float())
    assert not torch.allclose(imgs[0], imgs[2])
    torch.testing.assert_close(one_hot, imgs)  # float one-hot rows equal class indices
    with pytest.raises(ValueError, match="pass a label"):
        G(z)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        G(z, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="unconditional"):
        tiny_generator()(z, labels)


def test_w_avg_tracking_follows_its_ema_formula_per_class():
    G = tiny_generator(num_classes=3)
    m = G.mapping
    with torch.no_grad():
        m.w_avg.copy_(torch.randn(16))
        m.class_w_avg.copy_(torch.randn(3, 16))
    old, old_cls = m.w_avg.clone(), m.class_w_avg.clone()
    w = torch.randn(5, 16)
    labels = torch.tensor([0, 0, 2, 2, 2])  # class 1 absent
    sums, counts = m.w_stats(w, labels)
    torch.testing.assert_close(sums[0], w.sum(0))
    torch.testing.assert_close(sums[1], w[:2].sum(0))
    torch.testing.assert_close(counts, torch.tensor([5.0, 2.0, 0.0, 3.0]))
    m.update_w_avg(sums, counts)
    beta = 0.995
    torch.testing.assert_close(m.w_avg, beta * old + (1 - beta) * w.mean(0))
    torch.testing.assert_close(m.class_w_avg[0], beta * old_cls[0] + (1 - beta) * w[:2].mean(0))
    torch.testing.assert_close(m.class_w_avg[1], old_cls[1])  # no samples: unchanged
    torch.testing.assert_close(m.class_w_avg[2], beta * old_cls[2] + (1 - beta) * w[2:].mean(0))


def test_w_stats_summed_over_two_halves_equal_the_whole_batch():
    """What DDP does: all-reduce (sum) the per-rank statistics, then one update equals the single-process one."""
    G = tiny_generator(num_classes=2)
    w, labels = torch.randn(8, 16), torch.tensor([0, 1, 1, 0, 1, 1, 1, 0])
    s0, c0 = G.mapping.w_stats(w[:4], labels[:4])
    s1, c1 = G.mapping.w_stats(w[4:], labels[4:])
    s, c = G.mapping.w_stats(w, labels)
    torch.testing.assert_close(s0 + s1, s)
    torch.testing.assert_close(c0 + c1, c)


def test_mapping_lr_multiplier_and_normalised_inputs():
    G = tiny_generator(num_classes=2)
    assert all(layer.lr_mul == 0.01 for layer in G.mapping.layers)
    with torch.no_grad():  # the mapping sees z / rms(z): scaling z changes nothing
        z = torch.randn(2, 16)
        torch.testing.assert_close(G.mapping(z, torch.tensor([0, 1])), G.mapping(5 * z, torch.tensor([0, 1])))


def test_generator_backward_reaches_every_parameter():
    G = tiny_generator(num_classes=2).train()
    G(torch.randn(2, 16), torch.tensor([0, 1]), noise_mode="random").square().mean().backward()
    missing = [name for name, p in G.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_config_keeps_the_constructor_arguments():
    G = Generator(num_classes=2, **TINY)
    assert G.config["num_classes"] == 2 and G.config["resolution"] == 32 and G.config["z_dim"] == 16
    rebuilt = Generator(**G.config)
    assert n_params(rebuilt) == n_params(G)
    D = Discriminator(num_classes=2, **TINY_D)
    assert n_params(Discriminator(**D.config)) == n_params(D) and D.config["mbstd_group"] == 4


# ------------------------------------------------------------------------------------------- discriminator
def _np_mbstd(x: np.ndarray, group: int) -> np.ndarray:
    """Direct computation: sample n's group is every sample with the same index modulo N / G."""
    n = x.shape[0]
    g = min(group, n)
    while n % g:
        g -= 1
    m = n // g
    out = np.empty(n)
    for i in range(n):
        members = x[[j for j in range(n) if j % m == i % m]]
        std = np.sqrt(((members - members.mean(axis=0)) ** 2).mean(axis=0) + 1e-8)
        out[i] = std.mean()
    return out


@pytest.mark.parametrize("batch, group, used", [(8, 4, 4), (4, 4, 4), (2, 4, 2), (6, 4, 3), (7, 4, 1), (5, 8, 5)])
def test_minibatch_stddev_against_numpy(batch, group, used):
    assert mbstd_group_size(batch, group) == used
    x = torch.randn(batch, 6, 4, 4, dtype=torch.float64)
    out = MinibatchStdDev(group_size=group)(x)
    assert out.shape == (batch, 7, 4, 4)
    torch.testing.assert_close(out[:, :6], x)
    ref = _np_mbstd(x.numpy(), group)
    np.testing.assert_allclose(out[:, 6].numpy(), np.broadcast_to(ref[:, None, None], (batch, 4, 4)), rtol=1e-12)


def test_discriminator_outputs_one_logit_and_projection_conditioning_uses_the_label():
    torch.manual_seed(0)
    D = Discriminator(num_classes=3, **TINY_D)
    x = torch.randn(4, 3, 32, 32)
    a = D(x, torch.tensor([0, 0, 0, 0]))
    b = D(x, torch.tensor([2, 2, 2, 2]))
    assert a.shape == (4, 1)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="pass a label"):
        D(x)
    with pytest.raises(ValueError, match="expects"):
        D(torch.randn(4, 3, 64, 64), torch.zeros(4, dtype=torch.long))
    U = Discriminator(**TINY_D)
    assert U(x).shape == (4, 1)
    with pytest.raises(ValueError, match="unconditional"):
        U(x, torch.zeros(4, dtype=torch.long))


def test_discriminator_projection_equals_inner_product_with_the_label_map():
    torch.manual_seed(0)
    D = Discriminator(num_classes=3, **TINY_D).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    labels = torch.tensor([1, 2])
    feats = x
    for block in D.blocks:
        feats = block(feats)
    out = D.epilogue(feats)
    emb = D.embed(torch.nn.functional.one_hot(labels, 3).double())
    cmap = D.mapping(emb / emb.square().mean(dim=1, keepdim=True).add(1e-8).sqrt())
    ref = (out * cmap).sum(dim=1, keepdim=True) / math.sqrt(D.cmap_dim)
    torch.testing.assert_close(D(x, labels), ref)


def test_discriminator_backward_reaches_the_image_and_every_parameter():
    torch.manual_seed(0)
    D = Discriminator(num_classes=2, **TINY_D)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    D(x, torch.tensor([0, 1, 0, 1])).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert [n for n, p in D.named_parameters() if p.grad is None] == []
