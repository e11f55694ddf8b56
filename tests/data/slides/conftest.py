"""Phantom slides shared by the slide tests (written once per session)."""
from __future__ import annotations

import pytest

from data.slides import TileDataset, make_phantom_slide
from tests.data.slides.common import TS, H, W


@pytest.fixture(scope="session")
def slides(tmp_path_factory):
    """Four phantoms at 0.25 um/px (40x), one at 0.44 um/px labelled 20x, one without MPP (same pixels as s0)."""
    root = tmp_path_factory.mktemp("slides")
    out = {f"s{i}": make_phantom_slide(root / f"s{i}.svs", width=W, height=H, seed=i).path for i in range(4)}
    other = tmp_path_factory.mktemp("other")
    out["mpp044"] = make_phantom_slide(other / "mpp044.svs", width=W, height=H, seed=7, mpp=0.44, app_mag=20).path
    out["nompp"] = make_phantom_slide(other / "nompp.svs", width=W, height=H, seed=0, mpp=None, app_mag=None).path
    return out


@pytest.fixture(scope="session")
def ds40(slides):
    return TileDataset([slides["s0"]], tile_size=TS, mpp=0.25)
