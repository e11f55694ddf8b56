"""StyleGAN2 networks in plain PyTorch (no Lightning, no custom CUDA ops): generator, discriminator, export.

Modules, each with one job: ``resample`` (the FIR filter and 2x resampling), ``layers`` (equalised-LR layers),
``modconv`` (modulated convolution), ``mapping`` (z -> w, tracked averages, truncation), ``synthesis`` (w -> image),
``generator``, ``discriminator`` and ``export`` (safetensors + JSON, loaded without unpickling).
"""
from gan.nets.stylegan2.discriminator import Discriminator, MinibatchStdDev, mbstd_group_size
from gan.nets.stylegan2.export import CONFIG_FILE, WEIGHTS_FILE, load_exported, read_export_config, save_exported
from gan.nets.stylegan2.generator import Generator
from gan.nets.stylegan2.layers import EqualConv2d, EqualLinear, channels_at
from gan.nets.stylegan2.mapping import MappingNetwork
from gan.nets.stylegan2.modconv import demodulation_coefficients, modulated_conv2d, modulated_conv2d_up
from gan.nets.stylegan2.resample import downsample2d, fir_kernel, upfirdn2d, upsample2d
from gan.nets.stylegan2.synthesis import NoiseMode, SynthesisNetwork

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "Discriminator",
    "EqualConv2d",
    "EqualLinear",
    "Generator",
    "MappingNetwork",
    "MinibatchStdDev",
    "NoiseMode",
    "SynthesisNetwork",
    "channels_at",
    "demodulation_coefficients",
    "downsample2d",
    "fir_kernel",
    "load_exported",
    "mbstd_group_size",
    "modulated_conv2d",
    "modulated_conv2d_up",
    "read_export_config",
    "save_exported",
    "upfirdn2d",
    "upsample2d",
]
