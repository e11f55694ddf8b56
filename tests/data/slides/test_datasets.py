"""Tile datasets: worker processes, epochs, pickling, tile folders, ``(index, epoch)`` keys and uint8 items."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from data.errors import SlideError
from data.slides import TileAugment, TileDataset, TileFolderDataset, uint8_to_unit
from tests.data.slides.common import TS, pixels


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


def test_magnification_xor_mpp(slides):
    with pytest.raises(ValueError, match="exactly one"):
        TileDataset([slides["s0"]])
    with pytest.raises(ValueError, match="exactly one"):
        TileDataset([slides["s0"]], magnification=40, mpp=0.25)


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
        np.testing.assert_array_equal(pixels(item), arr)
        assert np.isnan(item["mpp"]) and item["location"] == (0, 0)
    small = TileFolderDataset(tmp_path, tile_size=32, class_names=["b"])
    item = small[0]
    ref = np.asarray(Image.open(item["slide"]).convert("RGB").resize((32, 32), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(pixels(item), ref)
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


def test_index_epoch_keys_fix_the_augmentation(slides):
    ds = TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, transform=TileAugment(), seed=2)
    a, b = ds[(4, 3)], ds[(4, 7)]
    assert not torch.equal(a["image"], b["image"])  # a new epoch draws new augmentation
    ds.set_epoch(3)
    assert torch.equal(ds[4]["image"], a["image"])  # a plain index takes the dataset's epoch
    ds.set_epoch(0)
    assert torch.equal(ds[(4, 3)]["image"], a["image"]) and a["label"] == ds[4]["label"]
    keys = [[(i, 3) for i in range(4)], [(i, 7) for i in range(4, 8)]]
    loader = DataLoader(ds, batch_sampler=keys, num_workers=2, persistent_workers=True)
    for _ in range(2):  # workers see the epoch in every key, whatever the main process's epoch
        got = list(loader)
        for batch, ks in zip(got, keys):
            assert all(torch.equal(batch["image"][j], ds[k]["image"]) for j, k in enumerate(ks))
        ds.set_epoch(5)


def test_uint8_items_give_the_float_items(slides):
    plain = TileDataset([slides["s0"]], tile_size=TS, mpp=0.5)
    augmented = TileDataset([slides["s0"]], tile_size=TS, mpp=0.5, transform=TileAugment(), seed=9)
    raw = TileDataset([slides["s0"]], tile_size=TS, mpp=0.5, seed=9, uint8=True)
    keys = [(i, 2) for i in range(0, len(raw), max(1, len(raw) // 6))]
    items = [raw[k] for k in keys]
    assert all(it["image"].dtype == torch.uint8 and it["image"].shape == (3, TS, TS) for it in items)
    images = torch.stack([it["image"] for it in items])
    np.testing.assert_array_equal(uint8_to_unit(images).numpy(), torch.stack([plain[k]["image"] for k in keys]).numpy())
    seeds = torch.tensor([it["seed"] for it in items])
    assert seeds.tolist() == [augmented.item_seed(i, e) for i, e in keys]
    on_device = TileAugment().seeded(uint8_to_unit(images), seeds)
    assert torch.equal(on_device, torch.stack([augmented[k]["image"] for k in keys]))
    assert {k: v for k, v in items[0].items() if k not in ("image", "seed")} == \
        {k: v for k, v in plain[keys[0]].items() if k != "image"}
    with pytest.raises(ValueError, match="augment on the device"):
        TileDataset([slides["s0"]], tile_size=TS, mpp=0.5, transform=TileAugment(), uint8=True)


def test_tile_folder_takes_index_epoch_keys(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / "a" / f"{i}.png")
    ds = TileFolderDataset(tmp_path, transform=TileAugment(), seed=1)
    assert torch.equal(ds[(1, 0)]["image"], ds[1]["image"])
    ds.set_epoch(6)
    assert torch.equal(ds[(1, 6)]["image"], ds[1]["image"]) and ds[(2, 6)]["slide"].endswith("2.png")


def _assert_same_batch(got: dict, want: dict) -> None:
    """Two collated dict batches hold the same keys in the same order and equal values."""
    assert list(got) == list(want)
    for k in want:
        a, b = got[k], want[k]
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a.isnan(), b.isnan()), k  # NaN: a folder's unknown mpp
            assert torch.equal(a.nan_to_num(), b.nan_to_num()), k
        elif isinstance(b, list) and b and isinstance(b[0], torch.Tensor):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), k
        else:
            assert a == b, k


def test_batched_items_equal_single_items(slides, tmp_path, monkeypatch):
    """``__getitems__`` + ``collate`` gives ``default_collate`` of the single items, images written in place (as
    inside a DataLoader worker; in the main process the items stay plain)."""
    from torch.utils.data import default_collate

    from data.loading import Stacked, collate

    plain = TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, uint8=True).__getitems__([0, 1])
    assert not isinstance(plain, Stacked) and len(plain) == 2  # main process: nothing to send
    monkeypatch.setattr("data.slides.datasets.get_worker_info", lambda: object())  # as in a worker

    raw = TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, seed=3, uint8=True)
    augmented = TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, seed=3, transform=TileAugment())
    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.fromarray(np.full((24, 24, 3), 50 * i, np.uint8)).save(tmp_path / "a" / f"{i}.png")
    folder = TileFolderDataset(tmp_path, tile_size=16, transform=TileAugment(), seed=1)
    for ds, keys in ((raw, [(5, 1), 2, (0, 4)]), (augmented, [(1, 2), (7, 2), 3]), (folder, [(0, 1), 2, (1, 0)])):
        items = ds.__getitems__(keys)
        assert isinstance(items, Stacked)
        batch = collate(items)
        assert batch["image"].data_ptr() == items.stacked["image"].data_ptr()  # taken, not stacked again
        _assert_same_batch(batch, default_collate([ds[k] for k in keys]))
        _assert_same_batch(default_collate(items), batch)  # a caller's default DataLoader still works
    odd = TileDataset([slides["s0"]], tile_size=TS, mpp=0.25, transform=lambda x: x[:, :8])
    items = odd.__getitems__([0, 1])  # a caller's transform may change the shape: plain items
    assert not isinstance(items, Stacked) and collate(items)["image"].shape == (2, 3, 8, TS)
    unsized = TileFolderDataset(tmp_path)  # no tile_size: sizes may differ
    assert not isinstance(unsized.__getitems__([0, 1]), Stacked)


def test_batched_loaders_match_single_process(slides):
    """The datamodules' loaders (workers, ``__getitems__``, ``collate``) deliver the in-process items."""
    from torch.utils.data import default_collate

    from data.loading import eval_loader, train_loader

    ds = TileDataset([slides["s0"], slides["s2"]], tile_size=TS, mpp=0.25, seed=4, uint8=True)
    loader = train_loader(ds, batch_size=4, seed=2, num_workers=2, num_samples=12)
    keys = list(loader.batch_sampler)
    for batch, ks in zip(loader, keys, strict=True):
        _assert_same_batch(batch, default_collate([ds[k] for k in ks]))
    for world, rank in ((1, 0), (len(ds) + 1, len(ds))):  # the last: a rank with no item gets the padding batch
        batches = list(eval_loader(ds, batch_size=3, rank=rank, world_size=world, num_workers=2))
        if rank == 0:
            assert torch.cat([b["eval_index"] for b in batches]).tolist() == list(range(len(ds)))
            assert torch.equal(torch.cat([b["image"] for b in batches]), torch.stack([ds[i]["image"]
                                                                                      for i in range(len(ds))]))
        else:
            assert len(batches) == 1 and batches[0]["padding"].all() and batches[0]["eval_index"].tolist() == [0]
