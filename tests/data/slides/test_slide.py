"""Slides: scale from MPP metadata (never the objective), pyramids, refusals that name the file."""
from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from data.errors import SlideError
from data.slides import TileDataset, open_slide, slide_info
from tests.data.slides.common import TS, pixels, read


def test_slide_info_scale_from_mpp(slides):
    info = slide_info(slides["mpp044"])
    with openslide.OpenSlide(str(slides["mpp044"])) as s:
        assert info.mpp == float(s.properties["openslide.mpp-x"]) == 0.44
        assert info.objective_power == 20
        assert info.level_downsamples == tuple(s.level_downsamples)
        assert info.level_dimensions == tuple(s.level_dimensions)
    assert info.vendor == "aperio" and info.mpp_source == "metadata"
    assert info.magnification == pytest.approx(10 / 0.44)


def test_slide_without_mpp_needs_override(slides, ds40):
    with pytest.raises(SlideError, match=r"nompp\.svs.*mpp_override"):
        TileDataset([slides["nompp"]], tile_size=TS, mpp=0.25)
    ds = TileDataset([slides["nompp"]], tile_size=TS, mpp=0.25, mpp_override={"nompp.svs": 0.25})
    assert ds.infos[str(slides["nompp"])].mpp_source == "override"
    assert [(t.x, t.y) for t in ds.tiles] == [(t.x, t.y) for t in ds40.tiles]  # same seed as s0: same pixels
    np.testing.assert_array_equal(pixels(ds[3]), read(slides["nompp"], ds[3]["location"], 0, TS))


def test_magnification_above_scan(slides):
    with pytest.raises(SlideError, match=r"mpp044\.svs.*finer than the scan"):
        TileDataset([slides["mpp044"]], tile_size=TS, magnification=40)


def test_non_pyramidal_tiff(tmp_path):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.full((512, 512, 3), 200, np.uint8), photometric="rgb")
    with pytest.raises(SlideError, match=r"plain\.tif.*not pyramidal"):
        open_slide(plain)
    big = tmp_path / "flat.tif"
    tifffile.imwrite(big, np.full((256, 4608, 3), 200, np.uint8), photometric="rgb", tile=(256, 256))
    with pytest.raises(SlideError, match=r"flat\.tif.*single level of 4608x256"):
        TileDataset([big], mpp=0.25)


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(SlideError, match=r"nope\.svs.*not found"):
        TileDataset([tmp_path / "nope.svs"], mpp=0.25)
    junk = tmp_path / "junk.svs"
    junk.write_text("not a slide")
    with pytest.raises(SlideError, match=r"junk\.svs.*not a whole-slide image"):
        open_slide(junk)
