"""Deterministic, resumable, rank-sharded data loading: the one sampler design of every datamodule.

* :class:`EpochOrder` is the GLOBAL order of one epoch, a pure function of ``(seed, epoch)``: the identity
  (evaluation), a seeded permutation (cycled with fresh permutations, or truncated, to ``num_samples``), or
  ``num_samples`` weighted draws with replacement (class balancing). It yields ``(index, epoch)`` pairs, so
  datasets derive crops, partners and augmentation from the epoch too, also inside persistent DataLoader
  workers that never see attribute changes of the main process. Datasets accept such pairs and plain ints.
* :class:`StepBatches` cuts that order into this rank's training batches in per-step blocks. With ``b`` the
  per-rank batch and ``B = world_size * b`` the global batch, step ``t`` of rank ``r`` takes the global
  positions ``[t*B + r*b, t*B + (r+1)*b)``. So the ranks' batches at step ``t`` together are exactly the
  single-process batch of size ``B`` at step ``t``, and a single process cutting that batch into
  ``world_size`` chunks of ``b`` sees rank ``r``'s samples in chunk ``r``. Every rank gets the same number
  of steps: with ``drop_last`` the incomplete last global batch is dropped (``N // B`` steps), otherwise it
  is completed by wrapping around to the start of the epoch's order (``ceil(N / B)`` steps, as
  ``DistributedSampler`` pads), so every rank always gets ``b`` samples.
* :class:`StridedBatches` is evaluation sharding: rank ``r`` gets the positions ``r, r + world_size, ...``,
  no duplicates (metrics are sums synced across ranks); ``world_size=1`` is the plain order. A rank left without
  any item (fewer items than ranks) gets one PADDING batch: item 0 flagged ``"padding": True``, which the modules
  skip; without it that rank would skip the evaluation epoch and the others would wait for its metric sync.
* :func:`per_rank_batch`: the configs name the GLOBAL batch; each rank takes ``batch_size / world_size``.
* :class:`ResumableDataLoader` stores its position in checkpoints: ``state_dict()`` is ``{"epoch", "samples"}``
  with ``samples`` the GLOBAL positions consumed in that epoch (batches consumed, as counted by the training
  loop, times the global batch); ``load_state_dict`` continues exactly after them on every rank. A resume
  must keep the global batch (a different one resumes at the same global position, rounded to its steps).

* :class:`Stacked` and :func:`collate`: a dataset whose ``__getitems__`` writes a batch's images straight into one
  ``(B, ...)`` tensor (:func:`batch_buffer`, in shared memory inside a worker) returns its items as a ``Stacked``
  list, and ``collate`` takes that tensor as the batch's images instead of stacking copies (one copy of every
  tile less, in the worker where the tile is read). ``default_collate`` still works on a ``Stacked`` list. In a
  worker, ``collate`` sends a batch's small tensors (labels, locations, seeds: up to :data:`BY_VALUE_BYTES`) by
  value through the pipe instead of one shared-memory segment each (each segment costs the worker and the main
  process a file descriptor, a map and an unmap).

:func:`train_loader` and :func:`eval_loader` build both kinds for any dataset (with ``collate``);
:func:`rank_and_world` and :func:`require_own_sampler` read the DDP context from a Lightning Trainer (without
importing Lightning).
Lightning must not inject its own ``DistributedSampler`` (it would shuffle and cannot rebuild these loaders):
create the Trainer with ``use_distributed_sampler=False`` when ``world_size > 1``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from data.batches import EVAL_INDEX_KEY, PADDING_KEY

__all__ = [
    "BY_VALUE_BYTES",
    "EpochOrder",
    "ResumableDataLoader",
    "Stacked",
    "StepBatches",
    "StridedBatches",
    "batch_buffer",
    "collate",
    "epoch_to_run",
    "eval_loader",
    "loop_progress",
    "per_rank_batch",
    "rank_and_world",
    "require_eval_items",
    "require_own_sampler",
    "split_item",
    "train_loader",
]

Key = tuple[int, int]


def split_item(item: int | tuple[int, int], default_epoch: int) -> tuple[int, int]:
    """``(index, epoch)`` from a dataset key that is an index or an ``(index, epoch)`` pair.

    Args:
        item: a plain index, or an ``(index, epoch)`` pair from :class:`EpochOrder`.
        default_epoch: the epoch of a plain index (the dataset's current epoch).
    """
    if isinstance(item, (tuple, list)):
        return int(item[0]), int(item[1])
    return int(item), int(default_epoch)


class EpochOrder(Sampler[Key]):
    """The global order of one epoch, a pure function of ``(seed, epoch)``, yielding ``(index, epoch)``.

    Args:
        length: dataset length (>= 1).
        shuffle: a seeded permutation per epoch; False keeps the dataset order (evaluation).
        weights: per-item sampling weights: ``num_samples`` draws with replacement (needs ``shuffle``).
        num_samples: samples per epoch (default ``length``); a permutation is cycled with fresh
            permutations (or truncated) to this length, the identity is repeated.
        seed: base seed.
        dataset: an object whose ``set_epoch(int)`` is kept in step (for code that indexes it with plain ints).
    """

    def __init__(self, length: int, *, shuffle: bool = True, weights: Sequence[float] | torch.Tensor | None = None,
                 num_samples: int | None = None, seed: int = 0, dataset: object | None = None) -> None:
        if length < 1:
            raise ValueError(f"EpochOrder needs a non-empty dataset, got length {length}")
        n = length if num_samples is None else int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.length, self.num_samples, self.shuffle, self.seed = int(length), n, bool(shuffle), int(seed)
        self.weights: np.ndarray | None = None
        if weights is not None:
            w = np.asarray(torch.as_tensor(weights, dtype=torch.float64).cpu().numpy(), dtype=np.float64)
            if w.shape != (length,):
                raise ValueError(f"weights has shape {w.shape} for {length} items")
            if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError("weights must be finite, non-negative and not all zero")
            if not shuffle:
                raise ValueError("weighted draws are random: weights need shuffle=True")
            self.weights = w / w.sum()
        self.dataset = dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields (Lightning calls this at every epoch start).

        Args:
            epoch: epoch number.
        """
        self.epoch = int(epoch)
        set_dataset_epoch = getattr(self.dataset, "set_epoch", None)
        if callable(set_dataset_epoch):
            set_dataset_epoch(self.epoch)

    def order(self, epoch: int) -> np.ndarray:
        """Dataset indices of epoch ``epoch`` in global order (int64, ``num_samples`` long).

        Args:
            epoch: epoch number.
        """
        if not self.shuffle:
            return np.resize(np.arange(self.length, dtype=np.int64), self.num_samples)
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self.weights is not None:
            return rng.choice(self.length, size=self.num_samples, replace=True, p=self.weights).astype(np.int64)
        reps = -(-self.num_samples // self.length)
        perms = [rng.permutation(self.length) for _ in range(reps)]
        return np.concatenate(perms)[: self.num_samples].astype(np.int64)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[Key]:
        epoch = self.epoch
        return ((int(i), epoch) for i in self.order(epoch))


def _check_rank(rank: int, world_size: int, batch_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


class StepBatches(Sampler[list[Key]]):
    """Training batches of one rank: per-step blocks of the global order (see the module docstring).

    Args:
        order: the epoch's global order (Lightning reaches its ``set_epoch`` as ``batch_sampler.sampler``).
        batch_size: per-rank batch ``b``.
        rank: this process's global rank.
        world_size: number of ranks.
        drop_last: drop the incomplete last global batch; otherwise complete it by wrapping around.
    """

    def __init__(self, order: EpochOrder, *, batch_size: int, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True) -> None:
        _check_rank(rank, world_size, batch_size)
        self.sampler = order
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.drop_last = bool(drop_last)
        if drop_last and len(order) < self.global_batch:
            raise ValueError(
                f"{len(order)} samples per epoch cannot fill one global batch of {self.global_batch} "
                f"(= {world_size} rank(s) x batch_size {batch_size}); lower batch_size or use drop_last=False")
        self._resume: tuple[int, int] | None = None
        #: (epoch, start position) of the iteration in progress; None before the first one.
        self.started: tuple[int, int] | None = None

    @property
    def global_batch(self) -> int:
        """Samples per step over all ranks, ``world_size * batch_size``."""
        return self.world_size * self.batch_size

    def steps(self, start: int = 0) -> int:
        """Steps of an epoch begun at global position ``start`` (the same on every rank).

        Args:
            start: global positions already consumed.
        """
        left = max(0, len(self.sampler) - int(start))
        return left // self.global_batch if self.drop_last else -(-left // self.global_batch)

    def positions(self, step: int, start: int = 0) -> np.ndarray:
        """Global positions of this rank's batch at ``step`` (wrapped around the epoch when padding).

        Args:
            step: step index, counted from ``start``.
            start: global positions already consumed when the epoch was entered.
        """
        first = int(start) + step * self.global_batch + self.rank * self.batch_size
        return np.arange(first, first + self.batch_size) % len(self.sampler)

    def resume(self, epoch: int, samples: int) -> None:
        """Make the next iteration over ``epoch`` start after its first ``samples`` global positions.

        Args:
            epoch: the epoch the positions belong to (another epoch starts from its beginning).
            samples: global positions already consumed.
        """
        self._resume = (int(epoch), int(samples))

    def __len__(self) -> int:
        return self.steps(0)

    def __iter__(self) -> Iterator[list[Key]]:
        # A generator: the epoch and a pending resume are read when the first batch is drawn, not when the
        # DataLoader asks for an iterator (it asks twice when it starts worker processes).
        epoch = self.sampler.epoch
        start = self._resume[1] if (self._resume is not None and self._resume[0] == epoch) else 0
        self._resume = None
        self.started = (epoch, start)
        order = self.sampler.order(epoch)
        for t in range(self.steps(start)):
            yield [(int(order[p]), epoch) for p in self.positions(t, start)]


def per_rank_batch(batch_size: int, world_size: int, owner: str) -> int:
    """Each rank's share of the global ``batch_size``.

    Args:
        batch_size: the global batch (what the config names).
        world_size: number of ranks.
        owner: the datamodule's name, for the message.

    Raises:
        ValueError: when the global batch is not a multiple of the ranks.
    """
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(f"{owner}: batch_size is the GLOBAL batch and must be a multiple of the {world_size} "
                         f"ranks, got {batch_size} (use {max(1, -(-batch_size // world_size)) * world_size}: "
                         f"the training dynamics then do not depend on the number of devices)")
    return batch_size // world_size


#: Marks a padding key of :class:`StridedBatches` (third element of the key).
PADDING = -1


class StridedBatches(Sampler[list[Key]]):
    """Evaluation batches of one rank: positions ``rank, rank + world_size, ...`` of the order; a rank without any
    item gets one padding batch (see the module docstring).

    Args:
        order: the order (usually the identity, ``EpochOrder(n, shuffle=False)``).
        batch_size: items per batch (the last batch may be shorter).
        rank: this process's global rank.
        world_size: number of ranks.
    """

    def __init__(self, order: EpochOrder, *, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size, batch_size)
        self.sampler = order
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)

    def items(self) -> int:
        """Items this rank evaluates."""
        return len(range(self.rank, len(self.sampler), self.world_size))

    def __len__(self) -> int:
        return max(1, -(-self.items() // self.batch_size))

    def __iter__(self) -> Iterator[list[Key]]:
        epoch = self.sampler.epoch
        mine = self.sampler.order(epoch)[self.rank::self.world_size]
        if len(mine) == 0:
            return iter([[(int(self.sampler.order(epoch)[0]), epoch, PADDING)]])  # type: ignore[list-item]
        return ([(int(i), epoch) for i in mine[s:s + self.batch_size]] for s in range(0, len(mine), self.batch_size))


class Stacked(list):
    """The dict items of one batch whose ``stacked`` keys already lie in one ``(B, ...)`` tensor each (item ``k``'s
    value is row ``k`` of it): what a dataset's ``__getitems__`` returns to :func:`collate`.

    Args:
        items: the items, in batch order; their ``stacked`` values are the rows of the tensors.
        stacked: key -> the batch tensor of that key.
    """

    def __init__(self, items: Sequence[dict[str, Any]], stacked: dict[str, torch.Tensor]) -> None:
        super().__init__(items)
        self.stacked = stacked


def batch_buffer(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor for one batch; inside a DataLoader worker it lies in shared memory, as ``default_collate``'s
    output does, so sending it to the main process copies nothing.

    Args:
        shape: the batch's shape, ``(B, ...)``.
        dtype: its dtype.
    """
    if get_worker_info() is None:
        return torch.empty(*shape, dtype=dtype)
    numel = int(np.prod(shape))
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(numel, device=elem.device)  # what default_collate does in a worker
    return elem.new(storage).resize_(*shape)


#: Largest tensor (in bytes) that :func:`collate` sends from a worker by value rather than in shared memory.
BY_VALUE_BYTES = 4096


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array)


class _ByValue:
    """A small CPU tensor a worker sends by value (its bytes in the pipe); it unpickles as that tensor."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __reduce__(self) -> tuple[Any, tuple[np.ndarray]]:
        return _from_numpy, (self.tensor.numpy(),)


def _small_by_value(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        small = (obj.device.type == "cpu" and obj.is_contiguous() and not obj.requires_grad
                 and obj.numel() * obj.element_size() <= BY_VALUE_BYTES
                 and obj.dtype in (torch.int64, torch.int32, torch.float64, torch.float32, torch.bool, torch.uint8))
        return _ByValue(obj) if small else obj
    if isinstance(obj, dict):
        return {k: _small_by_value(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_small_by_value(v) for v in obj]
    return obj


def collate(items: Any) -> Any:
    """``default_collate``, except that a :class:`Stacked` batch keeps its stacked tensors (nothing copied), and
    that inside a DataLoader worker small tensors travel by value.

    What the main process receives equals ``default_collate(items)``: the same keys in the same order, the same
    values and types.

    Args:
        items: the items of one batch (a list, or a ``Stacked`` list from a dataset's ``__getitems__``).
    """
    if not isinstance(items, Stacked) or not items:
        batch = default_collate(items)
    else:
        rest = default_collate([{k: v for k, v in item.items() if k not in items.stacked} for item in items])
        batch = {k: items.stacked[k] if k in items.stacked else rest[k] for k in items[0]}
    return batch if get_worker_info() is None else _small_by_value(batch)


class _EvalItems(Dataset):
    """An evaluation dataset whose dict items carry their position in the split (``"eval_index"``, the same
    whichever rank evaluates them, so metrics can choose and seed by it) and whose padding keys (``(index, epoch,
    PADDING)``) return the item flagged ``"padding": True``; other items pass unchanged."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @staticmethod
    def _split(key: Any) -> tuple[Any, bool]:
        padding = isinstance(key, (tuple, list)) and len(key) == 3 and key[2] == PADDING
        return ((key[0], key[1]) if padding else key), padding

    @staticmethod
    def _mark(item: Any, key: Any, padding: bool) -> Any:
        if not isinstance(item, dict):
            return item
        index = key[0] if isinstance(key, (tuple, list)) else key
        return {**item, EVAL_INDEX_KEY: int(index), **({PADDING_KEY: True} if padding else {})}

    def __getitem__(self, key: Any) -> Any:
        key, padding = self._split(key)
        return self._mark(self.dataset[key], key, padding)

    def __getitems__(self, keys: list[Any]) -> list[Any]:
        """A batch of marked items, through the dataset's own ``__getitems__`` (a :class:`Stacked` batch stays one).

        Defined here so the DataLoader never finds the wrapped dataset's ``__getitems__`` through
        ``__getattr__`` (its items would lack ``eval_index`` and the padding flag).

        Args:
            keys: the batch's keys.
        """
        split = [self._split(k) for k in keys]
        inner = getattr(self.dataset, "__getitems__", None)
        items = inner([k for k, _ in split]) if callable(inner) else [self.dataset[k] for k, _ in split]
        marked = [self._mark(item, k, padding) for item, (k, padding) in zip(items, split)]
        return Stacked(marked, items.stacked) if isinstance(items, Stacked) else marked

    def __getattr__(self, name: str) -> Any:
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableDataLoader(DataLoader):
    """A DataLoader over :class:`StepBatches` whose position Lightning stores in checkpoints.

    Args:
        dataset: a dataset accepting ``(index, epoch)`` keys.
        batches: this rank's training batches.
        progress: returns (epoch, batches processed in this epoch) of the training loop; its value is what a
            checkpoint records (batches fetched ahead by the loop or by workers are not counted as seen).
            Without it the batches this loader has delivered are counted.
        kwargs: other DataLoader arguments (num_workers, pin_memory, ...); no sampler or batch size.
    """

    def __init__(self, dataset: Dataset, *, batches: StepBatches,
                 progress: Callable[[], tuple[int, int]] | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batches, **kwargs)
        self.batches = batches
        self.progress = progress
        self._delivered = 0

    def __iter__(self) -> Iterator[Any]:
        self._delivered = 0
        return _Counted(super().__iter__(), self)

    def state_dict(self) -> dict[str, int]:
        """Epoch and GLOBAL samples already consumed in it.

        The epoch is the one this loader is serving (a loop that stops at ``max_steps`` mid-epoch has already
        counted that epoch as finished, its data has not); the batches are the loop's (``progress``), else those
        this loader delivered. A resume not yet started is reported as it was loaded.
        """
        if self.batches._resume is not None:
            epoch, samples = self.batches._resume
            return {"epoch": int(epoch), "samples": int(samples)}
        epoch, start = self.batches.started or (self.batches.sampler.epoch, 0)
        if self.progress is not None:
            return {"epoch": int(epoch), "samples": int(self.progress()[1]) * self.batches.global_batch}
        return {"epoch": int(epoch), "samples": start + self._delivered * self.batches.global_batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the stored epoch after its consumed samples, when the loop runs that epoch next.

        The epoch itself is the loop's (``set_epoch``, or ``epoch`` of :func:`train_loader`): a loop that moves on
        to the next epoch gets that epoch from its start.

        Args:
            state: a dict from :meth:`state_dict`.
        """
        self.batches.resume(int(state["epoch"]), int(state["samples"]))


class _Counted:
    """Iterator wrapper counting the batches a :class:`ResumableDataLoader` hands out."""

    def __init__(self, inner: Iterator[Any], loader: ResumableDataLoader) -> None:
        self.inner, self.loader = inner, loader

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.loader._delivered += 1
        return batch

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # Lightning inspects the DataLoader iterator (e.g. to shut workers)
        return getattr(self.inner, name)


def train_loader(dataset: Dataset, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 weights: Sequence[float] | torch.Tensor | None = None, num_samples: int | None = None,
                 drop_last: bool = True, progress: Callable[[], tuple[int, int]] | None = None,
                 num_workers: int = 0, pin_memory: bool = False, epoch: int = 0) -> ResumableDataLoader:
    """The training loader of every datamodule: seeded global order, per-step rank blocks, resumable.

    Args:
        dataset: a dataset accepting ``(index, epoch)`` keys.
        batch_size: per-rank batch.
        seed: seed of the order.
        rank: this process's global rank.
        world_size: number of ranks.
        weights: per-item weights for draws with replacement (None: a permutation per epoch).
        num_samples: global samples per epoch (default: the dataset length).
        drop_last: drop the incomplete last global batch (else wrap around to complete it).
        progress: (epoch, batches processed) of the training loop, for checkpoints.
        num_workers: DataLoader worker processes (persistent when > 0).
        pin_memory: pin batches in page-locked memory (GPU training).
        epoch: the epoch the first iteration serves (:func:`epoch_to_run`: Lightning creates the first iterator,
            and worker processes start drawing from it, before it calls ``set_epoch``).
    """
    order = EpochOrder(len(dataset), shuffle=True, weights=weights, num_samples=num_samples, seed=seed,  # type: ignore[arg-type]
                       dataset=dataset)
    order.set_epoch(epoch)
    batches = StepBatches(order, batch_size=batch_size, rank=rank, world_size=world_size, drop_last=drop_last)
    return ResumableDataLoader(dataset, batches=batches, progress=progress, num_workers=num_workers,
                               persistent_workers=num_workers > 0, pin_memory=pin_memory, collate_fn=collate)


def eval_loader(dataset: Dataset, *, batch_size: int, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """The evaluation loader of every datamodule: dataset order, rank ``r`` takes items ``r, r + world, ...``.

    Args:
        dataset: a dataset accepting ``(index, epoch)`` keys.
        batch_size: items per batch.
        rank: this process's global rank.
        world_size: number of ranks.
        num_workers: DataLoader worker processes (persistent when > 0).
        pin_memory: pin batches in page-locked memory (GPU evaluation).
    """
    order = EpochOrder(len(dataset), shuffle=False)  # type: ignore[arg-type]
    batches = StridedBatches(order, batch_size=batch_size, rank=rank, world_size=world_size)
    return DataLoader(_EvalItems(dataset), batch_sampler=batches, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=pin_memory, collate_fn=collate)


def loop_progress(trainer: Any) -> tuple[int, int]:
    """``(epoch, batches processed in it)`` of a Lightning Trainer's training loop, ``(0, 0)`` without one.

    Args:
        trainer: the datamodule's ``trainer`` (or None).
    """
    if trainer is None:
        return 0, 0
    return int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def epoch_to_run(trainer: Any) -> int:
    """The epoch a Lightning Trainer's training loop runs next (what it passes to ``set_epoch``), 0 without one.

    Right after a resume this is not ``current_epoch`` (the finished epochs) but the epochs processed.

    Args:
        trainer: the datamodule's ``trainer`` (or None).
    """
    loop = getattr(trainer, "fit_loop", None)
    return 0 if loop is None else int(loop.epoch_progress.current.processed)


def rank_and_world(trainer: Any) -> tuple[int, int]:
    """``(global_rank, world_size)`` of a Lightning Trainer, ``(0, 1)`` without one.

    Args:
        trainer: the datamodule's ``trainer`` (or None).
    """
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


def require_own_sampler(trainer: Any, owner: str) -> None:
    """Refuse a multi-rank Trainer that would inject its own ``DistributedSampler`` into our loaders.

    Args:
        trainer: the datamodule's ``trainer`` (or None).
        owner: the datamodule's name, for the message.

    Raises:
        ValueError: when ``world_size > 1`` and the Trainer has ``use_distributed_sampler=True``.
    """
    _, world = rank_and_world(trainer)
    connector = getattr(trainer, "_accelerator_connector", None)
    if world > 1 and getattr(connector, "use_distributed_sampler", False):
        raise ValueError(
            f"{owner} shards its data across the {world} ranks itself (data.loading: seeded order, per-step "
            "blocks); create the Trainer with use_distributed_sampler=False (YAML: trainer: "
            "{use_distributed_sampler: false}). Lightning would otherwise inject a DistributedSampler with "
            "shuffle=True, which it cannot fit into this loader")


def require_eval_items(n_items: int, world_size: int, what: str) -> None:
    """Refuse an empty evaluation split under several ranks (fewer items than ranks are padded, see
    :class:`StridedBatches`).

    Args:
        n_items: items of the split (patients, tiles).
        world_size: number of ranks.
        what: the split and its unit, for the message (``"validation patients"``).

    Raises:
        ValueError: when ``n_items == 0`` and ``world_size > 1``.
    """
    if n_items == 0 and world_size > 1:
        raise ValueError(f"no {what} to share by {world_size} ranks: add held-out data")
