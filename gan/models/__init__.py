"""LightningModules, one per model family, on the shared :class:`GANModule` base. They never import a datamodule
(the CLI wires data to models); checkpoints load back through :func:`gan.models.checkpoint.load_module`."""
from gan.models.base import GANModule
from gan.models.config import DiscriminatorConfig, GeneratorConfig, OptimConfig, VolumeEvalConfig
from gan.models.cyclegan import CycleGAN
from gan.models.pix2pix import Pix2Pix
from gan.models.stylegan2 import StyleGAN2
from gan.models.translation import TranslationModule

__all__ = ["CycleGAN", "DiscriminatorConfig", "GANModule", "GeneratorConfig", "OptimConfig", "Pix2Pix",
           "StyleGAN2", "TranslationModule", "VolumeEvalConfig"]
