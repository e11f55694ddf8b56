"""Projection: fitting a tile the generator made lowers the reconstruction loss in W and W+, the returned latent
and noise maps reproduce the reconstruction (also after saving), W keeps one w for all layers, the run is
reproducible and leaves the generator untouched; the noise regulariser matches hand-computed autocorrelations."""
from __future__ import annotations

import pytest
import torch

from gan.style import (
    load_latent,
    noise_regularization,
    project,
    random_lpips,
    sample_images,
    save_latent,
    synthesize,
    to_uint8,
)
from tests.gan.style.tiny import tiny_generator

STEPS = 40


@pytest.fixture(scope="module")
def G():
    return tiny_generator(3)


@pytest.fixture(scope="module")
def lpips():
    return random_lpips("vgg")


@pytest.fixture(scope="module")
def target(G):
    return to_uint8(sample_images(G, [7], label=1)[0])  # uint8 (32, 32, 3): a tile the generator can make


def _run(G, target, lpips, **kw):
    args = dict(lpips=lpips, label=1, w_avg_samples=1000, mse_weight=1.0)
    args.update(kw)
    return project(G, target, STEPS, **args)


@pytest.fixture(scope="module")
def in_w(G, target, lpips):
    return _run(G, target, lpips)


@pytest.fixture(scope="module")
def in_w_plus(G, target, lpips):
    return _run(G, target, lpips, w_plus=True)


@pytest.mark.parametrize("space", ["in_w", "in_w_plus"])
def test_projection_lowers_the_reconstruction_loss(request, G, space):
    proj = request.getfixturevalue(space)
    start = synthesize(G, G.mapping.class_w_avg[1].expand(1, G.num_ws, -1).clone())  # the class's mean tile
    start_mse = float((start - proj.target).square().mean())
    assert proj.final["mse"] < 0.6 * start_mse, (proj.final, start_mse)
    first, last = proj.losses["total"][0], proj.losses["total"][-1]
    assert last < 0.6 * first, (first, last)


def test_lpips_alone_is_lowered(G, target, lpips):
    proj = _run(G, target, lpips, mse_weight=0.0)
    assert proj.final["lpips"] < 0.8 * proj.losses["lpips"][0]


def test_w_is_one_vector_for_all_layers_and_w_plus_is_not(in_w, in_w_plus):
    assert in_w.w.shape == in_w_plus.w.shape == (1, 8, 32)
    assert torch.equal(in_w.w, in_w.w[:, :1].expand_as(in_w.w))
    assert not torch.equal(in_w_plus.w, in_w_plus.w[:, :1].expand_as(in_w_plus.w))


def test_the_latent_reproduces_the_reconstruction_also_after_saving(G, in_w_plus, tmp_path):
    again = G.synthesis(in_w_plus.w, noise=in_w_plus.noise)
    torch.testing.assert_close(again, in_w_plus.image, rtol=0, atol=0)
    path = save_latent(tmp_path / "latent.safetensors", in_w_plus, metadata={"checkpoint_sha256": "abc"})
    w, noise, header = load_latent(path)
    assert header["checkpoint_sha256"] == "abc" and header["w_plus"] == "true"
    torch.testing.assert_close(G.synthesis(w, noise=noise), in_w_plus.image, rtol=0, atol=0)


def test_projection_is_reproducible_and_leaves_the_generator_alone(G, target, lpips, in_w):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    again = _run(G, target, lpips)
    assert torch.equal(again.w, in_w.w) and again.losses == in_w.losses
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in G.parameters()) and not G.training


def test_tile_of_another_size_is_refused(G, lpips):
    with pytest.raises(ValueError, match="32 x 32"):
        project(G, torch.zeros(3, 64, 64), 1, lpips=lpips, label=0)


def test_noise_regularization_matches_hand_computed_autocorrelations():
    ones8, ones16 = torch.ones(8, 8), torch.ones(16, 16)
    assert float(noise_regularization([ones8])) == pytest.approx(2.0)  # mean(1 * 1)^2 along x and y, one scale
    assert float(noise_regularization([ones16])) == pytest.approx(4.0)  # 16 px and its 8 px average
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1.0
    assert float(noise_regularization([checker])) == pytest.approx(2.0)  # -1 at 16 px; averages to 0 at 8 px
    white = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    assert float(noise_regularization([white])) < 1e-3
