"""Image-space operations shared by the augmentation pipelines: exact integer transforms and affine resampling.

Coordinates are pixel-centred: pixel ``(row i, column j)`` of an (H, W) image sits at
``(x, y) = (j + 0.5 - W / 2, i + 0.5 - H / 2)``, x to the right, y down.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reflect_index(index: Tensor, size: int) -> Tensor:
    """Fold integer indices into [0, size) by reflection without repeating the edge (numpy ``mode="reflect"``).

    ``-1 -> 1``, ``size -> size - 2``; the pattern repeats with period ``2 * (size - 1)``.

    Args:
        index: integer tensor of indices (any values).
        size: the axis length.
    """
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def integer_transform(images: Tensor, *, xflip: Tensor, rot90: Tensor, shift: Tensor) -> Tensor:
    """Exact per-sample x-flip, then quarter turns, then integer translation with reflection padding.

    For sample n: ``translate(torch.rot90(flip(x), k, dims=(-2, -1)), dx, dy)`` where ``flip`` reverses the columns
    (``torch.flip(x, [-1])``) when ``xflip[n]`` and ``translate`` moves the content by ``dx`` columns right and ``dy``
    rows down, filling from the reflected image (numpy ``mode="reflect"``). Implemented as one gather, so gradients
    flow to ``images``.

    Args:
        images: (N, C, H, W); H must equal W where any ``rot90`` is odd.
        xflip: (N,) bool.
        rot90: (N,) int64 quarter turns (counter-clockwise as ``torch.rot90`` with ``dims=(-2, -1)``).
        shift: (N, 2) int64 ``(dx, dy)`` in pixels.
    """
    n, c, h, w = images.shape
    if h != w and bool((rot90 % 2 == 1).any()):
        raise ValueError(f"90-degree rotations need square images, got {h}x{w}")
    dev = images.device
    xflip, rot90, shift = xflip.to(dev), rot90.to(dev) % 4, shift.to(dev)
    # doubled centred coordinates of every output pixel: integers, so every step below is exact
    u = (2 * torch.arange(w, device=dev) - (w - 1)).view(1, 1, w).expand(n, h, w)
    v = (2 * torch.arange(h, device=dev) - (h - 1)).view(1, h, 1).expand(n, h, w)
    u = u - 2 * shift[:, 0].view(n, 1, 1)
    v = v - 2 * shift[:, 1].view(n, 1, 1)
    k = rot90.view(n, 1, 1)
    # the source of a quarter turn: (u, v) <- (-v, u); k turns compose to the four cases below
    u, v = (
        torch.where(k == 0, u, torch.where(k == 1, -v, torch.where(k == 2, -u, v))),
        torch.where(k == 0, v, torch.where(k == 1, u, torch.where(k == 2, -v, -u))),
    )
    u = torch.where(xflip.view(n, 1, 1), -u, u)
    cols = reflect_index(torch.div(u + (w - 1), 2, rounding_mode="floor"), w)
    rows = reflect_index(torch.div(v + (h - 1), 2, rounding_mode="floor"), h)
    index = (rows * w + cols).reshape(n, 1, h * w).expand(n, c, h * w)
    return images.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


def affine_resample(images: Tensor, inverse: Tensor) -> Tensor:
    """Resample every sample through a 3x3 matrix mapping output to input pixel-centred coordinates (bilinear).

    Outside the image the input is extended by reflection about the edge pixels (numpy ``mode="reflect"``, the
    reference's padding rule). Instead of padding, each source coordinate is folded into the image
    (``u -> reflect(u)`` about the first and last pixel centres), which gives exactly the bilinear value of the
    reflect-padded image, for any extent and without padding cost. The identity matrix reproduces the image.

    Args:
        images: (N, C, H, W).
        inverse: (N, 3, 3) matrices (output -> input coordinates), on any device.
    """
    n, c, h, w = images.shape
    inv = inverse.to(device=images.device, dtype=torch.float64 if images.dtype == torch.float64 else torch.float32)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=inv.device, dtype=inv.dtype), torch.arange(w, device=inv.device, dtype=inv.dtype),
        indexing="ij",
    )
    pts = torch.stack([xs + 0.5 - w / 2, ys + 0.5 - h / 2, torch.ones_like(xs)], dim=-1).reshape(1, h * w, 3)
    src = pts @ inv.transpose(1, 2)  # (N, H*W, 3) source pixel-centred coordinates
    cols = _fold(src[..., 0] + (w / 2 - 0.5), w)
    rows = _fold(src[..., 1] + (h / 2 - 0.5), h)
    grid = torch.stack([_to_unit(cols, w), _to_unit(rows, h)], dim=-1).reshape(n, h, w, 2).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _fold(u: Tensor, size: int) -> Tensor:
    """Continuous pixel-index coordinates reflected into [0, size - 1] about the end pixel centres."""
    if size == 1:
        return torch.zeros_like(u)
    period = 2 * (size - 1)
    u = u.remainder(period)
    return torch.where(u > size - 1, period - u, u)


def _to_unit(u: Tensor, size: int) -> Tensor:
    """Pixel-index coordinates -> grid_sample's [-1, 1] with ``align_corners=True``."""
    return u * (2 / (size - 1)) - 1 if size > 1 else torch.zeros_like(u)


def translate_matrix(tx: Tensor, ty: Tensor) -> Tensor:
    """(N, 3, 3) translation matrices.

    Args:
        tx: (N,) shifts along x.
        ty: (N,) shifts along y.
    """
    m = torch.eye(3, dtype=tx.dtype, device=tx.device).repeat(tx.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale_matrix(sx: Tensor, sy: Tensor) -> Tensor:
    """(N, 3, 3) scaling matrices.

    Args:
        sx: (N,) scale along x.
        sy: (N,) scale along y.
    """
    m = torch.eye(3, dtype=sx.dtype, device=sx.device).repeat(sx.shape[0], 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate_matrix(theta: Tensor) -> Tensor:
    """(N, 3, 3) rotation matrices by ``theta`` radians (in the image's x-right, y-down frame).

    Args:
        theta: (N,) angles.
    """
    cos, sin = theta.cos(), theta.sin()
    m = torch.eye(3, dtype=theta.dtype, device=theta.device).repeat(theta.shape[0], 1, 1)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m
