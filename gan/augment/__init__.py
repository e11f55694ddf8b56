"""Differentiable augmentations applied to everything a GAN discriminator sees: ADA and DiffAugment.

Plain ``nn.Module``s (no Lightning); randomness only from an explicit ``torch.Generator``.
"""
from gan.augment.ada import AdaController, AdaptiveAugment, AugmentParams, ada_p_step
from gan.augment.diffaugment import DiffAugment, DiffAugmentParams
from gan.augment.geometry import affine_resample, integer_transform, reflect_index

__all__ = [
    "AdaController",
    "AdaptiveAugment",
    "AugmentParams",
    "DiffAugment",
    "DiffAugmentParams",
    "ada_p_step",
    "affine_resample",
    "integer_transform",
    "reflect_index",
]
