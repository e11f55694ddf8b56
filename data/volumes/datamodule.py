"""The LightningDataModule of volume translation (paired or unpaired), configurable from YAML.

Splits are always by patient, never by slice, so no anatomy leaks between train and test. Loading follows
:mod:`data.loading`: a seeded, resumable training order cut into per-step blocks per DDP rank, and held-out
patients shared out between ranks without duplicates. Under DDP create the Trainer with
``use_distributed_sampler=False`` (the module checks).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Sequence

import lightning as L
from torch.utils.data import DataLoader, Dataset

from data.errors import VolumeError
from data.intensity import Window, modality_windows
from data.loading import (
    epoch_to_run,
    eval_loader,
    loop_progress,
    per_rank_batch,
    rank_and_world,
    require_eval_items,
    require_own_sampler,
    train_loader,
)
from data.splits import split_items
from data.volumes.cache import VolumeCache
from data.volumes.datasets import IMAGE_MODALITIES, PatientRecord, UnpairedDataset, VolumeDataset, find_patients
from data.volumes.transforms import VolumeAugment

__all__ = ["VolumeTranslationDataModule", "split_patients"]


def split_patients(ids: Sequence[str], *, val_fraction: float, test_fraction: float,
                   seed: int) -> dict[str, list[str]]:
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
        scale_prob: probability of a random isotropic zoom when augmenting (see
            :class:`data.volumes.transforms.VolumeAugment`).
        scale_range: zoom factors in [1 - scale_range, 1 + scale_range].
        elastic_prob: probability of elastic deformation when augmenting.
        batch_size: GLOBAL training batch: each of the ``world_size`` DDP ranks takes ``batch_size / world_size``
            (a multiple of the ranks), so the training dynamics do not depend on the number of devices.
        num_workers: DataLoader workers.
        val_fraction: validation patients when no ``splits`` file is given.
        test_fraction: test patients when no ``splits`` file is given.
        cache_dir: a :class:`data.volumes.cache.VolumeCache` folder (decode once, then memory-map); None disables.
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
        self.windows: dict[str, Window] = modality_windows(ct_window=ct_window, pet_window=pet_window, pet_log=pet_log,
                                                           mr_percentiles=mr_percentiles)
        self._datasets: dict[str, Dataset] = {}
        self.mr_window: tuple[float, float] | None = None
        self._built: set[str | None] = set()

    # -- splits ------------------------------------------------------------------------------------
    def _cache(self) -> VolumeCache | None:
        return None if self.hparams.cache_dir is None else VolumeCache(self.hparams.cache_dir)

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
                        raise VolumeError(
                            path, f"patient {pid} is in both {seen[pid]} and {name}: splits must be disjoint")
                    seen[pid] = name
            return splits
        ids = [p.name for p in self.data_dir.iterdir() if p.is_dir()] if self.data_dir.is_dir() else []
        if not ids:
            raise VolumeError(self.data_dir, "no patient folders found")
        splits = split_patients(ids, val_fraction=hp.val_fraction, test_fraction=hp.test_fraction, seed=hp.seed)
        return splits

    def _dataset(self, records: list[PatientRecord], image_keys: list[str], *, train: bool,
                 masks: list[str]) -> VolumeDataset:
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
        """Build the datasets of the requested stage (fit, validate, test, predict).

        Args:
            stage: ``"fit"``, ``"validate"``, ``"test"``, ``"predict"`` or None for all.
        """
        if stage in self._built:  # already built (check_inputs ran first): Lightning calls setup again
            return
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
            stages = (None, "fit", "validate") if name == "val" else (None, "test")
            if stage in stages and splits.get(name):
                recs = self._records([src, tgt])
                held = [recs[p] for p in splits[name] if p in recs]
                masks: list[str] = []
                if self.mask_keys and held:  # evaluate lesion metrics when every held-out patient has the masks
                    with_masks = self._records_optional([src, tgt] + self.mask_keys)
                    if all(r.patient_id in with_masks for r in held):
                        held, masks = [with_masks[r.patient_id] for r in held], self.mask_keys
                if held:
                    self._datasets[name] = self._dataset(held, [src, tgt], train=False, masks=masks)

        self._built.add(stage)

    def check_inputs(self, stage: str | None = "fit") -> None:
        """Check the data folder, the splits file and every split's volumes by building the stage's datasets, so a
        bad path fails before a run writes anything (``medsynth fit`` calls this first; ``setup`` reuses the result).

        Args:
            stage: the Lightning stage about to run.
        """
        if not self.data_dir.is_dir():
            raise VolumeError(self.data_dir, "data folder not found (data.init_args.data_dir)")
        self.setup(stage)

    def _records_optional(self, keys: Sequence[str]) -> dict[str, PatientRecord]:
        try:
            return self._records(keys)
        except VolumeError:
            return {}

    # -- checkpoint state ----------------------------------------------------------------------------
    def _training_mr(self) -> VolumeDataset | None:
        train = self._datasets.get("train")
        sides = [train.a, train.b] if isinstance(train, UnpairedDataset) else [train]
        return next((ds for ds in sides if isinstance(ds, VolumeDataset) and "mr" in ds.image_keys), None)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint records beside the hyperparameters: ``mr_window``, the mean window of the training MR
        samples ([low, high], per-volume percentiles averaged over the samples), when MR is trained on. A synthetic
        MR (normalised per volume in training) is mapped back to MR units with it."""
        ds = self._training_mr()
        if ds is not None:
            w = ds.mean_window("mr")
            self.mr_window = (w.low, w.high)
        return {} if self.mr_window is None else {"mr_window": [float(v) for v in self.mr_window]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` recorded.

        Args:
            state_dict: the dict a checkpoint holds under this class's name.
        """
        window = state_dict.get("mr_window")
        self.mr_window = None if window is None else (float(window[0]), float(window[1]))

    # -- loaders -----------------------------------------------------------------------------------
    def _split(self, name: str) -> Dataset:
        if name not in self._datasets:
            raise RuntimeError(f"no {name} data: call setup() first or check the splits of {self.data_dir}")
        return self._datasets[name]

    def _eval_loader(self, name: str, what: str) -> DataLoader:
        ds = self._split(name)
        require_own_sampler(self.trainer, type(self).__name__)
        rank, world = rank_and_world(self.trainer)
        require_eval_items(len(ds), world, what)  # type: ignore[arg-type]
        return eval_loader(ds, batch_size=1, rank=rank, world_size=world, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        """Shuffled slices/patches in per-step blocks per rank; order, crops, partners and augmentation are
        functions of (seed, epoch), and the loader's position is saved in checkpoints, so a mid-epoch resume
        continues exactly. The incomplete last global batch is dropped (unless the split holds less than one
        global batch: then it is completed by wrapping around)."""
        ds = self._split("train")
        require_own_sampler(self.trainer, type(self).__name__)
        rank, world = rank_and_world(self.trainer)
        b = per_rank_batch(self.hparams.batch_size, world, type(self).__name__)
        return train_loader(ds, batch_size=b, seed=self.hparams.seed, rank=rank, world_size=world,
                            drop_last=len(ds) > self.hparams.batch_size, progress=lambda: loop_progress(self.trainer),  # type: ignore[arg-type]
                            num_workers=self.hparams.num_workers, epoch=epoch_to_run(self.trainer))

    def val_dataloader(self) -> DataLoader:
        """Whole held-out volumes, one patient per batch; under DDP rank ``r`` takes patients ``r, r + world, ...``."""
        return self._eval_loader("val", "validation patients")

    def test_dataloader(self) -> DataLoader:
        """Whole test volumes, one patient per batch, shared out between ranks like validation."""
        return self._eval_loader("test", "test patients")
