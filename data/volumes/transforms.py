"""Augmentation of volume samples with MONAI, applied identically to every image and mask of a sample.

Tile augmentation (flips, rot90, stain jitter) lives in :mod:`data.slides.transforms`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from monai.transforms import Compose, Rand2DElasticd, Rand3DElasticd, RandFlipd, RandRotated, RandZoomd

__all__ = ["VolumeAugment"]


class VolumeAugment:
    """Random flips, rotations, isotropic scaling and elastic deformation of a sample dict, the same for all its keys.

    Scaling matters for unpaired training on few patients: when the two domains' bodies differ in size on
    average, a CycleGAN learns to shrink or grow the anatomy to fool its discriminator; random zoom in both domains
    blurs that cue.

    Images are interpolated bilinearly, masks with nearest neighbour so they stay 0/1. Outside the field of
    view the border value is repeated (air stays air at -1). Seeded per sample by
    :class:`data.volumes.datasets.VolumeDataset` through :meth:`set_random_state`.

    Args:
        image_keys: keys of [-1, 1] images in the sample.
        mask_keys: keys of 0/1 masks (``body_mask`` and e.g. ``lesion_mask``).
        spatial_dims: 2 for slices / 2.5D stacks, 3 for patches.
        flip_prob: probability of a flip along each in-plane axis.
        rotate_deg: maximum rotation in degrees (in-plane; about every axis in 3D).
        rotate_prob: probability of a rotation.
        scale_prob: probability of an isotropic zoom (0 disables it).
        scale_range: zoom factors are drawn from [1 - scale_range, 1 + scale_range] (field of view kept).
        elastic_prob: probability of an elastic deformation (0 disables it).
        elastic_sigma: smoothness of the deformation field in voxels (2D) or its spacing (3D).
        elastic_magnitude: displacement magnitude in voxels.
    """

    def __init__(
        self,
        *,
        image_keys: Sequence[str],
        mask_keys: Sequence[str] = ("body_mask",),
        spatial_dims: int = 2,
        flip_prob: float = 0.5,
        rotate_deg: float = 10.0,
        rotate_prob: float = 0.3,
        scale_prob: float = 0.0,
        scale_range: float = 0.1,
        elastic_prob: float = 0.0,
        elastic_sigma: float = 8.0,
        elastic_magnitude: float = 2.0,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        keys = list(image_keys) + list(mask_keys)
        modes = ["bilinear"] * len(image_keys) + ["nearest"] * len(mask_keys)
        self.keys = keys
        self.mask_keys = list(mask_keys)
        rad = math.radians(rotate_deg)
        flip_axes = range(spatial_dims if spatial_dims == 2 else 2)
        ts: list[Any] = [RandFlipd(keys=keys, prob=flip_prob, spatial_axis=a) for a in flip_axes]
        if rotate_prob > 0 and rotate_deg > 0:
            rng3 = dict(range_y=rad, range_z=rad) if spatial_dims == 3 else {}
            ts.append(RandRotated(keys=keys, range_x=rad, prob=rotate_prob, mode=modes, padding_mode="border",
                                  keep_size=True, **rng3))
        if not 0.0 <= scale_range < 1.0:
            raise ValueError(f"scale_range must lie in [0, 1), got {scale_range}")
        if scale_prob > 0 and scale_range > 0:
            linear = "bilinear" if spatial_dims == 2 else "trilinear"  # RandZoomd names the 3D mode itself
            ts.append(RandZoomd(keys=keys, prob=scale_prob, min_zoom=1.0 - scale_range, max_zoom=1.0 + scale_range,
                                mode=[linear if m == "bilinear" else m for m in modes], padding_mode="edge",
                                keep_size=True))
        if elastic_prob > 0:
            if spatial_dims == 2:
                ts.append(Rand2DElasticd(keys=keys, spacing=(elastic_sigma, elastic_sigma),
                                         magnitude_range=(0, elastic_magnitude), prob=elastic_prob, mode=modes,
                                         padding_mode="border"))
            else:
                ts.append(Rand3DElasticd(keys=keys, sigma_range=(elastic_sigma, elastic_sigma + 1),
                                         magnitude_range=(0, elastic_magnitude), prob=elastic_prob, mode=modes,
                                         padding_mode="border"))
        self.compose = Compose(ts)

    def set_random_state(self, seed: int) -> VolumeAugment:
        """Seed every random transform (called once per sample for reproducibility across workers).

        Args:
            seed: the sample's seed.
        """
        self.compose.set_random_state(seed=seed)
        return self

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Augment the tensors of ``sample`` in place of the originals; other entries pass through.

        Args:
            sample: a dataset item (tensors under ``image_keys`` and ``mask_keys``).
        """
        out = dict(self.compose({k: v for k, v in sample.items()}))
        for k in self.keys:
            v = out[k]
            v = v.as_tensor() if hasattr(v, "as_tensor") else torch.as_tensor(v)
            out[k] = (v > 0.5).float() if k in self.mask_keys else v.float().clamp(-1.0, 1.0)
        return out
