"""Projection: fit a real tile into the generator's W (or W+) space, with its noise maps (Karras et al. 2020, sec. 5).

The optimisation, step ``i`` of ``steps`` at ``t = i / steps``:

* start: ``w = mean`` of the ws of ``w_avg_samples`` latents (of the label's class when conditional), ``sigma`` the
  root mean squared distance of those ws to the mean; one w for every layer (W) or one per layer (W+); noise maps
  N(0, 1), one per synthesis layer (:meth:`SynthesisNetwork.noise_layers`);
* learning rate ``lr * ramp``, ``ramp = (0.5 - 0.5 cos(pi * min(1, (1 - t) / lr_rampdown))) * min(1, t /
  lr_rampup)``; Adam (0.9, 0.999) over w and the noise maps;
* the image of ``w + n * sigma * w_noise * max(0, 1 - t / w_noise_ramp) ** 2`` (n ~ N(0, 1)) and the maps;
* loss ``LPIPS(image, target) + mse_weight * mean((image - target) ** 2) + noise_regularize * R(maps)`` with
  :func:`noise_regularization` R (``mse_weight`` 0 by default, as in the paper), images downsampled (area) to
  256 px for LPIPS when larger;
* after the step each noise map is renormalised to zero mean and unit variance.

All randomness (the w samples, the initial maps, the w perturbations) comes from one ``torch.Generator`` seeded
with ``seed`` on the CPU, so a projection is reproducible. LPIPS is the VGG distance of the paper
(:class:`gan.losses.LPIPSLoss` with ``net="vgg"``): its weights come from a local file (never downloaded; a
missing file is named in the error); tests pass a random-weights LPIPS.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from data.files import atomic_path
from gan.losses import LPIPSLoss
from gan.losses.perceptual import LPIPSNet
from gan.nets.stylegan2 import Generator
from gan.style.sampling import generator_device, image_to_unit, label_batch

LATENT_FORMAT = "medsynth.stylegan2.projection"
#: LPIPS sees at most this size (the paper's projector downsamples larger images to 256 px).
LPIPS_SIZE = 256

__all__ = [
    "LATENT_FORMAT", "Projection", "load_latent", "noise_regularization", "project", "random_lpips", "save_latent",
]


@dataclass
class Projection:
    """The result of :func:`project`.

    Args:
        w: (1, num_ws, w_dim) the fitted ws (W: one w repeated over the layers; W+: one per layer).
        noise: the fitted noise maps, (1, 1, r, r) each, in :meth:`SynthesisNetwork.noise_layers` order.
        image: (1, C, H, W) the reconstruction in [-1, 1] (``G.synthesis(w, noise=noise)``).
        target: (1, C, H, W) the target in [-1, 1].
        losses: per step: ``"total"``, ``"lpips"``, ``"mse"``, ``"noise_reg"`` and ``"lr"``.
        w_plus: whether each layer had its own w.
        final: ``"lpips"`` and ``"mse"`` of the reconstruction against the target (no w perturbation).
    """

    w: Tensor
    noise: list[Tensor]
    image: Tensor
    target: Tensor
    losses: dict[str, list[float]] = field(default_factory=dict)
    w_plus: bool = False
    final: dict[str, float] = field(default_factory=dict)


def noise_regularization(noise: Sequence[Tensor]) -> Tensor:
    """The paper's multi-scale noise autocorrelation penalty: for every map and its 2x average-pooled versions down
    to 8 x 8, the squared mean product with the map shifted by one pixel (circularly) along x and along y, summed.

    Args:
        noise: maps (N, 1, H, W) or (H, W).
    """
    total = torch.zeros(())
    for n in noise:
        v = n if n.ndim == 4 else n[None, None]
        total = total.to(v)
        while True:
            total = total + (v * v.roll(1, dims=3)).mean().square() + (v * v.roll(1, dims=2)).mean().square()
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, kernel_size=2)
    return total


def _lr_ramp(t: float, rampup: float, rampdown: float) -> float:
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * (min(1.0, t / rampup) if rampup > 0 else 1.0)


def _for_lpips(x: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(x, LPIPS_SIZE) if x.shape[-1] > LPIPS_SIZE else x


def _target(G: Generator, image: np.ndarray | Tensor) -> Tensor:
    x = image_to_unit(image)
    expected = (G.img_channels, G.resolution, G.resolution)
    if tuple(x.shape) != expected:
        raise ValueError(f"the tile is {tuple(x.shape)} (C, H, W) but the generator makes {expected}; give a "
                         f"{G.resolution} x {G.resolution} tile with {G.img_channels} channel(s)")
    return x[None].to(generator_device(G))


def _sample_labels(G: Generator, label: int | Tensor | None, n: int) -> Tensor | None:
    """The projection's label repeated for ``n`` w samples (an int, a (1,) index or (1, num_classes) weights)."""
    if isinstance(label, Tensor):
        if label.shape[0] != 1:
            raise ValueError(f"project fits one tile: give one label, got shape {tuple(label.shape)}")
        return label_batch(G, label.expand(n, *label.shape[1:]), n)
    return label_batch(G, label, n)


def random_lpips(net: LPIPSNet = "vgg", *, seed: int = 0) -> LPIPSLoss:
    """An LPIPS with a seeded random backbone and non-negative random linear heads (so it stays a distance).

    For tests and smoke runs where the ImageNet weights are not available: it still compares deep features of the
    two images, but its values compare with nothing published.

    Args:
        net: ``"vgg"`` (the projector's), ``"alex"`` or ``"squeeze"``.
        seed: seed of the random weights (the global RNG is left as it was).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        loss = LPIPSLoss(net=net, pretrained=False)
    with torch.no_grad():
        for p in loss.lpips.lins.parameters():
            p.abs_()
    return loss.eval()


def _start(G: Generator, label: int | Tensor | None, samples: int, rng: torch.Generator) -> tuple[Tensor, float]:
    """The mean w (1, 1, w_dim) of ``samples`` latents of the label's class and their RMS distance to it."""
    z = torch.randn(samples, G.z_dim, generator=rng).to(generator_device(G))
    w = G.mapping(z, _sample_labels(G, label, samples))[:, :1]  # (S, 1, w_dim)
    mean = w.mean(dim=0, keepdim=True)
    return mean, float((w - mean).square().sum() / samples) ** 0.5


def project(
    G: Generator,
    image: np.ndarray | Tensor,
    steps: int = 500,
    *,
    w_plus: bool = False,
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
    lpips_weights: str | Path | None = None,
    label: int | Tensor | None = None,
    seed: int = 0,
    noise_regularize: float = 1e5,
    mse_weight: float = 0.0,
    lr: float = 0.1,
    lr_rampup: float = 0.05,
    lr_rampdown: float = 0.25,
    w_noise: float = 0.05,
    w_noise_ramp: float = 0.75,
    w_avg_samples: int = 10000,
    w_init: Tensor | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> Projection:
    """Fit ``image`` into W (or W+) and the noise maps of ``G`` (see the module docstring for the schedule).

    Args:
        G: the generator (not modified; its parameters get no gradients).
        image: the tile, uint8 (H, W, C) / (H, W) or float (C, H, W) in [-1, 1], of the generator's size.
        steps: optimisation steps (>= 1).
        w_plus: one w per layer (W+) instead of one w for all layers (W).
        lpips: the perceptual distance ``(pred, target) -> scalar`` on images in [-1, 1]; None builds
            ``LPIPSLoss(net="vgg")`` with ImageNet weights from ``lpips_weights`` or the torch hub cache
            (:func:`random_lpips` for tests).
        lpips_weights: torchvision VGG16 weights file or folder for the default LPIPS (None: the hub cache).
        label: class index (int or (1,) tensor) or (1, num_classes) weights of a conditional generator.
        seed: seed of every random draw, so the projection is reproducible.
        noise_regularize: weight of :func:`noise_regularization`.
        mse_weight: weight of the pixel mean squared error (in [-1, 1] units; 0 as in the paper).
        lr: peak learning rate.
        lr_rampup: fraction of the steps over which the learning rate ramps up (linear).
        lr_rampdown: fraction of the steps over which it ramps down to 0 (cosine).
        w_noise: scale of the noise added to w, as a fraction of the ws' spread.
        w_noise_ramp: fraction of the steps after which no noise is added to w.
        w_avg_samples: latents sampled to estimate the starting w and the spread.
        w_init: start here instead of the mean w: (1, w_dim) or (1, 1, w_dim) for W, also (1, num_ws, w_dim) for
            W+ (e.g. a W projection refined in W+).
        callback: called after every step with the step index and that step's ``total``, ``lpips``, ``mse``,
            ``noise_reg`` and ``lr`` (a progress bar).

    Raises:
        ValueError: a tile of the wrong size, bad settings, or a missing/extra label.
        FileNotFoundError: the default LPIPS's VGG weights are not there (the message names the file).
    """
    if steps < 1 or w_avg_samples < 1:
        raise ValueError(f"need steps >= 1 and w_avg_samples >= 1, got {steps} and {w_avg_samples}")
    device = generator_device(G)
    target = _target(G, image)
    if lpips is None:
        lpips = LPIPSLoss(net="vgg", pretrained=True, backbone_weights=lpips_weights)
    if isinstance(lpips, nn.Module):
        lpips = lpips.to(device).eval()
    rng = torch.Generator().manual_seed(int(seed))
    was_training = G.training
    G.eval()
    requires = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)
    try:
        with torch.no_grad():
            w_mean, w_std = _start(G, label, w_avg_samples, rng)
        w_opt = _initial_w(G, w_mean if w_init is None else w_init, w_plus).requires_grad_(True)
        noise = [torch.randn(1, 1, layer.resolution, layer.resolution, generator=rng).to(device).requires_grad_(True)
                 for layer in G.synthesis.noise_layers()]
        optimiser = torch.optim.Adam([w_opt, *noise], lr=lr, betas=(0.9, 0.999))
        target_lp = _for_lpips(target)
        history: dict[str, list[float]] = {"total": [], "lpips": [], "mse": [], "noise_reg": [], "lr": []}
        for i in range(steps):
            t = i / steps
            step_lr = lr * _lr_ramp(t, lr_rampup, lr_rampdown)
            for group in optimiser.param_groups:
                group["lr"] = step_lr
            scale = w_std * w_noise * max(0.0, 1.0 - t / w_noise_ramp) ** 2 if w_noise_ramp > 0 else 0.0
            perturb = torch.randn(w_opt.shape, generator=rng).to(device) * scale
            ws = (w_opt + perturb).expand(1, G.num_ws, -1)
            synth = G.synthesis(ws, noise=noise)
            dist = lpips(_for_lpips(synth), target_lp).mean()
            mse = (synth - target).square().mean()
            reg = noise_regularization(noise)
            loss = dist + mse_weight * mse + noise_regularize * reg
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                for n in noise:
                    n -= n.mean()
                    n *= n.square().mean().rsqrt()
            values = {"total": float(loss.detach()), "lpips": float(dist.detach()), "mse": float(mse.detach()),
                      "noise_reg": float(reg.detach()), "lr": step_lr}
            for key, value in values.items():
                history[key].append(value)
            if callback is not None:
                callback(i, values)
        with torch.no_grad():
            w_final = w_opt.detach().expand(1, G.num_ws, -1).clone()
            maps = [n.detach().clone() for n in noise]
            recon = G.synthesis(w_final, noise=maps)
            final = {"lpips": float(lpips(_for_lpips(recon), target_lp).mean()),
                     "mse": float((recon - target).square().mean())}
    finally:
        for p, flag in zip(G.parameters(), requires):
            p.requires_grad_(flag)
        G.train(was_training)
    return Projection(w=w_final, noise=maps, image=recon, target=target, losses=history, w_plus=w_plus, final=final)


def _initial_w(G: Generator, w: Tensor, w_plus: bool) -> Tensor:
    """The starting point of the optimised w: (1, 1, w_dim) for W, (1, num_ws, w_dim) for W+."""
    w = w.detach().to(generator_device(G), torch.float32)
    w = w[:, None] if w.ndim == 2 else w
    if w.ndim != 3 or w.shape[0] != 1 or w.shape[2] != G.w_dim or w.shape[1] not in (1, G.num_ws):
        raise ValueError(f"w_init must be (1, {G.w_dim}), (1, 1, {G.w_dim}) or (1, {G.num_ws}, {G.w_dim}), got "
                         f"{tuple(w.shape)}")
    if w.shape[1] == G.num_ws and not w_plus:
        if not torch.equal(w, w[:, :1].expand_as(w)):
            raise ValueError("w_init has a different w per layer (W+); project it with w_plus=True")
        w = w[:, :1]
    if w_plus:
        w = w.expand(1, G.num_ws, -1)
    return w.clone()


def save_latent(path: str | Path, projection: Projection, *, metadata: dict[str, str] | None = None) -> Path:
    """Write a projection's w and noise maps as safetensors (``"w"``, ``"noise.<i>"``), atomically.

    Args:
        path: the ``.safetensors`` file.
        projection: what :func:`project` returned.
        metadata: string key/values stored in the safetensors header (checkpoint sha256, image, settings).
    """
    tensors = {"w": projection.w.detach().to("cpu", torch.float32).contiguous()}
    for i, n in enumerate(projection.noise):
        tensors[f"noise.{i}"] = n.detach().to("cpu", torch.float32).contiguous()
    header = {"format": LATENT_FORMAT, "w_plus": str(bool(projection.w_plus)).lower(), **(metadata or {})}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={str(k): str(v) for k, v in header.items()})
    return Path(path)


def load_latent(path: str | Path) -> tuple[Tensor, list[Tensor], dict[str, Any]]:
    """Read a latent written by :func:`save_latent`: ``(w, noise maps, header metadata)``.

    Args:
        path: the ``.safetensors`` file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a projection latent.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: latent file not found")
    with safe_open(str(p), framework="pt") as f:
        header = dict(f.metadata() or {})
    if header.get("format") != LATENT_FORMAT:
        raise ValueError(f"{p}: not a projection latent (format {LATENT_FORMAT!r} expected)")
    tensors = load_file(str(p))
    noise = [tensors[f"noise.{i}"] for i in range(sum(k.startswith("noise.") for k in tensors))]
    return tensors["w"], noise, header
