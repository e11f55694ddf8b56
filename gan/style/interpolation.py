"""Interpolation: between two seeds (linear in W, or spherical in Z) and between two classes (one seed morphing
from class a into class b through mixed label embeddings).

Steps are ``t_k = k / (steps - 1)``, k = 0..steps-1, so the first and last images are the endpoints' own images.

* :func:`interpolate`: ``w(t) = lerp(w_a, w_b, t)`` of the seeds' (truncated) ws, or with ``slerp=True``
  ``z(t) = slerp(z_a, z_b, t)`` mapped through ``G.mapping`` (and truncated).
* :func:`interpolate_classes`: the seed's z with label weights ``(1 - t, t)`` on classes (a, b) through the
  mapping network; truncation pulls towards the same mix of the two class centres,
  ``(1 - t) * class_w_avg[a] + t * class_w_avg[b]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gan.nets.stylegan2 import Generator, NoiseMode
from gan.style.sampling import Label, generator_device, label_batch, sample_w, seed_z, synthesize

__all__ = ["Interpolation", "interpolate", "interpolate_classes", "slerp"]


@dataclass(frozen=True)
class Interpolation:
    """The path of an interpolation.

    Args:
        t: (steps,) positions in [0, 1].
        ws: (steps, num_ws, w_dim) ws along the path.
        images: (steps, C, H, W) images in [-1, 1].
    """

    t: Tensor
    ws: Tensor
    images: Tensor


def _positions(steps: int) -> Tensor:
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (both endpoints), got {steps}")
    return torch.linspace(0.0, 1.0, steps)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation of rows: ``(sin((1 - t) O) a + sin(t O) b) / sin(O)``, O the angle between a and b.

    Exactly ``a`` at t = 0 and ``b`` at t = 1; falls back to linear interpolation for (nearly) parallel vectors.

    Args:
        a: (1, D) start.
        b: (1, D) end.
        t: (n,) positions.
    """
    t = t.to(a.dtype)[:, None]
    cos = (torch.nn.functional.normalize(a, dim=1) * torch.nn.functional.normalize(b, dim=1)).sum(dim=1)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega.abs().max()) < 1e-4:
        out = torch.lerp(a, b, t)
    else:
        out = (torch.sin((1.0 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    out = torch.where(t == 0, a, out)
    return torch.where(t == 1, b, out)


@torch.no_grad()
def interpolate(
    G: Generator,
    seed_a: int,
    seed_b: int,
    steps: int,
    *,
    label: Label = None,
    psi: float = 1.0,
    slerp_z: bool = False,
    noise_mode: NoiseMode = "const",
) -> Interpolation:
    """From seed a's image to seed b's: linear in W (default), or spherical in Z.

    Args:
        G: the generator.
        seed_a: start seed.
        seed_b: end seed.
        steps: number of images (>= 2), endpoints included.
        label: an int class index for both seeds (or None when unconditional).
        psi: truncation.
        slerp_z: interpolate z on the sphere and map each z, instead of a straight line between the two ws.
        noise_mode: noise of the synthesis network.
    """
    t = _positions(steps)
    if slerp_z:
        z = seed_z([seed_a, seed_b], G.z_dim)
        zs = slerp(z[:1], z[1:], t).to(generator_device(G))
        ws = G.mapping(zs, label_batch(G, label, steps), psi=float(psi))
    else:
        w = sample_w(G, [seed_a, seed_b], label, psi)
        ws = torch.lerp(w[:1], w[1:], t.to(w)[:, None, None])
    return Interpolation(t=t, ws=ws, images=synthesize(G, ws, noise_mode=noise_mode))


@torch.no_grad()
def interpolate_classes(
    G: Generator,
    seed: int,
    class_a: int,
    class_b: int,
    steps: int,
    *,
    psi: float = 1.0,
    noise_mode: NoiseMode = "const",
) -> Interpolation:
    """One seed morphing from class a into class b: label weights ``(1 - t, t)`` through the mapping network.

    Args:
        G: a conditional generator.
        seed: the seed (one z for every step).
        class_a: start class index.
        class_b: end class index.
        steps: number of images (>= 2), endpoints included.
        psi: truncation towards the interpolated class centre.
        noise_mode: noise of the synthesis network.

    Raises:
        ValueError: an unconditional generator or a class index out of range.
    """
    if G.num_classes == 0:
        raise ValueError("interpolate_classes needs a conditional generator (num_classes > 0)")
    for c in (class_a, class_b):
        if not 0 <= int(c) < G.num_classes:
            raise ValueError(f"class index {c} outside [0, {G.num_classes})")
    t = _positions(steps)
    device = generator_device(G)
    weights = torch.zeros(steps, G.num_classes)
    weights[:, int(class_a)] += 1.0 - t
    weights[:, int(class_b)] += t
    z = seed_z([seed], G.z_dim).repeat(steps, 1).to(device)
    ws = G.mapping(z, weights.to(device), psi=float(psi))
    return Interpolation(t=t, ws=ws, images=synthesize(G, ws, noise_mode=noise_mode))
