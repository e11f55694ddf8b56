"""Whole-slide images as tiles: open a slide, find its tissue, lay a magnification-aware tile grid, serve tiles.

Scale always comes from microns per pixel (MPP), never from the nominal objective: ``magnification`` is
only a shorthand for ``mpp = 10 / magnification`` (40x := 0.25 um/px, 20x := 0.5, 10x := 1.0). A slide
without MPP metadata needs an explicit ``mpp_override``.

Reading. A tile of ``tile_size`` px at a target mpp is read from the coarsest pyramid level whose mpp is
at most the target (within ``MPP_TOLERANCE``). When that level's mpp matches the target (within the
tolerance) the tile is read as is, pixel for pixel; otherwise a square of ``read_size`` level pixels
covering the same field of view is read and resized to ``tile_size`` with ONE filter, ``RESIZE_FILTER``
(PIL Lanczos), recorded in every :class:`TileSpec` and item. Pixel values are never touched otherwise.

Labels. Class regions are rectangles in level-0 pixels from CSV manifests (columns ``slide, label, x, y,
width, height``; default: ``<stem>.regions.csv`` beside each slide). A tile takes a class when the
regions of that class cover at least ``min_region_overlap`` of it. A tile with at least
``min_region_overlap`` of its area outside every region is unlabelled and gets the class ``OTHER``
("other"): kept when ``class_names`` is None (then the classes are the sorted region labels followed by
"other") or when "other" is among ``class_names``, dropped otherwise. A class wins over "other" when both
apply; a tile that is neither (e.g. 30% tumour, 30% lymphocytes, 40% unannotated at 0.5) is ambiguous
and dropped.
"""
from __future__ import annotations

import copy
import csv
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import openslide
import torch
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from torch.utils.data import Dataset

from data.atomic import atomic_write_text
from data.errors import SlideError

#: Relative tolerance when matching a pyramid level's mpp to the requested mpp.
MPP_TOLERANCE = 0.02
#: The one resize filter used when a tile's field of view is not a whole pyramid level.
RESIZE_FILTER = "lanczos"
_PIL_FILTER = Image.Resampling.LANCZOS
#: A single-level image larger than this (px, either side) is refused as not pyramidal.
MAX_SINGLE_LEVEL = 4096
#: Class of tiles outside every annotated region.
OTHER = "other"
#: Columns of a region manifest, in order.
REGION_COLUMNS = ("slide", "label", "x", "y", "width", "height")
#: Lowest Otsu threshold accepted per tissue-mask method (glass is below it), so a blank slide has no tissue.
THRESHOLD_FLOOR = {"saturation": 0.05, "od": 0.04}
_OD_EPS = 1e-3
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def mpp_from_magnification(magnification: float) -> float:
    """Microns per pixel of a nominal magnification (40x -> 0.25, 20x -> 0.5, 10x -> 1.0).

    Args:
        magnification: nominal objective power, > 0.
    """
    if not (magnification > 0 and math.isfinite(magnification)):
        raise ValueError(f"magnification must be a positive number, got {magnification!r}")
    return 10.0 / float(magnification)


# ----------------------------------------------------------------------------------------------- opening


class SlideHandle(openslide.OpenSlide):
    """An ``openslide.OpenSlide`` that remembers the path it was opened from (for error messages).

    Args:
        path: slide file.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(str(path))
        self.path = Path(path)


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_MAGIC


def open_slide(path: str | Path) -> SlideHandle:
    """Open a pyramidal whole-slide image with OpenSlide, refusing what cannot be tiled sensibly.

    Args:
        path: slide file (Aperio .svs, pyramidal TIFF, or any other format OpenSlide reads).

    Raises:
        SlideError: naming the file when it is missing, not a slide OpenSlide can read, or not
            pyramidal (a plain single-level TIFF, or a single level larger than ``MAX_SINGLE_LEVEL``).
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(p, "slide file not found")
    if not p.is_file():
        raise SlideError(p, "is not a file (a slide must be a single file such as .svs or .tif)")
    fmt = openslide.OpenSlide.detect_format(str(p))
    if fmt is None:
        if _is_tiff(p):
            raise SlideError(
                p,
                "is a plain TIFF that is not pyramidal (not tiled, a single level); OpenSlide cannot read it as a "
                "slide. Convert it to a tiled pyramidal TIFF (e.g. `vips tiffsave in.tif out.tif --tile --pyramid "
                "--compression jpeg`)",
            )
        raise SlideError(p, "is not a whole-slide image OpenSlide can read (format not recognised)")
    try:
        slide = SlideHandle(p)
    except openslide.OpenSlideError as e:
        raise SlideError(p, f"OpenSlide cannot open this {fmt} slide: {e}") from e
    if slide.level_count == 1 and max(slide.level_dimensions[0]) > MAX_SINGLE_LEVEL:
        w, h = slide.level_dimensions[0]
        slide.close()
        raise SlideError(
            p,
            f"has a single level of {w}x{h} px: not pyramidal, so every tile at a lower magnification would be "
            f"resampled from full resolution. Write it as a pyramidal TIFF (e.g. `vips tiffsave --tile --pyramid`)",
        )
    return slide


def _as_slide(slide: openslide.OpenSlide | str | Path) -> tuple[openslide.OpenSlide, bool]:
    if isinstance(slide, openslide.OpenSlide):
        return slide, False
    return open_slide(slide), True


def _slide_path(slide: openslide.OpenSlide) -> Path | None:
    p = getattr(slide, "path", None)
    return Path(p) if p is not None else None


# ----------------------------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class SlideInfo:
    """Scale and pyramid of a slide.

    Args:
        path: slide file.
        vendor: OpenSlide's vendor name (``"aperio"``, ``"generic-tiff"``, ...), or None.
        mpp: microns per pixel at level 0 (square pixels).
        mpp_source: ``"metadata"`` (the slide's own MPP) or ``"override"`` (given by the caller).
        objective_power: nominal objective from the metadata, informational only (never used for scale).
        level_dimensions: (width, height) of each level.
        level_downsamples: downsample of each level relative to level 0, as OpenSlide reports it.
    """

    path: Path | None
    vendor: str | None
    mpp: float
    mpp_source: Literal["metadata", "override"]
    objective_power: float | None
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]

    @property
    def magnification(self) -> float:
        """Magnification equivalent to the level-0 mpp (10 / mpp), not the nominal objective."""
        return 10.0 / self.mpp

    def level_mpp(self, level: int) -> float:
        """Microns per pixel of a pyramid level.

        Args:
            level: pyramid level index.
        """
        return self.mpp * self.level_downsamples[level]


def _positive_float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f > 0 and math.isfinite(f) else None


def slide_info(slide: openslide.OpenSlide | str | Path, *, mpp_override: float | None = None) -> SlideInfo:
    """Read a slide's scale and pyramid; the scale comes from its MPP metadata or an explicit override.

    Args:
        slide: an open slide or a path.
        mpp_override: microns per pixel to use instead of (or in the absence of) the metadata.

    Raises:
        SlideError: naming the slide when it has no usable MPP and no override is given, or when its pixels
            are not square.
    """
    s, owned = _as_slide(slide)
    try:
        path = _slide_path(s)
        props = s.properties
        if mpp_override is not None:
            mpp = _positive_float(mpp_override)
            if mpp is None:
                raise ValueError(f"mpp_override must be a positive number, got {mpp_override!r}")
            source: Literal["metadata", "override"] = "override"
        else:
            mx = _positive_float(props.get(openslide.PROPERTY_NAME_MPP_X))
            my = _positive_float(props.get(openslide.PROPERTY_NAME_MPP_Y))
            if mx is None or my is None:
                raise SlideError(
                    path,
                    "has no microns-per-pixel metadata (openslide.mpp-x/mpp-y), so its scale is unknown; the nominal "
                    "objective is not used for scale. Pass mpp_override=<um per px> if you know it",
                )
            if abs(mx - my) > MPP_TOLERANCE * max(mx, my):
                raise SlideError(path, f"has non-square pixels (mpp-x {mx:g}, mpp-y {my:g}); not supported")
            mpp, source = (mx + my) / 2.0, "metadata"
        return SlideInfo(
            path=path,
            vendor=props.get(openslide.PROPERTY_NAME_VENDOR),
            mpp=mpp,
            mpp_source=source,
            objective_power=_positive_float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
            level_dimensions=tuple(tuple(int(v) for v in d) for d in s.level_dimensions),  # type: ignore[misc]
            level_downsamples=tuple(float(d) for d in s.level_downsamples),
        )
    finally:
        if owned:
            s.close()


@dataclass(frozen=True)
class ReadPlan:
    """How to read tiles of one size and scale from one slide.

    Args:
        level: pyramid level read.
        downsample: that level's downsample relative to level 0.
        read_size: side of the square read at that level, in level pixels.
        tile_size: side of the tile delivered.
        mpp: effective microns per pixel of the delivered tile.
        target_mpp: microns per pixel requested.
        resize_filter: ``"none"`` when read_size == tile_size, else ``RESIZE_FILTER``.
    """

    level: int
    downsample: float
    read_size: int
    tile_size: int
    mpp: float
    target_mpp: float
    resize_filter: str


def plan_read(info: SlideInfo, *, tile_size: int, mpp: float) -> ReadPlan:
    """Choose the pyramid level and read size for tiles of ``tile_size`` px at ``mpp`` microns per pixel.

    Args:
        info: the slide's scale and pyramid.
        tile_size: tile side in pixels.
        mpp: requested microns per pixel.

    Raises:
        SlideError: when ``mpp`` is finer than the scan's (more than ``MPP_TOLERANCE``): tiles would be upsampled.
    """
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    if mpp < info.mpp * (1.0 - MPP_TOLERANCE):
        raise SlideError(
            info.path,
            f"requested {mpp:.4g} um/px ({10 / mpp:.3g}x) is finer than the scan's {info.mpp:.4g} um/px "
            f"({info.magnification:.3g}x); tiles would be upsampled. Request mpp >= {info.mpp:.4g}",
        )
    usable = [lv for lv in range(len(info.level_downsamples)) if info.level_mpp(lv) <= mpp * (1.0 + MPP_TOLERANCE)]
    level = max(usable, key=lambda lv: info.level_downsamples[lv])
    level_mpp = info.level_mpp(level)
    exact = tile_size * mpp / level_mpp
    if abs(exact - tile_size) <= MPP_TOLERANCE * tile_size:
        read_size, filt = tile_size, "none"
    else:
        read_size, filt = max(1, int(round(exact))), RESIZE_FILTER
    return ReadPlan(
        level=level,
        downsample=info.level_downsamples[level],
        read_size=read_size,
        tile_size=tile_size,
        mpp=read_size * level_mpp / tile_size,
        target_mpp=float(mpp),
        resize_filter=filt,
    )


# ----------------------------------------------------------------------------------------------- tissue


@dataclass(frozen=True)
class TissueMask:
    """Boolean tissue mask of a slide at a reduced resolution.

    Args:
        mask: (height, width) bool array, True on tissue.
        downsample: level-0 pixels per mask pixel (mean of x and y).
        level0_size: (width, height) of level 0.
        method: ``"saturation"`` or ``"od"``.
        threshold: threshold applied to the method's feature.
    """

    mask: np.ndarray
    downsample: float
    level0_size: tuple[int, int]
    method: str
    threshold: float

    @property
    def fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def coverage(self, x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
        """Tissue fraction of square level-0 boxes ``[x, x+size) x [y, y+size)``.

        Args:
            x: left edges in level-0 pixels.
            y: top edges in level-0 pixels.
            size: box side in level-0 pixels.
        """
        h, w = self.mask.shape
        sx, sy = self.level0_size[0] / w, self.level0_size[1] / h
        integral = np.zeros((h + 1, w + 1), dtype=np.int64)
        integral[1:, 1:] = self.mask.astype(np.int64).cumsum(0).cumsum(1)
        x0 = np.clip(np.round(np.asarray(x, dtype=np.float64) / sx).astype(np.int64), 0, w)
        y0 = np.clip(np.round(np.asarray(y, dtype=np.float64) / sy).astype(np.int64), 0, h)
        x1 = np.clip(np.maximum(np.round((np.asarray(x) + size) / sx).astype(np.int64), x0 + 1), 0, w)
        y1 = np.clip(np.maximum(np.round((np.asarray(y) + size) / sy).astype(np.int64), y0 + 1), 0, h)
        area = np.maximum((x1 - x0) * (y1 - y0), 1)
        inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        return inside / area


def otsu_threshold(values: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold of a set of values (histogram of ``nbins`` bins between their min and max).

    Args:
        values: any array of finite values.
        nbins: histogram bins.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(v, bins=nbins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centers) / np.maximum(w1, 1e-300)
    m2 = (np.cumsum((hist * centers)[::-1]) / np.maximum(np.cumsum(hist[::-1]), 1e-300))[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centers[int(np.argmax(between))])


def _thumbnail(slide: openslide.OpenSlide, thumbnail_max: int) -> np.ndarray:
    """RGB array of the finest pyramid level no larger than ``thumbnail_max`` (else OpenSlide's thumbnail)."""
    fits = [lv for lv, (w, h) in enumerate(slide.level_dimensions) if max(w, h) <= thumbnail_max]
    if fits:
        lv = min(fits, key=lambda i: slide.level_downsamples[i])
        img = _opaque(slide.read_region((0, 0), lv, slide.level_dimensions[lv]))
    else:
        img = slide.get_thumbnail((thumbnail_max, thumbnail_max))
    return np.asarray(img.convert("RGB"))


def tissue_feature(rgb: np.ndarray, method: Literal["saturation", "od"]) -> np.ndarray:
    """Per-pixel tissue feature: HSV saturation, or mean optical density ``-log10((I + 1) / 256)``.

    Args:
        rgb: (H, W, 3) uint8 image.
        method: ``"saturation"`` or ``"od"``.
    """
    r, g, b = (np.ascontiguousarray(rgb[..., c]) for c in range(3))
    if method == "saturation":
        mx = np.maximum(np.maximum(r, g), b)
        mn = np.minimum(np.minimum(r, g), b)
        mxf = mx.astype(np.float32)
        return np.divide(mxf - mn, mxf, out=np.zeros_like(mxf), where=mx > 0)
    if method == "od":
        lut = (-np.log10((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)
        return (lut[r] + lut[g] + lut[b]) / 3.0
    raise ValueError(f"method must be 'saturation' or 'od', got {method!r}")


def clean_mask(mask: np.ndarray, *, min_object_px: int = 64, max_hole_px: int = 256, closing_px: int = 2) -> np.ndarray:
    """Close small gaps, remove specks smaller than ``min_object_px``, fill enclosed holes up to ``max_hole_px``.

    Args:
        mask: boolean mask.
        min_object_px: smallest tissue component kept (mask pixels).
        max_hole_px: largest enclosed background component filled (mask pixels).
        closing_px: radius (iterations) of a morphological closing that bridges pale gaps between stained
            structures (e.g. between densely packed nuclei) before the holes are filled; 0 disables it.
    """
    out = np.asarray(mask, dtype=bool).copy()
    if closing_px > 0 and out.any():
        padded = np.pad(out, closing_px, mode="edge")  # no erosion artefacts at the image border
        out = ndimage.binary_closing(padded, iterations=closing_px)[closing_px:-closing_px, closing_px:-closing_px]
    if min_object_px > 0 and out.any():
        lab, n = ndimage.label(out)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        small = sizes < min_object_px
        small[0] = False
        out[small[lab]] = False
    if max_hole_px > 0:
        lab, n = ndimage.label(~out)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
            fill = sizes <= max_hole_px
            fill[0] = False
            fill[border] = False
            out[fill[lab]] = True
    return out


def tissue_mask(
    slide: openslide.OpenSlide | str | Path,
    *,
    method: Literal["saturation", "od"] = "saturation",
    threshold: float | None = None,
    thumbnail_max: int = 2048,
    min_object_px: int = 64,
    max_hole_px: int = 256,
) -> TissueMask:
    """Tissue mask from a low-resolution view of the slide.

    The view is the finest pyramid level no larger than ``thumbnail_max`` px. Pixels whose feature
    (HSV saturation, or mean optical density) exceeds the threshold are tissue; the default threshold is
    Otsu's (for optical density, Otsu's of ``log(OD + 1e-3)``: OD spans decades, and on a linear scale
    Otsu separates dark nuclei from the rest instead of glass from tissue), but never below
    ``THRESHOLD_FLOOR[method]`` (so a blank slide has no tissue). Specks are removed and small enclosed
    holes filled.

    Args:
        slide: an open slide or a path.
        method: ``"saturation"`` (glass is grey, stained tissue is coloured) or ``"od"`` (optical density).
        threshold: explicit threshold on the feature; None for Otsu.
        thumbnail_max: largest side of the view the mask is computed on.
        min_object_px: smallest tissue component kept (mask pixels).
        max_hole_px: largest enclosed hole filled (mask pixels).
    """
    s, owned = _as_slide(slide)
    try:
        rgb = _thumbnail(s, thumbnail_max)
        w0, h0 = s.level_dimensions[0]
    finally:
        if owned:
            s.close()
    feat = tissue_feature(rgb, method)
    if threshold is None:
        if method == "od":
            otsu = float(np.exp(otsu_threshold(np.log(feat + _OD_EPS)))) - _OD_EPS
        else:
            otsu = otsu_threshold(feat)
        threshold = max(otsu, THRESHOLD_FLOOR[method])
    mask = clean_mask(feat > threshold, min_object_px=min_object_px, max_hole_px=max_hole_px)
    h, w = mask.shape
    return TissueMask(
        mask=mask,
        downsample=(w0 / w + h0 / h) / 2.0,
        level0_size=(int(w0), int(h0)),
        method=method,
        threshold=float(threshold),
    )


# ----------------------------------------------------------------------------------------------- grid


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
    s, owned = _as_slide(slide)
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


def _opaque(img: Image.Image) -> Image.Image:
    """OpenSlide's RGBA region with any transparent (outside-the-scan) pixels composited onto white."""
    if img.getchannel("A").getextrema()[0] == 255:
        return img
    return Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)


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
        raise SlideError(spec.slide, f"cannot read tile at level-0 ({spec.x}, {spec.y}), level {spec.level}: {e}") from e
    img = _opaque(img)
    if spec.read_size != spec.tile_size:
        img = img.convert("RGB").resize((spec.tile_size, spec.tile_size), _PIL_FILTER)
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
    chw *= np.float32(1.0 / 127.5)
    chw -= np.float32(1.0)
    return torch.from_numpy(chw)


# ----------------------------------------------------------------------------------------------- regions


@dataclass(frozen=True)
class Region:
    """A labelled rectangle of a slide, in level-0 pixels.

    Args:
        slide: slide file name (or stem) the region belongs to.
        label: class name.
        x: left edge.
        y: top edge.
        width: width (> 0).
        height: height (> 0).
    """

    slide: str
    label: str
    x: int
    y: int
    width: int
    height: int


def manifest_path_for(slide: str | Path) -> Path:
    """Default region manifest of a slide: ``<stem>.regions.csv`` beside it.

    Args:
        slide: slide path.
    """
    p = Path(slide)
    return p.with_name(f"{p.stem}.regions.csv")


def write_regions(path: str | Path, regions: Sequence[Region]) -> Path:
    """Write a region manifest (CSV with ``REGION_COLUMNS``) atomically.

    Args:
        path: destination CSV.
        regions: rows to write.
    """
    lines = [",".join(REGION_COLUMNS)]
    for r in regions:
        for text in (r.slide, r.label):
            if any(c in text for c in ',"\n\r'):
                raise ValueError(f"{path}: region field {text!r} contains a comma, quote or newline")
        lines.append(f"{r.slide},{r.label},{r.x},{r.y},{r.width},{r.height}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_regions(path: str | Path) -> list[Region]:
    """Read a region manifest written by :func:`write_regions` (or by hand).

    Args:
        path: CSV with header ``slide,label,x,y,width,height``.

    Raises:
        SlideError: naming the file (and row) when it is missing, lacks columns, or holds a bad value.
    """
    p = Path(path)
    if not p.is_file():
        raise SlideError(p, "region manifest not found")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REGION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SlideError(p, f"region manifest lacks column(s) {missing}; expected {list(REGION_COLUMNS)}")
        out = []
        for row_no, row in enumerate(reader, start=2):
            try:
                x, y, w, h = (int(float(row[k])) for k in ("x", "y", "width", "height"))
            except (TypeError, ValueError) as e:
                raise SlideError(p, f"row {row_no}: x, y, width, height must be integers ({e})") from e
            if w <= 0 or h <= 0:
                raise SlideError(p, f"row {row_no}: width and height must be > 0, got {w}x{h}")
            slide, label = (row["slide"] or "").strip(), (row["label"] or "").strip()
            if not slide or not label:
                raise SlideError(p, f"row {row_no}: empty slide or label")
            out.append(Region(slide=slide, label=label, x=x, y=y, width=w, height=h))
    return out


def _matches(region_slide: str, slide: Path) -> bool:
    return region_slide in (slide.name, slide.stem, str(slide))


def regions_for_slides(
    slides: Sequence[Path], regions: str | Path | Sequence[str | Path] | None
) -> dict[Path, list[Region]]:
    """Regions of each slide: from the given manifests (rows matched by slide name), or the default manifest.

    Args:
        slides: slide paths.
        regions: one manifest, several, or None for ``manifest_path_for(slide)`` where it exists.

    Raises:
        SlideError: when a default manifest holds rows for another slide (renamed slide or manifest).
    """
    out: dict[Path, list[Region]] = {s: [] for s in slides}
    if regions is None:
        for s in slides:
            mp = manifest_path_for(s)
            if not mp.is_file():
                continue
            rows = read_regions(mp)
            stray = sorted({r.slide for r in rows if not _matches(r.slide, s)})
            if stray:
                raise SlideError(mp, f"default manifest of {s.name} holds rows for other slide(s) {stray}")
            out[s] = rows
        return out
    paths = [regions] if isinstance(regions, (str, Path)) else list(regions)
    rows = [r for mp in paths for r in read_regions(mp)]
    for s in slides:
        out[s] = [r for r in rows if _matches(r.slide, s)]
    return out


def discover_classes(slides: Sequence[str | Path], regions: str | Path | Sequence[str | Path] | None = None) -> list[str]:
    """Default class names of a set of slides: sorted region labels, then ``OTHER``.

    Args:
        slides: slide paths.
        regions: manifests as for :class:`TileDataset`.
    """
    per = regions_for_slides([Path(s) for s in slides], regions)
    labels = sorted({r.label for rows in per.values() for r in rows} - {OTHER})
    return labels + [OTHER]


def _label_tiles(
    specs: Sequence[TileSpec], regions: Sequence[Region], classes: Sequence[str], min_overlap: float
) -> np.ndarray:
    """Class index per tile: -1 ambiguous, -2 a class not kept; unannotated tiles get OTHER's index (or -2)."""
    n = len(specs)
    other = classes.index(OTHER) if OTHER in classes else -2
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not regions:
        return np.full(n, other, dtype=np.int64)
    x = np.array([s.x for s in specs], dtype=np.float64)[:, None]
    y = np.array([s.y for s in specs], dtype=np.float64)[:, None]
    size = np.array([s.size0 for s in specs], dtype=np.float64)[:, None]
    rx = np.array([r.x for r in regions], dtype=np.float64)[None]
    ry = np.array([r.y for r in regions], dtype=np.float64)[None]
    rw = np.array([r.width for r in regions], dtype=np.float64)[None]
    rh = np.array([r.height for r in regions], dtype=np.float64)[None]
    ox = np.clip(np.minimum(x + size, rx + rw) - np.maximum(x, rx), 0, None)
    oy = np.clip(np.minimum(y + size, ry + rh) - np.maximum(y, ry), 0, None)
    frac = ox * oy / (size * size)  # (tiles, regions)
    names = sorted({r.label for r in regions})
    per_label = np.stack([frac[:, [r.label == nm for r in regions]].sum(1) for nm in names], axis=1)
    best = per_label.argmax(1)
    best_frac = per_label[np.arange(n), best]
    unannotated = 1.0 - np.minimum(frac.sum(1), 1.0)
    out = np.full(n, other, dtype=np.int64)
    out[unannotated < min_overlap] = -1
    hit = best_frac >= min_overlap
    for i in np.nonzero(hit)[0]:
        nm = names[best[i]]
        out[i] = classes.index(nm) if nm in classes else -2
    return out


# ----------------------------------------------------------------------------------------------- datasets


def _lookup_override(mpp_override: float | Mapping[str, float] | None, slide: Path) -> float | None:
    if mpp_override is None or isinstance(mpp_override, (int, float)):
        return None if mpp_override is None else float(mpp_override)
    for key in (str(slide), slide.name, slide.stem):
        if key in mpp_override:
            return float(mpp_override[key])
    return None


class _LabelledTiles(Dataset):
    """Shared bookkeeping of tile datasets: class counts, balancing weights, epoch-seeded augmentation.

    Subclasses set ``class_names``, ``labels`` (int64 array), ``transform`` and ``seed``.
    """

    class_names: tuple[str, ...]
    labels: np.ndarray
    transform: Callable[[torch.Tensor], torch.Tensor] | None
    seed: int

    def _init_epoch(self) -> None:
        # Shared memory: DataLoader workers (forked, or pickled by torch.multiprocessing) see set_epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def class_counts(self) -> dict[str, int]:
        """Number of tiles per class, in ``class_names`` order."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(n) for c, n in zip(self.class_names, counts)}

    def sample_weights(self, power: float = 1.0) -> torch.Tensor:
        """Per-tile weights ``count(class)^-power`` for ``torch.utils.data.WeightedRandomSampler``.

        With ``power=1`` every class is drawn equally often; ``power=0`` gives uniform weights.

        Args:
            power: strength of the rebalancing, >= 0.
        """
        if power < 0:
            raise ValueError(f"power must be >= 0, got {power}")
        counts = np.bincount(self.labels, minlength=len(self.class_names)).astype(np.float64)
        return torch.from_numpy(np.power(np.maximum(counts, 1.0), -float(power))[self.labels])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds augmentation (shared with DataLoader worker processes).

        Args:
            epoch: epoch number.
        """
        self._epoch.fill_(int(epoch))

    def item_seed(self, index: int) -> int:
        """Seed of the augmentation of item ``index`` at the current epoch.

        Args:
            index: item index.
        """
        state = np.random.SeedSequence([self.seed, int(self._epoch), int(index)]).generate_state(1, np.uint64)
        return int(state[0] >> np.uint64(1))

    def _augment(self, image: torch.Tensor, index: int) -> torch.Tensor:
        if self.transform is None:
            return image
        from data.tile_transforms import TileAugment  # local: plain reading does not need it

        if isinstance(self.transform, TileAugment):
            return self.transform(image, generator=torch.Generator().manual_seed(self.item_seed(index)))
        return self.transform(image)


class TileDataset(_LabelledTiles):
    """Tiles of whole-slide images at one scale, with class labels from region manifests.

    Items are dicts: ``image`` (float32 3xHxW in [-1, 1]), ``label`` (int), ``slide`` (str path),
    ``location`` (level-0 x, y), ``mpp`` (effective um/px), ``level``, ``downsample``, ``resize_filter``.
    See the module docstring for the labelling policy. OpenSlide handles are opened lazily in each
    process (DataLoader workers open their own; pickling drops them). Reading is deterministic per index;
    a :class:`data.tile_transforms.TileAugment` transform gets a generator seeded from (seed, epoch, index),
    with the epoch set by :meth:`set_epoch` and shared with worker processes.

    Args:
        slides: slide files.
        tile_size: tile side in pixels.
        magnification: nominal magnification, shorthand for ``mpp = 10 / magnification``.
        mpp: microns per pixel (give this or ``magnification``).
        regions: region manifest(s); default ``<stem>.regions.csv`` beside each slide where present.
        class_names: classes to keep, in index order; None for all region labels (sorted) plus "other".
        min_tissue: smallest tissue fraction of a tile.
        min_region_overlap: smallest fraction of a tile its class regions must cover.
        mpp_override: um/px for slides without MPP metadata: one value for all, or a mapping keyed by slide
            path, file name or stem.
        transform: callable applied to the image tensor.
        seed: seed of per-item augmentation.
        require_all_classes: raise when a requested class has no tile (the datamodule turns this off for
            validation/test splits).
        max_open_slides: OpenSlide handles kept open per process (least recently used are closed).
    """

    def __init__(
        self,
        slides: Sequence[str | Path],
        tile_size: int = 256,
        magnification: float | None = None,
        mpp: float | None = None,
        *,
        regions: str | Path | Sequence[str | Path] | None = None,
        class_names: Sequence[str] | None = None,
        min_tissue: float = 0.5,
        min_region_overlap: float = 0.5,
        mpp_override: float | Mapping[str, float] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
        require_all_classes: bool = True,
        max_open_slides: int = 64,
    ) -> None:
        if (magnification is None) == (mpp is None):
            raise ValueError("TileDataset: give exactly one of magnification or mpp")
        target = mpp_from_magnification(magnification) if magnification is not None else float(mpp)  # type: ignore[arg-type]
        if isinstance(slides, (str, Path)):
            slides = [slides]
        paths = [Path(s) for s in slides]
        if not paths:
            raise ValueError("TileDataset: no slides given")
        dup = sorted({str(p) for p in paths if paths.count(p) > 1})
        if dup:
            raise ValueError(f"TileDataset: slides given more than once: {dup}")
        if not 0.0 < min_region_overlap <= 1.0:
            raise ValueError(f"min_region_overlap must be in (0, 1], got {min_region_overlap}")
        self.tile_size = int(tile_size)
        self.mpp = target
        self.min_tissue = float(min_tissue)
        self.min_region_overlap = float(min_region_overlap)
        self.transform = transform
        self.seed = int(seed)
        self.max_open_slides = int(max_open_slides)
        per_slide_regions = regions_for_slides(paths, regions)
        if class_names is None:
            labels = sorted({r.label for rows in per_slide_regions.values() for r in rows} - {OTHER})
            classes = labels + [OTHER]
        else:
            classes = [str(c) for c in class_names]
            if not classes or len(set(classes)) != len(classes) or any(not c for c in classes):
                raise ValueError(f"class_names must be non-empty, unique, non-empty strings, got {classes}")
        self.class_names: tuple[str, ...] = tuple(classes)

        specs: list[TileSpec] = []
        labels_list: list[np.ndarray] = []
        self.infos: dict[str, SlideInfo] = {}
        for p in paths:
            with open_slide(p) as s:
                info = replace(slide_info(s, mpp_override=_lookup_override(mpp_override, p)), path=p)
                grid = tile_grid(s, tile_size=self.tile_size, mpp=target, min_tissue=self.min_tissue,
                                 mpp_override=info.mpp if info.mpp_source == "override" else None)
            self.infos[str(p)] = info
            lab = _label_tiles(grid, per_slide_regions[p], self.class_names, self.min_region_overlap)
            keep = lab >= 0
            specs.extend(g for g, k in zip(grid, keep) if k)
            labels_list.append(lab[keep])
        self.slides: tuple[Path, ...] = tuple(paths)
        self.tiles: list[TileSpec] = specs
        self.labels: np.ndarray = np.concatenate(labels_list) if labels_list else np.zeros(0, dtype=np.int64)
        if class_names is not None and require_all_classes:
            counts = self.class_counts()
            empty = [c for c in self.class_names if counts[c] == 0]
            if empty:
                raise SlideError(
                    None,
                    f"requested class(es) {empty} have no tile in slides {[p.name for p in paths]} at "
                    f"{target:g} um/px (tile_size={self.tile_size}, min_tissue={min_tissue:g}, "
                    f"min_region_overlap={min_region_overlap:g}); check the region manifests or the scale",
                )
        if not specs:
            raise SlideError(None, f"no tiles of classes {list(self.class_names)} in slides {[p.name for p in paths]}")
        self._init_epoch()
        self._handles: OrderedDict[str, openslide.OpenSlide] = OrderedDict()
        self._pid = os.getpid()

    # -- bookkeeping --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tiles)

    def shard(self, rank: int, world_size: int) -> TileDataset:
        """The tiles of a disjoint subset of slides for one DDP rank (slides balanced by tile count).

        Args:
            rank: this process's rank, in [0, world_size).
            world_size: number of ranks; at most the number of slides.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        counts: dict[str, int] = {}
        for t in self.tiles:
            counts[t.slide] = counts.get(t.slide, 0) + 1
        names = list(counts)
        if world_size > len(names):
            raise ValueError(
                f"cannot shard {len(names)} slide(s) with tiles over {world_size} ranks: each rank needs a slide"
            )
        load = [0] * world_size
        owner: dict[str, int] = {}
        for n in sorted(names, key=lambda n: (-counts[n], n)):
            r = min(range(world_size), key=lambda i: (load[i], i))
            owner[n] = r
            load[r] += counts[n]
        idx = [i for i, t in enumerate(self.tiles) if owner[t.slide] == rank]
        out = copy.copy(self)
        out.slides = tuple(s for s in self.slides if owner.get(str(s)) == rank)
        out.tiles = [self.tiles[i] for i in idx]
        out.labels = self.labels[idx]
        out.infos = {k: v for k, v in self.infos.items() if owner.get(k) == rank}
        out._handles = OrderedDict()
        return out

    # -- reading ------------------------------------------------------------------------------------

    def _slide(self, path: str) -> openslide.OpenSlide:
        if os.getpid() != self._pid:  # forked worker: never share the parent's handles
            self._handles = OrderedDict()
            self._pid = os.getpid()
        h = self._handles.get(path)
        if h is None:
            h = open_slide(path)
            self._handles[path] = h
            while len(self._handles) > max(1, self.max_open_slides):
                _, old = self._handles.popitem(last=False)
                old.close()
        else:
            self._handles.move_to_end(path)
        return h

    def close(self) -> None:
        """Close the OpenSlide handles this process holds."""
        if os.getpid() == self._pid:
            for h in self._handles.values():
                h.close()
        self._handles = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state

    def __getitem__(self, index: int) -> dict[str, Any]:
        spec = self.tiles[index]
        image = self._augment(image_to_tensor(read_tile_image(self._slide(spec.slide), spec)), index)
        return {
            "image": image,
            "label": int(self.labels[index]),
            "slide": spec.slide,
            "location": (spec.x, spec.y),
            "mpp": float(spec.mpp),
            "level": spec.level,
            "downsample": float(spec.downsample),
            "resize_filter": spec.resize_filter,
        }


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class TileFolderDataset(_LabelledTiles):
    """Tiles stored as image files: ``root/<class>/*.png|jpg|jpeg|tif|tiff`` (class = sub-folder).

    A root holding images and no sub-folders is one unlabelled class, ``OTHER``. Items match
    :class:`TileDataset`: ``image``, ``label``, ``slide`` (the file path), ``location`` (0, 0), ``mpp``
    (the given value, or NaN when unknown: NaN rather than None so default collation works), ``level`` 0,
    ``downsample`` 1.0, ``resize_filter``.

    Args:
        root: folder of class sub-folders.
        tile_size: resize every (square) image to this side with ``RESIZE_FILTER``; None keeps sizes.
        class_names: sub-folders to use, in index order; None for all sub-folders, sorted.
        transform: callable applied to the image tensor (a ``TileAugment`` gets a per-index generator).
        mpp: microns per pixel of the tiles, if known.
        seed: seed of per-item augmentation.
    """

    def __init__(
        self,
        root: str | Path,
        tile_size: int | None = None,
        class_names: Sequence[str] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        mpp: float | None = None,
        seed: int = 0,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise SlideError(root, "tile folder not found")
        subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if class_names is None:
            if subdirs:
                classes = subdirs
            elif _images_in(root):
                classes = [OTHER]
            else:
                raise SlideError(root, f"tile folder holds no class sub-folders and no images ({', '.join(IMAGE_SUFFIXES)})")
        else:
            classes = [str(c) for c in class_names]
        files: list[Path] = []
        labels: list[int] = []
        for k, c in enumerate(classes):
            folder = root if (c == OTHER and not subdirs and class_names is None) else root / c
            if not folder.is_dir():
                raise SlideError(folder, f"class folder for {c!r} not found")
            imgs = _images_in(folder)
            if not imgs:
                raise SlideError(folder, f"class folder for {c!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for f in imgs:
                _check_image(f)
            files.extend(imgs)
            labels.extend([k] * len(imgs))
        self.root = root
        self.class_names: tuple[str, ...] = tuple(classes)
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.tile_size = tile_size
        self.transform = transform
        self.mpp = float("nan") if mpp is None else float(mpp)
        self.seed = int(seed)
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        f = self.files[index]
        try:
            with Image.open(f) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise SlideError(f, f"cannot decode image: {e}") from e
        filt = "none"
        if self.tile_size is not None and img.size != (self.tile_size, self.tile_size):
            if img.width != img.height:
                raise SlideError(f, f"tile is {img.width}x{img.height}, not square; cannot resize to {self.tile_size} px")
            img = img.resize((self.tile_size, self.tile_size), _PIL_FILTER)
            filt = RESIZE_FILTER
        image = self._augment(image_to_tensor(img), index)
        return {
            "image": image,
            "label": int(self.labels[index]),
            "slide": str(f),
            "location": (0, 0),
            "mpp": self.mpp,
            "level": 0,
            "downsample": 1.0,
            "resize_filter": filt,
        }


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _check_image(path: Path) -> None:
    try:
        with Image.open(path) as im:
            im.size  # header only; pixels are decoded in __getitem__
    except (OSError, UnidentifiedImageError) as e:
        raise SlideError(path, f"not a readable image: {e}") from e
