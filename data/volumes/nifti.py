"""Read a NIfTI-1/2 file (``.nii`` or ``.nii.gz``) into a :class:`data.volumes.volume.Volume` with nibabel.

The array is float32 in nibabel axis order (scaling applied), the affine is nibabel's (sform, else qform),
and the modality comes from a JSON sidecar (``ct.nii.gz`` -> ``ct.json``) when there is one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from data.errors import VolumeError
from data.volumes.volume import Volume, sidecar_modality

__all__ = ["read_nifti"]


def read_nifti(path: str | Path) -> Volume:
    """Read a NIfTI file as a float32 volume in physical units (trailing singleton axes dropped, 2D as one slice).

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Raises:
        VolumeError: naming the file when it is not NIfTI, truncated, not 3D, or its affine is not finite.
    """
    path = Path(path)
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
        modality=sidecar_modality(path) or "OT",
        source=str(path),
        meta=meta,
    )
