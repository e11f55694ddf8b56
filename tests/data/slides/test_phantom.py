"""Phantom whole-slide images: checked through OpenSlide, tifffile, csv and scikit-image, not through our reader."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from skimage.color import rgb2hed, rgb2hsv

from data.slides import CLASSES, RARE_CLASS, make_phantom_slide

W, H = 2048, 1536


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom")
    return make_phantom_slide(folder / "p3.svs", width=W, height=H, seed=3)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["slide", "label", "x", "y", "width", "height"]
        return list(reader)


def _rgb(slide: openslide.OpenSlide, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
    return np.asarray(slide.read_region((x, y), level, (w, h)).convert("RGB"))


def test_openslide_reads_aperio_pyramid(phantom):
    with openslide.OpenSlide(str(phantom.path)) as s:
        p = s.properties
        assert p["openslide.vendor"] == "aperio"
        assert float(p["openslide.objective-power"]) == 40
        assert float(p["openslide.mpp-x"]) == 0.25 and float(p["openslide.mpp-y"]) == 0.25
        assert s.level_count == 3
        assert s.level_downsamples == pytest.approx((1.0, 4.0, 16.0))
        assert s.level_dimensions == ((W, H), (W // 4, H // 4), (W // 16, H // 16))
        assert "thumbnail" in s.associated_images
    with tifffile.TiffFile(phantom.path) as t:
        assert t.pages[0].description.startswith("Aperio Image Library")
        tiled = [pg for pg in t.pages if pg.is_tiled]
        assert len(tiled) == 3 and all(pg.compression == tifffile.COMPRESSION.JPEG for pg in tiled)
        assert tiled[0].tilewidth == 256 and tiled[0].tilelength == 256


def test_levels_are_area_downsamples_of_level0(phantom):
    with openslide.OpenSlide(str(phantom.path)) as s:
        full = _rgb(s, 0, 0, 0, W, H).astype(np.float64)
        # Block means match up to JPEG re-encoding; subsampling every d-th pixel or a one-pixel shift
        # would differ by more than 6 grey levels on average.
        for level, d in ((1, 4), (2, 16)):
            ref = full.reshape(H // d, d, W // d, d, 3).mean(axis=(1, 3))
            got = _rgb(s, 0, 0, level, W // d, H // d).astype(np.float64)
            assert np.abs(got - ref).mean() < 4.0
            assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98


def test_no_mpp_and_no_magnification_fields(tmp_path):
    ph = make_phantom_slide(tmp_path / "nompp.svs", width=W, height=H, seed=1, mpp=None, app_mag=None)
    with openslide.OpenSlide(str(ph.path)) as s:
        assert s.properties["openslide.vendor"] == "aperio"
        assert openslide.PROPERTY_NAME_MPP_X not in s.properties
        assert openslide.PROPERTY_NAME_OBJECTIVE_POWER not in s.properties
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nompp.regions.csv", "nompp.svs"]  # no temp files left


def test_other_scale_metadata(tmp_path):
    ph = make_phantom_slide(tmp_path / "s20.tif", width=W, height=H, seed=2, mpp=0.44, app_mag=20,
                            downsamples=(1, 2, 8))
    with openslide.OpenSlide(str(ph.path)) as s:
        assert float(s.properties["openslide.mpp-x"]) == 0.44
        assert float(s.properties["openslide.objective-power"]) == 20
        assert s.level_downsamples == pytest.approx((1.0, 2.0, 8.0))


def test_region_manifest_columns_and_classes(phantom):
    rows = _rows(phantom.manifest)
    assert phantom.manifest == phantom.path.with_name("p3.regions.csv")
    assert {r["slide"] for r in rows} == {"p3.svs"}
    assert {r["label"] for r in rows} == set(CLASSES)
    boxes = [(r["label"], int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"])) for r in rows]
    for _, x, y, w, h in boxes:
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H and w > 0 and h > 0
    for i, (_, x, y, w, h) in enumerate(boxes):  # disjoint
        for _, x2, y2, w2, h2 in boxes[i + 1:]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y
    rare = [w * h for lab, _, _, w, h in boxes if lab == RARE_CLASS]
    common = [w * h for lab, _, _, w, h in boxes if lab != RARE_CLASS]
    assert 1 <= len(rare) <= 2 and max(rare) < min(common)
    assert sum(rare) < 0.5 * sum(common) / (len(CLASSES) - 1)


def test_classes_differ_in_stain_and_glass_is_background(phantom):
    rows = _rows(phantom.manifest)
    with openslide.OpenSlide(str(phantom.path)) as s:
        stats = {}
        for r in rows:
            rgb = _rgb(s, int(r["x"]), int(r["y"]), 0, int(r["width"]), int(r["height"]))
            hed = rgb2hed(rgb)
            dark = (rgb.mean(-1) < 130).mean()
            stats.setdefault(r["label"], []).append((hed[..., 0].mean(), hed[..., 1].mean(), dark))
        m = {k: np.mean(v, axis=0) for k, v in stats.items()}
        # Haematoxylin: lymphocytes > tumor > stroma; lymphocytes have the most very dark pixels.
        assert m["lymphocytes"][0] > m["tumor"][0] > m["stroma"][0]
        assert m["lymphocytes"][2] > 2 * m["tumor"][2]
        # Eosin: necrosis and stroma are pinker than lymphocyte aggregates.
        assert m["necrosis"][1] > m["lymphocytes"][1] and m["stroma"][1] > m["lymphocytes"][1]
        # Glass margin: near white, slightly grey, low saturation, noisy.
        strip = _rgb(s, 0, 0, 0, W, 40).astype(np.float64)
        assert 225 < strip.mean() < 254 and strip.std() > 0.5
        assert rgb2hsv(strip.astype(np.uint8))[..., 1].mean() < 0.05
        # Tissue occupies irregular blobs: a real fraction of the slide, but not all of it.
        thumb = _rgb(s, 0, 0, 1, W // 4, H // 4)
        tissue = rgb2hsv(thumb)[..., 1] > 0.1
        assert 0.25 < tissue.mean() < 0.8


def test_deterministic_from_seed(tmp_path, phantom):
    again = make_phantom_slide(tmp_path / "p3.svs", width=W, height=H, seed=3)
    other = make_phantom_slide(tmp_path / "p4.svs", width=W, height=H, seed=4)
    assert [(r["label"], r["x"], r["y"]) for r in _rows(again.manifest)] == [
        (r["label"], r["x"], r["y"]) for r in _rows(phantom.manifest)
    ]
    with openslide.OpenSlide(str(phantom.path)) as a, openslide.OpenSlide(str(again.path)) as b, \
            openslide.OpenSlide(str(other.path)) as c:
        ra, rb, rc = (_rgb(s, 0, 0, 0, W, H) for s in (a, b, c))
    assert np.array_equal(ra, rb)
    assert np.abs(ra.astype(int) - rc).mean() > 5


@pytest.mark.parametrize("kwargs", [dict(width=512, height=384), dict(tile=100), dict(downsamples=(2, 4)),
                                    dict(downsamples=(1, 4, 4)), dict(jpeg_quality=0), dict(mpp=-1.0)])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError, match="bad.svs"):
        make_phantom_slide(tmp_path / "bad.svs", **{"width": W, "height": H, **kwargs})
