"""The one dispatch on a source file's format: NIfTI via :mod:`data.volumes.nifti`, DICOM via :mod:`data.volumes.dicom`.

Used by :class:`data.volumes.cache.VolumeCache` on a miss and by :func:`data.volumes.io.load_volume` without a
cache; it never consults a cache itself (layers: io -> cache -> readers -> nifti/dicom -> volume).
"""
from __future__ import annotations

from pathlib import Path

from data.errors import VolumeError
from data.volumes.dicom import read_dicom
from data.volumes.nifti import read_nifti
from data.volumes.volume import Volume, check_finite, is_nifti_path

__all__ = ["decode_volume"]


def decode_volume(path: str | Path) -> Volume:
    """Decode a NIfTI file, a DICOM file or a DICOM series folder into a float32 volume, checked finite.

    Args:
        path: ``.nii``/``.nii.gz`` file, DICOM file, or folder holding one DICOM series.

    Raises:
        VolumeError: naming the file, when it is missing, unreadable, not 3D, or holds NaN/Inf values.
    """
    p = Path(path)
    if not p.exists():
        raise VolumeError(p, "no such file or folder")
    volume = read_nifti(p) if (p.is_file() and is_nifti_path(p)) else read_dicom(p)
    check_finite(volume.array, p)
    return volume
