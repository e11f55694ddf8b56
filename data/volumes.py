"""Volumes in physical units with their geometry: the :class:`Volume` dataclass and :func:`load_volume`.

Axis order and affine follow nibabel/MONAI: ``array[i, j, k]`` is the voxel at index (i, j, k) and
``affine @ [i, j, k, 1]`` is its position in RAS+ world millimetres. A volume read from a DICOM series
and the same volume read from NIfTI compare equal.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.errors import VolumeError

if TYPE_CHECKING:
    from data.cache import VolumeCache

MODALITIES = ("CT", "MR", "PT", "SEG", "OT")


@dataclass
class Volume:
    """A 3D image in physical units (HU for CT, SUV for PET, arbitrary units for MR).

    Args:
        array: float32 voxel values, shape (I, J, K) in nibabel axis order.
        affine: 4x4 voxel-to-RAS+ world (mm) matrix.
        modality: DICOM-style modality code: ``"CT"``, ``"MR"``, ``"PT"`` (PET), ``"SEG"`` (mask) or ``"OT"``.
        source: where it was read from (file or folder path), for error messages and manifests.
        meta: free-form metadata (e.g. DICOM identifiers kept for derived outputs).
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = "OT"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise VolumeError(self.source or None, f"expected a 3D volume, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise VolumeError(self.source or None, f"affine must be 4x4, got {self.affine.shape}")
        if self.modality not in MODALITIES:
            raise VolumeError(self.source or None, f"unknown modality {self.modality!r}; use one of {MODALITIES}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (I, J, K)."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    def same_geometry(self, other: "Volume", atol: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and (to ``atol`` mm) the same affine."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))


NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | Path) -> bool:
    """True when ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``, case-insensitive).

    Args:
        path: a file path.
    """
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str | None:
    """File name without its NIfTI suffix (``ct.nii.gz`` -> ``ct``), or None when ``path`` is not a NIfTI file.

    Args:
        path: a file path.
    """
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def load_volume(
    path: str | Path,
    *,
    modality: str | None = None,
    cache: "VolumeCache | str | Path | None" = None,
) -> Volume:
    """Read a volume as float32 in physical units with its voxel-to-RAS+ affine.

    Dispatches on ``path``: ``.nii``/``.nii.gz`` via nibabel; a DICOM file or a folder of one DICOM series
    via :func:`data.dicom.read_dicom`; a cache entry (``<key>.npy`` or its ``<key>.json``) written by
    :class:`data.cache.VolumeCache`, returned memory-mapped.

    Args:
        path: NIfTI file, DICOM file, DICOM series folder or cache entry.
        modality: override the modality (``"CT"``, ``"MR"``, ``"PT"``, ``"SEG"``, ``"OT"``). Without it DICOM
            uses its Modality tag and NIfTI its JSON sidecar (``"modality"`` or BIDS ``"Modality"``), else ``"OT"``.
        cache: a :class:`data.cache.VolumeCache` or its root folder; the first read stores the volume there,
            later reads of the same content are memory-mapped (read-only arrays).

    Raises:
        VolumeError: naming the file, when it is missing, unreadable, not 3D, or holds NaN/Inf values.
    """
    if cache is not None:
        from data.cache import VolumeCache

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
    """
    p = Path(path)
    if not p.exists():
        raise VolumeError(p, "no such file or folder")
    if p.is_dir():
        from data.dicom import read_dicom

        volume = read_dicom(p)
    elif is_nifti_path(p):
        volume = _read_nifti(p)
    elif p.suffix.lower() in (".npy", ".json"):
        from data.cache import open_entry

        return open_entry(p)
    else:
        from data.dicom import read_dicom

        volume = read_dicom(p)
    check_finite(volume.array, p)
    return volume


def check_finite(array: np.ndarray, path: str | Path) -> None:
    """Raise VolumeError naming ``path`` when ``array`` holds NaN or Inf.

    Args:
        array: voxel values.
        path: file the values came from, for the message.
    """
    bad = ~np.isfinite(array)
    if bad.any():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(bad.sum()) - n_nan
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise VolumeError(path, f"volume holds {n_nan} NaN and {n_inf} Inf voxel(s) (first at index {first})")


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
        array = np.asarray(img.get_fdata(dtype=np.float32))
        affine = np.asarray(img.affine, dtype=np.float64)
    except VolumeError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated gzip, bad header, unsupported dtype
        raise VolumeError(path, f"unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise VolumeError(path, f"expected a 3D NIfTI volume, got shape {array.shape}")
    if not np.all(np.isfinite(affine)):
        raise VolumeError(path, "NIfTI affine holds NaN/Inf")
    meta: dict[str, Any] = {"format": "nifti"}
    return Volume(
        array=np.ascontiguousarray(array, dtype=np.float32),
        affine=affine,
        modality=_sidecar_modality(path) or "OT",
        source=str(path),
        meta=meta,
    )


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of an image file: ``ct.nii.gz`` -> ``ct.json`` (BIDS style), ``a.png`` -> ``a.json``.

    Args:
        path: image file path.
    """
    p = Path(path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".png", ".npy"):
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(p.stem + ".json")


def _sidecar_modality(path: Path) -> str | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    for key in ("modality", "Modality"):
        value = info.get(key)
        if isinstance(value, str) and value.upper() in MODALITIES:
            return value.upper()
    return None
