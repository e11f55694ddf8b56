"""The tile grid of a slide at one scale and the reading of its tiles (:class:`TileSpec`, :func:`tile_grid`).

Tiles do not overlap, lie inside the pyramid level they are read from, and are kept when the tissue mask
(:mod:`data.slides.tissue`) covers at least ``min_tissue`` of them. The level and read size come from
:func:`data.slides.slide.plan_read` (scale from MPP, one resize filter).

Pixels go to the network range by ``v * float32(1 / 127.5) - 1`` (0 -> -1, 255 -> 1 exactly), either in the
dataset (:func:`image_to_tensor`) or, to move 4x fewer bytes between processes, on the device from uint8
(:func:`uint8_to_unit`, the same float32 operations, so the same values).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import torch
from PIL import Image

from data.errors import SlideError
from data.slides.slide import PIL_RESIZE_FILTER, as_slide, opaque, plan_read, slide_info
from data.slides.tissue import TissueMask, tissue_mask

__all__ = ["TileSpec", "image_to_tensor", "image_to_uint8", "read_tile", "read_tile_image", "tile_grid",
           "uint8_to_unit"]

#: float32(1 / 127.5): the scale of the uint8 -> [-1, 1] map.
_UNIT_SCALE = np.float32(1.0 / 127.5)


@dataclass(frozen=True)
class TileSpec:
    """Where and how one tile is read.

    Args:
        slide: slide path.
        x: left edge in level-0 pixels.
        y: top edge in level-0 pixels.
        level: pyramid level read.
        downsample: that level's downsample.
        read_size: side of the square read at that level (level pixels).
        tile_size: side of the tile delivered.
        mpp: effective microns per pixel of the delivered tile.
        target_mpp: microns per pixel requested.
        resize_filter: ``"none"`` or ``RESIZE_FILTER``.
        tissue: tissue fraction of the tile.
    """

    slide: str
    x: int
    y: int
    level: int
    downsample: float
    read_size: int
    tile_size: int
    mpp: float
    target_mpp: float
    resize_filter: str
    tissue: float

    @property
    def size0(self) -> float:
        """Side of the tile in level-0 pixels."""
        return self.read_size * self.downsample


def tile_grid(
    slide: openslide.OpenSlide | str | Path,
    *,
    tile_size: int,
    mpp: float,
    min_tissue: float = 0.5,
    mask: TissueMask | None = None,
    mpp_override: float | None = None,
) -> list[TileSpec]:
    """Non-overlapping tiles covering the slide's tissue at ``mpp`` microns per pixel.

    Args:
        slide: an open slide or a path.
        tile_size: tile side in pixels.
        mpp: requested microns per pixel.
        min_tissue: smallest tissue fraction of a kept tile, in [0, 1].
        mask: precomputed tissue mask (default: ``tissue_mask(slide)``).
        mpp_override: microns per pixel when the slide lacks (or misstates) MPP metadata.

    Raises:
        SlideError: naming the slide when it lacks MPP, when ``mpp`` is finer than the scan, or when no
            tile has enough tissue.
    """
    if not 0.0 <= min_tissue <= 1.0:
        raise ValueError(f"min_tissue must be in [0, 1], got {min_tissue}")
    s, owned = as_slide(slide)
    try:
        info = slide_info(s, mpp_override=mpp_override)
        plan = plan_read(info, tile_size=tile_size, mpp=mpp)
        if mask is None:
            mask = tissue_mask(s)
    finally:
        if owned:
            s.close()
    name = str(info.path)
    if not mask.mask.any():
        raise SlideError(
            info.path,
            f"no tissue found (tissue mask empty: method={mask.method}, threshold={mask.threshold:.3g}); "
            "the slide looks blank",
        )
    w0, h0 = info.level_dimensions[0]
    lw, lh = info.level_dimensions[plan.level]
    step = plan.read_size * plan.downsample
    xs = np.round(np.arange(int(w0 // step)) * step).astype(np.int64)
    ys = np.round(np.arange(int(h0 // step)) * step).astype(np.int64)
    # Keep reads inside the level so no transparent (out-of-slide) pixels appear.
    xs = xs[np.floor(xs / plan.downsample) + plan.read_size <= lw]
    ys = ys[np.floor(ys / plan.downsample) + plan.read_size <= lh]
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    cov = mask.coverage(gx, gy, step) if gx.size else np.zeros(0)
    keep = cov >= min_tissue if min_tissue > 0 else np.ones_like(cov, dtype=bool)
    if not keep.any():
        raise SlideError(
            info.path,
            f"no {tile_size}-px tile at {mpp:g} um/px has at least {min_tissue:g} tissue (slide tissue fraction "
            f"{mask.fraction:.3f}); lower min_tissue or the mpp",
        )
    return [
        TileSpec(
            slide=name,
            x=int(x),
            y=int(y),
            level=plan.level,
            downsample=plan.downsample,
            read_size=plan.read_size,
            tile_size=tile_size,
            mpp=plan.mpp,
            target_mpp=plan.target_mpp,
            resize_filter=plan.resize_filter,
            tissue=float(c),
        )
        for x, y, c in zip(gx[keep], gy[keep], cov[keep])
    ]


def read_tile_image(slide: openslide.OpenSlide, spec: TileSpec) -> Image.Image:
    """Read one tile as a PIL image (RGBA fully opaque, or RGB when resized), ``tile_size`` px square.

    Args:
        slide: the open slide named by ``spec.slide``.
        spec: the tile.

    Raises:
        SlideError: naming the slide and location when OpenSlide fails to decode the region.
    """
    try:
        img = slide.read_region((spec.x, spec.y), spec.level, (spec.read_size, spec.read_size))
    except openslide.OpenSlideError as e:
        raise SlideError(
            spec.slide, f"cannot read tile at level-0 ({spec.x}, {spec.y}), level {spec.level}: {e}") from e
    img = opaque(img)
    if spec.read_size != spec.tile_size:
        img = img.convert("RGB").resize((spec.tile_size, spec.tile_size), PIL_RESIZE_FILTER)
    return img


def read_tile(slide: openslide.OpenSlide, spec: TileSpec) -> np.ndarray:
    """Read one tile as an (tile_size, tile_size, 3) uint8 RGB array.

    Args:
        slide: the open slide named by ``spec.slide``.
        spec: the tile.
    """
    return np.asarray(read_tile_image(slide, spec).convert("RGB"))


def image_to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB or opaque RGBA image (PIL or (H, W, C) uint8 array) -> (3, H, W) float32 in [-1, 1].

    The mapping is ``v * float32(1 / 127.5) - 1``, so 0 -> -1 and 255 -> 1 exactly.

    Args:
        img: image with 3 or 4 channels (a 4th, alpha, channel is dropped).
    """
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {arr.shape} {arr.dtype}")
    # numpy, not torch: single-threaded, so a main process with many torch threads is not slowed down
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1)[:3]).astype(np.float32)
    chw *= _UNIT_SCALE
    chw -= np.float32(1.0)
    return torch.from_numpy(chw)


def image_to_uint8(img: Image.Image | np.ndarray) -> torch.Tensor:
    """RGB or opaque RGBA image (PIL or (H, W, C) uint8 array) -> (3, H, W) uint8 tensor (alpha dropped).

    Args:
        img: image with 3 or 4 channels.
    """
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3|4) uint8 image, got {arr.shape} {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)[:3]))


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 tiles (any shape, e.g. (B, 3, H, W), on any device) -> float32 in [-1, 1], as :func:`image_to_tensor`.

    Args:
        images: uint8 tensor.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 tiles, got {images.dtype}")
    out = images.to(torch.float32)
    out.mul_(torch.tensor(_UNIT_SCALE.item(), dtype=torch.float32, device=out.device))
    out.sub_(1.0)
    return out
