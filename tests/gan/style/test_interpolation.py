"""Interpolation: endpoints are the seeds' (or classes') own tiles, the W path is a straight line, and slerp stays on
the sphere."""
from __future__ import annotations

import math

import pytest
import torch

from gan.style import interpolate, interpolate_classes, sample_images, sample_w, slerp
from tests.gan.style.tiny import tiny_generator


@pytest.fixture(scope="module")
def G():
    return tiny_generator(3)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_seed_interpolation_in_w_is_a_line_between_the_seeds(G):
    path = interpolate(G, 3, 8, 5, label=1, psi=0.7)
    assert path.images.shape == (5, 3, 32, 32)
    _close(path.images[0], sample_images(G, [3], label=1, psi=0.7)[0])
    _close(path.images[-1], sample_images(G, [8], label=1, psi=0.7)[0])
    w = sample_w(G, [3, 8], label=1, psi=0.7)
    _close(path.ws[2], 0.5 * (w[0] + w[1]))


def test_slerp_interpolation_maps_each_latent(G):
    path = interpolate(G, 3, 8, 3, label=0, slerp_z=True)
    _close(path.images[0], sample_images(G, [3], label=0)[0])
    _close(path.images[-1], sample_images(G, [8], label=0)[0])


def test_slerp_keeps_the_norm_of_orthogonal_unit_vectors():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    out = slerp(a, b, torch.tensor([0.0, 1 / 3, 0.5, 1.0]))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(out[1], torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    assert torch.equal(out[0], a[0]) and torch.equal(out[-1], b[0])


def test_class_interpolation_morphs_one_seed_from_one_class_into_another(G):
    path = interpolate_classes(G, 5, 0, 2, 5, psi=0.8)
    _close(path.images[0], sample_images(G, [5], label=0, psi=0.8)[0])
    _close(path.images[-1], sample_images(G, [5], label=2, psi=0.8)[0])
    mid = path.images[2]
    assert (mid - path.images[0]).abs().mean() > 1e-3 and (mid - path.images[-1]).abs().mean() > 1e-3
    with pytest.raises(ValueError):
        interpolate_classes(G, 5, 0, 3, 3)
    with pytest.raises(ValueError):
        interpolate(G, 1, 2, 1, label=0)
