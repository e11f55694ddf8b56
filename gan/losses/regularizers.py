"""StyleGAN2 losses by training phase: logistic (non-saturating) terms, the R1 penalty and path-length regularisation.

==============================  =================================================================================
function                        value
==============================  =================================================================================
:func:`g_nonsaturating`         ``mean(softplus(-D(G(z))))``
:func:`d_logistic_fake`         ``mean(softplus(D(G(z))))``
:func:`d_logistic_real`         ``mean(softplus(-D(x)))``
:func:`r1_penalty`              ``gamma / 2 * mean_n ||d D(x_n) / d x_n||^2`` (Mescheder et al. 2018)
:func:`path_length_penalty`     ``weight * mean_n (||J_n^T y_n|| - a)^2``, ``y_n ~ N(0, I) / sqrt(H W)``,
                                ``a = pl_mean.lerp(mean_n ||J_n^T y_n||, decay)`` (Karras et al. 2020)
==============================  =================================================================================

``d_logistic_real + d_logistic_fake`` is ``AdversarialLoss("nonsaturating").discriminator_loss``; the terms are
split because StyleGAN2 scores reals and fakes in separate phases (the real phase also carries the lazy R1 term).
The lazy-regularisation interval factor (R1 every 16 steps, path length every 4) is the caller's: multiply the
penalty by the interval.

Path length, DDP: :func:`path_length_penalty` returns the batch's mean length beside the penalty; the training
module all-reduces that mean and then moves its ``pl_mean`` buffer with :func:`update_pl_mean`, so every rank keeps
the same ``pl_mean``. The penalty's own target ``a`` uses the local batch mean, with its gradient, as the reference.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def g_nonsaturating(fake_logits: Tensor) -> Tensor:
    """Generator loss ``mean(softplus(-fake_logits))`` (= -log sigmoid).

    Args:
        fake_logits: discriminator logits on generated images.
    """
    return F.softplus(-fake_logits).mean()


def d_logistic_fake(fake_logits: Tensor) -> Tensor:
    """Discriminator loss on generated images, ``mean(softplus(fake_logits))``.

    Args:
        fake_logits: logits on generated images (detached from the generator by the caller).
    """
    return F.softplus(fake_logits).mean()


def d_logistic_real(real_logits: Tensor) -> Tensor:
    """Discriminator loss on real images, ``mean(softplus(-real_logits))``.

    Args:
        real_logits: logits on real images.
    """
    return F.softplus(-real_logits).mean()


def r1_penalty(real_images: Tensor, real_logits: Tensor, *, gamma: float) -> Tensor:
    """R1 penalty ``gamma / 2 * mean_n sum_{c,h,w} (d sum(real_logits) / d real_images)^2``, differentiable.

    Args:
        real_images: (N, C, H, W) real images with ``requires_grad=True``, before any augmentation (the gradient
            is taken through it, as the reference does with ADA).
        real_logits: the discriminator's logits computed from ``real_images``.
        gamma: R1 weight (1 in the paper's 256 px configuration).
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: real_images must require grad (call real_images.requires_grad_(True) first)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return 0.5 * gamma * grad.square().flatten(1).sum(dim=1).mean()


class PathLength(NamedTuple):
    """Result of :func:`path_length_penalty`.

    Attributes:
        penalty: the weighted penalty (scalar, differentiable).
        mean_length: the batch mean of ``||J^T y||`` (scalar, detached): all-reduce it, then :func:`update_pl_mean`.
    """

    penalty: Tensor
    mean_length: Tensor


def path_lengths(images: Tensor, ws: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Per-sample ``||J^T y||`` with ``J = d images / d ws`` and ``y ~ N(0, I) / sqrt(H * W)``, differentiable.

    For (N, num_ws, w_dim) ws the squared norm is summed over ``w_dim`` and averaged over the ``num_ws`` layers
    before the square root, as the reference.

    Args:
        images: (N, C, H, W) generated images, computed from ``ws``.
        ws: (N, num_ws, w_dim) or (N, w_dim) latents in the graph of ``images``.
        generator: source of ``y`` (None: the global torch RNG).
    """
    h, w = images.shape[-2:]
    device = generator.device if generator is not None else images.device
    y = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype).to(images.device)
    y = y / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=True)
    sq = grad.square().sum(dim=-1)
    if sq.ndim == 2:
        sq = sq.mean(dim=1)
    return sq.sqrt()


def path_length_penalty(
    images: Tensor,
    ws: Tensor,
    pl_mean: Tensor,
    *,
    decay: float = 0.01,
    weight: float = 2.0,
    generator: torch.Generator | None = None,
) -> PathLength:
    """Path-length penalty ``weight * mean_n (l_n - a)^2`` with ``a = pl_mean.lerp(mean(l), decay)``.

    Args:
        images: (N, C, H, W) generated images (the reference uses half the batch: "batch shrink" 2).
        ws: the latents in the graph of ``images``.
        pl_mean: the running mean length (a scalar buffer; not modified here).
        decay: EMA decay of the running mean.
        weight: penalty weight (2 in the paper).
        generator: source of the projection noise ``y``.
    """
    lengths = path_lengths(images, ws, generator=generator)
    target = pl_mean.to(lengths).lerp(lengths.mean(), decay)
    penalty = (lengths - target).square().mean() * weight
    return PathLength(penalty=penalty, mean_length=lengths.mean().detach())


def update_pl_mean(pl_mean: Tensor, mean_length: Tensor, *, decay: float = 0.01) -> Tensor:
    """Move the running mean length in place, ``pl_mean <- pl_mean + decay * (mean_length - pl_mean)``; returns it.

    Args:
        pl_mean: the running mean (scalar buffer).
        mean_length: the batch mean length (all-reduced over ranks under DDP).
        decay: EMA decay.
    """
    with torch.no_grad():
        pl_mean.lerp_(mean_length.to(pl_mean), decay)
    return pl_mean
