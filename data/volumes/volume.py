"""The :class:`Volume` dataclass and the path helpers every volume module shares: a leaf (numpy and errors only).

Axis order and affine follow nibabel/MONAI: ``array[i, j, k]`` is the voxel at index (i, j, k) and
``affine @ [i, j, k, 1]`` is its position in RAS+ world millimetres. A volume read from a DICOM series
and the same volume read from NIfTI compare equal.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import VolumeError
from data.files import sidecar_path

__all__ = [
    "MODALITIES",
    "NIFTI_SUFFIXES",
    "Volume",
    "check_finite",
    "is_nifti_path",
    "nifti_stem",
    "sidecar_modality",
]

#: DICOM-style modality codes a volume may carry.
MODALITIES = ("CT", "MR", "PT", "SEG", "OT")
#: File name endings of NIfTI files.
NIFTI_SUFFIXES = (".nii", ".nii.gz")


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

    def same_geometry(self, other: Volume, atol: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and (to ``atol`` mm) the same affine.

        Args:
            other: the volume to compare with.
            atol: tolerance on the affine entries, in mm.
        """
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))


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


def sidecar_modality(path: str | Path) -> str | None:
    """The modality a JSON sidecar states (``"modality"`` or BIDS ``"Modality"``), or None.

    Args:
        path: image file whose sidecar (see :func:`data.files.sidecar_path`) is read.
    """
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
