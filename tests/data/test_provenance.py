"""Provenance files: PNG via PIL with a sidecar manifest, JSON manifests."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data.errors import DataError
from data.provenance import write_manifest, write_png
from tests.data.common import check_manifest as _check_manifest


@pytest.mark.parametrize("shape", [(12, 9), (12, 9, 3)])
def test_write_png_round_trip(tmp_path, shape):
    image = np.random.default_rng(4).integers(0, 256, size=shape, dtype=np.uint8)
    out = write_png(image, tmp_path / "tile.png", provenance={"source": "slide.svs", "seed": 1})
    np.testing.assert_array_equal(np.asarray(Image.open(out)), image)
    info = json.loads((tmp_path / "tile.json").read_text())
    _check_manifest(info, source="slide.svs", provenance={"source": "slide.svs", "seed": 1})


def test_write_png_rejects_bad_images(tmp_path):
    with pytest.raises(DataError, match="uint8") as ei:
        write_png(np.zeros((4, 4), np.float32), tmp_path / "a.png")
    assert "a.png" in str(ei.value)
    with pytest.raises(DataError, match="shape"):
        write_png(np.zeros((4, 4, 4), np.uint8), tmp_path / "b.png")


def test_write_manifest(tmp_path):
    out = write_manifest(tmp_path / "m.json", {"source": "x", "provenance": {"n": np.int64(3)}, "arr": np.arange(2)})
    info = json.loads(out.read_text())
    _check_manifest(info, source="x", provenance={"n": 3})
    assert info["arr"] == [0, 1]
    with pytest.raises(DataError, match="JSON") as ei:
        write_manifest(tmp_path / "bad.json", {"x": object()})
    assert "bad.json" in str(ei.value)
    assert not (tmp_path / "bad.json").exists()
