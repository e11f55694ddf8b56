"""Tissue masks of whole-slide images: HSV saturation or optical density, Otsu's threshold, cleaned up.

The mask is computed on a low-resolution view (the finest pyramid level no larger than ``thumbnail_max``
px); :meth:`TissueMask.coverage` gives the tissue fraction of any level-0 box, which is what
:func:`data.slides.grid.tile_grid` keeps or drops tiles by.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import openslide
from scipy import ndimage

from data.slides.slide import as_slide, opaque

__all__ = ["THRESHOLD_FLOOR", "TissueMask", "clean_mask", "otsu_threshold", "tissue_feature", "tissue_mask"]

#: Lowest Otsu threshold accepted per tissue-mask method (glass is below it), so a blank slide has no tissue.
THRESHOLD_FLOOR = {"saturation": 0.05, "od": 0.04}
_OD_EPS = 1e-3


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
        img = opaque(slide.read_region((0, 0), lv, slide.level_dimensions[lv]))
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
    s, owned = as_slide(slide)
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
