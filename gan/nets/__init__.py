"""Plain ``nn.Module`` networks (no Lightning): translation generators and discriminators for 2D and 3D images, and
StyleGAN2 (:mod:`gan.nets.stylegan2`: generator, discriminator, modulated convolution, export)."""
from gan.nets.init import init_weights
from gan.nets.layers import Norm, PaddingMode, conv_transpose_type, conv_type, norm_layer
from gan.nets.patchgan import MultiscaleDiscriminator, PatchDiscriminator, min_input_size, receptive_field
from gan.nets.resnet import ResnetBlock, ResnetGenerator
from gan.nets.stylegan2 import Discriminator as StyleGAN2Discriminator
from gan.nets.stylegan2 import Generator as StyleGAN2Generator
from gan.nets.stylegan2 import load_exported, modulated_conv2d, save_exported
from gan.nets.unet import UnetBlock, UnetGenerator

__all__ = [
    "MultiscaleDiscriminator",
    "Norm",
    "PaddingMode",
    "PatchDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "UnetBlock",
    "UnetGenerator",
    "conv_transpose_type",
    "conv_type",
    "init_weights",
    "load_exported",
    "modulated_conv2d",
    "save_exported",
    "min_input_size",
    "norm_layer",
    "receptive_field",
]
