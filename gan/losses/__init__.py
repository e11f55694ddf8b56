"""Losses for GAN training: adversarial, reconstruction (L1 variants) and LPIPS perceptual."""
from gan.losses.adversarial import AdversarialLoss, AdversarialMode
from gan.losses.perceptual import LPIPSLoss, backbone_file_name, default_backbone_path
from gan.losses.structure import mind_descriptor, mind_loss
from gan.losses.reconstruction import cycle_loss, identity_loss, l1_loss, lesion_weighted_l1

__all__ = [
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
