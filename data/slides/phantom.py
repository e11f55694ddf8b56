"""Deterministic synthetic H&E whole-slide images, written as Aperio-style tiled JPEG pyramids.

No public slides can be downloaded where the project is tested, so it makes its own. A phantom slide is
glass (near white, slightly grey and noisy) with irregular tissue blobs; the tissue is painted as
haematoxylin and eosin optical densities (Beer-Lambert, with the H&E reference stain vectors of Macenko
normalisation) and holds four classes with visibly different texture and colour:

* ``stroma`` (everywhere in tissue outside other regions): pink eosin with wavy fibre bundles and sparse
  thin spindle nuclei;
* ``tumor``: paler, slightly purple cytoplasm crowded with large, irregular, vesicular nuclei with a dark
  rim and a nucleolus;
* ``lymphocytes``: densely packed small, round, very dark nuclei with little cytoplasm;
* ``necrosis`` (the RARE class: few, small regions): bright granular eosin strewn with tiny dark
  nuclear fragments.

Class regions are rectangles, listed in level-0 pixels in ``<stem>.regions.csv`` (columns ``slide, label,
x, y, width, height``); stroma regions are annotated patches of the stroma that fills the rest of the tissue.
The slide is a TIFF whose first page carries an Aperio ImageDescription (``Aperio Image Library ...
|AppMag = 40|MPP = 0.25``), so OpenSlide reads it as vendor ``aperio`` with that objective power and mpp;
the pyramid levels are tiled JPEG pages (block-mean downsampling), plus a stripped thumbnail page.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from scipy import ndimage

from data.files import atomic_path
from data.slides.regions import Region, manifest_path_for, write_regions

__all__ = ["CLASSES", "RARE_CLASS", "PhantomSlide", "make_phantom_slide"]

#: Tissue classes painted on a phantom slide; ``RARE_CLASS`` has few, small regions.
CLASSES = ("stroma", "tumor", "lymphocytes", "necrosis")
RARE_CLASS = "necrosis"
_GLASS, _STROMA, _TUMOR, _LYMPH, _NECROSIS = range(5)
_CLASS_ID = {"stroma": _STROMA, "tumor": _TUMOR, "lymphocytes": _LYMPH, "necrosis": _NECROSIS}
# Regions per class on a 4096x3072 slide (scaled by area, at least one) and their side range in level-0 px.
_REGION_COUNT = {"tumor": 2, "lymphocytes": 2, "stroma": 2, "necrosis": 2}
_REGION_SIDE = {"tumor": (480, 704), "lymphocytes": (480, 704), "stroma": (480, 640), "necrosis": (384, 416)}
_REF_AREA = 4096 * 3072
_COARSE = 16  # level-0 px per cell of the coarse tissue layout
_GAP = 96  # level-0 px kept between regions
# Optical density per unit stain (unit vectors), columns R, G, B: the H&E reference vectors that Macenko
# stain normalisation estimates from real slides.
_H_OD = np.array([0.5626, 0.7201, 0.4062], dtype=np.float32)
_E_OD = np.array([0.2159, 0.8012, 0.5581], dtype=np.float32)
_GLASS_OD = np.array([0.034, 0.036, 0.030], dtype=np.float32)
# Per class (glass, stroma, tumor, lymphocytes, necrosis): eosin base/fibre/mottle/grain, haematoxylin base/grain.
_E_BASE = np.array([0.0, 0.30, 0.30, 0.26, 0.52], dtype=np.float32)
_E_FIBRE = np.array([0.0, 0.45, 0.06, 0.0, 0.0], dtype=np.float32)
_E_MOTTLE = np.array([0.0, 0.05, 0.06, 0.04, 0.10], dtype=np.float32)
_E_GRAIN = np.array([0.0, 0.0, 0.0, 0.0, 0.16], dtype=np.float32)
_H_BASE = np.array([0.0, 0.02, 0.16, 0.16, 0.07], dtype=np.float32)
_H_GRAIN = np.array([0.0, 0.0, 0.03, 0.0, 0.06], dtype=np.float32)


@dataclass(frozen=True)
class PhantomSlide:
    """A phantom slide on disk.

    Args:
        path: the slide (.svs / .tif).
        manifest: its region manifest, ``<stem>.regions.csv``.
        regions: the labelled regions, level-0 pixels.
        width: level-0 width.
        height: level-0 height.
        mpp: microns per pixel written (None if omitted).
        app_mag: objective power written (None if omitted).
        downsamples: pyramid downsamples.
        seed: generator seed.
    """

    path: Path
    manifest: Path
    regions: tuple[Region, ...]
    width: int
    height: int
    mpp: float | None
    app_mag: int | None
    downsamples: tuple[int, ...]
    seed: int


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian-filtered white noise, normalised to zero mean and unit std (float32)."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    return (n - n.mean()) / max(float(n.std()), 1e-6)


def _upsample(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float array to ``shape`` (height, width)."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def _margin(ch: int, cw: int) -> int:
    """Glass margin around the tissue, in coarse cells (6% of the short side)."""
    return max(3, int(round(0.06 * min(ch, cw))))


def _tissue_layout(rng: np.random.Generator, ch: int, cw: int) -> np.ndarray:
    """Coarse boolean layout of irregular tissue blobs away from the slide edges (about half the area)."""
    v, u = np.mgrid[0:ch, 0:cw].astype(np.float32)
    r2 = ((u + 0.5) / cw - 0.5) ** 2 / 0.25 + ((v + 0.5) / ch - 0.5) ** 2 / 0.25
    field = 0.9 * _smooth_noise(rng, (ch, cw), max(ch, cw) / 14) + 0.35 * _smooth_noise(rng, (ch, cw), 2.0)
    field += 2.2 * (1.0 - r2)
    margin = _margin(ch, cw)
    field[:margin], field[-margin:], field[:, :margin], field[:, -margin:] = -9, -9, -9, -9
    thr = np.quantile(field, 0.52)
    lay = field > thr
    lab, n = ndimage.label(lay)
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        keep = sizes >= 0.02 * lay.size
        keep[0] = False
        lay = keep[lab]
    return ndimage.binary_fill_holes(lay)


def _box_sums(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sum of ``a`` over every h x w window (top-left indexed), via an integral image."""
    ii = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=np.int64)
    ii[1:, 1:] = a.astype(np.int64).cumsum(0).cumsum(1)
    return ii[h:, w:] - ii[:-h, w:] - ii[h:, :-w] + ii[:-h, :-w]


def _place_regions(
    rng: np.random.Generator, layout: np.ndarray, width: int, height: int, name: str
) -> list[Region]:
    """Non-overlapping class rectangles on the coarse tissue layout (on a 16-px grid).

    Each rectangle goes to a random free position that is at least 90% tissue, else to the free position
    with the most tissue (the tissue then grows to cover it). A crowded draw is redrawn (up to 20 times).
    """
    for _ in range(20):
        placed = _try_place_regions(np.random.default_rng(int(rng.integers(2**63))), layout, width, height, name)
        if placed is not None:
            return placed
    raise ValueError(f"{name}: a {width}x{height} phantom is too small to place its regions; use at least 2048x1536")


def _try_place_regions(
    rng: np.random.Generator, layout: np.ndarray, width: int, height: int, name: str
) -> list[Region] | None:
    scale = width * height / _REF_AREA
    ch, cw = layout.shape
    occupied = np.zeros_like(layout, dtype=bool)
    gap, edge = _GAP // _COARSE, _margin(ch, cw) + 1
    regions: list[Region] = []
    for label in ("tumor", "lymphocytes", "stroma", "necrosis"):
        count = max(1, int(round(_REGION_COUNT[label] * scale)))
        lo, hi = _REGION_SIDE[label]
        for _ in range(count):
            drawn_w = int(rng.integers(lo // _COARSE, hi // _COARSE + 1))
            drawn_h = int(rng.integers(lo // _COARSE, hi // _COARSE + 1))
            for w, h in ((drawn_w, drawn_h), (lo // _COARSE, lo // _COARSE)):  # shrink to the smallest if crowded
                if h + 2 * edge > ch or w + 2 * edge > cw:
                    continue
                cover = _box_sums(layout, h, w)[edge:ch - h - edge + 1, edge:cw - w - edge + 1] / (w * h)
                clash = _box_sums(occupied, h, w)[edge:ch - h - edge + 1, edge:cw - w - edge + 1] > 0
                free = ~clash
                if not free.any():
                    continue
                good = np.argwhere(free & (cover >= 0.9))
                if len(good):
                    y, x = good[int(rng.integers(len(good)))]
                else:
                    y, x = np.unravel_index(np.argmax(np.where(free, cover, -1.0)), cover.shape)
                y, x = int(y) + edge, int(x) + edge
                occupied[max(y - gap, 0):y + h + gap, max(x - gap, 0):x + w + gap] = True
                regions.append(Region(slide=name, label=label, x=x * _COARSE, y=y * _COARSE,
                                      width=w * _COARSE, height=h * _COARSE))
                break
            else:
                return None
    return regions


def _nucleus(rng: np.random.Generator, a: float, b: float, dark: float, texture: float,
             rim: float = 0.0, nucleolus: float = 0.0) -> np.ndarray:
    """One nucleus stamp: a rotated soft-edged ellipse of haematoxylin density with chromatin texture."""
    r = int(math.ceil(max(a, b))) + 2
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    t = rng.uniform(0, np.pi)
    xr, yr = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    d = np.sqrt((xr / a) ** 2 + (yr / b) ** 2)
    inside = np.clip((1.0 - d) * min(a, b) + 0.5, 0.0, 1.0)
    tex = 1.0 + texture * ndimage.gaussian_filter(rng.standard_normal(d.shape).astype(np.float32), 1.0) * 2.0
    stamp = dark * inside * tex + rim * inside * ((d > 0.72) & (d < 1.0))
    if nucleolus:
        cx, cy = rng.uniform(-0.35, 0.35) * a, rng.uniform(-0.35, 0.35) * b
        stamp += nucleolus * np.clip(2.8 - np.hypot(xx - cx, yy - cy), 0.0, 1.0)
    return np.clip(stamp, 0.0, None).astype(np.float32)


def _stamp_all(canvas: np.ndarray, bank: Sequence[np.ndarray], xs: np.ndarray, ys: np.ndarray, ks: np.ndarray) -> None:
    """Draw stamps ``bank[k]`` centred at (x, y) into ``canvas`` with a per-pixel maximum."""
    hh, ww = canvas.shape
    for x, y, k in zip(xs.tolist(), ys.tolist(), ks.tolist()):
        s = bank[k]
        r = s.shape[0] // 2
        x0, y0, x1, y1 = x - r, y - r, x + r + 1, y + r + 1
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, ww), min(y1, hh)
        if cx0 >= cx1 or cy0 >= cy1:
            continue
        view = canvas[cy0:cy1, cx0:cx1]
        np.maximum(view, s[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0], out=view)


def _jittered_grid(
    rng: np.random.Generator, r: Region, spacing: float, jitter: float, keep: float
) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus centres on a jittered square grid inside a region, each kept with probability ``keep``."""
    gx, gy = np.meshgrid(np.arange(r.x + spacing / 2, r.x + r.width, spacing),
                         np.arange(r.y + spacing / 2, r.y + r.height, spacing))
    x = gx.ravel() + rng.uniform(-jitter, jitter, gx.size)
    y = gy.ravel() + rng.uniform(-jitter, jitter, gy.size)
    m = rng.random(x.size) < keep
    return np.round(x[m]).astype(np.int64), np.round(y[m]).astype(np.int64)


def _paint(rng: np.random.Generator, width: int, height: int, regions: Sequence[Region],
           layout: np.ndarray) -> np.ndarray:
    """Render the level-0 RGB image (uint8).

    Stain densities without fine detail are computed at quarter resolution (region edges lie on a 16-px
    grid, so nothing is lost) and upsampled; nuclei are drawn at full resolution.
    """
    shape = (height, width)
    q = (math.ceil(height / 4), math.ceil(width / 4))
    coarse = layout.shape
    # Tissue: the coarse layout plus every region (slightly dilated), softened.
    lay = layout.copy()
    for r in regions:
        lay[max(r.y // _COARSE - 2, 0):(r.y + r.height) // _COARSE + 3,
            max(r.x // _COARSE - 2, 0):(r.x + r.width) // _COARSE + 3] = True
    alpha = np.clip(_upsample(ndimage.gaussian_filter(lay.astype(np.float32), 1.0), q), 0.0, 1.0)
    cls = np.where(alpha > 0.5, _STROMA, _GLASS).astype(np.int8)
    for r in regions:
        cls[r.y // 4:(r.y + r.height) // 4, r.x // 4:(r.x + r.width) // 4] = _CLASS_ID[r.label]

    # Textures: wavy fibre bundles (two orientations blended by a smooth field), mottle, grain.
    weight = 1.0 / (1.0 + np.exp(-2.0 * _upsample(_smooth_noise(rng, coarse, 3.0), q)))
    fib = weight * _smooth_noise(rng, q, (1.2, 8.0)) + (1.0 - weight) * _smooth_noise(rng, q, (8.0, 1.2))
    yy, xx = np.mgrid[0:q[0], 0:q[1]].astype(np.float32)
    warp = [_upsample(_smooth_noise(rng, coarse, 1.5), q) * 5.0 for _ in range(2)]
    fib = ndimage.map_coordinates(fib, [yy + warp[0], xx + warp[1]], order=1, mode="wrap").astype(np.float32)
    fibre = 0.5 + 0.5 * np.tanh(1.6 * fib / max(float(fib.std()), 1e-6))
    mottle = _upsample(_smooth_noise(rng, coarse, 2.0), q)
    grain = _smooth_noise(rng, q, 0.7)
    eosin = (_E_BASE[cls] + _E_FIBRE[cls] * fibre + _E_MOTTLE[cls] * mottle + _E_GRAIN[cls] * grain) * alpha
    haem = (_H_BASE[cls] + _H_GRAIN[cls] * grain) * alpha
    t = torch.from_numpy(np.stack([haem, eosin]).astype(np.float32))[None]
    haem, eosin = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0].numpy()

    # Nuclei, drawn at full resolution.
    nuc = np.zeros(shape, dtype=np.float32)
    banks = {
        _TUMOR: [_nucleus(rng, rng.uniform(14, 24), rng.uniform(10, 18), rng.uniform(0.55, 0.9), 0.22,
                          rim=0.25, nucleolus=0.6) for _ in range(24)],
        _LYMPH: [_nucleus(rng, rng.uniform(8, 11), rng.uniform(8, 10.5), rng.uniform(1.4, 1.8), 0.06)
                 for _ in range(24)],
        _STROMA: [_nucleus(rng, rng.uniform(12, 20), rng.uniform(3, 5), rng.uniform(0.6, 0.85), 0.05)
                  for _ in range(24)],
        _NECROSIS: [_nucleus(rng, rng.uniform(1.5, 4), rng.uniform(1.5, 3.5), rng.uniform(0.7, 1.2), 0.1)
                    for _ in range(24)],
    }
    for r in regions:
        cid = _CLASS_ID[r.label]
        if cid == _TUMOR:
            xs, ys = _jittered_grid(rng, r, 46.0, 12.0, 0.9)
        elif cid == _LYMPH:
            xs, ys = _jittered_grid(rng, r, 23.0, 5.0, 0.88)
        elif cid == _NECROSIS:
            n = r.width * r.height // 300
            xs = rng.integers(r.x, r.x + r.width, n)
            ys = rng.integers(r.y, r.y + r.height, n)
        else:
            continue
        _stamp_all(nuc, banks[cid], xs, ys, rng.integers(0, 24, xs.size))
    n = width * height // 4000
    xs, ys = rng.integers(0, width, n), rng.integers(0, height, n)
    ok = cls[ys // 4, xs // 4] == _STROMA
    _stamp_all(nuc, banks[_STROMA], xs[ok], ys[ok], rng.integers(0, 24, int(ok.sum())))
    haem += nuc
    np.minimum(nuc, 1.0, out=nuc)
    nuc *= -0.6
    nuc += 1.0
    eosin *= nuc  # nuclei displace the pink cytoplasm/stroma

    noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= 2.0
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    od = np.empty(shape, dtype=np.float32)
    for c in range(3):
        np.multiply(haem, _H_OD[c], out=od)
        od += eosin * _E_OD[c]
        od += _GLASS_OD[c]
        np.negative(od, out=od)
        np.exp(od, out=od)
        od *= 255.0
        od += noise
        np.clip(od, 0, 255, out=od)
        rgb[..., c] = od
    return rgb


def _block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """Downsample an RGB uint8 image by an integer factor with a block (area) mean, edges cropped."""
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    t = torch.from_numpy(np.ascontiguousarray(img[: h * factor, : w * factor])).permute(2, 0, 1).to(torch.float32)
    out = F.avg_pool2d(t[None], factor)[0].round_().clamp_(0, 255).to(torch.uint8)
    return out.permute(1, 2, 0).contiguous().numpy()


def _description(width: int, height: int, tile: int, quality: int, mpp: float | None, app_mag: int | None,
                 level: tuple[int, int] | None, title: str) -> str:
    head = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})"
    if level is not None:
        head += f" -> {level[0]}x{level[1]}"
    fields = [f"{head} JPEG/RGB Q={quality}"]
    if app_mag is not None:
        fields.append(f"AppMag = {app_mag}")
    if mpp is not None:
        fields.append(f"MPP = {mpp:g}")
    fields += [f"Title = {title}", "ScanScope ID = medsynth-phantom"]
    return "|".join(fields)


def make_phantom_slide(
    path: str | Path,
    *,
    width: int = 4096,
    height: int = 3072,
    seed: int = 0,
    mpp: float | None = 0.25,
    app_mag: int | None = 40,
    tile: int = 256,
    downsamples: Sequence[int] = (1, 4, 16),
    jpeg_quality: int = 90,
) -> PhantomSlide:
    """Write a synthetic H&E slide (Aperio-style tiled JPEG pyramid) and its region manifest.

    The image is a deterministic function of (width, height, seed). Both files are written atomically.

    Args:
        path: destination slide, e.g. ``slides/p0.svs``; the manifest goes to ``slides/p0.regions.csv``.
        width: level-0 width in pixels (at least 2048).
        height: level-0 height in pixels (at least 1536).
        seed: random seed.
        mpp: microns per pixel written as ``MPP``; None omits it (a slide without scale metadata).
        app_mag: objective power written as ``AppMag``; None omits it.
        tile: TIFF tile side (multiple of 16).
        downsamples: pyramid downsamples, integers starting at 1, strictly increasing.
        jpeg_quality: JPEG quality, 1..100.
    """
    path = Path(path)
    if width < 2048 or height < 1536:
        raise ValueError(f"{path}: phantom must be at least 2048x1536 (room for every class), got {width}x{height}")
    if tile < 16 or tile % 16:
        raise ValueError(f"{path}: tile must be a positive multiple of 16, got {tile}")
    ds = tuple(int(d) for d in downsamples)
    integral = all(d == float(v) for d, v in zip(ds, downsamples))
    if not ds or ds[0] != 1 or any(b <= a for a, b in zip(ds, ds[1:])) or not integral:
        raise ValueError(
            f"{path}: downsamples must be integers starting at 1 and strictly increasing, got {downsamples}")
    if min(width, height) // ds[-1] < 1:
        raise ValueError(f"{path}: downsample {ds[-1]} leaves an empty level for {width}x{height}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"{path}: jpeg_quality must be in 1..100, got {jpeg_quality}")
    if mpp is not None and not mpp > 0:
        raise ValueError(f"{path}: mpp must be > 0 or None, got {mpp}")
    if app_mag is not None and not app_mag > 0:
        raise ValueError(f"{path}: app_mag must be > 0 or None, got {app_mag}")

    rng = np.random.default_rng(seed)
    layout = _tissue_layout(rng, math.ceil(height / _COARSE), math.ceil(width / _COARSE))
    regions = _place_regions(rng, layout, width, height, path.name)
    level0 = _paint(rng, width, height, regions, layout)

    levels = [level0]
    for prev, d in zip(ds, ds[1:]):
        src, f = (levels[-1], d // prev) if d % prev == 0 else (level0, d)
        levels.append(_block_mean(src, f))
    thumb = levels[-1]
    while max(thumb.shape[:2]) > 1024:
        thumb = _block_mean(thumb, 2)

    title = f"medsynth synthetic phantom seed={seed}"
    jpeg = {"compression": "jpeg", "compressionargs": {"level": jpeg_quality}, "photometric": "rgb", "metadata": None}
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=level0.nbytes > 2**31) as tw:
            tw.write(levels[0], tile=(tile, tile), description=_description(
                width, height, tile, jpeg_quality, mpp, app_mag, None, title), **jpeg)
            tw.write(thumb, rowsperstrip=16, description=_description(
                width, height, tile, jpeg_quality, mpp, app_mag, (thumb.shape[1], thumb.shape[0]), title), **jpeg)
            for lv in levels[1:]:
                tw.write(lv, tile=(tile, tile), description=_description(
                    width, height, tile, jpeg_quality, mpp, app_mag, (lv.shape[1], lv.shape[0]), title), **jpeg)
    manifest = write_regions(manifest_path_for(path), regions)
    return PhantomSlide(
        path=path, manifest=manifest, regions=tuple(regions), width=width, height=height,
        mpp=mpp, app_mag=app_mag, downsamples=ds, seed=seed,
    )
