"""Tile labels against the region CSV read with the csv module; class selection; bad manifests."""
from __future__ import annotations

import numpy as np
import pytest

from data.errors import SlideError
from data.slides import OTHER, TileDataset, discover_classes, read_regions, regions_for_slides
from tests.data.slides.common import TS, overlap, regions


def test_labels_follow_region_manifest(slides, ds40):
    boxes = regions(slides["s0"])
    names = ds40.class_names
    assert names == ("lymphocytes", "necrosis", "stroma", "tumor", OTHER)
    for i in range(len(ds40)):
        item = ds40[i] if i % 7 == 0 else None
        t = ds40.tiles[i]
        label = names[int(ds40.labels[i])]
        cover = {lab: sum(overlap(t.x, t.y, TS, b) for b in boxes if b[0] == lab) for lab in names[:-1]}
        if label == OTHER:
            assert 1.0 - sum(cover.values()) >= 0.5
        else:
            assert cover[label] >= 0.5
        if item is not None:
            assert item["label"] == int(ds40.labels[i])
    counts = ds40.class_counts()
    assert list(counts) == list(names) and sum(counts.values()) == len(ds40)
    assert all(counts[c] > 0 for c in names)
    assert counts["necrosis"] < min(counts[c] for c in ("tumor", "lymphocytes", "stroma"))  # the rare class
    w = ds40.sample_weights().numpy()
    labels = ds40.labels
    per_class = np.array([w[labels == k].sum() for k in range(len(names))])
    np.testing.assert_allclose(per_class, 1.0)  # inverse frequency: every class carries equal mass
    assert np.all(ds40.sample_weights(power=0.0).numpy() == 1.0)


def test_class_names_select_and_order(slides):
    ds = TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, class_names=["tumor", "necrosis"])
    assert ds.class_names == ("tumor", "necrosis")
    boxes = regions(slides["s0"])
    for t, k in zip(ds.tiles, ds.labels):
        lab = ("tumor", "necrosis")[k]
        assert sum(overlap(t.x, t.y, TS, b) for b in boxes if b[0] == lab) >= 0.5


def test_region_manifests_explicit_and_bad(tmp_path, slides):
    s0, s1 = slides["s0"], slides["s1"]
    shared = tmp_path / "all.csv"
    shared.write_text("slide,label,x,y,width,height\ns0.svs,tumor,0,0,10,20\ns1,stroma,5,5,10,10\nzz.svs,tumor,1,1,1,1\n")
    per = regions_for_slides([s0, s1], shared)
    assert [(r.label, r.x, r.height) for r in per[s0]] == [("tumor", 0, 20)]
    assert [(r.label, r.y, r.width) for r in per[s1]] == [("stroma", 5, 10)]
    assert discover_classes([s0, s1], shared) == ["stroma", "tumor", OTHER]
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label,x,y,width\ns0.svs,tumor,0,0,10\n")
    with pytest.raises(SlideError, match=r"bad\.csv.*lacks column.*height"):
        read_regions(bad)
    bad.write_text("slide,label,x,y,width,height\ns0.svs,tumor,0,zero,10,10\n")
    with pytest.raises(SlideError, match=r"bad\.csv: row 2"):
        read_regions(bad)


def test_empty_requested_class(slides):
    with pytest.raises(SlideError, match=r"'mitosis'.*s0\.svs"):
        TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, class_names=["tumor", "mitosis"])
    # necrosis regions (<= 416 px) never cover half of a 1024-px tile at 10x
    with pytest.raises(SlideError, match=r"'necrosis'.*s0\.svs"):
        TileDataset([slides["s0"]], tile_size=256, mpp=1.0, min_tissue=0.2, class_names=["necrosis"])
