"""The StyleGAN2 latent API: sampling, truncation, style mixing, interpolation and projection.

Works on a plain :class:`gan.nets.stylegan2.Generator` (an export folder through
:func:`gan.nets.stylegan2.load_exported`, or a checkpoint's EMA generator) and never imports Lightning.

Modules, each with one job: ``sampling`` (the seed rule, labels, ws, images, uint8 quantisation), ``mixing`` (layer
ranges and presets, the style-mixing grid), ``grid`` (the labelled PNG of a grid), ``interpolation`` (between seeds
and between classes) and ``projection`` (fitting a real tile into W / W+).

Example::

    from gan.nets.stylegan2 import load_exported
    from gan.style import sample_images, save_grid, style_layers, style_mix

    G = load_exported("export/")
    tiles = sample_images(G, [0, 1, 2], label=1, psi=0.7)            # (3, 3, H, W) in [-1, 1]
    grid = style_mix(G, [1, 2], [3, 4, 5], style_layers("coarse", num_ws=G.num_ws), label=1)
    save_grid(grid, "mix.png", row_labels=["1", "2"], col_labels=["3", "4", "5"], title="coarse from rows")
"""
from gan.style.grid import grid_image, save_grid
from gan.style.interpolation import Interpolation, interpolate, interpolate_classes, slerp
from gan.style.mixing import (
    BLANK,
    PRESETS,
    LayerPreset,
    format_layers,
    mix_ws,
    preset_layers,
    style_layers,
    style_mix,
    style_mix_ws,
    ws_resolution,
)
from gan.style.projection import Projection, load_latent, noise_regularization, project, random_lpips, save_latent
from gan.style.sampling import (
    Label,
    generator_device,
    image_to_unit,
    label_batch,
    resolve_label,
    sample_images,
    sample_w,
    seed_z,
    synthesize,
    to_uint8,
    truncate,
)

__all__ = [
    "BLANK",
    "PRESETS",
    "Interpolation",
    "Label",
    "LayerPreset",
    "Projection",
    "format_layers",
    "generator_device",
    "grid_image",
    "image_to_unit",
    "interpolate",
    "interpolate_classes",
    "label_batch",
    "load_latent",
    "mix_ws",
    "noise_regularization",
    "preset_layers",
    "project",
    "random_lpips",
    "resolve_label",
    "sample_images",
    "sample_w",
    "save_grid",
    "save_latent",
    "seed_z",
    "slerp",
    "style_layers",
    "style_mix",
    "style_mix_ws",
    "synthesize",
    "to_uint8",
    "truncate",
    "ws_resolution",
]
