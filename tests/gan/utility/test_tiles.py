"""Labelled tile sets (gan.utility.tiles): the folder, CSV and whole-slide layouts, splits by slide (never by tile),
synthetic sets read through their manifest, and the timm classifier's local weights."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from data.errors import DataError
from gan.utility import (
    build_classifier,
    load_tiles,
    open_labelled_tiles,
    open_synthetic_tiles,
    split_by_slide,
    synthetic_manifest,
)
from tests.gan.utility.helpers import CHECKPOINT_SHA, write_synthetic, write_training


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training(tmp_path_factory.mktemp("tiles") / "train")


def test_folder_layout_gives_class_and_slide_per_tile(train_dir) -> None:
    tiles = open_labelled_tiles([train_dir], label="train")
    assert tiles.class_counts() == {"a": 60, "b": 60, "rare": 4} and tiles.slide_ids() == ["s1", "s2", "s3"]
    assert load_tiles(tiles.subset([0, 1]), size=8).shape == (2, 3, 8, 8)
    bad = train_dir.parent / "flat"
    bad.mkdir()
    (bad / "x.png").write_bytes((train_dir / "a" / "s1" / "a_000.png").read_bytes())
    with pytest.raises(DataError, match="<root>/<class>/<slide>/<tile>"):
        open_labelled_tiles([bad], label="train")


def test_csv_layout(train_dir, tmp_path) -> None:
    files = sorted(train_dir.rglob("*.png"))[:6]
    table = tmp_path / "tiles.csv"
    with table.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "slide"])
        w.writerows([str(f), f.parts[-3], f"slide{i % 2}"] for i, f in enumerate(files))
    tiles = open_labelled_tiles([table], label="train")
    assert len(tiles) == 6 and tiles.layout == "csv" and tiles.slide_ids() == ["slide0", "slide1"]
    table.write_text("file,class\nx.png,a\n")
    with pytest.raises(DataError, match="path,label,slide"):
        open_labelled_tiles([table], label="train")


def test_split_by_slide_never_splits_a_slide(train_dir) -> None:
    tiles = open_labelled_tiles([train_dir], label="train")
    with pytest.raises(ValueError, match="on one side only"):  # the rare class lives on s1 alone
        split_by_slide(tiles, heldout_fraction=0.3, seed=0)
    two = tiles.subset([i for i, c in enumerate(tiles.labels) if c != "rare"])
    train, held = split_by_slide(two, heldout_fraction=0.3, seed=0)
    assert not set(train.slides) & set(held.slides) and len(train) + len(held) == len(two)


def test_whole_slide_tiles_take_their_region_labels(tmp_path) -> None:
    from data.image_sets import TileScale
    from data.slides.phantom import make_phantom_slide

    slide = make_phantom_slide(tmp_path / "s0.svs", width=2048, height=1536, seed=0).path
    tiles = open_labelled_tiles([slide], label="train", scale=TileScale(tile_size=64, mpp=1.0))
    assert tiles.layout == "slides" and set(tiles.slides) == {"s0"} and len(tiles) > 0
    assert "other" not in tiles.classes() and tiles.load(0).shape == (3, 64, 64)


def test_synthetic_set_is_read_through_its_manifest(tmp_path) -> None:
    root = write_synthetic(tmp_path / "syn", blank=False, n=6)
    tiles = open_synthetic_tiles(root, default_class="x")
    assert len(tiles) == 6 and set(tiles.labels) == {"rare"}, "labels from the manifest; the audit picture skipped"
    man = synthetic_manifest(root)
    assert man["file"] == "manifest.json" and man["checkpoint_sha256"] == [CHECKPOINT_SHA]
    assert man["labels"] == {"rare": 6} and man["audit_passed"] is True
    (root / "tile_000003.png").unlink()
    with pytest.raises(DataError, match="tile listed in manifest.json does not exist"):
        open_synthetic_tiles(root, default_class="x")


def test_timm_classifier_takes_its_backbone_from_a_local_file(tmp_path, monkeypatch) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    src = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "backbone.pth"
    torch.save(src.state_dict(), path)  # 1000-class head: ignored, the classifier gets its own
    clf = build_classifier("timm:resnet10t", 3, seed=0, weights_path=path)
    assert torch.equal(clf.net.conv1[0].weight, src.conv1[0].weight) and clf.net.fc.out_features == 3
    assert clf(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 3) and "sha256" in clf.weights
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing.pth")):
        build_classifier("timm:resnet10t", 3, seed=0, weights_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="trained from scratch"):
        build_classifier("resnet18", 3, seed=0, weights_path=path)
