"""data.loading: orders are pure functions of (seed, epoch); rank shards are per-step blocks of one global order;
evaluation shards are disjoint; a resumed loader continues exactly; weighted draws follow their weights."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import Dataset

from data.batches import is_padding
from data.loading import (
    EpochOrder,
    ResumableDataLoader,
    StepBatches,
    StridedBatches,
    eval_loader,
    per_rank_batch,
    rank_and_world,
    require_eval_items,
    require_own_sampler,
    split_item,
    train_loader,
)


class Keys(Dataset):
    """Item = (index, epoch) it was asked for, as a tensor (plain ints take the dataset's epoch)."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        i, e = split_item(item, self.epoch)
        return torch.tensor([i, e])


def _ids(batches) -> list[list[int]]:
    return [b[:, 0].tolist() for b in batches]


# ------------------------------------------------------------------------------------------ the global order


def test_order_is_a_pure_function_of_seed_and_epoch():
    a, b = EpochOrder(50, seed=3), EpochOrder(50, seed=3)
    b.set_epoch(4)
    b.set_epoch(0)
    assert list(a) == list(b) and [e for _, e in a] == [0] * 50
    first = a.order(0)
    np.testing.assert_array_equal(first, np.random.default_rng([3, 0]).permutation(50))  # the seeded rule, exactly
    assert sorted(first.tolist()) == list(range(50))
    assert not np.array_equal(a.order(1), first) and not np.array_equal(EpochOrder(50, seed=4).order(0), first)
    a.set_epoch(1)
    assert [i for i, _ in a] == a.order(1).tolist() and {e for _, e in a} == {1}
    np.testing.assert_array_equal(EpochOrder(7, shuffle=False).order(5), np.arange(7))


def test_num_samples_cycles_fresh_permutations_or_truncates():
    long = EpochOrder(10, num_samples=25, seed=1).order(2)
    assert len(long) == 25
    assert sorted(long[:10]) == sorted(long[10:20]) == list(range(10)) and not np.array_equal(long[:10], long[10:20])
    assert len(set(long[20:].tolist())) == 5
    short = EpochOrder(10, num_samples=4, seed=1).order(2)
    np.testing.assert_array_equal(short, np.random.default_rng([1, 2]).permutation(10)[:4])
    np.testing.assert_array_equal(EpochOrder(3, shuffle=False, num_samples=7).order(0), [0, 1, 2, 0, 1, 2, 0])


def test_weighted_draws_follow_the_weights():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 10.0])
    order = EpochOrder(6, weights=torch.tensor(weights), num_samples=2000, seed=0)
    draws = np.concatenate([order.order(e) for e in range(10)])
    counts = np.bincount(draws, minlength=6)
    assert counts[4] == 0  # weight 0: never drawn
    keep = weights > 0
    expected = weights[keep] / weights.sum() * len(draws)
    assert stats.chisquare(counts[keep], expected).pvalue > 1e-3
    np.testing.assert_array_equal(order.order(3), order.order(3))  # with replacement, still a function of the epoch
    with pytest.raises(ValueError, match="shuffle=True"):
        EpochOrder(6, weights=weights, shuffle=False)
    with pytest.raises(ValueError, match="shape"):
        EpochOrder(5, weights=weights)
    with pytest.raises(ValueError, match="non-negative"):
        EpochOrder(2, weights=[1.0, -1.0])


def test_set_epoch_reaches_the_dataset():
    ds = Keys(5)
    EpochOrder(5, dataset=ds).set_epoch(7)
    assert ds.epoch == 7


# ------------------------------------------------------------------------------------------ rank shards


def _steps(order: EpochOrder, *, b: int, world: int, drop_last: bool) -> list[list[list[int]]]:
    """steps[r][t]: the indices rank r gets at step t."""
    return [[[i for i, _ in batch] for batch in StepBatches(order, batch_size=b, rank=r, world_size=world,
                                                             drop_last=drop_last)] for r in range(world)]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("b", [1, 4])
def test_rank_steps_are_blocks_of_the_single_process_batches(world, b):
    order = EpochOrder(41, seed=5)
    order.set_epoch(2)
    global_order = order.order(2).tolist()
    B = world * b
    single = _steps(order, b=B, world=1, drop_last=True)[0]
    ranks = _steps(order, b=b, world=world, drop_last=True)
    assert len(single) == 41 // B and all(len(r) == len(single) for r in ranks)  # same steps on every rank
    for t, batch in enumerate(single):
        assert batch == global_order[t * B:(t + 1) * B]
        assert sum((ranks[r][t] for r in range(world)), []) == batch  # union of the ranks = the single batch
        for r in range(world):
            assert ranks[r][t] == global_order[t * B + r * b:t * B + (r + 1) * b]  # chunk r of it
    seen = [i for r in ranks for batch in r for i in batch]
    assert len(seen) == len(set(seen)) == (41 // B) * B  # disjoint; only the incomplete tail is dropped


def test_padding_completes_the_last_step_by_wrapping_around():
    order = EpochOrder(10, seed=0)
    g = order.order(0).tolist()
    ranks = _steps(order, b=3, world=2, drop_last=False)
    assert [len(r) for r in ranks] == [2, 2] and all(len(batch) == 3 for r in ranks for batch in r)
    assert ranks[0][1] + ranks[1][1] == g[6:10] + g[0:2]  # positions 10, 11 wrap to 0, 1
    assert sorted(i for r in ranks for batch in r for i in batch[:]) == sorted(g + g[:2])
    assert _steps(EpochOrder(3, seed=0), b=2, world=2, drop_last=False)[1] == [[EpochOrder(3, seed=0).order(0)[2],
                                                                              EpochOrder(3, seed=0).order(0)[0]]]
    with pytest.raises(ValueError, match="cannot fill one global batch of 8"):
        StepBatches(EpochOrder(5), batch_size=4, world_size=2)


def test_evaluation_shards_are_disjoint_and_unpadded():
    """Items r, r + w, ... per rank, none twice; only a rank left without any item gets a padding batch."""
    order = EpochOrder(11, shuffle=False)
    shares = [[i for batch in StridedBatches(order, batch_size=2, rank=r, world_size=3) for i, _ in batch]
              for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert [len(StridedBatches(order, batch_size=2, rank=r, world_size=3)) for r in range(3)] == [2, 2, 2]
    single = [i for batch in StridedBatches(order, batch_size=4) for i, _ in batch]
    assert single == list(range(11))
    loader = eval_loader(Keys(5), batch_size=2, rank=1, world_size=2)
    assert _ids(loader) == [[1, 3]]
    with pytest.raises(ValueError, match="rank must be in"):
        StridedBatches(order, batch_size=1, rank=3, world_size=3)


def test_a_rank_without_evaluation_items_gets_one_flagged_padding_batch():
    """2 items, 3 ranks: rank 2 still runs the evaluation epoch (its metric sync), on an item marked padding."""
    class Dicts(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, key):
            return {"x": torch.tensor(float(key[0]))}

    loaders = [eval_loader(Dicts(), batch_size=4, rank=r, world_size=3) for r in range(3)]
    batches = [list(loader) for loader in loaders]
    assert [len(b) for b in batches] == [1, 1, 1] and [len(loader) for loader in loaders] == [1, 1, 1]
    assert [is_padding(b[0]) for b in batches] == [False, False, True]
    assert batches[0][0]["x"].tolist() == [0.0] and batches[1][0]["x"].tolist() == [1.0]
    assert [b[0]["eval_index"].tolist() for b in batches] == [[0], [1], [0]]  # the position in the split
    assert not is_padding({"x": 1}) and is_padding({"padding": torch.tensor([True])})


def test_the_global_batch_is_shared_by_the_ranks():
    assert per_rank_batch(8, 2, "M") == 4 and per_rank_batch(3, 1, "M") == 3
    with pytest.raises(ValueError, match="M: batch_size is the GLOBAL batch.*multiple of the 2 ranks, got 3 "
                                         r"\(use 4"):
        per_rank_batch(3, 2, "M")


# ------------------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world", [1, 2])
def test_resume_mid_epoch_continues_exactly(workers, world):
    def loader(rank: int, progress=None) -> ResumableDataLoader:
        return train_loader(Keys(37), batch_size=3, seed=11, rank=rank, world_size=world, progress=progress,
                            num_workers=workers)

    for rank in range(world):
        full = loader(rank)
        full.batches.sampler.set_epoch(1)
        ref = _ids(full)
        cut = loader(rank)
        cut.batches.sampler.set_epoch(1)
        it = iter(cut)
        head = _ids([next(it) for _ in range(4)])
        state = cut.state_dict()
        assert state == {"epoch": 1, "samples": 4 * 3 * world}  # global positions consumed
        del it
        resumed = loader(rank)
        resumed.load_state_dict(state)
        resumed.batches.sampler.set_epoch(1)  # Lightning sets the epoch again at the epoch start
        tail = _ids(resumed)
        assert head + tail == ref
        assert len(resumed) == len(full)  # the loader's length stays the epoch's (the loop counts the skipped ones)
        resumed.batches.sampler.set_epoch(2)
        nxt = loader(rank)
        nxt.batches.sampler.set_epoch(2)
        assert _ids(resumed) == _ids(nxt)  # the skip applied to its epoch only


def test_progress_callback_is_what_a_checkpoint_records():
    ld = train_loader(Keys(20), batch_size=2, seed=0, world_size=2, rank=1, progress=lambda: (3, 5))
    ld.batches.sampler.set_epoch(3)
    assert ld.state_dict() == {"epoch": 3, "samples": 20}
    stopped = train_loader(Keys(20), batch_size=2, seed=0, progress=lambda: (4, 1))
    stopped.batches.sampler.set_epoch(3)
    next(iter(stopped))
    # a loop stopped by max_steps counts epoch 3 as finished (4), but the data of epoch 3 is served: 1 batch of it
    assert stopped.state_dict() == {"epoch": 3, "samples": 2}
    stopped.load_state_dict({"epoch": 3, "samples": 2})
    assert stopped.state_dict() == {"epoch": 3, "samples": 2}  # a resume not started yet is reported as loaded
    stale = train_loader(Keys(20), batch_size=2, seed=0)
    stale.load_state_dict({"epoch": 4, "samples": 6})  # resume state of epoch 4 ...
    stale.batches.sampler.set_epoch(5)  # ... but the loop moved on: epoch 5 starts from its beginning
    fresh = train_loader(Keys(20), batch_size=2, seed=0)
    fresh.batches.sampler.set_epoch(5)
    assert _ids(stale) == _ids(fresh)


# ------------------------------------------------------------------------------------------ DDP context


def test_trainer_context_and_refusals():
    assert rank_and_world(None) == (0, 1)
    trainer = SimpleNamespace(global_rank=1, world_size=4,
                              _accelerator_connector=SimpleNamespace(use_distributed_sampler=True))
    assert rank_and_world(trainer) == (1, 4)
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        require_own_sampler(trainer, "VolumeTranslationDataModule")
    trainer._accelerator_connector.use_distributed_sampler = False
    require_own_sampler(trainer, "X")
    require_own_sampler(SimpleNamespace(global_rank=0, world_size=1,
                                        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True)), "X")
    with pytest.raises(ValueError, match="no validation patients to share by 4 ranks"):
        require_eval_items(0, 4, "validation patients")
    require_eval_items(3, 4, "validation patients")  # padded, see StridedBatches
