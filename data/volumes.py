"""Volumes in physical units with their geometry: the :class:`Volume` dataclass and :func:`load_volume`.

Axis order and affine follow nibabel/MONAI: ``array[i, j, k]`` is the voxel at index (i, j, k) and
``affine @ [i, j, k, 1]`` is its position in RAS+ world millimetres. A volume read from a DICOM series
and the same volume read from NIfTI compare equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data.errors import VolumeError

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
