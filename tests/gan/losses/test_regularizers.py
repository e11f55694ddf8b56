"""StyleGAN2 losses and regularisers against closed forms on toy networks: logistic terms against -log sigmoid,
R1 on a linear and a quadratic discriminator (gradient known by hand), path length on a linear synthesis map
(J is the matrix itself), and the pl_mean EMA."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gan.losses.adversarial import AdversarialLoss
from gan.losses.regularizers import (
    d_logistic_fake,
    d_logistic_real,
    g_nonsaturating,
    path_length_penalty,
    path_lengths,
    r1_penalty,
    update_pl_mean,
)


def test_logistic_terms_are_minus_log_sigmoid_and_sum_to_the_nonsaturating_d_loss():
    real, fake = torch.randn(6, 1, dtype=torch.float64) * 3, torch.randn(6, 1, dtype=torch.float64) * 3
    sig = torch.sigmoid
    torch.testing.assert_close(g_nonsaturating(fake), -torch.log(sig(fake)).mean())
    torch.testing.assert_close(d_logistic_fake(fake), -torch.log(1 - sig(fake)).mean())
    torch.testing.assert_close(d_logistic_real(real), -torch.log(sig(real)).mean())
    both = AdversarialLoss("nonsaturating").discriminator_loss(real, fake)
    torch.testing.assert_close(d_logistic_real(real) + d_logistic_fake(fake), both)


def test_r1_of_a_linear_discriminator_is_gamma_half_squared_weight_norm():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    logits = (x * a).flatten(1).sum(dim=1, keepdim=True) + 0.3  # D(x) = <a, x> + b: grad_x D = a
    pen = r1_penalty(x, logits, gamma=10.0)
    assert pen.item() == pytest.approx(5.0 * a.detach().square().sum().item(), rel=1e-12)
    pen.backward()  # differentiable in D's parameters: d/da (gamma / 2 ||a||^2) = gamma * a
    torch.testing.assert_close(a.grad, 10.0 * a.detach())


def test_r1_of_a_quadratic_discriminator_averages_per_sample_gradient_norms():
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    c = 0.7
    logits = 0.5 * c * x.square().flatten(1).sum(dim=1)  # grad_x D(x_n) = c x_n
    pen = r1_penalty(x, logits, gamma=2.0)
    expected = np.mean([(c * x[n].detach().numpy()) ** 2 for n in range(4)], axis=0).sum()  # gamma / 2 = 1
    assert pen.item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(x.detach(), logits, gamma=1.0)


def _linear_synthesis(ws: torch.Tensor, m: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """images[n] = sum_l M_l^T ws[n, l]: the Jacobian wrt ws[n, l] is M_l^T."""
    return torch.einsum("nld,ldk->nk", ws, m).reshape(ws.shape[0], *shape)


def test_path_lengths_of_a_linear_synthesis_map_equal_the_closed_form():
    g = torch.Generator().manual_seed(0)
    n, layers, w_dim, shape = 3, 4, 5, (2, 3, 4)
    k = int(np.prod(shape))
    m = torch.randn(layers, w_dim, k, dtype=torch.float64, generator=g)
    ws = torch.randn(n, layers, w_dim, dtype=torch.float64, generator=g, requires_grad=True)
    images = _linear_synthesis(ws, m, shape)
    got = path_lengths(images, ws, generator=torch.Generator().manual_seed(9))
    y = torch.randn(images.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) / math.sqrt(12)
    y = y.reshape(n, k).numpy()
    mm = m.numpy()
    ref = [np.sqrt(np.mean([np.sum((mm[j] @ y[i]) ** 2) for j in range(layers)])) for i in range(n)]
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-12)
    # (N, w_dim) latents: plain norm of J^T y
    w2 = torch.randn(n, w_dim, dtype=torch.float64, generator=g, requires_grad=True)
    img2 = (w2 @ m[0]).reshape(n, *shape)
    got2 = path_lengths(img2, w2, generator=torch.Generator().manual_seed(9))
    np.testing.assert_allclose(got2.detach().numpy(), np.linalg.norm(y @ mm[0].T, axis=1), rtol=1e-12)


def test_path_length_penalty_target_mean_and_gradient():
    g = torch.Generator().manual_seed(1)
    n, layers, w_dim, shape = 4, 2, 3, (1, 2, 2)
    m = torch.randn(layers, w_dim, 4, dtype=torch.float64, generator=g, requires_grad=True)
    ws = torch.randn(n, layers, w_dim, dtype=torch.float64, generator=g, requires_grad=True)
    pl_mean = torch.tensor(0.8, dtype=torch.float64)
    res = path_length_penalty(_linear_synthesis(ws, m, shape), ws, pl_mean, decay=0.01, weight=2.0,
                              generator=torch.Generator().manual_seed(3))
    # closed form, in torch so autograd gives the reference gradient wrt the "network weights" m
    y = torch.randn((n, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(3)) / 2.0
    jty = torch.einsum("ldk,nk->nld", m, y.reshape(n, 4))
    lengths = jty.square().sum(dim=2).mean(dim=1).sqrt()
    target = 0.8 + 0.01 * (lengths.mean() - 0.8)
    ref = 2.0 * (lengths - target).square().mean()
    torch.testing.assert_close(res.penalty, ref)
    torch.testing.assert_close(res.mean_length, lengths.mean().detach())
    assert not res.mean_length.requires_grad
    (g_got,) = torch.autograd.grad(res.penalty, m)
    (g_ref,) = torch.autograd.grad(ref, m)
    torch.testing.assert_close(g_got, g_ref)
    assert pl_mean.item() == 0.8  # the buffer is the caller's to move


def test_update_pl_mean_is_an_ema_with_decay():
    pl_mean = torch.tensor(2.0, dtype=torch.float64)
    out = update_pl_mean(pl_mean, torch.tensor(4.0), decay=0.01)
    assert out is pl_mean and pl_mean.item() == pytest.approx(2.0 + 0.01 * (4.0 - 2.0))
    for _ in range(2000):
        update_pl_mean(pl_mean, torch.tensor(4.0, dtype=torch.float64))
    assert pl_mean.item() == pytest.approx(4.0, abs=1e-6)
