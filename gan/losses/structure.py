"""Modality-independent structure loss: MIND descriptors (Heinrich et al., Med. Image Anal. 2012).

CycleGAN's cycle loss ties a translation to its input only through the round trip, so a generator may move
edges by a few voxels (a thin fat layer drawn 2 voxels inside the body, say) as long as the other generator moves
them back. The structure-constrained CycleGAN (Yang et al., DLMIA 2018) adds an L1 loss between the MIND
descriptors of the input and of its translation: MIND describes each voxel by how similar its patch is to the
patches of its neighbours, which is the same in CT and MR wherever they show the same edges, whatever the
intensities (it is invariant to ``a * x + b`` for any ``a != 0``, inversions included).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = max(int(math.ceil(3.0 * sigma)), 1)
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _smooth(x: torch.Tensor, sigma: float, spatial_dims: int) -> torch.Tensor:
    """Separable Gaussian filter with replicate borders, (N, 1, *spatial)."""
    k = _gaussian_kernel(sigma, x.dtype, x.device)
    r = (k.numel() - 1) // 2
    conv = F.conv2d if spatial_dims == 2 else F.conv3d
    for axis in range(spatial_dims):
        shape = [1, 1] + [1] * spatial_dims
        shape[2 + axis] = k.numel()
        pad = [0, 0] * spatial_dims
        pad[2 * (spatial_dims - 1 - axis)] = pad[2 * (spatial_dims - 1 - axis) + 1] = r  # F.pad lists last axis first
        x = conv(F.pad(x, pad, mode="replicate"), k.reshape(shape))
    return x


def _shift(x: torch.Tensor, axis: int, step: int) -> torch.Tensor:
    """``y[..., i, ...] = x[..., i + step, ...]`` along spatial ``axis`` with replicate borders."""
    n = x.shape[2 + axis]
    idx = torch.clamp(torch.arange(n, device=x.device) + step, 0, n - 1)
    return x.index_select(2 + axis, idx)


def mind_descriptor(x: torch.Tensor, spatial_dims: int | None = None, distance: int = 1, sigma: float = 0.8,
                    eps: float = 1e-6) -> torch.Tensor:
    """MIND descriptor of every voxel, per channel: ``exp(-D(x, x + r) / V(x))`` normalised by its maximum over r.

    ``r`` runs over the ``2 * spatial_dims`` axis neighbours at ``distance`` voxels (4 in 2D, the 6-neighbourhood
    in 3D); ``D(x, x + r)`` is the Gaussian-weighted (``sigma`` voxels) sum of squared differences between the patch
    at ``x`` and the patch at ``x + r``; ``V(x)`` is the mean of ``D`` over the neighbours, clamped to
    [0.001, 1000] times its image mean as in Heinrich's reference code. Borders repeat the edge voxel.

    Args:
        x: images ``(N, C, *spatial)``; each channel gets its own descriptor.
        spatial_dims: 2 or 3 (default: ``x.dim() - 2``).
        distance: neighbour distance in voxels.
        sigma: patch Gaussian width in voxels.
        eps: added to ``V`` so constant images are defined (all descriptors 1).

    Returns:
        ``(N, C * 2 * spatial_dims, *spatial)``, channel ``c * 2 * spatial_dims + j`` = channel ``c``, neighbour
        ``j`` (axis ``j // 2``, direction ``-distance`` for even ``j``, ``+distance`` for odd).
    """
    sd = x.dim() - 2 if spatial_dims is None else spatial_dims
    if sd not in (2, 3) or x.dim() != sd + 2:
        raise ValueError("mind_descriptor expects (N, C, *spatial) with 2 or 3 spatial dims, "
                         f"got shape {tuple(x.shape)}")
    if distance < 1 or sigma <= 0:
        raise ValueError(f"distance must be >= 1 and sigma > 0, got distance={distance}, sigma={sigma}")
    n, c = x.shape[:2]
    flat = x.reshape(n * c, 1, *x.shape[2:])
    d = torch.cat([_smooth((flat - _shift(flat, axis, step)) ** 2, sigma, sd)
                   for axis in range(sd) for step in (-distance, distance)], dim=1)
    v = d.mean(dim=1, keepdim=True)
    v_mean = v.flatten(1).mean(dim=1).reshape(-1, 1, *([1] * sd))
    v = torch.minimum(torch.maximum(v, 1e-3 * v_mean), 1e3 * v_mean) + eps
    mind = torch.exp(-d / v)
    mind = mind / mind.amax(dim=1, keepdim=True)
    return mind.reshape(n, c * 2 * sd, *x.shape[2:])


def mind_loss(pred: torch.Tensor, reference: torch.Tensor, spatial_dims: int | None = None, distance: int = 1,
              sigma: float = 0.8) -> torch.Tensor:
    """Mean absolute difference of the MIND descriptors of ``pred`` and ``reference`` (same shape, any modalities).

    Args:
        pred: translated images ``(N, C, *spatial)``.
        reference: the images they were translated from, same shape.
        spatial_dims: 2 or 3 (default: ``pred.dim() - 2``).
        distance: neighbour distance in voxels.
        sigma: patch Gaussian width in voxels.
    """
    if pred.shape != reference.shape:
        raise ValueError(f"mind_loss: pred shape {tuple(pred.shape)} differs from reference shape "
                         f"{tuple(reference.shape)}")
    return (mind_descriptor(pred, spatial_dims, distance, sigma)
            - mind_descriptor(reference, spatial_dims, distance, sigma)).abs().mean()


__all__ = ["mind_descriptor", "mind_loss"]
