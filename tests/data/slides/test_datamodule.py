"""TileDataModule: split by slide, class-balanced sampling, rank shards, CLI arguments, Lightning training."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from data.errors import SlideError
from data.slides import TileDataModule, split_slides
from tests.data.slides.common import TS


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
        keys = list(sampler)
        assert {e for _, e in keys} == {epoch}  # (index, epoch) keys: the epoch travels with every index
        draws.extend(i for i, _ in keys)
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

    def order() -> list[int]:
        return [i for i, _ in s]

    first = order()
    assert sorted(first) == list(range(len(dm.datasets["train"])))
    s.set_epoch(1)
    assert sorted(order()) == sorted(first) and order() != first
    s.set_epoch(0)
    assert order() == first
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1


def _fake_trainer(rank: int, world: int, *, distributed_sampler: bool = False) -> SimpleNamespace:
    conn = SimpleNamespace(use_distributed_sampler=distributed_sampler)
    return SimpleNamespace(global_rank=rank, world_size=world, _accelerator_connector=conn, training=True)


def _tile_ids(batches) -> list[list[tuple[str, int, int]]]:
    return [[(s, int(x), int(y)) for s, x, y in zip(b["slide"], *b["location"])] for b in batches]


def test_datamodule_shards_training_tiles_per_step(slides):
    """batch_size is the GLOBAL batch B: rank r of 2 gets positions [t*B + r*b, t*B + (r+1)*b) of the one global
    order (b = B / 2): disjoint, equal length, and together exactly the single-process batches of B."""
    paths = [str(slides[f"s{i}"]) for i in range(4)]
    kw = dict(slides=paths, tile_size=TS, mpp=0.25, val_fraction=0.0, augment=False, batch_size=6, seed=4)
    single = TileDataModule(**{**kw, "batch_size": 6})
    single.setup("fit")
    ref = _tile_ids(single.train_dataloader())
    per_rank = []
    for rank in (0, 1):
        dm = TileDataModule(**kw)
        dm.trainer = _fake_trainer(rank, 2)
        dm.setup("fit")
        loader = dm.train_dataloader()
        per_rank.append(_tile_ids(loader))
        assert len(loader) == len(ref) == len(dm.datasets["train"]) // 6  # the incomplete global batch is dropped
        dm.trainer = _fake_trainer(rank, 2, distributed_sampler=True)
        with pytest.raises(ValueError, match="use_distributed_sampler=False"):
            dm.train_dataloader()
        assert dm.val_dataloader() == []  # no validation slides: Lightning skips validation
    odd = TileDataModule(**{**kw, "batch_size": 5})
    odd.trainer = _fake_trainer(0, 2)
    with pytest.raises(ValueError, match="GLOBAL batch and must be a multiple of the 2 ranks, got 5"):
        odd.train_dataloader()
    assert len(per_rank[0]) == len(per_rank[1]) == len(ref)  # ranks stay in step
    for t, batch in enumerate(ref):
        assert per_rank[0][t] == batch[:3] and per_rank[1][t] == batch[3:]  # chunk r of the global batch
    seen = [tile for r in per_rank for b in r for tile in b]
    assert len(seen) == len(set(seen))  # a permutation: no tile twice in an epoch, over both ranks
    assert {s for s, _, _ in seen} == {str(p) for p in paths}


def test_datamodule_shares_validation_tiles_between_ranks(slides):
    paths = [str(slides[f"s{i}"]) for i in range(3)]
    kw = dict(slides=paths, tile_size=TS, mpp=0.5, val_fraction=0.34, augment=False, batch_size=4)
    single = TileDataModule(**kw)
    ref = [tile for b in _tile_ids(single.val_dataloader()) for tile in b]
    shares = []
    for rank in (0, 1):
        dm = TileDataModule(**kw)
        dm.trainer = _fake_trainer(rank, 2)
        shares.append([tile for b in _tile_ids(dm.val_dataloader()) for tile in b])
    assert shares[0] == ref[0::2] and shares[1] == ref[1::2]  # r, r + world, ...: no duplicates, no padding


def test_uint8_transfer_gives_the_float_batches(slides):
    """Workers move uint8 tiles; normalising and augmenting them after the transfer gives the float path's values."""
    kw = dict(slides=[str(slides["s0"]), str(slides["s1"])], tile_size=TS, mpp=0.5, val_fraction=0.5,
              batch_size=5, augment=True, seed=3)
    plain = TileDataModule(**kw)
    small = TileDataModule(**kw, uint8_transfer=True)
    for dm in (plain, small):
        dm.trainer = _fake_trainer(0, 1)
    train_a, train_b = next(iter(plain.train_dataloader())), next(iter(small.train_dataloader()))
    assert train_b["image"].dtype == torch.uint8 and train_a["image"].dtype == torch.float32  # 4x fewer bytes moved
    got = small.on_after_batch_transfer(train_b, 0)  # what Lightning calls on the device
    assert got["image"].dtype == torch.float32 and torch.equal(got["image"], train_a["image"])
    small.trainer.training = False  # validation tiles are only normalised
    val_a = next(iter(plain.val_dataloader()))
    val_b = small.on_after_batch_transfer(next(iter(small.val_dataloader())), 0)
    assert torch.equal(val_a["image"], val_b["image"])
    assert plain.on_after_batch_transfer(train_a, 0) is train_a  # the float path leaves batches alone
    assert torch.equal(small.finish_batch(train_b, augment=True)["image"], train_a["image"])


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
