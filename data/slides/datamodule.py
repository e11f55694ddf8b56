"""The LightningDataModule of whole-slide tiles: split by slide, optional class balancing, DDP-ready loading.

Splits are by SLIDE, never by tile, so no tissue leaks between train, validation and test. Loading follows
:mod:`data.loading`: one seeded global order per epoch (a permutation, or class-balanced draws with
replacement) cut into per-step blocks per DDP rank, resumable mid-epoch; validation and test tiles are shared
out between ranks without duplicates. Create the Trainer with ``use_distributed_sampler=False`` under DDP
(the module checks). With ``uint8_transfer`` the workers deliver raw uint8 tiles and the module normalises
and augments them on the device (Lightning's ``on_after_batch_transfer``; :meth:`TileDataModule.finish_batch`),
with the same values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from data.errors import SlideError
from data.loading import (
    EpochOrder,
    epoch_to_run,
    eval_loader,
    loop_progress,
    per_rank_batch,
    rank_and_world,
    require_eval_items,
    require_own_sampler,
    train_loader,
)
from data.slides.datasets import TileDataset
from data.slides.grid import uint8_to_unit
from data.slides.regions import discover_classes
from data.slides.slide import mpp_from_magnification
from data.slides.transforms import TileAugment
from data.splits import split_items

__all__ = ["SLIDE_SUFFIXES", "TileDataModule", "find_slides", "split_slides"]

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


def slide_paths(slides: str | Path | Sequence[str | Path]) -> list[Path]:
    """The slide files of a ``slides`` argument: a folder's slides (:func:`find_slides`), or the files given.

    Args:
        slides: a folder, a slide file, or slide files.

    Raises:
        ValueError: no slides given.
    """
    if isinstance(slides, (str, Path)) and Path(slides).is_dir():
        return find_slides(slides)
    paths = [Path(s) for s in ([slides] if isinstance(slides, (str, Path)) else slides)]
    if not paths:
        raise ValueError("TileDataModule: no slides given")
    return paths


def tile_classes(slides: str | Path | Sequence[str | Path], class_names: Sequence[str] | None = None,
                 regions: str | Path | Sequence[str | Path] | None = None) -> list[str]:
    """The classes of a :class:`TileDataModule`, in index order: ``class_names``, or the slides' sorted region labels
    then ``other`` (what a conditional model is built for; ``medsynth fit`` passes them to StyleGAN2).

    Args:
        slides: as for :class:`TileDataModule`.
        class_names: classes given explicitly.
        regions: region manifests (default: beside each slide).
    """
    if class_names is not None:
        return [str(c) for c in class_names]
    return discover_classes(slide_paths(slides), regions)


def split_slides(slides: Sequence[Path], *, val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, list[Path]]:
    """Deterministic train/val/test split of slides; every slide lands in exactly one split.

    Args:
        slides: slide paths.
        val_fraction: fraction for validation (at least one slide when > 0).
        test_fraction: fraction for test (at least one slide when > 0).
        seed: shuffling seed.
    """
    try:
        return split_items([Path(s) for s in slides], val_fraction=val_fraction, test_fraction=test_fraction,
                           seed=seed, unit="slide")
    except ValueError as e:
        if "cannot be split" not in str(e):
            raise
        raise SlideError(None, f"{e}; the split is by slide, so add slides or lower the fractions") from None


class TileDataModule(L.LightningDataModule):
    """Whole-slide tiles for training generative models, split by slide.

    Args:
        slides: slide files, or a folder holding them (``*.svs``, ``*.tif``, ``*.tiff``).
        tile_size: tile side in pixels.
        mpp: microns per pixel of the tiles (give this or ``magnification``).
        magnification: nominal magnification, shorthand for ``mpp = 10 / magnification``.
        class_names: classes in index order; None for all region labels (sorted) plus "other".
        batch_size: GLOBAL batch of tiles: each of the ``world_size`` DDP ranks takes ``batch_size / world_size``
            (a multiple of the ranks), so the training dynamics do not depend on the number of devices.
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
        samples_per_epoch: training tiles per epoch over all ranks (default: the training split's size); the
            incomplete last global batch is dropped.
        uint8_transfer: workers deliver uint8 tiles (4x fewer bytes); after the transfer to the device
            :meth:`finish_batch` normalises them to [-1, 1] and augments the training tiles, with the same values.
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
        samples_per_epoch: int | None = None,
        uint8_transfer: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if (mpp is None) == (magnification is None):
            raise ValueError("TileDataModule: give exactly one of mpp or magnification")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.mpp = float(mpp) if mpp is not None else mpp_from_magnification(magnification)  # type: ignore[arg-type]
        paths = slide_paths(slides)
        self.splits = split_slides(paths, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        self.class_names = tile_classes(slides, class_names, regions)
        # stored resolved: the model is linked to these, and Lightning compares the two when it logs hparams
        self.save_hyperparameters({**self.hparams, "class_names": list(self.class_names)})
        self.augmentation = TileAugment() if augment else None
        self.datasets: dict[str, TileDataset] = {}
        if uint8_transfer:  # bound per instance: otherwise a model's own on_after_batch_transfer would be shadowed
            self.on_after_batch_transfer = self._after_transfer  # type: ignore[method-assign]

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
            transform=self.augmentation if (train and not h.uint8_transfer) else None,
            seed=h.seed,
            require_all_classes=train,
            uint8=h.uint8_transfer,
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs (once); every rank indexes the whole split.

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` or None for all.
        """
        if stage in (None, "fit") and "train" not in self.datasets:
            self.datasets["train"] = self._dataset("train", train=True)
        if stage in (None, "fit", "validate") and "val" not in self.datasets and self.splits["val"]:
            self.datasets["val"] = self._dataset("val", train=False)
        if stage in (None, "test") and "test" not in self.datasets and self.splits["test"]:
            self.datasets["test"] = self._dataset("test", train=False)

    def check_inputs(self, stage: str | None = "fit") -> None:
        """Check the slides and regions of the stage before a run writes anything (``medsynth fit`` calls this first).

        Args:
            stage: the Lightning stage about to run.
        """
        self.setup(stage)

    def _train_loader(self) -> DataLoader:
        if "train" not in self.datasets:
            self.setup("fit")
        h = self.hparams
        ds = self.datasets["train"]
        rank, world = rank_and_world(self.trainer)
        n = h.samples_per_epoch or len(ds)
        weights = ds.sample_weights(h.balance_power) if h.balanced else None
        b = per_rank_batch(h.batch_size, world, type(self).__name__)
        return train_loader(ds, batch_size=b, seed=h.seed, rank=rank, world_size=world, weights=weights,
                            num_samples=n, drop_last=n >= h.batch_size,
                            progress=lambda: loop_progress(self.trainer), num_workers=h.num_workers,
                            pin_memory=h.pin_memory, epoch=epoch_to_run(self.trainer))

    def train_sampler(self) -> EpochOrder:
        """The global training order (class-balanced draws or a permutation per epoch, shared by all ranks)."""
        return self._train_loader().batch_sampler.sampler  # type: ignore[union-attr]

    def train_dataloader(self) -> DataLoader:
        """Training tiles of this rank: its per-step blocks of the epoch's global order."""
        require_own_sampler(self.trainer, type(self).__name__)
        return self._train_loader()

    def _eval_loader(self, split: str) -> DataLoader:
        require_own_sampler(self.trainer, type(self).__name__)
        rank, world = rank_and_world(self.trainer)
        ds = self.datasets[split]
        require_eval_items(len(ds), world, f"{'validation' if split == 'val' else 'test'} tiles")
        h = self.hparams
        b = max(1, h.batch_size // world)
        return eval_loader(ds, batch_size=b, rank=rank, world_size=world, num_workers=h.num_workers,
                           pin_memory=h.pin_memory)

    def val_dataloader(self) -> DataLoader | list:
        """Validation tiles in a fixed order (rank ``r`` of ``w`` takes tiles ``r, r + w, ...``); an empty list
        (Lightning: no validation) when val_fraction is 0."""
        if "val" not in self.datasets:
            self.setup("validate")
        if "val" not in self.datasets:
            return []
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test tiles in a fixed order, shared out between ranks like validation."""
        if "test" not in self.datasets:
            self.setup("test")
        if "test" not in self.datasets:
            raise ValueError("TileDataModule: no test slides (test_fraction=0)")
        return self._eval_loader("test")

    def finish_batch(self, batch: Any, *, augment: bool) -> Any:
        """A batch of uint8 tiles (``uint8_transfer``) to float32 [-1, 1] where it lies, augmented when asked.

        The result equals the batch the float path (``uint8_transfer=False``) delivers; other batches pass.

        Args:
            batch: a collated batch (on the device).
            augment: apply the training augmentation, per tile from its ``seed``.
        """
        if not (isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor)
                and batch["image"].dtype == torch.uint8):
            return batch
        image = uint8_to_unit(batch["image"])
        if augment and self.augmentation is not None and "seed" in batch:
            image = self.augmentation.seeded(image, batch["seed"])
        return {**batch, "image": image}

    def _after_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning's ``on_after_batch_transfer`` in ``uint8_transfer`` mode: :meth:`finish_batch` on the device."""
        return self.finish_batch(batch, augment=self.trainer is not None and bool(self.trainer.training))
