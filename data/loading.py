"""Deterministic, resumable data loading: every epoch's order is a pure function of (seed, epoch), and a run
resumed from a mid-epoch checkpoint continues with exactly the samples it had not seen yet.

The sampler yields ``(index, epoch)`` pairs, so datasets derive crops, partners and augmentation from the epoch
as well, also inside persistent DataLoader workers that never see attribute changes of the main process.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler


def split_item(item: int | tuple[int, int], default_epoch: int) -> tuple[int, int]:
    """``(index, epoch)`` from a dataset key that is an index or an ``(index, epoch)`` pair."""
    if isinstance(item, tuple):
        return int(item[0]), int(item[1])
    return int(item), default_epoch


class EpochSampler(Sampler):
    """Seeded permutation per epoch (or the identity), yielding ``(index, epoch)``; can skip its first samples.

    Args:
        length: dataset length.
        shuffle: permute (seeded by ``(seed, epoch)``) or keep the order.
        seed: base seed.
    """

    def __init__(self, length: int, *, shuffle: bool = True, seed: int = 0) -> None:
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length) if self.shuffle else np.arange(self.length)
        skip, self.skip = self.skip, 0
        for i in order[skip:]:
            yield int(i), self.epoch


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position Lightning stores in checkpoints (``state_dict``/``load_state_dict``).

    Args:
        dataset: a dataset accepting ``(index, epoch)`` keys.
        batch_size: batch size.
        shuffle: seeded shuffling per epoch.
        seed: shuffling seed.
        progress: returns (epoch, batches processed in this epoch) of the training loop; its value is what a
            checkpoint records (batches already fetched ahead by the loop are not counted as seen).
        kwargs: other DataLoader arguments (num_workers, drop_last, ...); no sampler.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int,
                 progress: Callable[[], tuple[int, int]] | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), shuffle=shuffle, seed=seed), **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        """Epoch and samples already consumed in it."""
        epoch, batches = self.progress() if self.progress else (self.sampler.epoch, 0)
        return {"epoch": int(epoch), "samples": int(batches) * int(self.batch_size or 1)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the stored epoch after its consumed samples."""
        self.sampler.set_epoch(state["epoch"])
        self.sampler.skip = state["samples"]
