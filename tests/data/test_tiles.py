"""Slide tiles, tissue masks, tile datasets, tile augmentation and the tile datamodule.

Every pixel is checked against OpenSlide's ``read_region`` (plus a PIL resize where the scale needs one),
masks against scikit-image, labels against the region CSV read with the csv module, stain jitter against
scikit-image's HED conversion.
"""
from __future__ import annotations

import csv
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import openslide
import pytest
import tifffile
import torch
from PIL import Image
from skimage.color import hed2rgb, rgb2hed, rgb2hsv
from skimage.filters import threshold_otsu
from torch.utils.data import DataLoader, Subset

from data.errors import SlideError
from data.slide_phantom import make_phantom_slide
from data.tile_datamodule import TileDataModule, split_slides
from data.tile_transforms import TileAugment, hed_to_rgb, rgb_to_hed, stain_jitter
from data.tiles import (
    OTHER,
    TileDataset,
    TileFolderDataset,
    open_slide,
    discover_classes,
    otsu_threshold,
    read_regions,
    regions_for_slides,
    slide_info,
    tile_grid,
    tissue_mask,
)

W, H = 2048, 1536
TS = 128  # tile size used in these tests (keeps slides small but tiles plentiful)


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


def _pixels(item) -> np.ndarray:
    """Item image back to uint8 HxWx3."""
    return torch.round((item["image"] + 1.0) * 127.5).to(torch.uint8).permute(1, 2, 0).numpy()


def _read(path, loc, level, size) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as s:
        return np.asarray(s.read_region(loc, level, (size, size)).convert("RGB"))


def _regions(path) -> list[tuple[str, int, int, int, int]]:
    with open(Path(path).with_name(Path(path).stem + ".regions.csv"), newline="") as f:
        return [(r["label"], int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"])) for r in csv.DictReader(f)]


def _overlap(x, y, size, box) -> float:
    _, bx, by, bw, bh = box
    ox = max(0, min(x + size, bx + bw) - max(x, bx))
    oy = max(0, min(y + size, by + bh) - max(y, by))
    return ox * oy / size**2


# ------------------------------------------------------------------------------------------ scale and pixels


def test_slide_info_scale_from_mpp(slides):
    info = slide_info(slides["mpp044"])
    with openslide.OpenSlide(str(slides["mpp044"])) as s:
        assert info.mpp == float(s.properties["openslide.mpp-x"]) == 0.44
        assert info.objective_power == 20
        assert info.level_downsamples == tuple(s.level_downsamples)
        assert info.level_dimensions == tuple(s.level_dimensions)
    assert info.vendor == "aperio" and info.mpp_source == "metadata"
    assert info.magnification == pytest.approx(10 / 0.44)


def test_tiles_at_40x_equal_level0_read_region(slides, ds40):
    assert len(ds40) > 40
    for i in np.linspace(0, len(ds40) - 1, 12).astype(int):
        item = ds40[int(i)]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, TS, TS)
        assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert (item["mpp"], item["level"], item["downsample"], item["resize_filter"]) == (0.25, 0, 1.0, "none")
        assert item["slide"] == str(slides["s0"])
        np.testing.assert_array_equal(_pixels(item), _read(slides["s0"], item["location"], 0, TS))


def test_tiles_at_10x_equal_level1_read_region(slides):
    ds = TileDataset([slides["s0"]], tile_size=TS, magnification=10, min_tissue=0.3)
    assert len(ds) >= 3
    for i in range(len(ds)):
        item = ds[i]
        x, y = item["location"]
        assert x % (4 * TS) == 0 and y % (4 * TS) == 0  # a tile covers 4*TS level-0 pixels
        assert (item["mpp"], item["level"], item["downsample"], item["resize_filter"]) == (1.0, 1, 4.0, "none")
        np.testing.assert_array_equal(_pixels(item), _read(slides["s0"], (x, y), 1, TS))


def test_tiles_between_levels_are_lanczos_resized(slides):
    ds = TileDataset([slides["s0"]], tile_size=TS, mpp=0.5)
    assert len(ds) >= 10
    for i in np.linspace(0, len(ds) - 1, 6).astype(int):
        item = ds[int(i)]
        assert (item["mpp"], item["level"], item["downsample"], item["resize_filter"]) == (0.5, 0, 1.0, "lanczos")
        with openslide.OpenSlide(str(slides["s0"])) as s:
            region = s.read_region(item["location"], 0, (2 * TS, 2 * TS)).convert("RGB")
        ref = np.asarray(region.resize((TS, TS), Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(_pixels(item), ref)


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
        np.testing.assert_array_equal(_pixels(item), np.asarray(region.resize((TS, TS), Image.Resampling.LANCZOS)))


# ------------------------------------------------------------------------------------------ tissue and labels


def test_tissue_mask_against_skimage_and_regions(slides):
    path = slides["s1"]
    m = tissue_mask(path)
    with openslide.OpenSlide(str(path)) as s:
        view = np.asarray(s.read_region((0, 0), 0, (W, H)).convert("RGB"))  # the 2048-px level is the mask's view
    sat = rgb2hsv(view)[..., 1]
    t = threshold_otsu(sat)
    assert m.threshold == pytest.approx(max(t, 0.05), abs=(sat.max() - sat.min()) / 256)
    ref = sat > t
    assert m.mask.shape == ref.shape and (m.mask == ref).mean() > 0.98
    for _, x, y, w, h in _regions(path):  # every annotated region is tissue
        assert m.mask[y:y + h, x:x + w].mean() > 0.95
    border = np.concatenate([m.mask[:40].ravel(), m.mask[-40:].ravel(), m.mask[:, :40].ravel(), m.mask[:, -40:].ravel()])
    assert border.mean() < 0.01  # glass margin excluded
    assert 0.25 < m.mask.mean() < 0.8
    # Optical-density method: Otsu on log(OD), same checks against the regions and the glass.
    log_od = np.log((-np.log10((view.astype(np.float64) + 1) / 256)).mean(-1) + 1e-3)
    m_od = tissue_mask(path, method="od")
    t_od = max(np.exp(threshold_otsu(log_od)) - 1e-3, 0.04)
    assert np.log(m_od.threshold + 1e-3) == pytest.approx(np.log(t_od + 1e-3), abs=(log_od.max() - log_od.min()) / 256)
    for _, x, y, w, h in _regions(path):
        assert m_od.mask[y:y + h, x:x + w].mean() > 0.95
    assert np.concatenate([m_od.mask[:40].ravel(), m_od.mask[:, :40].ravel()]).mean() < 0.01
    assert (m_od.mask == m.mask).mean() > 0.85


def test_otsu_matches_skimage():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.1, 0.03, 5000), rng.normal(0.5, 0.1, 3000)])
    assert otsu_threshold(v) == pytest.approx(threshold_otsu(v), abs=(v.max() - v.min()) / 256)


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
        missed = [t for t in everything if (t.x, t.y) not in kept and ref[t.y:t.y + TS, t.x:t.x + TS].mean() > thr + 0.05]
        assert not missed
    assert sizes[0.8] < sizes[0.2] < len(everything)


def test_labels_follow_region_manifest(slides, ds40):
    boxes = _regions(slides["s0"])
    names = ds40.class_names
    assert names == ("lymphocytes", "necrosis", "stroma", "tumor", OTHER)
    for i in range(len(ds40)):
        item = ds40[i] if i % 7 == 0 else None
        t = ds40.tiles[i]
        label = names[int(ds40.labels[i])]
        cover = {lab: sum(_overlap(t.x, t.y, TS, b) for b in boxes if b[0] == lab) for lab in names[:-1]}
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
    boxes = _regions(slides["s0"])
    for t, k in zip(ds.tiles, ds.labels):
        lab = ("tumor", "necrosis")[k]
        assert sum(_overlap(t.x, t.y, TS, b) for b in boxes if b[0] == lab) >= 0.5


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


# ------------------------------------------------------------------------------------------ loading


def test_dataloader_workers_match_single_process(slides):
    ds = TileDataset([slides["s0"], slides["s2"]], tile_size=TS, mpp=0.25, transform=TileAugment(), seed=5)
    idx = list(range(0, len(ds), max(1, len(ds) // 12)))[:12]
    loader = DataLoader(Subset(ds, idx), batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    images = torch.cat([b["image"] for b in batches])
    labels = torch.cat([b["label"] for b in batches])
    xs = torch.cat([b["location"][0] for b in batches])
    for j, i in enumerate(idx):
        ref = ds[i]
        assert torch.equal(images[j], ref["image"])
        assert labels[j].item() == ref["label"] and xs[j].item() == ref["location"][0]
    plain = TileDataset([slides["s0"], slides["s2"]], tile_size=TS, mpp=0.25)
    assert not torch.equal(plain[idx[1]]["image"], ds[idx[1]]["image"])  # the augmentation did something


def test_epoch_reaches_persistent_workers(slides):
    ds = TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, transform=TileAugment(), seed=1)
    idx = list(range(6))
    loader = DataLoader(Subset(ds, idx), batch_size=6, num_workers=1, persistent_workers=True)
    epoch0 = next(iter(loader))["image"]
    ds.set_epoch(1)  # in the main process, after the worker started
    epoch1 = next(iter(loader))["image"]
    assert not torch.equal(epoch0, epoch1)
    assert all(torch.equal(epoch1[j], ds[i]["image"]) for j, i in enumerate(idx))
    ds.set_epoch(0)
    assert all(torch.equal(epoch0[j], ds[i]["image"]) for j, i in enumerate(idx))


def test_pickle_drops_handles(ds40):
    first = ds40[0]
    clone = pickle.loads(pickle.dumps(ds40))
    assert len(clone._handles) == 0 and len(ds40._handles) == 1
    assert torch.equal(clone[0]["image"], first["image"])


def test_shard_by_slide(slides):
    ds = TileDataset([slides[f"s{i}"] for i in range(4)], tile_size=TS, mpp=0.25)
    parts = [ds.shard(r, 2) for r in range(2)]
    assert set(parts[0].slides).isdisjoint(parts[1].slides)
    assert set(parts[0].slides) | set(parts[1].slides) == set(ds.slides)
    assert len(parts[0]) + len(parts[1]) == len(ds)
    for p in parts:
        assert {t.slide for t in p.tiles} == {str(s) for s in p.slides}
        assert p.class_names == ds.class_names
    with pytest.raises(ValueError, match="cannot shard 4 slide\\(s\\) with tiles over 5"):
        ds.shard(0, 5)


# ------------------------------------------------------------------------------------------ bad input


def test_non_pyramidal_tiff(tmp_path):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.full((512, 512, 3), 200, np.uint8), photometric="rgb")
    with pytest.raises(SlideError, match=r"plain\.tif.*not pyramidal"):
        open_slide(plain)
    big = tmp_path / "flat.tif"
    tifffile.imwrite(big, np.full((256, 4608, 3), 200, np.uint8), photometric="rgb", tile=(256, 256))
    with pytest.raises(SlideError, match=r"flat\.tif.*single level of 4608x256"):
        TileDataset([big], mpp=0.25)


def test_slide_without_mpp_needs_override(slides, ds40):
    with pytest.raises(SlideError, match=r"nompp\.svs.*mpp_override"):
        TileDataset([slides["nompp"]], tile_size=TS, mpp=0.25)
    ds = TileDataset([slides["nompp"]], tile_size=TS, mpp=0.25, mpp_override={"nompp.svs": 0.25})
    assert ds.infos[str(slides["nompp"])].mpp_source == "override"
    assert [(t.x, t.y) for t in ds.tiles] == [(t.x, t.y) for t in ds40.tiles]  # same seed as s0: same pixels
    np.testing.assert_array_equal(_pixels(ds[3]), _read(slides["nompp"], ds[3]["location"], 0, TS))


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


def test_magnification_above_scan(slides):
    with pytest.raises(SlideError, match=r"mpp044\.svs.*finer than the scan"):
        TileDataset([slides["mpp044"]], tile_size=TS, magnification=40)


def test_empty_requested_class(slides):
    with pytest.raises(SlideError, match=r"'mitosis'.*s0\.svs"):
        TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, class_names=["tumor", "mitosis"])
    # necrosis regions (<= 416 px) never cover half of a 1024-px tile at 10x
    with pytest.raises(SlideError, match=r"'necrosis'.*s0\.svs"):
        TileDataset([slides["s0"]], tile_size=256, mpp=1.0, min_tissue=0.2, class_names=["necrosis"])


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(SlideError, match=r"nope\.svs.*not found"):
        TileDataset([tmp_path / "nope.svs"], mpp=0.25)
    junk = tmp_path / "junk.svs"
    junk.write_text("not a slide")
    with pytest.raises(SlideError, match=r"junk\.svs.*not a whole-slide image"):
        open_slide(junk)


def test_magnification_xor_mpp(slides):
    with pytest.raises(ValueError, match="exactly one"):
        TileDataset([slides["s0"]])
    with pytest.raises(ValueError, match="exactly one"):
        TileDataset([slides["s0"]], magnification=40, mpp=0.25)


# ------------------------------------------------------------------------------------------ tile folders


def test_tile_folder_dataset(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for cls, n in (("a", 2), ("b", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            arr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            f = tmp_path / cls / f"t{i}.png"
            Image.fromarray(arr).save(f)
            arrays[str(f)] = (cls, arr)
    ds = TileFolderDataset(tmp_path)
    assert ds.class_names == ("a", "b") and len(ds) == 5 and ds.class_counts() == {"a": 2, "b": 3}
    for i in range(len(ds)):
        item = ds[i]
        cls, arr = arrays[item["slide"]]
        assert ds.class_names[item["label"]] == cls
        np.testing.assert_array_equal(_pixels(item), arr)
        assert np.isnan(item["mpp"]) and item["location"] == (0, 0)
    small = TileFolderDataset(tmp_path, tile_size=32, class_names=["b"])
    item = small[0]
    ref = np.asarray(Image.open(item["slide"]).convert("RGB").resize((32, 32), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(_pixels(item), ref)
    assert item["resize_filter"] == "lanczos" and item["label"] == 0
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["image"].shape == (5, 3, 64, 64)


def test_tile_folder_errors(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlideError, match=r"empty.*holds no images"):
        TileFolderDataset(tmp_path)
    (tmp_path / "empty" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SlideError, match=r"bad\.png.*not a readable image"):
        TileFolderDataset(tmp_path)


# ------------------------------------------------------------------------------------------ augmentation


def test_stain_conversion_matches_skimage():
    rng = np.random.default_rng(0)
    stains = rng.uniform(0.0, 0.08, (16, 16, 3))  # skimage units; non-negative so rgb2hed recovers them exactly
    rgb = hed2rgb(stains)
    x = torch.from_numpy(rgb.transpose(2, 0, 1) * 2.0 - 1.0)
    log_adjust = -np.log(1e-6)
    mine = rgb_to_hed(x).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(mine / log_adjust, rgb2hed(rgb), atol=1e-9)
    back = hed_to_rgb(torch.from_numpy(stains.transpose(2, 0, 1) * log_adjust)).numpy().transpose(1, 2, 0)
    np.testing.assert_allclose((back + 1) / 2, rgb, atol=1e-9)
    alpha, beta = np.array([1.04, 0.97, 1.01]), np.array([0.02, -0.015, 0.005])
    jit = stain_jitter(x, torch.from_numpy(alpha), torch.from_numpy(beta)).numpy().transpose(1, 2, 0)
    ref = hed2rgb(rgb2hed(rgb) * alpha + beta / log_adjust)
    np.testing.assert_allclose((jit + 1) / 2, ref, atol=1e-9)
    ident = stain_jitter(x.float(), torch.ones(3), torch.zeros(3))
    assert torch.allclose(ident, x.float(), atol=1e-5)


def test_tile_augment_geometry_and_seeding():
    x = torch.rand(3, 8, 8) * 2 - 1
    aug = TileAugment(stain_sigma=0.0, stain_bias=0.0)
    arr = x.numpy()
    dihedral = [np.rot90(a, k, axes=(1, 2)) for a in (arr, arr[:, :, ::-1]) for k in range(4)]
    seen = set()
    for seed in range(64):
        y = aug(x, generator=torch.Generator().manual_seed(seed)).numpy()
        match = [k for k, d in enumerate(dihedral) if np.array_equal(y, d)]
        assert match
        seen.add(match[0])
        again = aug(x, generator=torch.Generator().manual_seed(seed)).numpy()
        assert np.array_equal(y, again)
    assert seen == set(range(8))
    rect = torch.rand(3, 4, 8)
    for seed in range(16):
        assert aug(rect, generator=torch.Generator().manual_seed(seed)).shape == (3, 4, 8)
    jittered = TileAugment(flips=False, rot90=False)(x, generator=torch.Generator().manual_seed(0))
    assert jittered.shape == x.shape and not torch.equal(jittered, x) and (jittered - x).abs().max() < 0.5


# ------------------------------------------------------------------------------------------ datamodule


def test_split_by_slide(slides):
    paths = [slides[f"s{i}"] for i in range(4)]
    sp = split_slides(paths, val_fraction=0.25, test_fraction=0.25, seed=0)
    assert [len(sp[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    assert sorted(sum(sp.values(), [])) == sorted(paths)
    assert sp == split_slides(list(reversed(paths)), val_fraction=0.25, test_fraction=0.25, seed=0)
    with pytest.raises(SlideError, match="4 slide"):
        split_slides(paths, val_fraction=0.5, test_fraction=0.5, seed=0)


def test_datamodule_splits_and_balanced_sampler(slides):
    folder = slides["s0"].parent
    dm = TileDataModule(slides=str(folder), tile_size=TS, mpp=0.25, val_fraction=0.25, test_fraction=0.25,
                        balanced=True, batch_size=8, seed=1)
    dm.setup("fit")
    dm.setup("test")
    train, val, test = (set(dm.datasets[k].slides) for k in ("train", "val", "test"))
    assert len(train) == 2 and len(val) == 1 and len(test) == 1
    assert train.isdisjoint(val) and train.isdisjoint(test) and val.isdisjoint(test)
    assert train | val | test == {slides[f"s{i}"] for i in range(4)}
    tiles = {k: {(t.slide, t.x, t.y) for t in dm.datasets[k].tiles} for k in ("train", "val", "test")}
    assert tiles["train"].isdisjoint(tiles["val"]) and tiles["train"].isdisjoint(tiles["test"])

    ds = dm.datasets["train"]
    k = len(ds.class_names)
    rare = ds.class_names.index("necrosis")
    natural = float(np.mean(ds.labels == rare))
    assert natural < 1.0 / k
    sampler = dm.train_sampler()
    draws = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        draws.extend(sampler)
    freq = np.bincount(ds.labels[np.array(draws)], minlength=k) / len(draws)
    n = len(draws)
    tol = 4 * np.sqrt((1 / k) * (1 - 1 / k) / n)  # 4 binomial standard deviations around 1/k
    np.testing.assert_allclose(freq, 1.0 / k, atol=tol)
    assert freq[rare] > natural + 4 * np.sqrt(natural * (1 - natural) / n)

    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, TS, TS) and batch["image"].dtype == torch.float32
    assert len(dm.val_dataloader().dataset) == len(dm.datasets["val"])


def test_datamodule_unbalanced_sampler_is_a_permutation(slides):
    dm = TileDataModule(slides=[str(slides[f"s{i}"]) for i in range(3)], tile_size=TS, mpp=0.25, val_fraction=0.34,
                        augment=False, seed=0, num_workers=1)
    dm.setup("fit")
    s = dm.train_sampler()
    first = list(s)
    assert sorted(first) == list(range(len(dm.datasets["train"])))
    s.set_epoch(1)
    assert sorted(list(s)) == sorted(first) and list(s) != first
    s.set_epoch(0)
    assert list(s) == first
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1


def test_datamodule_shards_training_slides_per_rank(slides):
    paths = [str(slides[f"s{i}"]) for i in range(4)]
    seen, sizes, draws = [], [], []
    for rank in (0, 1):
        dm = TileDataModule(slides=paths, tile_size=TS, mpp=0.25, val_fraction=0.0, augment=False)
        conn = SimpleNamespace(use_distributed_sampler=False)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, _accelerator_connector=conn)
        dm.setup("fit")
        draws.append(len(dm.train_dataloader().sampler))
        seen.append(set(dm.datasets["train"].slides))
        sizes.append(len(dm.datasets["train"]))
        conn.use_distributed_sampler = True
        with pytest.raises(ValueError, match="use_distributed_sampler=False"):
            dm.train_dataloader()
        assert dm.val_dataloader() == []  # no validation slides: Lightning skips validation
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {Path(p) for p in paths}
    assert draws[0] == draws[1] == sum(sizes) // 2  # ranks stay in step though their shards differ


def test_datamodule_configurable_from_cli_arguments(slides):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(TileDataModule, "data")
    cfg = parser.parse_args(["--data.slides", str(slides["s0"].parent), "--data.mpp", "0.5", "--data.balanced", "true",
                             "--data.class_names", "[tumor, other]", "--data.mpp_override", "{a.svs: 0.25}"])
    assert cfg.data.mpp == 0.5 and cfg.data.balanced is True and cfg.data.class_names == ["tumor", "other"]
    assert cfg.data.mpp_override == {"a.svs": 0.25}
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, TileDataModule) and sum(len(v) for v in dm.splits.values()) == 4


def test_datamodule_trains_with_lightning(slides):
    import lightning as L

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[tuple[int, int]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, int(batch["image"].shape[0])))
            return (self.w - batch["image"].mean()) ** 2

        def validation_step(self, batch, batch_idx):
            assert batch["image"].shape[1:] == (3, TS, TS)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = TileDataModule(slides=[str(slides["s0"]), str(slides["s1"])], tile_size=TS, mpp=0.5, val_fraction=0.5,
                        batch_size=4, augment=True, balanced=True)
    model = Probe()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert [e for e, _ in model.seen] == [0, 0, 1, 1] and all(n == 4 for _, n in model.seen)
    assert int(dm.datasets["train"]._epoch) == 1  # Lightning's set_epoch reached the dataset through the sampler
