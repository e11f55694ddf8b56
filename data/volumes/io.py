"""Load a volume from any supported source: :func:`load_volume` (optionally through a :class:`VolumeCache`).

Sources: ``.nii``/``.nii.gz`` (nibabel), a DICOM file or single-series folder (pydicom), or a cache entry
(``<key>.npy`` or its ``<key>.json``) written by :class:`data.volumes.cache.VolumeCache`, returned memory-mapped.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from data.volumes.cache import VolumeCache, open_entry
from data.volumes.readers import decode_volume
from data.volumes.volume import Volume

__all__ = ["load_volume", "read_volume_uncached"]


def load_volume(
    path: str | Path,
    *,
    modality: str | None = None,
    cache: VolumeCache | str | Path | None = None,
) -> Volume:
    """Read a volume as float32 in physical units with its voxel-to-RAS+ affine.

    Dispatches on ``path``: ``.nii``/``.nii.gz`` via nibabel; a DICOM file or a folder of one DICOM series
    via :func:`data.volumes.dicom.read_dicom`; a cache entry (``<key>.npy`` or its ``<key>.json``) written by
    :class:`data.volumes.cache.VolumeCache`, returned memory-mapped.

    Args:
        path: NIfTI file, DICOM file, DICOM series folder or cache entry.
        modality: override the modality (``"CT"``, ``"MR"``, ``"PT"``, ``"SEG"``, ``"OT"``). Without it DICOM
            uses its Modality tag and NIfTI its JSON sidecar (``"modality"`` or BIDS ``"Modality"``), else ``"OT"``.
        cache: a :class:`data.volumes.cache.VolumeCache` or its root folder; the first read stores the volume
            there, later reads of the same content are memory-mapped (read-only arrays).

    Raises:
        VolumeError: naming the file, when it is missing, unreadable, not 3D, or holds NaN/Inf values.
    """
    if cache is not None:
        store = cache if isinstance(cache, VolumeCache) else VolumeCache(cache)
        volume = store.get(path)
    else:
        volume = read_volume_uncached(path)
    if modality is not None:
        volume = replace(volume, modality=modality, meta=dict(volume.meta))
    return volume


def read_volume_uncached(path: str | Path) -> Volume:
    """Decode ``path`` (NIfTI, DICOM file/folder or cache entry) without consulting any cache.

    Args:
        path: NIfTI file, DICOM file, DICOM series folder or cache entry.

    Raises:
        VolumeError: naming the file, when it is missing, unreadable, not 3D, or holds NaN/Inf values.
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".npy", ".json"):
        return open_entry(p)
    return decode_volume(p)
