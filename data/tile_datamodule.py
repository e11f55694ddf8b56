"""LightningDataModule for whole-slide tiles: split by slide, optional class balancing, per-rank slide shards.

Splits are by SLIDE, never by tile, so no tissue leaks between train, validation and test. Under DDP each
rank trains on a disjoint subset of the training slides (``TileDataset.shard``) and draws the same number
of samples per epoch, so ranks stay in step; create the Trainer with ``use_distributed_sampler=False``
(the module checks). Validation and test are not sharded: every rank evaluates the whole split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from data.errors import SlideError
from data.splits import split_items
from data.tile_transforms import TileAugment
from data.tiles import TileDataset, discover_classes, mpp_from_magnification

#: Files picked up when ``slides`` is a folder.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff")


def find_slides(folder: str | Path) -> list[Path]:
    """Slides directly inside a folder (``*.svs``, ``*.tif``, ``*.tiff``), sorted.

    Args:
        folder: folder to scan (not recursive).
    """
    root = Path(folder)
    if not root.is_dir():
        raise SlideError(root, "slide folder not found")
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
    if not found:
        raise SlideError(root, f"no slides ({', '.join('*' + s for s in SLIDE_SUFFIXES)}) in this folder")
    return found


def split_slides(slides: Sequence[Path], *, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[Path]]:
    """Deterministic train/val/test split of slides; every slide lands in exactly one split.

    Args:
        slides: slide paths.
        val_fraction: fraction for validation (at least one slide when > 0).
        test_fraction: fraction for test (at least one slide when > 0).
        seed: shuffling seed.
    """
    try:
        return split_items([Path(s) for s in slides], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           unit="slide")
    except ValueError as e:
        if "cannot be split" not in str(e):
            raise
        raise SlideError(None, f"{e}; the split is by slide, so add slides or lower the fractions") from None


class TileSampler(Sampler[int]):
    """Draws ``num_samples`` indices per epoch, reproducible from (seed, epoch).

    Weighted draws (with replacement, for class balancing) when ``weights`` is given, else a fresh
    permutation each epoch, cycled when ``num_samples`` exceeds the dataset. ``set_epoch`` (called by
    Lightning every epoch) also forwards the epoch to the dataset, which seeds per-item augmentation.

    Args:
        num_items: dataset length.
        num_samples: indices per epoch.
        weights: per-item sampling weights, or None for shuffling without replacement.
        seed: base seed.
        dataset: object with a ``set_epoch(int)`` method to keep in step, or None.
    """

    def __init__(self, *, num_items: int, num_samples: int, weights: torch.Tensor | None = None, seed: int = 0,
                 dataset: object | None = None) -> None:
        if num_items < 1 or num_samples < 1:
            raise ValueError(f"num_items and num_samples must be >= 1, got {num_items}, {num_samples}")
        if weights is not None and len(weights) != num_items:
            raise ValueError(f"weights has {len(weights)} entries for {num_items} items")
        self.num_items = num_items
        self.num_samples = num_samples
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.seed = seed
        self.epoch = 0
        self.dataset = dataset

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw ``__iter__`` yields.

        Args:
            epoch: epoch number.
        """
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        if self.weights is not None:
            idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)
        else:
            reps = -(-self.num_samples // self.num_items)
            idx = torch.cat([torch.randperm(self.num_items, generator=g) for _ in range(reps)])[: self.num_samples]
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.num_samples


class TileDataModule(L.LightningDataModule):
    """Whole-slide tiles for training generative models, split by slide.

    Args:
        slides: slide files, or a folder holding them (``*.svs``, ``*.tif``, ``*.tiff``).
        tile_size: tile side in pixels.
        mpp: microns per pixel of the tiles (give this or ``magnification``).
        magnification: nominal magnification, shorthand for ``mpp = 10 / magnification``.
        class_names: classes in index order; None for all region labels (sorted) plus "other".
        batch_size: tiles per batch.
        num_workers: DataLoader worker processes (persistent when > 0).
        val_fraction: fraction of slides for validation.
        test_fraction: fraction of slides for test.
        seed: seed of the split, the sampling order and augmentation.
        balanced: draw training tiles with probability ``count(class)^-balance_power`` (rare classes oversampled).
        balance_power: strength of the balancing (1: every class equally often).
        augment: flips, rot90 and stain jitter on training tiles.
        mpp_override: um/px for slides without MPP metadata: one value, or a mapping keyed by slide path,
            file name or stem.
        regions: region manifest(s); default ``<stem>.regions.csv`` beside each slide.
        min_tissue: smallest tissue fraction of a tile.
        min_region_overlap: smallest fraction of a tile its class regions must cover.
        pin_memory: pin batches in page-locked memory (for GPU training).
    """

    def __init__(
        self,
        slides: str | Sequence[str],
        tile_size: int = 256,
        mpp: float | None = None,
        magnification: float | None = None,
        class_names: list[str] | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        balanced: bool = False,
        balance_power: float = 1.0,
        augment: bool = True,
        mpp_override: float | dict[str, float] | None = None,
        regions: str | list[str] | None = None,
        min_tissue: float = 0.5,
        min_region_overlap: float = 0.5,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if (mpp is None) == (magnification is None):
            raise ValueError("TileDataModule: give exactly one of mpp or magnification")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.mpp = float(mpp) if mpp is not None else mpp_from_magnification(magnification)  # type: ignore[arg-type]
        if isinstance(slides, (str, Path)) and Path(slides).is_dir():
            paths = find_slides(slides)
        else:
            paths = [Path(s) for s in ([slides] if isinstance(slides, (str, Path)) else slides)]
        if not paths:
            raise ValueError("TileDataModule: no slides given")
        self.splits = split_slides(paths, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        self.class_names = list(class_names) if class_names is not None else discover_classes(paths, regions)
        self.datasets: dict[str, TileDataset] = {}
        self._full_train_len = 0

    def _dataset(self, split: str, *, train: bool) -> TileDataset:
        h = self.hparams
        return TileDataset(
            self.splits[split],
            tile_size=h.tile_size,
            mpp=self.mpp,
            regions=h.regions,
            class_names=self.class_names,
            min_tissue=h.min_tissue,
            min_region_overlap=h.min_region_overlap,
            mpp_override=h.mpp_override,
            transform=TileAugment() if (train and h.augment) else None,
            seed=h.seed,
            require_all_classes=train,
        )

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs (once).

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` or None for all.
        """
        if stage in (None, "fit") and "train" not in self.datasets:
            full = self._dataset("train", train=True)
            self._full_train_len = len(full)
            rank, world = self._rank()
            self.datasets["train"] = full.shard(rank, world) if world > 1 else full
        if stage in (None, "fit", "validate") and "val" not in self.datasets and self.splits["val"]:
            self.datasets["val"] = self._dataset("val", train=False)
        if stage in (None, "test") and "test" not in self.datasets and self.splits["test"]:
            self.datasets["test"] = self._dataset("test", train=False)

    def _loader(self, ds: TileDataset, sampler: Sampler[int] | None) -> DataLoader:
        h = self.hparams
        return DataLoader(
            ds,
            batch_size=h.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=h.num_workers,
            persistent_workers=h.num_workers > 0,
            pin_memory=h.pin_memory,
            drop_last=False,
        )

    def train_sampler(self) -> TileSampler:
        """The training sampler: class-balanced draws or per-epoch shuffling, equal length on every rank."""
        if "train" not in self.datasets:
            self.setup("fit")
        ds = self.datasets["train"]
        _, world = self._rank()
        num = max(1, self._full_train_len // world)
        weights = ds.sample_weights(self.hparams.balance_power) if self.hparams.balanced else None
        return TileSampler(num_items=len(ds), num_samples=num, weights=weights, seed=self.hparams.seed, dataset=ds)

    def train_dataloader(self) -> DataLoader:
        """Training tiles of this rank's slides."""
        _, world = self._rank()
        if world > 1 and getattr(getattr(self.trainer, "_accelerator_connector", None), "use_distributed_sampler", False):
            raise ValueError(
                "TileDataModule shards training slides across ranks itself; create the Trainer with "
                "use_distributed_sampler=False (otherwise each rank would see only part of its shard)"
            )
        sampler = self.train_sampler()
        return self._loader(self.datasets["train"], sampler)

    def val_dataloader(self) -> DataLoader | list:
        """Validation tiles in a fixed order; an empty list (Lightning: no validation) when val_fraction is 0."""
        if "val" not in self.datasets:
            self.setup("validate")
        if "val" not in self.datasets:
            return []
        return self._loader(self.datasets["val"], None)

    def test_dataloader(self) -> DataLoader:
        """Test tiles in a fixed order."""
        if "test" not in self.datasets:
            self.setup("test")
        if "test" not in self.datasets:
            raise ValueError("TileDataModule: no test slides (test_fraction=0)")
        return self._loader(self.datasets["test"], None)
