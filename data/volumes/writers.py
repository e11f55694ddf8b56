r"""Volume writers: NIfTI and DICOM series, each with a provenance manifest (:mod:`data.provenance`).

A file ``ct.nii.gz`` gets ``ct.json`` (BIDS-style sidecar); a DICOM series folder gets ``manifest.json``
inside it. Every manifest holds at least ``software`` ("medsynth"), ``version``, ``created`` (UTC ISO
8601), ``source`` and the caller's ``provenance`` dict. All files are written atomically.

A DICOM series written with ``derived=True`` is marked as a synthetic secondary image (ImageType
DERIVED\SECONDARY, DerivationDescription, ImageComments, BurnedInAnnotation NO), gets new Series and SOP
Instance UIDs, and carries patient identifiers only when given in ``reference`` (copied from the input).
"""
from __future__ import annotations

import copy
import datetime as _dt
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from data.errors import VolumeError
from data.files import atomic_dir, atomic_path, sha256_file, sidecar_path
from data.provenance import MANIFEST_NAME, SOFTWARE, medsynth_version, write_manifest
from data.volumes.dicom import REFERENCE_KEYS
from data.volumes.volume import Volume, check_finite

__all__ = ["ANONYMOUS", "dicom_rescale", "write_dicom_series", "write_nifti"]

#: Patient name and id of a series written without a ``reference``.
ANONYMOUS = "ANONYMOUS"

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_nifti(volume: Volume, path: str | Path, *, provenance: dict | None = None) -> Path:
    """Write ``volume`` as float32 NIfTI-1 with its affine as both sform and qform (code 1, scanner), mm units.

    An affine with shear cannot be a qform; then only the sform is set (qform code 0) and a warning says so.
    The manifest goes to the BIDS-style sidecar (``ct.nii.gz`` -> ``ct.json``).

    Args:
        volume: the volume to write.
        path: destination ending in ``.nii`` or ``.nii.gz``.
        provenance: caller's provenance (model, checkpoint hash, seed, ...) stored in the manifest.

    Raises:
        VolumeError: naming ``path`` for a wrong suffix or non-finite values.
    """
    path = Path(path)
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        raise VolumeError(path, "NIfTI output must end in .nii or .nii.gz")
    array = np.asarray(volume.array, dtype=np.float32)
    check_finite(array, path)
    affine = np.asarray(volume.affine, dtype=np.float64)
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units(xyz="mm")
    img.header["descrip"] = f"{SOFTWARE} {medsynth_version()}"[:79].encode()
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if not np.allclose(img.get_qform(), affine, atol=1e-4, rtol=1e-6):
        img.set_qform(None, code=0)
        warnings.warn(f"{path}: affine has shear, stored as sform only (qform_code 0)", RuntimeWarning, stacklevel=2)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    write_manifest(
        sidecar_path(path),
        {
            "source": volume.source,
            "kind": "nifti",
            "file": path.name,
            "sha256": sha256_file(path),
            "modality": volume.modality,
            "shape": list(array.shape),
            "affine": affine.tolist(),
            "provenance": dict(provenance or {}),
        },
    )
    return path



def dicom_rescale(array: np.ndarray) -> tuple[np.dtype, float, float]:
    """Choose the stored integer type and RescaleSlope/Intercept for ``array``.

    Integer values within int16 (or uint16) are stored exactly with slope 1, intercept 0; otherwise the
    value range is spread over the 16-bit range, so ``stored * slope + intercept`` is within ``slope / 2``
    of each value. Slope and intercept are returned as their exact DICOM decimal-string values.

    Args:
        array: finite values in physical units.
    """
    vmin, vmax = float(np.min(array)), float(np.max(array))
    integer = bool(np.all(array == np.round(array)))
    if integer and vmin >= -32768 and vmax <= 32767:
        return np.dtype(np.int16), 1.0, 0.0
    if integer and vmin >= 0 and vmax <= 65535:
        return np.dtype(np.uint16), 1.0, 0.0
    if vmin >= 0:
        slope = _ds_ceil(vmax / 65535.0) if vmax > 0 else 1.0
        return np.dtype(np.uint16), slope, 0.0
    slope = _ds_ceil((vmax - vmin) / 65535.0)
    intercept = float(_ds(vmin + 32768.0 * slope))
    return np.dtype(np.int16), slope, intercept


def write_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    *,
    series_description: str,
    derived: bool = True,
    provenance: dict | None = None,
    reference: dict | None = None,
    shuffle_names: bool = False,
    seed: int = 0,
    series_number: int = 1001,
) -> Path:
    r"""Write ``volume`` as a single-frame DICOM series, one file per slice, plus ``manifest.json``.

    Geometry comes from the affine (RAS -> LPS): ImageOrientationPatient from the i and j axes,
    ImagePositionPatient per slice, PixelSpacing, SliceThickness and SpacingBetweenSlices. InstanceNumber
    follows the slice position along the normal, so readers sorting either way agree. DICOM cannot store a
    left-handed voxel frame: such a volume reads back with its k axis reversed (the same image in space).

    Args:
        volume: the volume; modality CT, MR, PT or OT (a mask should go to NIfTI instead).
        out_dir: destination folder, replaced as a whole once complete.
        series_description: SeriesDescription (at most 64 characters), e.g. naming the model.
        derived: mark as synthetic: ImageType DERIVED\SECONDARY, DerivationDescription, ImageComments.
        provenance: caller's provenance stored in the manifest.
        reference: identifiers copied from the input series (keys from :data:`REFERENCE_KEYS`, as in
            ``Volume.meta["reference"]``): the study, frame of reference and patient are reused, the
            series is referenced. Without it, new study/frame UIDs and anonymous patient placeholders.
        shuffle_names: name files with seeded random tokens, so nothing can rely on names for order.
        seed: seed for ``shuffle_names``.
        series_number: SeriesNumber.

    Raises:
        VolumeError: naming ``out_dir`` for an unsupported modality, non-finite values, an affine DICOM
            cannot express, a too long description or unknown reference keys.
    """
    out_dir = Path(out_dir)
    reference = dict(reference or {})
    unknown = sorted(set(reference) - set(REFERENCE_KEYS))
    if unknown:
        raise VolumeError(out_dir, f"reference has unsupported keys {unknown}; allowed: {list(REFERENCE_KEYS)}")
    sop_class = _SOP_CLASSES.get(volume.modality)
    if sop_class is None:
        raise VolumeError(
            out_dir, f"cannot write modality {volume.modality!r} as an image series; write masks as NIfTI")
    if len(series_description) > 64:
        raise VolumeError(out_dir, f"series_description is {len(series_description)} characters; DICOM allows 64")
    array = np.asarray(volume.array, dtype=np.float64)
    check_finite(array, out_dir)

    geometry = _dicom_geometry(volume.affine, out_dir)
    dtype, slope, intercept = dicom_rescale(array)
    info = np.iinfo(dtype)
    stored = np.clip(np.round((array - intercept) / slope), info.min, info.max).astype(dtype)

    n_i, n_j, n_k = array.shape
    order = list(range(n_k)) if geometry["gap"] > 0 else list(range(n_k - 1, -1, -1))
    instance = {k: n + 1 for n, k in enumerate(order)}
    names = _file_names(n_k, instance, shuffle_names, seed)

    version = medsynth_version()
    now = _dt.datetime.now(_dt.timezone.utc)
    date, time_ = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    study_uid = reference.get("StudyInstanceUID") or generate_uid()
    for_uid = reference.get("FrameOfReferenceUID") or generate_uid()
    series_uid = generate_uid()
    source_series = reference.get("SeriesInstanceUID")

    base = Dataset()
    base.SpecificCharacterSet = "ISO_IR 192"
    base.SOPClassUID = sop_class
    base.Modality = volume.modality
    base.PatientName = reference.get("PatientName", ANONYMOUS)
    base.PatientID = reference.get("PatientID", ANONYMOUS)
    base.PatientBirthDate = ""
    base.PatientSex = ""
    base.StudyInstanceUID = study_uid
    base.StudyDate = "" if "StudyInstanceUID" in reference else date
    base.StudyTime = "" if "StudyInstanceUID" in reference else time_
    base.StudyID = ""
    base.AccessionNumber = ""
    base.ReferringPhysicianName = ""
    base.SeriesInstanceUID = series_uid
    base.SeriesNumber = int(series_number)
    base.SeriesDescription = series_description
    base.SeriesDate, base.SeriesTime = date, time_
    base.ContentDate, base.ContentTime = date, time_
    base.InstanceCreationDate, base.InstanceCreationTime = date, time_
    base.Manufacturer = SOFTWARE
    base.SoftwareVersions = version
    base.FrameOfReferenceUID = for_uid
    base.PositionReferenceIndicator = ""
    if derived:
        base.ImageType = ["DERIVED", "SECONDARY"]
        origin = f" from series {source_series}" if source_series else ""
        base.DerivationDescription = f"Synthetic image generated by {SOFTWARE} {version}{origin}"
        base.ImageComments = f"SYNTHETIC IMAGE generated by {SOFTWARE}; not acquired from a patient"
        base.BurnedInAnnotation = "NO"
    else:
        base.ImageType = ["ORIGINAL", "PRIMARY"]
    base.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
    base.PixelSpacing = [_ds(geometry["row_spacing"]), _ds(geometry["col_spacing"])]
    base.SliceThickness = _ds(abs(geometry["gap"]))
    base.SpacingBetweenSlices = _ds(abs(geometry["gap"]))
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = n_j, n_i
    base.BitsAllocated = base.BitsStored = 16
    base.HighBit = 15
    base.PixelRepresentation = 1 if dtype == np.int16 else 0
    base.RescaleSlope = _ds(slope)
    base.RescaleIntercept = _ds(intercept)
    if volume.modality == "CT":
        base.RescaleType = "HU"
    if volume.modality == "PT":
        units = str(volume.meta.get("units", "SUVbw")).upper()
        units = "GML" if units in ("SUVBW", "GML") else units
        if units.replace("_", "").isalnum() and len(units) <= 16:  # a valid CS value, e.g. GML, BQML, CNTS
            base.Units = units
            base.DecayCorrection = "START"

    lps = _LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)
    with atomic_dir(out_dir) as tmp:
        for k in range(n_k):
            ds = copy.deepcopy(base)
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = instance[k]
            ds.ImagePositionPatient = [_ds(v) for v in (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]]
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype(dtype.newbyteorder("<")).tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = f"MEDSYNTH_{version}"[:16]
            ds.file_meta = meta
            ds.save_as(tmp / names[k], enforce_file_format=True)
        write_manifest(
            tmp / MANIFEST_NAME,
            {
                "source": volume.source,
                "kind": "dicom-series",
                "modality": volume.modality,
                "shape": list(array.shape),
                "affine": np.asarray(volume.affine).tolist(),
                "series_description": series_description,
                "derived": derived,
                "synthetic": derived,
                "StudyInstanceUID": study_uid,
                "SeriesInstanceUID": series_uid,
                "FrameOfReferenceUID": for_uid,
                "referenced_series": source_series,
                "files": [names[k] for k in order],
                "stored_dtype": dtype.name,
                "rescale_slope": slope,
                "rescale_intercept": intercept,
                "max_abs_error": 0.0 if slope == 1.0 and _is_integer(array) else slope / 2.0,
                "provenance": dict(provenance or {}),
            },
        )
    return out_dir


# ----------------------------------------------------------------------------------------------------

_SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}


def _dicom_geometry(affine: np.ndarray, where: Path) -> dict[str, Any]:
    """ImageOrientationPatient, PixelSpacing and the signed slice gap along the normal from a RAS affine."""
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    c0, c1, c2 = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    sx, sy = float(np.linalg.norm(c0)), float(np.linalg.norm(c1))
    if sx == 0 or sy == 0:
        raise VolumeError(where, "affine has a zero-length in-plane axis")
    row, col = c0 / sx, c1 / sy
    if abs(float(row @ col)) > 1e-4:
        raise VolumeError(where, "affine's i and j axes are not orthogonal; DICOM cannot express in-plane shear")
    normal = np.cross(row, col)
    gap = float(c2 @ normal)
    if abs(gap) < 1e-6:
        raise VolumeError(where, "affine's k axis lies in the image plane")
    return {"orientation": [*row, *col], "row_spacing": sy, "col_spacing": sx, "gap": gap}


def _file_names(n: int, instance: dict[int, int], shuffle: bool, seed: int) -> list[str]:
    if not shuffle:
        return [f"IM{instance[k]:05d}.dcm" for k in range(n)]
    rng = np.random.default_rng(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = f"{rng.bytes(8).hex()}.dcm"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _ds(value: float) -> str:
    """``value`` as a DICOM decimal string (at most 16 characters)."""
    return format_number_as_ds(float(value) + 0.0)  # + 0.0 turns -0.0 into 0.0


def _ds_ceil(value: float) -> float:
    """The smallest DS-representable number >= ``value`` (so a rescale range never shrinks)."""
    out = float(_ds(value))
    bump = value
    while out < value:
        bump = np.nextafter(bump, np.inf) * (1 + 1e-12)
        out = float(_ds(bump))
    return out


def _is_integer(array: np.ndarray) -> bool:
    return bool(np.all(array == np.round(array)))
