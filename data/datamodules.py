"""LightningDataModules: volume translation (paired or unpaired) and tiles, configurable from YAML.

Splits are always by patient (or slide), never by slice or tile, so no anatomy leaks between train and test.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Sequence

import lightning as L
from torch.utils.data import DataLoader, Dataset

from data.errors import VolumeError
from data.loading import ResumableDataLoader
from data.splits import split_items
from data.intensity import CTWindow, MRPercentileWindow, PETWindow, Window
from data.transforms import VolumeAugment
from data.volume_datasets import IMAGE_MODALITIES, PatientRecord, UnpairedDataset, VolumeDataset, find_patients

__all__ = ["VolumeTranslationDataModule", "TileDataModule", "split_patients"]


def split_patients(ids: Sequence[str], *, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Deterministic train/val/test split of patient ids (each id in exactly one split).

    Args:
        ids: patient identifiers.
        val_fraction: fraction for validation (at least one patient when > 0).
        test_fraction: fraction for test (at least one patient when > 0).
        seed: shuffling seed.
    """
    return split_items(list(ids), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, unit="patient")


class VolumeTranslationDataModule(L.LightningDataModule):
    """Volumes for image translation: ``source`` -> ``target`` (e.g. CT -> MR unpaired, CT -> PET paired).

    Patients live in ``data_dir/<patient_id>/<key>.nii.gz`` (or ``.nii``, or a DICOM folder ``<key>/``), keys
    ``ct``, ``mr``, ``pet``, optional ``lesion_mask`` and ``body_mask``. Training yields slices, 2.5D stacks or
    3D patches; validation and test yield whole volumes (batch size 1) so metrics are computed per patient on
    the reassembled volume.

    Args:
        data_dir: folder of patient folders.
        source: input key (``ct``, ``mr`` or ``pet``).
        target: output key.
        paired: paired training (same patient, registered) or unpaired (independent patients).
        splits: JSON file with ``train``/``val``/``test`` lists of patient ids (and for unpaired training,
            optionally ``train_<source>`` and ``train_<target>``); default: a seeded split by patient.
        disjoint_unpaired: in unpaired mode without explicit lists, use disjoint halves of the training patients
            for source and target (as with real unpaired data).
        mask_keys: extra masks to load (e.g. ``["lesion_mask"]`` for lesion-weighted losses and SUV metrics).
        mode: ``"2d"``, ``"2.5d"`` or ``"3d"``.
        slices: channels in 2.5D mode.
        patch_size: training crop (H, W) for 2D/2.5D or patch (I, J, K) for 3D; None = whole slice.
        samples_per_volume: 3D patches per patient and epoch.
        min_foreground: skip training slices with less body than this fraction.
        ct_window: CT training window in HU (low, high).
        pet_window: PET training window in SUV (low, high).
        pet_log: log-compress PET before windowing.
        mr_percentiles: MR percentile normalisation (lower, upper).
        augment: flips and small rotations (MONAI) on training samples.
        scale_prob: probability of a random isotropic zoom when augmenting (see :class:`data.transforms.VolumeAugment`).
        scale_range: zoom factors in [1 - scale_range, 1 + scale_range].
        elastic_prob: probability of elastic deformation when augmenting.
        batch_size: training batch size.
        num_workers: DataLoader workers.
        val_fraction: validation patients when no ``splits`` file is given.
        test_fraction: test patients when no ``splits`` file is given.
        cache_dir: a :class:`data.cache.VolumeCache` folder (decode once, then memory-map); None disables.
        seed: seed of splits, crops, pairing and augmentation.
    """

    def __init__(
        self,
        data_dir: str,
        source: str = "ct",
        target: str = "mr",
        paired: bool = False,
        splits: str | None = None,
        disjoint_unpaired: bool = True,
        mask_keys: Sequence[str] = (),
        mode: Literal["2d", "2.5d", "3d"] = "2d",
        slices: int = 1,
        patch_size: Sequence[int] | None = None,
        samples_per_volume: int = 4,
        min_foreground: float = 0.05,
        ct_window: tuple[float, float] = (-1024.0, 3000.0),
        pet_window: tuple[float, float] = (0.0, 20.0),
        pet_log: bool = False,
        mr_percentiles: tuple[float, float] = (0.5, 99.5),
        augment: bool = True,
        scale_prob: float = 0.0,
        scale_range: float = 0.1,
        elastic_prob: float = 0.0,
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for key in (source, target):
            if key not in IMAGE_MODALITIES:
                raise ValueError(f"source/target must be one of {list(IMAGE_MODALITIES)}, got {key!r}")
        if source == target:
            raise ValueError(f"source and target are both {source!r}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.source, self.target, self.paired = source, target, paired
        self.mask_keys = list(mask_keys)
        self.windows: dict[str, Window] = {
            "ct": CTWindow(*ct_window), "pet": PETWindow(*pet_window, log=pet_log), "mr": MRPercentileWindow(*mr_percentiles)}
        self._datasets: dict[str, Dataset] = {}

    # -- splits ------------------------------------------------------------------------------------
    def _cache(self) -> Any:
        if self.hparams.cache_dir is None:
            return None
        from data.cache import VolumeCache

        return VolumeCache(self.hparams.cache_dir)

    def _records(self, keys: Sequence[str]) -> dict[str, PatientRecord]:
        return {r.patient_id: r for r in find_patients(self.data_dir, keys)}

    def _split_ids(self) -> dict[str, list[str]]:
        hp = self.hparams
        if hp.splits is not None:
            path = Path(hp.splits)
            try:
                splits = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise VolumeError(path, f"cannot read the splits file: {e}") from e
            missing = {"train", "val", "test"} - set(splits)
            if missing:
                raise VolumeError(path, f"splits file lacks {sorted(missing)}")
            seen: dict[str, str] = {}
            for name in ("train", "val", "test"):
                for pid in splits[name]:
                    if pid in seen:
                        raise VolumeError(path, f"patient {pid} is in both {seen[pid]} and {name}: splits must be disjoint")
                    seen[pid] = name
            return splits
        ids = [p.name for p in self.data_dir.iterdir() if p.is_dir()] if self.data_dir.is_dir() else []
        if not ids:
            raise VolumeError(self.data_dir, "no patient folders found")
        splits = split_patients(ids, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction, seed=hp.seed)
        return splits

    def _dataset(self, records: list[PatientRecord], image_keys: list[str], *, train: bool, masks: list[str]) -> VolumeDataset:
        hp = self.hparams
        if not records:
            raise VolumeError(self.data_dir, f"no patients with {image_keys} for this split")
        spatial_dims = 3 if hp.mode == "3d" else 2
        transform = VolumeAugment(image_keys=image_keys, mask_keys=["body_mask"] + masks, spatial_dims=spatial_dims,
                                  scale_prob=hp.scale_prob, scale_range=hp.scale_range,
                                  elastic_prob=hp.elastic_prob) if (train and hp.augment) else None
        return VolumeDataset(
            records, image_keys=image_keys, mask_keys=masks, windows=self.windows,
            mode=hp.mode if train else "3d", slices=hp.slices, patch_size=hp.patch_size if train else None,
            samples_per_volume=hp.samples_per_volume, min_foreground=hp.min_foreground if train else 0.0,
            transform=transform, cache=self._cache(), seed=hp.seed, physical_keys=[] if train else image_keys)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of the requested stage (fit, validate, test, predict)."""
        splits = self._split_ids()
        src, tgt = self.source, self.target
        if stage in (None, "fit"):
            if self.paired:
                recs = self._records([src, tgt] + self.mask_keys)
                train = [recs[p] for p in splits["train"] if p in recs]
                self._datasets["train"] = self._dataset(train, [src, tgt], train=True, masks=self.mask_keys)
            else:
                src_ids = splits.get(f"train_{src}")
                tgt_ids = splits.get(f"train_{tgt}")
                if src_ids is None or tgt_ids is None:
                    train_ids = sorted(splits["train"])
                    if self.hparams.disjoint_unpaired and len(train_ids) >= 2:
                        src_ids, tgt_ids = train_ids[0::2], train_ids[1::2]
                    else:
                        src_ids = tgt_ids = train_ids
                rs, rt = self._records([src]), self._records([tgt])
                a = self._dataset([rs[p] for p in src_ids if p in rs], [src], train=True, masks=[])
                b = self._dataset([rt[p] for p in tgt_ids if p in rt], [tgt], train=True, masks=[])
                self._datasets["train"] = UnpairedDataset(a, b, seed=self.hparams.seed)
        for name in ("val", "test"):
            if stage in (None, "fit" if name == "val" else "test", "validate" if name == "val" else "test") and splits.get(name):
                recs = self._records([src, tgt])
                held = [recs[p] for p in splits[name] if p in recs]
                masks: list[str] = []
                if self.mask_keys and held:  # evaluate lesion metrics when every held-out patient has the masks
                    with_masks = self._records_optional([src, tgt] + self.mask_keys)
                    if all(r.patient_id in with_masks for r in held):
                        held, masks = [with_masks[r.patient_id] for r in held], self.mask_keys
                if held:
                    self._datasets[name] = self._dataset(held, [src, tgt], train=False, masks=masks)

    def _records_optional(self, keys: Sequence[str]) -> dict[str, PatientRecord]:
        try:
            return self._records(keys)
        except VolumeError:
            return {}

    # -- loaders -----------------------------------------------------------------------------------
    def _loader(self, name: str, *, batch_size: int, shuffle: bool) -> DataLoader:
        if name not in self._datasets:
            raise RuntimeError(f"no {name} data: call setup() first or check the splits of {self.data_dir}")
        nw = self.hparams.num_workers
        return ResumableDataLoader(self._datasets[name], batch_size=batch_size, shuffle=shuffle, seed=self.hparams.seed,
                                   progress=self._progress if shuffle else None, num_workers=nw,
                                   persistent_workers=nw > 0, drop_last=shuffle and len(self._datasets[name]) > batch_size)

    def _progress(self) -> tuple[int, int]:
        t = self.trainer
        if t is None:
            return 0, 0
        return t.current_epoch, t.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        """Shuffled slices/patches; order, crops, partners and augmentation are functions of (seed, epoch), and
        the loader's position is saved in checkpoints, so a mid-epoch resume continues exactly."""
        return self._loader("train", batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Whole held-out volumes, one patient per batch."""
        return self._loader("val", batch_size=1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Whole test volumes, one patient per batch."""
        return self._loader("test", batch_size=1, shuffle=False)


def __getattr__(name: str) -> Any:
    if name == "TileDataModule":  # defined beside the tile datasets; imported lazily (OpenSlide loads on use)
        from data.tile_datamodule import TileDataModule

        return TileDataModule
    raise AttributeError(name)
