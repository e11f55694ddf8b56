"""Seeds, labels and truncation: the same seed gives the same tile, the label changes it, psi = 0 gives the class's
centre image for every seed, and truncation is ``c + psi (w - c)`` with the class's own average."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.style import image_to_unit, resolve_label, sample_images, sample_w, seed_z, synthesize, to_uint8, truncate
from tests.gan.style.tiny import tiny_generator


@pytest.fixture(scope="module")
def G():
    return tiny_generator(3)


@pytest.fixture(scope="module")
def G0():
    return tiny_generator(0, seed=1)


def test_seed_rule_is_one_cpu_randn_per_seed():
    z = seed_z([3, 0, 3], 32)
    for row, s in zip(z, [3, 0, 3]):
        torch.testing.assert_close(row, torch.randn(1, 32, generator=torch.Generator().manual_seed(s))[0],
                                   rtol=0, atol=0)
    with pytest.raises(ValueError):
        seed_z([-1], 32)
    with pytest.raises(ValueError):
        seed_z([], 32)


def test_same_seed_same_tile_whatever_the_batch(G):
    alone = sample_images(G, [5], label=1)
    again = sample_images(G, [5], label=1)
    in_batch = sample_images(G, [3, 5, 7], label=1)
    assert torch.equal(alone, again)
    torch.testing.assert_close(in_batch[1:2], alone, rtol=1e-5, atol=1e-5)
    assert (in_batch[0] - in_batch[2]).abs().mean() > 1e-2, "different seeds give different tiles"


def test_sample_w_is_the_mapping_of_the_seed_latents(G):
    w = sample_w(G, [2, 9], label=2)
    assert w.shape == (2, G.num_ws, G.w_dim)
    expected = G.mapping(seed_z([2, 9], G.z_dim), torch.tensor([2, 2]))
    torch.testing.assert_close(w, expected, rtol=0, atol=0)
    torch.testing.assert_close(w, w[:, :1].expand_as(w), rtol=0, atol=0)  # one w broadcast to every layer


def test_label_changes_the_tile(G):
    a, b = sample_images(G, [4], label=0), sample_images(G, [4], label=2)
    assert (a - b).abs().mean() > 1e-2


@pytest.mark.parametrize("label", [0, 2])
def test_psi_zero_gives_every_seed_the_class_centre_image(G, label):
    tiles = sample_images(G, [0, 1, 2, 3], label=label, psi=0.0)
    centre = G.mapping.class_w_avg[label]
    reference = G.synthesis(centre.expand(1, G.num_ws, -1).clone())
    for tile in tiles:
        torch.testing.assert_close(tile[None], reference, rtol=1e-5, atol=1e-5)
    other = sample_images(G, [0], label=1 - label // 2, psi=0.0)
    assert (other - reference).abs().mean() > 1e-3, "each class has its own centre"


def test_psi_zero_unconditional_is_the_global_average(G0):
    tiles = sample_images(G0, [10, 11, 12], psi=0.0)
    reference = G0.synthesis(G0.mapping.w_avg.expand(1, G0.num_ws, -1).clone())
    torch.testing.assert_close(tiles, reference.expand_as(tiles), rtol=1e-5, atol=1e-5)


def test_truncate_pulls_towards_the_class_average(G):
    w = sample_w(G, [1, 2, 3], label=1)
    c = G.mapping.class_w_avg[1]
    torch.testing.assert_close(truncate(G, w, 0.7, label=1), c + 0.7 * (w - c), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(truncate(G, w, 1.0, label=1), w)
    torch.testing.assert_close(sample_w(G, [1, 2, 3], label=1, psi=0.7), truncate(G, w, 0.7, label=1),
                               rtol=1e-6, atol=1e-6)
    mixed = torch.tensor([[0.25, 0.0, 0.75]]).expand(3, -1)
    c_mix = 0.25 * G.mapping.class_w_avg[0] + 0.75 * G.mapping.class_w_avg[2]
    torch.testing.assert_close(truncate(G, w, 0.0, label=mixed), c_mix.expand_as(w), rtol=1e-6, atol=1e-6)


def test_truncate_unconditional_uses_w_avg(G0):
    w = sample_w(G0, [5, 6])
    c = G0.mapping.w_avg
    torch.testing.assert_close(truncate(G0, w, 0.5), c + 0.5 * (w - c), rtol=1e-6, atol=1e-6)


def test_uint8_round_trip_is_exact():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([values, values[::-1], values.T], axis=-1)
    unit = image_to_unit(rgb)
    assert unit.shape == (3, 16, 16) and float(unit.min()) == -1.0 and float(unit.max()) == 1.0
    assert np.array_equal(to_uint8(unit), rgb)


def test_synthesize_batches_give_the_same_images(G):
    ws = sample_w(G, list(range(5)), label=0)
    torch.testing.assert_close(synthesize(G, ws, batch_size=2), synthesize(G, ws, batch_size=5),
                               rtol=1e-5, atol=1e-5)


def test_resolve_label():
    names = ["stroma", "tumor", "necrosis"]
    assert resolve_label("necrosis", class_names=names, num_classes=3) == 2
    assert resolve_label("1", class_names=names, num_classes=3) == 1
    assert resolve_label(None, class_names=[], num_classes=0) is None
    with pytest.raises(ValueError, match="necrosis"):
        resolve_label("fat", class_names=names, num_classes=3)
    with pytest.raises(ValueError, match="unconditional"):
        resolve_label("tumor", class_names=[], num_classes=0)
    with pytest.raises(ValueError):
        resolve_label("3", class_names=names, num_classes=3)
