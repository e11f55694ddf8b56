"""Tile grids and tile pixels, checked against OpenSlide's ``read_region`` (plus a PIL resize where the scale
needs one)."""
from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile
import torch
from PIL import Image
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

from data.errors import SlideError
from data.slides import TileDataset, tile_grid, tissue_mask
from tests.data.slides.common import TS, H, W, pixels, read


def test_tiles_at_40x_equal_level0_read_region(slides, ds40):
    assert len(ds40) > 40
    for i in np.linspace(0, len(ds40) - 1, 12).astype(int):
        item = ds40[int(i)]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, TS, TS)
        assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert (item["mpp"], item["level"], item["downsample"], item["resize_filter"]) == (0.25, 0, 1.0, "none")
        assert item["slide"] == str(slides["s0"])
        np.testing.assert_array_equal(pixels(item), read(slides["s0"], item["location"], 0, TS))


def test_tiles_at_10x_equal_level1_read_region(slides):
    ds = TileDataset([slides["s0"]], tile_size=TS, magnification=10, min_tissue=0.3)
    assert len(ds) >= 3
    for i in range(len(ds)):
        item = ds[i]
        x, y = item["location"]
        assert x % (4 * TS) == 0 and y % (4 * TS) == 0  # a tile covers 4*TS level-0 pixels
        assert (item["mpp"], item["level"], item["downsample"], item["resize_filter"]) == (1.0, 1, 4.0, "none")
        np.testing.assert_array_equal(pixels(item), read(slides["s0"], (x, y), 1, TS))


def test_tiles_between_levels_are_lanczos_resized(slides):
    ds = TileDataset([slides["s0"]], tile_size=TS, mpp=0.5)
    assert len(ds) >= 10
    for i in np.linspace(0, len(ds) - 1, 6).astype(int):
        item = ds[int(i)]
        assert (item["mpp"], item["level"], item["downsample"], item["resize_filter"]) == (0.5, 0, 1.0, "lanczos")
        with openslide.OpenSlide(str(slides["s0"])) as s:
            region = s.read_region(item["location"], 0, (2 * TS, 2 * TS)).convert("RGB")
        ref = np.asarray(region.resize((TS, TS), Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(pixels(item), ref)


def test_scale_comes_from_mpp_not_objective(slides):
    """0.44 um/px labelled 20x: at 0.5 um/px a 128-px tile spans 128 * 0.5 / 0.44 = 145 level-0 pixels."""
    read = round(TS * 0.5 / 0.44)
    for ds in (TileDataset([slides["mpp044"]], tile_size=TS, mpp=0.5),
               TileDataset([slides["mpp044"]], tile_size=TS, magnification=20)):
        specs = ds.tiles
        assert {t.read_size for t in specs} == {read} and {t.level for t in specs} == {0}
        xs = sorted({t.x for t in specs})
        assert all((b - a) % read == 0 for a, b in zip(xs, xs[1:]))
        item = ds[len(ds) // 2]
        assert item["mpp"] == pytest.approx(read * 0.44 / TS) and item["mpp"] == pytest.approx(0.5, rel=0.01)
        with openslide.OpenSlide(str(slides["mpp044"])) as s:
            region = s.read_region(item["location"], 0, (read, read)).convert("RGB")
        np.testing.assert_array_equal(pixels(item), np.asarray(region.resize((TS, TS), Image.Resampling.LANCZOS)))


def test_min_tissue_selects_tiles_by_tissue_fraction(slides):
    path = slides["s1"]
    with openslide.OpenSlide(str(path)) as s:
        view = np.asarray(s.read_region((0, 0), 0, (W, H)).convert("RGB"))
    sat = rgb2hsv(view)[..., 1]
    ref = sat > threshold_otsu(sat)
    mask = tissue_mask(path)
    everything = tile_grid(path, tile_size=TS, mpp=0.25, min_tissue=0.0, mask=mask)
    assert len(everything) == (W // TS) * (H // TS)
    sizes = {}
    for thr in (0.2, 0.8):
        specs = tile_grid(path, tile_size=TS, mpp=0.25, min_tissue=thr, mask=mask)
        sizes[thr] = len(specs)
        fr = np.array([ref[t.y:t.y + TS, t.x:t.x + TS].mean() for t in specs])
        assert fr.min() >= thr - 0.05
        kept = {(t.x, t.y) for t in specs}
        missed = [t for t in everything
                  if (t.x, t.y) not in kept and ref[t.y:t.y + TS, t.x:t.x + TS].mean() > thr + 0.05]
        assert not missed
    assert sizes[0.8] < sizes[0.2] < len(everything)


def test_blank_slide_has_no_tissue(tmp_path):
    rng = np.random.default_rng(0)
    glass = np.clip(244 + rng.normal(0, 2, (1024, 1024, 1)), 0, 255).astype(np.uint8).repeat(3, -1)
    path = tmp_path / "blank.svs"
    desc = "Aperio Image Library v12.0.15 \r\n1024x1024 [0,0 1024x1024] (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = 0.25"
    with tifffile.TiffWriter(path) as tw:
        tw.write(glass, tile=(256, 256), compression="jpeg", photometric="rgb", description=desc, metadata=None)
        tw.write(glass[::4, ::4].copy(), tile=(256, 256), compression="jpeg", photometric="rgb",
                 description=desc, metadata=None)
    with openslide.OpenSlide(str(path)) as s:
        assert s.properties["openslide.vendor"] == "aperio" and s.level_count == 2
    with pytest.raises(SlideError, match=r"blank\.svs.*no tissue"):
        TileDataset([path], tile_size=TS, mpp=0.25)
