"""Multi-scale sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, Progressive GAN).

The score needs no pretrained weights, so it is what a machine without Inception weights reports. Steps, as in
the paper's ``metrics/sliced_wasserstein.py``:

1. Images become uint8 (float images in [-1, 1] are quantised as a PNG of them would be) and then float32 in
   [0, 255]; a Laplacian pyramid is built with the 5x5 binomial filter of ``cv2.pyrDown``/``pyrUp`` (mirror
   borders), from the full resolution down to the last level of at least ``min_resolution`` (16) pixels.
2. From every image and level, ``patches_per_image`` (128) random 7x7 neighbourhoods are cut (all channels):
   one descriptor of ``C * 49`` values each, in (channel, y, x) order.
3. Descriptors of a level are normalised per channel (mean 0, std 1 over all descriptors and positions).
   ``normalisation="karras"`` (the paper, the default) normalises each set with its own statistics, so the score
   is blind to a global per-channel brightness/contrast change; ``"real"`` normalises both sets with the real
   set's statistics, so a colour or stain shift counts too.
4. Per level, the sliced Wasserstein distance: the mean over ``projections`` (512 = the paper's 4 x 128) seeded
   random unit directions of the 1-D Wasserstein-1 distance between the projected sets (sorted and compared; sets
   of different sizes through their quantile functions). Reported x 1e3 as in the paper, per level and averaged.

Randomness comes from ``seed`` only: patch positions are drawn per image from ``seed`` and a hash of the image's
bytes (so neither batch size, order nor DDP rank changes a score), directions per level from ``seed``. Every
result carries its settings; scores of different settings are not comparable. A score means little alone: report it
beside the score of held-out real images against the same reals (the floor). :class:`SlicedWassersteinDistance` keeps
the descriptors as ``cat`` states (DDP-gathered; per image ``levels x patches x C*49`` float32 values, about 300 kB
for 128 px RGB) and scores overall and per class.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from gan.metrics.features.protocol import quantize_uint8
from gan.metrics.labels import batch_labels, class_settings
from gan.metrics.ragged import agree_on, gather_ragged

__all__ = [
    "DEFAULT_MAX_DESCRIPTORS",
    "SWDResult",
    "SlicedWassersteinDistance",
    "laplacian_pyramid",
    "patch_descriptors",
    "pyramid_resolutions",
    "random_projections",
    "sliced_wasserstein",
    "sliced_wasserstein_distance",
    "wasserstein_1d",
]

Normalisation = Literal["karras", "real"]
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
_GAUSS = (torch.outer(_BINOMIAL, _BINOMIAL) / 256.0).to(torch.float32)  # cv2.pyrDown's kernel
#: The scale of reported values (the paper reports SWD x 10^3).
SCALE = 1e3
#: Most descriptors per set and pyramid level by default (1024 images x 128 patches); beyond, a seeded subsample.
DEFAULT_MAX_DESCRIPTORS = 2**17


def pyramid_resolutions(size: int, min_resolution: int = 16) -> list[int]:
    """Level sizes of the pyramid of a ``size`` image: halved (rounded up) while at least ``min_resolution``.

    Args:
        size: image side (the smaller side of a non-square image).
        min_resolution: smallest level kept (16 in the paper).
    """
    if size < min_resolution:
        raise ValueError(f"sliced Wasserstein: images of {size} px are smaller than min_resolution={min_resolution}")
    out = [int(size)]
    while math.ceil(out[-1] / 2) >= min_resolution:
        out.append(math.ceil(out[-1] / 2))
    return out


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    c = x.shape[1]
    k = kernel.to(x.dtype).to(x.device).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def laplacian_pyramid(images: Tensor, levels: int) -> list[Tensor]:
    """The Laplacian pyramid of float images: band-pass levels, then the last low-pass level.

    ``pyr_down`` blurs with the 5x5 binomial filter (mirror borders, as ``scipy.ndimage.convolve(mode="mirror")``)
    and keeps every second pixel; ``pyr_up`` puts pixels on even positions of a zero image and blurs with 4x the
    filter. Level ``i`` is ``G_i - pyr_up(G_{i+1})``, the last one ``G_{levels-1}``.

    Args:
        images: (N, C, H, W) float tensor.
        levels: number of levels (>= 1).
    """
    gauss = [images.float()]
    for _ in range(1, levels):
        gauss.append(_blur(gauss[-1], _GAUSS)[:, :, ::2, ::2])
    out = []
    for fine, coarse in zip(gauss[:-1], gauss[1:]):
        up = torch.zeros(coarse.shape[0], coarse.shape[1], 2 * coarse.shape[2], 2 * coarse.shape[3],
                         dtype=coarse.dtype, device=coarse.device)
        up[:, :, ::2, ::2] = coarse
        up = _blur(up, _GAUSS * 4.0)[:, :, :fine.shape[2], :fine.shape[3]]
        out.append(fine - up)
    out.append(gauss[-1])
    return out


def _image_rng(seed: int, image: Tensor) -> np.random.Generator:
    """The generator of one image's patch positions: from ``seed`` and the image's bytes (a content hash), so an image
    gets the same patches whatever its batch, its position in the stream or its DDP rank.

    Args:
        seed: the metric's seed.
        image: (C, H, W) uint8 image.
    """
    digest = hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()
    return np.random.default_rng([int(seed), *np.frombuffer(digest, dtype=np.uint32).tolist()])


def patch_descriptors(level: Tensor, positions: Tensor, patch_size: int = 7) -> Tensor:
    """The ``patch_size`` x ``patch_size`` neighbourhoods of a pyramid level at given centres, flattened.

    Args:
        level: (N, C, S, S') float tensor.
        positions: (N, P, 2) integer centres (y, x), each at least ``patch_size // 2`` from the border.
        patch_size: odd neighbourhood side (7 in the paper).

    Returns:
        (N, P, C * patch_size**2) descriptors in (channel, y, x) order.
    """
    h = patch_size // 2
    offsets = torch.arange(-h, h + 1, device=level.device)
    n, p = positions.shape[:2]
    iy = (positions[..., 0:1] + offsets)[:, :, :, None]  # (N, P, 7, 1)
    ix = (positions[..., 1:2] + offsets)[:, :, None, :]  # (N, P, 1, 7)
    b = torch.arange(n, device=level.device)[:, None, None, None]
    patches = level[b, :, iy, ix]  # advanced indices first: (N, P, 7, 7, C)
    return patches.permute(0, 1, 4, 2, 3).reshape(n, p, -1)


def _descriptors(images: Tensor, *, resolutions: Sequence[int], patches_per_image: int, patch_size: int,
                 seed: int) -> Tensor:
    """(N, L, P, C * patch_size**2) float32 descriptors of a batch; patch positions seeded per image (content)."""
    x8 = quantize_uint8(images)
    pyramid = laplacian_pyramid(x8.float(), len(resolutions))
    h = patch_size // 2
    u = torch.from_numpy(np.stack([_image_rng(seed, img).random((len(resolutions), patches_per_image, 2))
                                   for img in x8]))  # (N, L, P, 2) uniform in [0, 1)
    out = []
    for lvl, level in enumerate(pyramid):
        span = torch.tensor([level.shape[2] - 2 * h, level.shape[3] - 2 * h], dtype=torch.float64)
        if bool((span < 1).any()):
            raise ValueError(f"sliced Wasserstein: pyramid level {tuple(level.shape[2:])} is smaller than the "
                             f"{patch_size}x{patch_size} patch; raise min_resolution")
        pos = (u[:, lvl] * span).floor().long().clamp(max=span.long() - 1) + h  # uniform in [h, S - h - 1]
        out.append(patch_descriptors(level, pos.to(level.device), patch_size))
    return torch.stack(out, dim=1)


def _channel_stats(desc: Tensor, channels: int) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (ddof 0) of (M, C * k) descriptors over descriptors and positions."""
    per = desc.reshape(desc.shape[0], channels, -1).double()
    mean = per.mean(dim=(0, 2))
    std = per.std(dim=(0, 2), unbiased=False).clamp(min=1e-12)
    return mean, std


def _normalise(desc: Tensor, channels: int, mean: Tensor, std: Tensor) -> Tensor:
    per = desc.reshape(desc.shape[0], channels, -1).double()
    return ((per - mean[None, :, None]) / std[None, :, None]).reshape(desc.shape[0], -1)


def random_projections(dim: int, count: int, seed: int) -> Tensor:
    """``count`` seeded random unit directions in ``dim`` dimensions, as a (dim, count) float64 matrix.

    Args:
        dim: descriptor dimension.
        count: number of directions.
        seed: seed of the normal draws.
    """
    d = torch.randn(dim, count, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    return d / d.norm(dim=0, keepdim=True)


def wasserstein_1d(a: Tensor, b: Tensor) -> Tensor:
    """Wasserstein-1 distance between the columns of two sample matrices (uniform weights), per column.

    Equal sizes: the mean absolute difference of the sorted samples. Different sizes: the integral of the absolute
    difference of the two quantile functions (exact for the empirical distributions).

    Args:
        a: (n, P) samples.
        b: (m, P) samples.
    """
    # numpy sorts contiguous float64 rows about twice as fast as torch sorts columns
    sa = torch.from_numpy(np.sort(a.T.double().cpu().numpy(), axis=1)).T
    sb = torch.from_numpy(np.sort(b.T.double().cpu().numpy(), axis=1)).T
    n, m = sa.shape[0], sb.shape[0]
    if n == m:
        return (sa - sb).abs().mean(dim=0)
    levels = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                        torch.arange(1, m + 1, dtype=torch.float64) / m]).sort().values  # right ends of pieces
    widths = torch.diff(levels, prepend=torch.zeros(1, dtype=torch.float64))
    mid = levels - widths / 2
    ia = (mid * n).floor().long().clamp(max=n - 1)
    ib = (mid * m).floor().long().clamp(max=m - 1)
    return ((sa[ia] - sb[ib]).abs() * widths[:, None]).sum(dim=0)


def sliced_wasserstein(a: Tensor, b: Tensor, projections: Tensor, *, block: int = 128) -> float:
    """The sliced Wasserstein-1 distance of two descriptor sets along given directions (the paper's core).

    Equals ``ot.sliced_wasserstein_distance(a, b, projections=projections, p=1)`` (POT): the mean over directions
    of the 1-D Wasserstein-1 distance of the projections.

    Args:
        a: (n, D) descriptors.
        b: (m, D) descriptors.
        projections: (D, P) unit directions.
        block: directions projected at a time (memory ``(n + m) x block`` float64; the paper uses 4 x 128).
    """
    a, b = a.double().cpu(), b.double().cpu()
    proj = projections.to("cpu", torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, proj.shape[1], block):
        p = proj[:, start:start + block]
        total += wasserstein_1d(a @ p, b @ p).sum()
    return float(total / proj.shape[1])


@dataclass
class SWDResult:
    """Sliced Wasserstein distances (x 1e3) per pyramid level and their mean, overall and per class.

    Args:
        value: mean over levels, overall.
        per_level: level resolution (as a string, e.g. ``"64"``) -> distance, overall.
        per_class: class index -> ``{"value", "per_level"}``, or None for a class missing on a side.
        counts: images per set (and per class).
        settings: every setting that must be equal for two scores to compare.
    """

    value: float
    per_level: dict[str, float]
    per_class: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def scalars(self, prefix: str = "swd") -> dict[str, float]:
        """Flat ``{name: value}`` for a logger: ``<prefix>``, ``<prefix>/<resolution>`` and ``<prefix>/<class>``.

        Args:
            prefix: key of the overall value (e.g. ``"val/swd"``); classes are named by ``settings["class_names"]``
                or their index.
        """
        names = self.settings.get("class_names")
        out = {prefix: float(self.value)}
        out.update({f"{prefix}/{res}px": float(v) for res, v in self.per_level.items()})
        for c, entry in self.per_class.items():
            if entry is not None:
                out[f"{prefix}/{names[c] if names else c}"] = float(entry["value"])
        return out


def _settings(*, resolutions: Sequence[int], channels: int, patches_per_image: int, patch_size: int,
              projections: int, seed: int, normalisation: str, min_resolution: int,
              max_descriptors: int | None) -> dict[str, Any]:
    return {"score": "sliced-wasserstein (Karras et al. 2018)", "scale": SCALE, "resolutions": list(resolutions),
            "min_resolution": min_resolution, "channels": channels, "patch_size": patch_size,
            "patches_per_image": patches_per_image, "projections": projections, "seed": seed,
            "normalisation": normalisation, "max_descriptors": max_descriptors,
            "pyramid": "laplacian, 5x5 binomial, mirror borders",
            "input": "uint8 (float [-1, 1] quantised as PNG)", "wasserstein": "W1 per direction, mean"}


def _subsample(desc: Tensor, limit: int | None, seed: int) -> Tensor:
    """At most ``limit`` rows of ``desc``, drawn without replacement from ``seed`` (all rows when within it)."""
    if limit is None or desc.shape[0] <= limit:
        return desc
    keep = torch.randperm(desc.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:limit]
    return desc[keep.sort().values]


def _levels_swd(real: Tensor, fake: Tensor, *, resolutions: Sequence[int], channels: int, projections: int,
                seed: int, normalisation: str, max_descriptors: int | None = None) -> dict[str, float]:
    """Per-level SWD (x 1e3) of (N, L, P, D) and (M, L, P, D) descriptors (each set subsampled to
    ``max_descriptors`` per level after its channel statistics are taken)."""
    out = {}
    for lvl, res in enumerate(resolutions):
        a = real[:, lvl].reshape(-1, real.shape[-1])
        b = fake[:, lvl].reshape(-1, fake.shape[-1])
        mean_a, std_a = _channel_stats(a, channels)
        mean_b, std_b = (mean_a, std_a) if normalisation == "real" else _channel_stats(b, channels)
        a = _subsample(a, max_descriptors, seed * 1000 + lvl + 500)
        b = _subsample(b, max_descriptors, seed * 1000 + lvl + 700)
        proj = random_projections(a.shape[1], projections, seed * 1000 + lvl)
        out[str(res)] = SCALE * sliced_wasserstein(_normalise(a, channels, mean_a, std_a),
                                                   _normalise(b, channels, mean_b, std_b), proj)
    return out


def _check_images(images: Tensor, name: str) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be (N, 1 or 3, H, W) images, got {shape}")
    return images


def _check_settings(patch_size: int, patches_per_image: int, projections: int, normalisation: str) -> None:
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd and positive, got {patch_size}")
    if patches_per_image < 1 or projections < 1:
        raise ValueError(f"patches_per_image and projections must be >= 1, got {patches_per_image}, {projections}")
    if normalisation not in ("karras", "real"):
        raise ValueError(f"normalisation must be 'karras' or 'real', got {normalisation!r}")


def sliced_wasserstein_distance(real_images: Tensor, fake_images: Tensor, *, patches_per_image: int = 128,
                                patch_size: int = 7, projections: int = 512, min_resolution: int = 16,
                                normalisation: Normalisation = "karras", seed: int = 0,
                                max_descriptors: int | None = DEFAULT_MAX_DESCRIPTORS,
                                floor_images: Tensor | None = None) -> dict[str, Any]:
    """Multi-scale sliced Wasserstein distance (x 1e3) between two image sets (see the module docstring).

    Args:
        real_images: (N, C, H, W), C in (1, 3), uint8 in [0, 255] or float in [-1, 1].
        fake_images: (M, C, H, W), the same C, H and W.
        patches_per_image: random neighbourhoods per image and level (128 in the paper).
        patch_size: neighbourhood side (7).
        projections: random directions per level (512 = 4 x 128 in the paper).
        min_resolution: smallest pyramid level (16).
        normalisation: ``"karras"`` (each set by its own channel statistics, the paper) or ``"real"`` (both by the
            real set's).
        seed: seed of patch positions and directions.
        max_descriptors: most descriptors per set and level (a seeded subsample beyond it bounds time and memory
            of large sets; None: all).
        floor_images: held-out real images of the same size: scored against ``real_images`` the same way, the floor
            to read the score against (``"floor"`` in the result); None: no floor.

    Returns:
        ``{"swd": mean over levels, "per_level": {resolution: value}, "settings": {...}}``, plus
        ``"floor": {"swd", "per_level"}`` with ``floor_images``.
    """
    metric = SlicedWassersteinDistance(patches_per_image=patches_per_image, patch_size=patch_size,
                                       projections=projections, min_resolution=min_resolution,
                                       normalisation=normalisation, seed=seed, max_descriptors=max_descriptors,
                                       reset_real_features=False)
    metric.update(real_images, real=True)
    metric.update(fake_images, real=False)
    result = metric.compute()
    out: dict[str, Any] = {"swd": result.value, "per_level": result.per_level, "settings": result.settings}
    if floor_images is not None:
        metric.reset()
        metric.update(floor_images, real=False)
        floor = metric.compute()
        out["floor"] = {"swd": floor.value, "per_level": floor.per_level}
    return out


class SlicedWassersteinDistance(Metric):
    """Multi-scale sliced Wasserstein distance (x 1e3) of image sets, overall and per class.

    ``update(images, real, labels=None)`` adds a batch (all images of one size); ``compute()`` returns a
    :class:`SWDResult`. Descriptors are kept as ``cat`` states and normalised at ``compute()``; the pyramid levels
    are fixed by the first batch. With ``reset_real_features=False``, ``reset()`` keeps the reals, so held-out real
    images can be scored against the same reals (the floor to report beside the score).

    Args:
        patches_per_image: random neighbourhoods per image and level.
        patch_size: neighbourhood side (odd).
        projections: random directions per level.
        min_resolution: smallest pyramid level.
        normalisation: ``"karras"`` or ``"real"`` (see the module docstring).
        seed: seed of patch positions and directions.
        max_descriptors: most descriptors per set and level at ``compute()`` (seeded subsample; None: all). With a
            subsample, a DDP run and a single process differ (the gathered order differs), all ranks agree.
        num_classes: number of class labels for per-class scores; None: overall only.
        class_names: optional name per label (recorded).
        reset_real_features: whether ``reset()`` also clears the real descriptors.
        kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    real_descriptors: list[Tensor]
    fake_descriptors: list[Tensor]
    real_labels: list[Tensor]
    fake_labels: list[Tensor]

    def __init__(self, *, patches_per_image: int = 128, patch_size: int = 7, projections: int = 512,
                 min_resolution: int = 16, normalisation: Normalisation = "karras", seed: int = 0,
                 max_descriptors: int | None = DEFAULT_MAX_DESCRIPTORS, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, reset_real_features: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_ragged)  # a rank may have seen no image of a side
        super().__init__(**kwargs)
        _check_settings(int(patch_size), int(patches_per_image), int(projections), normalisation)
        if max_descriptors is not None and int(max_descriptors) < 1:
            raise ValueError(f"max_descriptors must be >= 1 or None, got {max_descriptors}")
        self.max_descriptors = None if max_descriptors is None else int(max_descriptors)
        self.patches_per_image, self.patch_size = int(patches_per_image), int(patch_size)
        self.projections, self.min_resolution = int(projections), int(min_resolution)
        self.normalisation, self.seed = str(normalisation), int(seed)
        self.num_classes, self.class_names = class_settings(num_classes, class_names)
        self.reset_real_features = bool(reset_real_features)
        self.image_shape: tuple[int, int, int] | None = None
        for name in ("real_descriptors", "fake_descriptors", "real_labels", "fake_labels"):
            self.add_state(name, [], dist_reduce_fx="cat")

    @property
    def resolutions(self) -> list[int]:
        """Pyramid level sizes (known after the first batch)."""
        if self.image_shape is None:
            raise ValueError("no image seen yet: the pyramid levels follow the first batch")
        return pyramid_resolutions(min(self.image_shape[1:]), self.min_resolution)

    def update(self, images: Tensor, real: bool, labels: Tensor | Sequence[int] | None = None) -> None:
        """Add a batch of real or generated images.

        Args:
            images: (N, 1 or 3, H, W) uint8 in [0, 255] or float in [-1, 1], the size of every other batch.
            real: True for real images.
            labels: (N,) class labels in [0, num_classes) (required when ``num_classes`` is set).
        """
        images = _check_images(images, "images")
        shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
        if self.image_shape is None:
            self.image_shape = shape
        elif shape != self.image_shape:
            raise ValueError(f"sliced Wasserstein compares images of one size and channel count: got {shape} after "
                             f"{self.image_shape} (resize the sets to one size first)")
        n = images.shape[0]
        lab = batch_labels(labels, n, self.num_classes)
        desc = _descriptors(images, resolutions=self.resolutions, patches_per_image=self.patches_per_image,
                            patch_size=self.patch_size, seed=self.seed)
        prefix = "real" if real else "fake"
        getattr(self, f"{prefix}_descriptors").append(desc.to(self.device))
        getattr(self, f"{prefix}_labels").append(lab.to(self.device))

    def _state(self, name: str) -> Tensor | None:
        value = getattr(self, name)
        if isinstance(value, Tensor):
            return value
        return dim_zero_cat(value) if value else None

    def settings(self) -> dict[str, Any]:
        """The settings recorded with every score (levels known after the first batch)."""
        return _settings(resolutions=self.resolutions, channels=self.image_shape[0],  # type: ignore[index]
                         patches_per_image=self.patches_per_image, patch_size=self.patch_size,
                         projections=self.projections, seed=self.seed, normalisation=self.normalisation,
                         min_resolution=self.min_resolution, max_descriptors=self.max_descriptors)

    def compute(self) -> SWDResult:
        """SWD per level and mean, overall and per class (a class missing on a side is None, warned)."""
        if self.image_shape is None:  # a DDP rank that saw no image takes the others' size (every rank computes)
            self.image_shape = next((s for s in agree_on(self.image_shape) if s is not None), None)
        elif dist.is_available() and dist.is_initialized():
            agree_on(self.image_shape)  # the matching collective of the ranks above
        real, fake = self._state("real_descriptors"), self._state("fake_descriptors")
        if real is None or fake is None:
            raise ValueError("sliced Wasserstein needs real and generated images: call update(..., real=True/False)")
        real, fake = real.cpu(), fake.cpu()
        kw = dict(resolutions=self.resolutions, channels=self.image_shape[0],  # type: ignore[index]
                  projections=self.projections, seed=self.seed, normalisation=self.normalisation,
                  max_descriptors=self.max_descriptors)
        per_level = _levels_swd(real, fake, **kw)
        counts: dict[str, Any] = {"real": int(real.shape[0]), "fake": int(fake.shape[0])}
        per_class: dict[int, dict[str, Any] | None] = {}
        if self.num_classes is not None:
            real_lab = self._state("real_labels").cpu()  # type: ignore[union-attr]
            fake_lab = self._state("fake_labels").cpu()  # type: ignore[union-attr]
            counts["real_per_class"] = torch.bincount(real_lab, minlength=self.num_classes).tolist()
            counts["fake_per_class"] = torch.bincount(fake_lab, minlength=self.num_classes).tolist()
            missing = []
            for c in range(self.num_classes):
                r, f = real[real_lab == c], fake[fake_lab == c]
                if r.shape[0] == 0 or f.shape[0] == 0:
                    per_class[c] = None
                    missing.append(f"class {c}" + (f" ({self.class_names[c]!r})" if self.class_names else ""))
                    continue
                levels = _levels_swd(r, f, **kw)
                per_class[c] = {"value": float(np.mean(list(levels.values()))), "per_level": levels}
            if missing:
                warnings.warn(f"sliced Wasserstein: no score for {', '.join(missing)} (no real or no generated "
                              "image)", UserWarning, stacklevel=2)
        settings = {**self.settings(), "class_names": self.class_names}
        return SWDResult(value=float(np.mean(list(per_level.values()))), per_level=per_level, per_class=per_class,
                         counts=counts, settings=settings)

    def reset(self) -> None:
        """Clear the states (the real ones only if ``reset_real_features``)."""
        if self.reset_real_features:
            super().reset()
            self.image_shape = None
            return
        kept = {k: list(getattr(self, k)) if isinstance(getattr(self, k), list) else [getattr(self, k)]
                for k in ("real_descriptors", "real_labels")}
        super().reset()
        for key, value in kept.items():
            setattr(self, key, value)
