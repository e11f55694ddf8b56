"""Volumes in physical units with their geometry: reading (NIfTI, DICOM, cache), datasets, augmentation, writing.

Modules, from the leaf up (each imports only those before it):

* :mod:`~data.volumes.volume`: the :class:`Volume` dataclass, :func:`check_finite`, NIfTI path helpers.
* :mod:`~data.volumes.nifti`, :mod:`~data.volumes.dicom`: the two readers; :mod:`~data.volumes.readers` picks one.
* :mod:`~data.volumes.cache`: :class:`VolumeCache`, content-addressed and memory-mapped.
* :mod:`~data.volumes.io`: :func:`load_volume` (with or without a cache).
* :mod:`~data.volumes.writers`: :func:`write_nifti`, :func:`write_dicom_series` with provenance manifests.
* :mod:`~data.volumes.datasets`: slices, 2.5D stacks and 3D patches (:class:`VolumeDataset`, :class:`UnpairedDataset`).
* :mod:`~data.volumes.transforms`: :class:`VolumeAugment` (MONAI).
* :mod:`~data.volumes.datamodule`: :class:`VolumeTranslationDataModule`, :func:`split_patients` (Lightning).

The datasets (torch), ``VolumeAugment`` (MONAI), ``VolumeTranslationDataModule`` and ``split_patients``
(Lightning) are exported lazily (PEP 562): ``import data.volumes`` loads numpy, nibabel and pydicom only, so
reading and writing volumes (and a command's ``--help``) stays fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from data.files import sidecar_path
from data.volumes.cache import VolumeCache, content_hash, open_entry
from data.volumes.dicom import REFERENCE_KEYS, list_series_files, read_dicom
from data.volumes.io import load_volume, read_volume_uncached
from data.volumes.nifti import read_nifti
from data.volumes.readers import decode_volume
from data.volumes.volume import (
    MODALITIES,
    NIFTI_SUFFIXES,
    Volume,
    check_finite,
    is_nifti_path,
    nifti_stem,
    sidecar_modality,
)
from data.volumes.writers import dicom_rescale, write_dicom_series, write_nifti

if TYPE_CHECKING:
    from data.volumes.datamodule import VolumeTranslationDataModule, split_patients
    from data.volumes.datasets import IMAGE_MODALITIES, PatientRecord, UnpairedDataset, VolumeDataset, find_patients
    from data.volumes.transforms import VolumeAugment

__all__ = [
    "IMAGE_MODALITIES",
    "MODALITIES",
    "NIFTI_SUFFIXES",
    "REFERENCE_KEYS",
    "PatientRecord",
    "UnpairedDataset",
    "Volume",
    "VolumeAugment",
    "VolumeCache",
    "VolumeDataset",
    "VolumeTranslationDataModule",
    "check_finite",
    "content_hash",
    "decode_volume",
    "dicom_rescale",
    "find_patients",
    "is_nifti_path",
    "list_series_files",
    "load_volume",
    "nifti_stem",
    "open_entry",
    "read_dicom",
    "read_nifti",
    "read_volume_uncached",
    "sidecar_modality",
    "sidecar_path",
    "split_patients",
    "write_dicom_series",
    "write_nifti",
]


def __getattr__(name: str) -> Any:
    """Import the torch-, MONAI- and Lightning-backed names on first use (PEP 562).

    Args:
        name: the attribute asked for.
    """
    if name in ("IMAGE_MODALITIES", "PatientRecord", "UnpairedDataset", "VolumeDataset", "find_patients"):
        from data.volumes import datasets

        return getattr(datasets, name)
    if name == "VolumeAugment":
        from data.volumes.transforms import VolumeAugment

        return VolumeAugment
    if name in ("VolumeTranslationDataModule", "split_patients"):
        from data.volumes import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
