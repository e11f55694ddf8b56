"""Hyperparameter groups shared by the model families, each argument declared and documented once.

A module takes a group as one typed argument (``generator: GeneratorConfig = GeneratorConfig(...)``); in YAML it
reads ``generator: {arch: resnet, n_blocks: 9}`` and on the command line ``--model.init_args.generator.n_blocks=6``
(a partial override keeps the family's other defaults). Modules store every group in their hyperparameters as a
plain dict (:func:`config_dict`), so checkpoints load with ``torch.load(weights_only=True)`` and
``Family(**hparams)`` rebuilds the module (:func:`as_config` accepts a dict or an instance).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Norm = Literal["instance", "batch", "none"]
GeneratorArch = Literal["resnet", "unet"]
Upsample = Literal["transpose", "resize"]
Protocol = Literal["default", "synthrad2023", "synthrad2025"]
Baseline = Literal["copy", "mean"]

C = TypeVar("C")


@dataclass(frozen=True)
class GeneratorConfig:
    """Image-to-image generator.

    Args:
        arch: ``"resnet"`` (CycleGAN's ResNet generator) or ``"unet"`` (pix2pix's U-Net).
        features: filters of the first layer.
        n_blocks: residual blocks (ResNet; 9 at 256 px in the paper).
        num_downs: downsamplings (U-Net; 8 at 256 px); inputs are padded to multiples of ``2**num_downs``.
        norm: normalisation layer.
        dropout: dropout (ResNet blocks; U-Net inner blocks; pix2pix's noise source at 0.5).
        upsample: ``"transpose"`` convolutions or ``"resize"`` + convolution (ResNet; no checkerboard artefacts).
    """

    arch: GeneratorArch = "resnet"
    features: int = 64
    n_blocks: int = 9
    num_downs: int = 8
    norm: Norm = "instance"
    dropout: float = 0.0
    upsample: Upsample = "transpose"


@dataclass(frozen=True)
class DiscriminatorConfig:
    """PatchGAN discriminator (one or several image scales).

    Args:
        features: filters of the first layer.
        layers: strided layers (3 gives the 70x70 receptive field).
        norm: normalisation layer.
        scales: image scales (1 = PatchGAN; pix2pixHD uses 2-3).
        spectral_norm: spectral normalisation on every convolution.
    """

    features: int = 64
    layers: int = 3
    norm: Norm = "instance"
    scales: int = 1
    spectral_norm: bool = False


@dataclass(frozen=True)
class OptimConfig:
    """Adam with a constant-then-linear-decay schedule (both translation papers) and a generator EMA.

    Args:
        lr: learning rate (2e-4 in both papers).
        betas: Adam betas ((0.5, 0.999) in both papers).
        epochs_constant: epochs at the initial learning rate.
        epochs_decay: epochs of linear decay to zero after that.
        ema_decay: exponential moving average of the generator used for evaluation and export (0 disables).
    """

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    epochs_constant: int = 100
    epochs_decay: int = 100
    ema_decay: float = 0.0


@dataclass(frozen=True)
class VolumeEvalConfig:
    """Whole-volume inference and evaluation of a translation model.

    Args:
        protocol: ``"default"`` (Gaussian SSIM, sigma 1.5), ``"synthrad2023"`` or ``"synthrad2025"`` (CT targets).
        window: evaluation window (low, high) in physical units, the metrics' data range; None uses the modality
            default (CT [-1024, 3000] HU, PET [0, 20] SUV, MR: each patient's own normalisation window).
        baseline: trivial reference scored beside the model: ``"copy"`` (input copied through the windows) or
            ``"mean"`` (mean training target value inside the body, e.g. the mean SUV image for PET).
        inference_batch: slices per forward pass when translating a volume (2D/2.5D).
        roi_size: 3D sliding-window size (usually the training patch size); required in 3D, ignored otherwise.
        fid_weights: enables 2.5D FID and KID (axial/coronal/sagittal slices of the windowed output vs target, one
            feature pass for both) at validation and test: the pytorch-fid Inception weights file (or its folder, or
            ``"hub"`` for the torch hub cache), or ``"random"`` for a seeded random Inception (smoke tests only:
            such scores compare with nothing).
        fid_max_slices: evenly spaced slices per axis and volume fed to the FID extractor.
    """

    protocol: Protocol = "default"
    window: tuple[float, float] | None = None
    baseline: Baseline = "copy"
    inference_batch: int = 16
    roi_size: tuple[int, int, int] | None = None
    fid_weights: str | None = None
    fid_max_slices: int = 32


# -- StyleGAN2 -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StyleNetConfig:
    """Sizes of the StyleGAN2 generator and discriminator (the resolution and the classes come from the data).

    Args:
        z_dim: latent width (512 in the paper).
        w_dim: width of w (512).
        mapping_layers: FC layers of the mapping network (8; 2 in StyleGAN2-ADA's small-data configs).
        channel_base: capacity; channels at resolution r are ``min(channel_base // r, channel_max)`` (16384 for the
            paper's 256 px configuration, 32768 for config F at 1024 px).
        channel_max: maximum channels per layer (512).
        mbstd_group: minibatch-stddev group of the discriminator (4; must divide the chunk: the largest divisor of the
            chunk size that is at most this is used).
        fused_modconv: grouped-convolution modulated convs (True) or scale-convolve-scale (False, faster on CPU).
    """

    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 16384
    channel_max: int = 512
    mbstd_group: int = 4
    fused_modconv: bool = False


@dataclass(frozen=True)
class StyleOptimConfig:
    """Adam of StyleGAN2 (both networks; lazy regularisation rescales lr and betas by interval / (interval + 1)).

    Args:
        lr: learning rate (0.0025 at 256 px; 0.002 at 1024 px).
        betas: Adam betas ((0, 0.99)).
        eps: Adam epsilon (1e-8).
    """

    lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8


@dataclass(frozen=True)
class StyleRegConfig:
    """Regularisation of StyleGAN2 (Karras et al. 2020): lazy R1 and path length, style mixing.

    Args:
        r1_gamma: R1 weight gamma (1 at 256 px in the paper; 10 at 1024 px); 0 disables.
        r1_interval: R1 every this many iterations (16), scaled by the interval.
        pl_weight: path-length weight (2); 0 disables.
        pl_interval: path length every this many iterations (4), scaled by the interval.
        pl_batch_shrink: path length on ``batch // pl_batch_shrink`` samples (2).
        pl_decay: decay of the running mean path length (0.01).
        style_mixing: probability of mixing two latents at a random layer (0.9).
    """

    r1_gamma: float = 1.0
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9


@dataclass(frozen=True)
class StyleAugmentConfig:
    """Discriminator augmentation: ADA (Karras et al. 2020), DiffAugment (Zhao et al. 2020) or none.

    Args:
        kind: ``"ada"`` (adaptive probability), ``"diffaugment"`` (color, translation, cutout) or ``"none"``.
        target: ADA's target for r_t = E[sign(D(real))] (0.6).
        interval: iterations between adjustments of p (4).
        speed_kimg: thousands of real images for p to move by 1 (500).
        initial_p: starting probability (0).
    """

    kind: Literal["ada", "diffaugment", "none"] = "ada"
    target: float = 0.6
    interval: int = 4
    speed_kimg: float = 500.0
    initial_p: float = 0.0


@dataclass(frozen=True)
class TileEvalConfig:
    """What a StyleGAN2 validation produces: per-class sample grids and the per-class diversity figure.

    Args:
        grid_seeds: generated tiles per class in the sample grid (seeds 0..n-1, the same every validation).
        truncation: psi of the sample grids.
        diversity_tiles: generated and real tiles per class for the diversity figure (mean pairwise LPIPS).
        diversity_warning: warn when a class's generated diversity falls below this fraction of its real diversity
            (the conditional mode collapse that users of the reference report).
        lpips_pretrained: LPIPS with its pretrained AlexNet (a local file or the torch hub cache); False uses a
            seeded random network (smoke runs only: such figures compare with nothing).
        swd_tiles: the first ``swd_tiles`` tiles of the validation split (whichever ranks hold them) for the
            per-class sliced Wasserstein distance, scored against as many generated tiles of the same classes (seeded
            by position); two hashed halves of them against each other give the floor (``val/swd_floor``); 0 turns
            it off.
        swd_patches: patches per tile and pyramid level of the SWD.
        swd_projections: random directions per level of the SWD.
        prdc_extractor: feature network for per-class precision/recall/density/coverage of the same tiles
            (``fid-inception``, ``timm:<model>``, ``torchvision:<model>``); None: not computed.
        prdc_weights: its local weights file (``random``: seeded random network, smoke runs only).
    """

    grid_seeds: int = 8
    truncation: float = 1.0
    diversity_tiles: int = 16
    diversity_warning: float = 0.5
    lpips_pretrained: bool = True
    swd_tiles: int = 2048
    swd_patches: int = 64
    swd_projections: int = 256
    prdc_extractor: str | None = None
    prdc_weights: str | None = None


def as_config(cls: type[C], value: C | dict[str, Any] | None, default: C | None = None) -> C:
    """``value`` as an instance of the group ``cls``: an instance is returned as it is; a dict (as stored in a
    checkpoint's hyperparameters, or given in Python) overrides the fields it names of ``default``; None gives
    ``default``.

    Args:
        cls: the dataclass group.
        value: an instance, a dict of (some of) its fields, or None.
        default: the family's default instance (e.g. pix2pix's U-Net generator); ``cls()`` when None.

    Raises:
        TypeError: a dict with unknown keys (the message names them and the valid ones).
    """
    base = default if default is not None else cls()
    if value is None:
        return base
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(value) - names)
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown field(s) {unknown}; valid fields are {sorted(names)}")
        return dataclasses.replace(base, **{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise TypeError(f"{cls.__name__}: expected a {cls.__name__} or a dict, got {type(value).__name__}")


def config_dict(value: Any) -> dict[str, Any]:
    """A group as a plain dict of builtins (what goes into hyperparameters and checkpoints).

    Args:
        value: a dataclass group instance.
    """
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(value).items()}


__all__ = [
    "Baseline",
    "DiscriminatorConfig",
    "GeneratorArch",
    "GeneratorConfig",
    "Norm",
    "OptimConfig",
    "StyleAugmentConfig",
    "StyleNetConfig",
    "StyleOptimConfig",
    "StyleRegConfig",
    "TileEvalConfig",
    "Protocol",
    "Upsample",
    "VolumeEvalConfig",
    "as_config",
    "config_dict",
]
