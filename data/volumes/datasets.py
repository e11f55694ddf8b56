"""Datasets of registered volumes: 2D slices, 2.5D slice stacks and 3D patches (or whole volumes).

One :class:`VolumeDataset` serves paired training (CT/PET/lesion mask of the same patient, geometry
verified identical), one side of unpaired training, and whole-volume evaluation. :class:`UnpairedDataset`
zips two of them with a seeded random partner, for CycleGAN.

Tensors follow MONAI's channel-first layout in nibabel axis order: a 2D axial slice is ``(C, I, J)``
(``array[:, :, k]``), a 3D patch ``(1, I, J, K)``. Images are mapped to [-1, 1] by their modality window
(:mod:`data.intensity`); masks stay 0/1. Every sample is a pure function of (seed, epoch, index), so a
DataLoader with any number of workers, or a resumed run, sees the same samples.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data.errors import VolumeError
from data.intensity import MODALITY_CODES, Window, WindowParams, default_window, to_unit
from data.loading import split_item
from data.masks import body_mask
from data.volumes.cache import VolumeCache
from data.volumes.io import load_volume
from data.volumes.volume import Volume

__all__ = ["IMAGE_MODALITIES", "Mode", "PatientRecord", "UnpairedDataset", "VolumeDataset", "find_patients"]

#: Sampling mode: 2D slices, 2.5D slice stacks or 3D patches.
Mode = Literal["2d", "2.5d", "3d"]
#: File-stem keys understood as images, with their modality (:data:`data.intensity.MODALITY_CODES`, the one
#: copy); anything in ``mask_keys`` is a 0/1 mask.
IMAGE_MODALITIES = MODALITY_CODES


@dataclass(frozen=True)
class PatientRecord:
    """Files of one patient: key (``ct``, ``mr``, ``pet``, ``lesion_mask``, ``body_mask``) -> path.

    Args:
        patient_id: identifier (split unit: never split a patient across train/val/test).
        files: key -> NIfTI file or DICOM folder.
    """

    patient_id: str
    files: Mapping[str, str | Path]


def find_patients(root: str | Path, keys: Sequence[str]) -> list[PatientRecord]:
    """Patient folders under ``root`` holding every key as ``<key>.nii.gz``, ``<key>.nii`` or a DICOM folder ``<key>/``.

    Args:
        root: folder of patient folders (``root/<patient_id>/ct.nii.gz`` ...).
        keys: required keys; a patient missing any of them is skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise VolumeError(root, "data folder does not exist")
    records = []
    for pdir in sorted(p for p in root.iterdir() if p.is_dir()):
        files: dict[str, Path] = {}
        for key in keys:
            for cand in (pdir / f"{key}.nii.gz", pdir / f"{key}.nii", pdir / key):
                if cand.exists():
                    files[key] = cand
                    break
        if len(files) == len(keys):
            records.append(PatientRecord(pdir.name, files))
    if not records:
        raise VolumeError(
            root, f"no patient folder holds all of {list(keys)} (as <key>.nii.gz, <key>.nii or <key>/ DICOM)")
    return records


@dataclass
class _Loaded:
    volumes: dict[str, np.ndarray]
    params: dict[str, WindowParams]
    body: np.ndarray
    affine: np.ndarray


class VolumeDataset(Dataset):
    """Samples from registered volumes, one record per patient.

    Args:
        records: patients and their files.
        image_keys: keys mapped to [-1, 1] with their modality window (``ct``, ``mr``, ``pet``).
        mask_keys: keys returned as 0/1 float masks (e.g. ``lesion_mask``); missing files are an error.
        windows: override of the window per image key (default :func:`data.intensity.default_window`).
        mode: ``"2d"`` (one slice), ``"2.5d"`` (``slices`` neighbouring slices as channels) or ``"3d"`` (patches).
        slices: channels in 2.5D mode (odd); the centre slice is the target slice.
        patch_size: spatial size of a sample: (H, W) crop of a slice in 2D/2.5D, (I, J, K) patch in 3D; None keeps
            the whole slice or whole volume. Smaller volumes are padded (images with -1, masks with 0).
        samples_per_volume: samples per patient and epoch in 3D mode (1 when ``patch_size`` is None).
        slice_axis: array axis along which slices are taken (2 = axial in nibabel order).
        min_foreground: skip slices whose body-mask fraction is below this (2D/2.5D only).
        body_from: image key to derive the body mask from when no ``body_mask`` key is given (CT: HU threshold).
        transform: called on the sample dict (e.g. :class:`data.volumes.transforms.VolumeAugment`); it gets a
            fresh seed per sample via ``set_random_state`` when it has one.
        cache: a :class:`data.volumes.cache.VolumeCache` (or its folder) so volumes are decoded once and
            memory-mapped.
        seed: base seed for crops, patch positions and augmentation.
        physical_keys: image keys also returned unwindowed, in physical units, as ``<key>_phys`` (for metrics:
            the windowed image is clipped, the reference must not be).
        max_open: how many patients' arrays each process keeps in memory (memory-mapped ones cost nothing).
    """

    def __init__(
        self,
        records: Sequence[PatientRecord],
        *,
        image_keys: Sequence[str],
        mask_keys: Sequence[str] = (),
        windows: Mapping[str, Window] | None = None,
        mode: Mode = "2d",
        slices: int = 1,
        patch_size: Sequence[int] | None = None,
        samples_per_volume: int = 1,
        slice_axis: int = 2,
        min_foreground: float = 0.0,
        body_from: str | None = "ct",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: VolumeCache | str | Path | None = None,
        seed: int = 0,
        physical_keys: Sequence[str] = (),
        max_open: int = 32,
    ) -> None:
        if not records:
            raise ValueError("VolumeDataset needs at least one patient record")
        if mode not in ("2d", "2.5d", "3d"):
            raise ValueError(f"mode must be '2d', '2.5d' or '3d', got {mode!r}")
        if mode == "2.5d" and (slices < 1 or slices % 2 == 0):
            raise ValueError(f"2.5D needs an odd number of slices, got {slices}")
        expected = 3 if mode == "3d" else 2
        if patch_size is not None and len(patch_size) != expected:
            raise ValueError(f"patch_size for mode {mode!r} needs {expected} sizes, got {list(patch_size)}")
        for k in image_keys:
            if k not in IMAGE_MODALITIES and (windows is None or k not in windows):
                raise ValueError(
                    f"image key {k!r} has no known modality; use one of {list(IMAGE_MODALITIES)} or pass a window")
        self.records = list(records)
        self.image_keys = list(image_keys)
        self.mask_keys = list(mask_keys)
        self.windows = {k: (windows or {}).get(k) or default_window(IMAGE_MODALITIES[k]) for k in self.image_keys}
        self.mode = mode
        self.slices = slices if mode == "2.5d" else 1
        self.patch_size = None if patch_size is None else tuple(int(s) for s in patch_size)
        self.samples_per_volume = samples_per_volume if (mode == "3d" and patch_size is not None) else 1
        self.slice_axis = slice_axis
        self.min_foreground = min_foreground
        self.body_from = body_from
        self.transform = transform
        self.cache = cache
        self.seed = seed
        unknown = set(physical_keys) - set(image_keys)
        if unknown:
            raise ValueError(f"physical_keys {sorted(unknown)} are not image keys {list(image_keys)}")
        self.physical_keys = list(physical_keys)
        self.epoch = 0
        self.max_open = max_open
        self._open: OrderedDict[int, _Loaded] = OrderedDict()
        self.index: list[tuple[int, int]] = self._build_index()

    # -- loading -----------------------------------------------------------------------------------
    def _read(self, path: str | Path) -> Volume:
        return load_volume(path, cache=self.cache)

    def _load(self, r: int) -> _Loaded:
        if r in self._open:
            self._open.move_to_end(r)
            return self._open[r]
        rec = self.records[r]
        body_file = "body_mask" in rec.files and "body_mask" not in self.mask_keys
        keys = self.image_keys + self.mask_keys + (["body_mask"] if body_file else [])
        vols: dict[str, Volume] = {}
        for key in keys:
            if key not in rec.files:
                raise VolumeError(None, f"patient {rec.patient_id} has no {key!r} file (has {sorted(rec.files)})")
            vols[key] = self._read(rec.files[key])
        ref_key = keys[0]
        ref = vols[ref_key]
        for v in vols.values():
            if v.shape != ref.shape:
                raise VolumeError(v.source, f"shape {v.shape} differs from {ref_key} {ref.shape} ({ref.source}); "
                                            "paired volumes must share geometry")
            if not np.allclose(v.affine, ref.affine, atol=1e-3):
                raise VolumeError(v.source, f"affine differs from {ref_key} ({ref.source}); paired volumes must be "
                                            f"registered and resampled to one grid\n{v.affine}\nvs\n{ref.affine}")
        params = {k: self.windows[k].fit(vols[k].array) for k in self.image_keys}
        if "body_mask" in vols:
            body = np.asarray(vols["body_mask"].array) > 0.5
        elif self.body_from is not None and self.body_from in vols and IMAGE_MODALITIES.get(self.body_from) == "CT":
            body = body_mask(np.asarray(vols[self.body_from].array))
        else:  # no CT to threshold: everything counts (metrics then cover the whole field of view)
            body = np.ones(ref.shape, dtype=bool)
        loaded = _Loaded({k: v.array for k, v in vols.items()}, params, body, ref.affine)
        self._open[r] = loaded
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return loaded

    def _build_index(self) -> list[tuple[int, int]]:
        index: list[tuple[int, int]] = []
        self.record_windows: list[dict[str, WindowParams]] = []
        for r in range(len(self.records)):
            loaded = self._load(r)
            self.record_windows.append(dict(loaded.params))
            if self.mode == "3d":
                index += [(r, s) for s in range(self.samples_per_volume)]
                continue
            n = loaded.body.shape[self.slice_axis]
            fg = loaded.body.mean(axis=tuple(a for a in range(3) if a != self.slice_axis))
            index += [(r, k) for k in range(n) if fg[k] >= self.min_foreground]
        if not index:
            raise ValueError(f"no slice has a body fraction >= {self.min_foreground}; lower min_foreground")
        return index

    def mean_window(self, key: str) -> WindowParams:
        """The mean window of image ``key`` over the samples (each patient weighted by its samples per epoch).

        For MR (a window per volume) this is what a synthetic MR is mapped back to physical units with.

        Args:
            key: an image key of this dataset.
        """
        if key not in self.image_keys:
            raise KeyError(f"{key!r} is not an image key of this dataset ({self.image_keys})")
        rows = [self.record_windows[r][key] for r, _ in self.index]
        return WindowParams(low=float(np.mean([w.low for w in rows])), high=float(np.mean([w.high for w in rows])),
                            log=bool(np.mean([w.log for w in rows]) > 0.5))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()  # workers reload (memory-mapped from the cache when one is set)
        return state

    def set_epoch(self, epoch: int) -> None:
        """Change crops/patches/augmentation of plain-index keys for a new epoch (still deterministic).

        Args:
            epoch: epoch number.
        """
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    # -- sampling ----------------------------------------------------------------------------------
    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``item``: an index (current epoch) or an ``(index, epoch)`` pair (:class:`data.loading.EpochOrder`).

        Args:
            item: index, or ``(index, epoch)``.
        """
        i, epoch = split_item(item, self.epoch)
        r, pos = self.index[i]
        loaded = self._load(r)
        rng = np.random.default_rng([self.seed, epoch, i])
        raw: dict[str, np.ndarray] = {k: loaded.volumes[k] for k in self.image_keys + self.mask_keys}
        raw["body_mask"] = loaded.body
        raw.update({f"{k}_phys": loaded.volumes[k] for k in self.physical_keys})
        if self.mode == "3d":
            pieces = {k: a[None] for k, a in raw.items()}  # views: a memory-mapped volume is not read yet
        else:
            pieces = self._slice(raw, pos)
        pads: list[tuple[int, int]] = []
        if self.patch_size is not None:
            crop, pads = _crop_plan(next(iter(pieces.values())).shape[1:], self.patch_size, rng)
            pieces = {k: a[(slice(None),) + crop] for k, a in pieces.items()}
        out: dict[str, Any] = {}
        for k, a in pieces.items():
            if k in self.image_keys:
                a, fill = to_unit(np.asarray(a, dtype=np.float32), loaded.params[k]), -1.0
            elif k.endswith("_phys"):
                a, fill = np.asarray(a, dtype=np.float32), float(loaded.params[k[:-5]].low)
            else:
                a, fill = (np.asarray(a) > 0.5).astype(np.float32), 0.0
            if any(p != (0, 0) for p in pads):
                a = np.pad(a, [(0, 0)] + pads, constant_values=fill)
            out[k] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        if self.transform is not None:
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(seed=int(rng.integers(2**31)))
            out = dict(self.transform(out))
        if self.mode != "3d":
            out["slice"] = pos
        out["patient"] = self.records[r].patient_id
        out["window"] = {k: loaded.params[k].as_dict() for k in self.image_keys}
        return out

    def _slice(self, arrays: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
        half = self.slices // 2
        n = next(iter(arrays.values())).shape[self.slice_axis]
        ks = np.clip(np.arange(k - half, k + half + 1), 0, n - 1)  # edge slices repeat at the volume ends
        out = {}
        for key, a in arrays.items():
            idx = ks if (key in self.image_keys or key.endswith("_phys")) else np.array([k])
            out[key] = np.moveaxis(np.take(a, idx, axis=self.slice_axis), self.slice_axis, 0)
        return out

    def volume_info(self, patient: int) -> dict[str, Any]:
        """Geometry and window parameters of one patient (for reassembling predictions in physical units).

        Args:
            patient: record index.
        """
        loaded = self._load(patient)
        return {"patient": self.records[patient].patient_id, "affine": loaded.affine, "params": loaded.params,
                "shape": loaded.body.shape, "files": dict(self.records[patient].files)}


def _crop_plan(spatial: Sequence[int], size: Sequence[int],
               rng: np.random.Generator) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """A random crop of ``spatial`` to ``size`` and, for axes that are too small, the centred padding to apply after."""
    crop, pads = [], []
    for s, c in zip(spatial, size):
        if s >= c:
            st = int(rng.integers(0, s - c + 1))
            crop.append(slice(st, st + c))
            pads.append((0, 0))
        else:
            crop.append(slice(0, s))
            pads.append(((c - s) // 2, c - s - (c - s) // 2))
    return tuple(crop), pads


class UnpairedDataset(Dataset):
    """Two independent :class:`VolumeDataset`s zipped for unpaired (CycleGAN) training.

    Item ``i`` takes sample ``i`` of ``a`` and a seeded random sample of ``b``; keys are those of each side
    (``a``'s and ``b``'s image keys must differ), and ``patient_a``/``patient_b`` name both patients.

    Args:
        a: the domain iterated over (its length is the dataset length).
        b: the other domain, sampled at random.
        seed: base seed of the partner choice.
    """

    def __init__(self, a: VolumeDataset, b: VolumeDataset, seed: int = 0) -> None:
        clash = set(a.image_keys) & set(b.image_keys)
        if clash:
            raise ValueError(f"unpaired domains must have distinct image keys, both have {sorted(clash)}")
        self.a, self.b, self.seed, self.epoch = a, b, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Re-draw partners, crops and augmentation of plain-index keys for a new epoch (deterministic).

        Args:
            epoch: epoch number.
        """
        self.epoch = epoch
        self.a.set_epoch(epoch)
        self.b.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``item`` (index or ``(index, epoch)``) of ``a`` with a seeded partner from ``b``."""
        i, epoch = split_item(item, self.epoch)
        j = int(np.random.default_rng([self.seed, epoch, i, 1]).integers(len(self.b)))
        sa, sb = self.a[(i, epoch)], self.b[(j, epoch)]
        out = {k: v for k, v in sa.items() if k not in ("patient", "window", "slice", "body_mask")}
        out.update({k: v for k, v in sb.items() if k not in ("patient", "window", "slice", "body_mask")})
        out["body_mask_a"], out["body_mask_b"] = sa["body_mask"], sb["body_mask"]
        out["patient_a"], out["patient_b"] = sa["patient"], sb["patient"]
        out["window"] = {**sa["window"], **sb["window"]}
        return out
