"""Losses for GAN training: adversarial, reconstruction (L1 variants), LPIPS perceptual, MIND structure, and the
StyleGAN2 logistic losses with their R1 and path-length regularisers."""
from gan.losses.adversarial import AdversarialLoss, AdversarialMode
from gan.losses.perceptual import LPIPSLoss, backbone_file_name, default_backbone_path
from gan.losses.reconstruction import cycle_loss, identity_loss, l1_loss, lesion_weighted_l1
from gan.losses.regularizers import (
    PathLength,
    d_logistic_fake,
    d_logistic_real,
    g_nonsaturating,
    path_length_penalty,
    path_lengths,
    r1_penalty,
    update_pl_mean,
)
from gan.losses.structure import mind_descriptor, mind_loss

__all__ = [
    "PathLength",
    "d_logistic_fake",
    "d_logistic_real",
    "g_nonsaturating",
    "path_length_penalty",
    "path_lengths",
    "r1_penalty",
    "update_pl_mean",
    "AdversarialLoss",
    "AdversarialMode",
    "LPIPSLoss",
    "backbone_file_name",
    "cycle_loss",
    "default_backbone_path",
    "identity_loss",
    "l1_loss",
    "lesion_weighted_l1",
    "mind_descriptor",
    "mind_loss",
]
