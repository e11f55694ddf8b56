"""Plain ``nn.Module`` networks (no Lightning): generators and discriminators for 2D and 3D images."""
from gan.nets.init import init_weights
from gan.nets.layers import Norm, PaddingMode, conv_transpose_type, conv_type, norm_layer
from gan.nets.patchgan import MultiscaleDiscriminator, PatchDiscriminator, min_input_size, receptive_field
from gan.nets.resnet import ResnetBlock, ResnetGenerator
from gan.nets.unet import UnetBlock, UnetGenerator

__all__ = [
    "MultiscaleDiscriminator",
    "Norm",
    "PaddingMode",
    "PatchDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetBlock",
    "UnetGenerator",
    "conv_transpose_type",
    "conv_type",
    "init_weights",
    "min_input_size",
    "norm_layer",
    "receptive_field",
]
