"""LightningModules, one per model family. They never import the data package (the CLI wires datamodules)."""
from gan.models.cyclegan import CycleGAN
from gan.models.pix2pix import Pix2Pix
from gan.models.translation import TranslationModule

__all__ = ["CycleGAN", "Pix2Pix", "TranslationModule"]
