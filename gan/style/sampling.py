"""Seeds, labels, ws and images: the sampling rules every other part of :mod:`gan.style` builds on.

* Seed rule: the latent of seed ``s`` is ``torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(s))``,
  drawn on the CPU in float32 and then moved to the generator's device, so one seed gives one z on every device.
  N seeds give the N rows of :func:`seed_z` in order.
* Labels: ``None`` (unconditional), one ``int`` class index for every sample, an (N,) integer tensor of indices,
  or (N, num_classes) float weights (mixing class embeddings; see
  :func:`gan.nets.stylegan2.layers.label_weights`). Class names are turned into indices by :func:`resolve_label`.
* Quantisation: images live in [-1, 1]; :func:`to_uint8` stores ``floor((clamp(x, -1, 1) + 1) * 127.5 + 0.5)``
  (the generator's documented rule) and :func:`image_to_unit` maps uint8 back with ``v * float32(1 / 127.5) - 1``
  (the tile data layer's rule: 0 -> -1, 255 -> 1 exactly).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from gan.nets.stylegan2 import Generator, NoiseMode

Label = int | Tensor | None
"""A label argument: None, one class index for all samples, (N,) indices or (N, num_classes) float weights."""

_UNIT_SCALE = np.float32(1.0 / 127.5)

__all__ = [
    "Label",
    "generator_device",
    "image_to_unit",
    "label_batch",
    "resolve_label",
    "sample_images",
    "sample_w",
    "seed_z",
    "synthesize",
    "to_uint8",
    "truncate",
]


def generator_device(G: Generator) -> torch.device:
    """The device of the generator's parameters.

    Args:
        G: the generator.
    """
    return next(G.parameters()).device


def seed_z(seeds: Sequence[int], z_dim: int) -> Tensor:
    """The latents of ``seeds``, (N, z_dim) float32 on the CPU (see the seed rule in the module docstring).

    Args:
        seeds: non-negative integer seeds.
        z_dim: latent width.

    Raises:
        ValueError: no seeds, or a negative / non-integer seed.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("need at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be non-negative integers, got {s!r}")
    rows = [torch.randn(1, z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.cat(rows)


def resolve_label(value: str | int | None, *, class_names: Sequence[str], num_classes: int) -> int | None:
    """A class given by name or index (as typed on a command line) as an index, checked against the generator.

    Args:
        value: a class name from ``class_names``, an index (int or digits), or None.
        class_names: the generator's class names in index order ([] when unknown or unconditional).
        num_classes: the generator's ``num_classes`` (0: unconditional).

    Raises:
        ValueError: a label for an unconditional generator, no label for a conditional one, or an unknown class.
    """
    names = list(class_names)
    known = ", ".join(f"{i}={n}" for i, n in enumerate(names)) or f"indices 0..{num_classes - 1}"
    if num_classes == 0:
        if value is not None:
            raise ValueError(f"the generator is unconditional; no label can be given (got {value!r})")
        return None
    if value is None:
        raise ValueError(f"the generator is conditional ({num_classes} classes: {known}); give a label")
    if isinstance(value, str) and value in names:
        return names.index(value)
    text = str(value).strip()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) or text.isdigit():
        index = int(text)
        if 0 <= index < num_classes:
            return index
    raise ValueError(f"unknown class {value!r}; the generator's classes are {known}")


def label_batch(G: Generator, label: Label, n: int) -> Tensor | None:
    """``label`` as the generator's label argument for ``n`` samples, on the generator's device.

    Args:
        G: the generator.
        label: see :data:`Label`; an int is repeated ``n`` times.
        n: the batch size.
    """
    if label is None:
        return None
    device = generator_device(G)
    if isinstance(label, Tensor):
        return label.to(device)
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise ValueError(f"label must be None, a class index or a tensor, got {label!r}; resolve names with "
                         "resolve_label")
    return torch.full((n,), int(label), dtype=torch.long, device=device)


@torch.no_grad()
def sample_w(G: Generator, seeds: Sequence[int], label: Label = None, psi: float = 1.0) -> Tensor:
    """The ws of ``seeds``, (N, G.num_ws, G.w_dim), truncated towards the (class's) average when ``psi != 1``.

    Deterministic: the seed rule of the module docstring, then ``G.mapping``.

    Args:
        G: the generator.
        seeds: one seed per sample.
        label: see :data:`Label`.
        psi: truncation (1: none; 0: every seed gives the (class's) centre).
    """
    z = seed_z(seeds, G.z_dim).to(generator_device(G))
    return G.mapping(z, label_batch(G, label, z.shape[0]), psi=float(psi))


def truncate(G: Generator, w: Tensor, psi: float, label: Label = None) -> Tensor:
    """``c + psi * (w - c)``, ``c`` the truncation centre: ``G.mapping.w_avg`` when unconditional, the class's
    ``class_w_avg`` row (label-weighted mean for float labels) when conditional.

    Args:
        G: the generator.
        w: (N, num_ws, w_dim) or (N, w_dim).
        psi: truncation strength (1: unchanged, 0: the centre).
        label: see :data:`Label`.
    """
    return G.mapping.truncate(w, float(psi), label_batch(G, label, w.shape[0]))


@torch.no_grad()
def synthesize(
    G: Generator,
    ws: Tensor,
    *,
    noise_mode: NoiseMode = "const",
    noise: Sequence[Tensor] | None = None,
    batch_size: int = 16,
) -> Tensor:
    """Images (N, C, H, W) in [-1, 1] from ws (N, num_ws, w_dim), in batches of ``batch_size``.

    Args:
        G: the generator.
        ws: per-layer ws.
        noise_mode: ``"const"`` (reproducible), ``"random"`` (global RNG) or ``"none"``.
        noise: explicit noise maps shared by every image, one per synthesis layer (each broadcastable to
            (1, 1, r, r), e.g. a projection's fitted maps), instead of ``noise_mode``.
        batch_size: images per synthesis call.

    Raises:
        ValueError: ws of the wrong shape or ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        raise ValueError(f"ws must be (N, {G.num_ws}, {G.w_dim}), got {tuple(ws.shape)}")
    device = generator_device(G)
    ws = ws.to(device)
    maps = None if noise is None else [n.to(device) for n in noise]
    return torch.cat([G.synthesis(chunk, noise_mode=noise_mode, noise=maps) for chunk in ws.split(batch_size)])


def sample_images(
    G: Generator,
    seeds: Sequence[int],
    label: Label = None,
    psi: float = 1.0,
    *,
    noise_mode: NoiseMode = "const",
    batch_size: int = 16,
) -> Tensor:
    """Images of ``seeds``, (N, C, H, W) in [-1, 1]: :func:`sample_w` then :func:`synthesize`.

    Args:
        G: the generator.
        seeds: one seed per image.
        label: see :data:`Label`.
        psi: truncation.
        noise_mode: noise of the synthesis network.
        batch_size: images per synthesis call.
    """
    return synthesize(G, sample_w(G, seeds, label, psi), noise_mode=noise_mode, batch_size=batch_size)


def to_uint8(images: Tensor) -> np.ndarray:
    """Images (..., C, H, W) in [-1, 1] as uint8 arrays (..., H, W, C): ``floor((clamp(x, -1, 1) + 1) * 127.5 + 0.5)``.

    Args:
        images: images in network range (any leading dimensions).
    """
    x = images.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    q = torch.floor((x + 1.0) * 127.5 + 0.5).to(torch.uint8)
    return q.movedim(-3, -1).numpy()


def image_to_unit(image: np.ndarray | Tensor) -> Tensor:
    """A tile as (C, H, W) float32 in [-1, 1].

    uint8 input, (H, W, C) or (H, W), is mapped with ``v * float32(1 / 127.5) - 1``; float input is taken to be in
    network range already, (C, H, W) or (1, C, H, W), and is returned as float32 without clamping (a generator's
    own image may overshoot [-1, 1] slightly).

    Args:
        image: uint8 (H, W, C) / (H, W) array or tensor, or a float (C, H, W) tensor / array in [-1, 1].

    Raises:
        ValueError: another dtype or shape.
    """
    if isinstance(image, Tensor) and image.dtype == torch.uint8:
        image = image.cpu().numpy()
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        arr = image[:, :, None] if image.ndim == 2 else image
        if arr.ndim != 3:
            raise ValueError(f"a uint8 image must be (H, W) or (H, W, C), got shape {image.shape}")
        chw = np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32) * _UNIT_SCALE - np.float32(1.0)
        return torch.from_numpy(chw)
    x = torch.as_tensor(image)
    if not x.is_floating_point():
        raise ValueError(f"an image must be uint8 (H, W[, C]) or float (C, H, W) in [-1, 1], got {x.dtype}")
    x = x[0] if x.ndim == 4 and x.shape[0] == 1 else x
    if x.ndim != 3:
        raise ValueError(f"a float image must be (C, H, W) in [-1, 1], got shape {tuple(x.shape)}")
    return x.to(torch.float32)
