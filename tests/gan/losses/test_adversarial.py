"""Adversarial losses against torch.nn.functional hand formulas and numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan.losses import AdversarialLoss

torch.set_num_threads(1)


def _logits(seed: int, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) * 2 for s in shapes]


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def test_lsgan_matches_hand_formulas():
    real, fake = _logits(0, (2, 1, 6, 6), (2, 1, 6, 6))
    loss = AdversarialLoss("lsgan")
    d_ref = 0.5 * (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)))
    torch.testing.assert_close(loss.discriminator_loss(real, fake), d_ref)
    torch.testing.assert_close(loss.generator_loss(fake), F.mse_loss(fake, torch.ones_like(fake)))
    r, f = real.numpy().astype(np.float64), fake.numpy().astype(np.float64)
    expected = 0.5 * (((r - 1) ** 2).mean() + (f**2).mean())
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-5)


def test_nonsaturating_matches_bce_with_logits():
    real, fake = _logits(1, (3, 1, 5, 7), (3, 1, 5, 7))
    loss = AdversarialLoss("nonsaturating")
    bce = F.binary_cross_entropy_with_logits
    d_ref = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    torch.testing.assert_close(loss.discriminator_loss(real, fake), d_ref)
    torch.testing.assert_close(loss.generator_loss(fake), bce(fake, torch.ones_like(fake)))
    f = fake.numpy().astype(np.float64)
    assert loss.generator_loss(fake).item() == pytest.approx(_np_softplus(-f).mean(), rel=1e-5)


def test_hinge_matches_hand_formulas():
    real, fake = _logits(2, (2, 1, 4, 4), (2, 1, 4, 4))
    loss = AdversarialLoss("hinge")
    r, f = real.numpy().astype(np.float64), fake.numpy().astype(np.float64)
    d_ref = np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean()
    assert loss.discriminator_loss(real, fake).item() == pytest.approx(d_ref, rel=1e-5)
    torch.testing.assert_close(loss.discriminator_loss(real, fake), F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    assert loss.generator_loss(fake).item() == pytest.approx(-f.mean(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("mode", ["lsgan", "nonsaturating", "hinge"])
def test_multiscale_lists_average_over_scales(mode):
    shapes = [(2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    reals, fakes = _logits(3, *shapes), _logits(4, *shapes)
    loss = AdversarialLoss(mode)
    d_each = [loss.discriminator_loss(r, f).item() for r, f in zip(reals, fakes)]
    g_each = [loss.generator_loss(f).item() for f in fakes]
    assert loss.discriminator_loss(reals, fakes).item() == pytest.approx(np.mean(d_each), rel=1e-6)
    assert loss.generator_loss(fakes).item() == pytest.approx(np.mean(g_each), rel=1e-6)
    assert loss(fakes).item() == pytest.approx(np.mean(g_each), rel=1e-6)
    with pytest.raises(ValueError, match="3 real logit maps but 2"):
        loss.discriminator_loss(reals, fakes[:2])


def test_adversarial_bad_mode():
    with pytest.raises(ValueError, match="wgan"):
        AdversarialLoss("wgan")
