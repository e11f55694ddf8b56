"""Read a DICOM file or a single-series folder into a :class:`data.volumes.volume.Volume`.

Geometry follows nibabel/MONAI: ``array[i, j, k]`` where ``i`` runs along a row of the DICOM image (the
column index), ``j`` down the rows and ``k`` over slices sorted by their position projected on the slice
normal (``row cosines x column cosines``); the affine maps (i, j, k) to RAS+ millimetres (DICOM's LPS with x
and y negated). File names play no part in the order. Pixel values are rescaled to physical units
(RescaleSlope/RescaleIntercept, HU for CT); PET in Bq/ml is converted to body-weight SUV when the header
has what that needs.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from data.errors import VolumeError
from data.volumes.volume import MODALITIES, Volume, check_finite

#: Header fields kept in ``Volume.meta["reference"]`` so a derived series can point back to its input.
REFERENCE_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName")

#: Files in a series folder that are skipped rather than read (sidecars, manifests, indexes).
IGNORED_SUFFIXES = frozenset({".json", ".txt", ".md", ".csv", ".xml", ".html", ".log"})
IGNORED_NAMES = frozenset({"DICOMDIR"})

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ORIENTATION_TOL = 1e-4  # direction cosines
_SPACING_TOL = 1e-4  # mm
_GAP_REL_TOL = 0.01  # relative deviation of a slice gap from the median gap
_GAP_ABS_TOL = 1e-3  # mm


def list_series_files(folder: str | Path) -> list[Path]:
    """The files of a series folder that :func:`read_dicom` reads, sorted by name.

    Hidden files, sidecars (``.json``, ``.txt``, ...) and ``DICOMDIR`` are skipped; sub-folders are not
    searched.

    Args:
        folder: a folder holding one DICOM series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeError(folder, "not a folder")
    files = [
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.name not in IGNORED_NAMES
        and p.suffix.lower() not in IGNORED_SUFFIXES
    ]
    return sorted(files, key=lambda p: p.name)


def read_dicom(path: str | Path) -> Volume:
    """Read one DICOM image file, or a folder holding exactly one series, as a float32 volume.

    Args:
        path: a DICOM file (one slice) or a folder of single-frame DICOM files of one series.

    Raises:
        VolumeError: naming the file or folder, for an unreadable or corrupt file, missing pixel data or
            geometry, a mixed series, inconsistent spacing or orientation, missing or duplicate slices.
    """
    path = Path(path)
    if path.is_dir():
        files = list_series_files(path)
        if not files:
            raise VolumeError(path, "folder holds no DICOM files")
        slices = [_read_slice(f) for f in files]
        return _assemble(slices, source=path)
    if path.is_file():
        return _assemble([_read_slice(path)], source=path)
    raise VolumeError(path, "no such DICOM file or folder")


# ----------------------------------------------------------------------------------------------------
# one file


class _Slice:
    """One parsed DICOM image file: header, pixels in physical units and geometry."""

    def __init__(self, path: Path, ds: Dataset, pixels: np.ndarray) -> None:
        self.path = path
        self.ds = ds
        self.pixels = pixels  # (rows, columns) float64, physical units (before any SUV conversion)
        self.orientation = _floats(ds, "ImageOrientationPatient", 6, path)
        self.position = _floats(ds, "ImagePositionPatient", 3, path)
        self.spacing = _floats(ds, "PixelSpacing", 2, path)
        if np.any(self.spacing <= 0):
            raise VolumeError(path, f"PixelSpacing must be positive, got {list(self.spacing)}")
        row, col = self.orientation[:3], self.orientation[3:]
        if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
                and abs(float(row @ col)) < 1e-3):
            raise VolumeError(
                path, f"ImageOrientationPatient {list(self.orientation)} is not two orthogonal unit vectors")


def _read_slice(path: Path) -> _Slice:
    """Parse one file; every failure becomes a VolumeError naming it."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        # No 'DICM' preamble: accept legacy files only if they parse and carry image elements.
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001 - any parser failure means "not DICOM"
            raise VolumeError(path, f"not a DICOM file ({type(exc).__name__}: {exc})") from exc
        if not all(k in ds for k in ("Rows", "Columns", "PixelData")):
            raise VolumeError(
                path,
                "not a DICOM file (no 'DICM' prefix and no image elements); expected NIfTI (.nii/.nii.gz), "
                "a DICOM file or series folder, or a medsynth cache entry (.npy)",
            ) from None
    except Exception as exc:  # noqa: BLE001 - truncated or otherwise corrupt
        raise VolumeError(path, f"unreadable or corrupt DICOM file ({type(exc).__name__}: {exc})") from exc

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise VolumeError(path, f"DICOM file has no pixel data (SOP class {ds.get('SOPClassUID', 'unknown')})")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise VolumeError(path, f"multi-frame DICOM (NumberOfFrames={ds.NumberOfFrames}) is not supported; "
                                "export the series as single-frame files or NIfTI")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise VolumeError(path, f"colour DICOM image (SamplesPerPixel={ds.SamplesPerPixel}) is not a volume slice")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - truncated pixel data, missing decoder, bad group 0028
        raise VolumeError(path, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    if raw.ndim != 2:
        raise VolumeError(path, f"expected a 2D image, pixel data has shape {raw.shape}")
    return _Slice(path, ds, _rescale(raw, ds, path))


def _rescale(raw: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """Stored values -> physical units via RescaleSlope/RescaleIntercept (or the Modality LUT)."""
    if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise VolumeError(path, f"non-finite RescaleSlope/RescaleIntercept ({slope}, {intercept})")
    return raw.astype(np.float64) * slope + intercept


def _floats(ds: Dataset, key: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(key)
    if value is None or len(value) != n:
        raise VolumeError(path, f"missing or malformed {key} (need {n} numbers, got {value!r})")
    out = np.array([float(v) for v in value], dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise VolumeError(path, f"non-finite {key} {list(out)}")
    return out


# ----------------------------------------------------------------------------------------------------
# a series


def _assemble(slices: list[_Slice], source: Path) -> Volume:
    first = slices[0]
    _check_consistent(slices, source)
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    order = sorted(range(len(slices)), key=lambda n: float(slices[n].position @ normal))
    slices = [slices[n] for n in order]
    first = slices[0]
    step = _slice_step(slices, normal, source)

    row_spacing, col_spacing = first.spacing  # PixelSpacing = (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0] = first.orientation[:3] * col_spacing  # i: along a row
    lps[:3, 1] = first.orientation[3:] * row_spacing  # j: down the rows
    lps[:3, 2] = step
    lps[:3, 3] = first.position
    affine = _LPS_TO_RAS @ lps

    # (rows, cols) per slice -> array[i=col, j=row, k=slice]
    array = np.stack([s.pixels.T for s in slices], axis=-1)
    modality = str(first.ds.get("Modality", "OT")).strip().upper() or "OT"
    if modality not in MODALITIES:
        modality = "OT"
    meta: dict[str, Any] = {"format": "dicom", "n_files": len(slices)}
    ref = {k: str(first.ds.get(k)) for k in REFERENCE_KEYS if first.ds.get(k) not in (None, "")}
    if ref:
        meta["reference"] = ref
    if modality == "CT":
        meta["units"] = "HU"
    if modality == "PT":
        array = _pet_units(array, first.ds, meta)
    array = array.astype(np.float32)
    check_finite(array, source)
    return Volume(array=array, affine=affine, modality=modality, source=str(source), meta=meta)


def _check_consistent(slices: list[_Slice], source: Path) -> None:
    first = slices[0]
    uid = first.ds.get("SeriesInstanceUID")
    shape = first.pixels.shape
    for s in slices[1:]:
        if s.ds.get("SeriesInstanceUID") != uid:
            raise VolumeError(
                source,
                f"mixed series: {first.path.name} has SeriesInstanceUID {uid} but {s.path.name} has "
                f"{s.ds.get('SeriesInstanceUID')}; put each series in its own folder",
            )
        if s.pixels.shape != shape:
            raise VolumeError(
                source, f"mixed series: {first.path.name} is {shape[0]}x{shape[1]} but {s.path.name} is "
                        f"{s.pixels.shape[0]}x{s.pixels.shape[1]} (rows x columns)",
            )
        if not np.allclose(s.spacing, first.spacing, atol=_SPACING_TOL, rtol=0):
            raise VolumeError(
                source, f"inconsistent PixelSpacing: {first.path.name} has {list(first.spacing)} but "
                        f"{s.path.name} has {list(s.spacing)}",
            )
        if not np.allclose(s.orientation, first.orientation, atol=_ORIENTATION_TOL, rtol=0):
            raise VolumeError(
                source, f"inconsistent ImageOrientationPatient: {first.path.name} has {list(first.orientation)} "
                        f"but {s.path.name} has {list(s.orientation)}",
            )


def _slice_step(slices: list[_Slice], normal: np.ndarray, source: Path) -> np.ndarray:
    """The 3D vector (LPS mm) between consecutive slices; checks gaps are uniform and positions collinear."""
    if len(slices) == 1:
        ds = slices[0].ds
        thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
        return normal * abs(float(thickness))
    pos = np.stack([s.position for s in slices])
    depth = pos @ normal
    gaps = np.diff(depth)
    for n, g in enumerate(gaps):
        if g < _GAP_ABS_TOL:
            raise VolumeError(
                source, f"duplicate slice position {depth[n]:.4f} mm along the normal in "
                        f"{slices[n].path.name} and {slices[n + 1].path.name}",
            )
    median = float(np.median(gaps))
    for n, g in enumerate(gaps):
        if abs(g - median) > _GAP_REL_TOL * median + _GAP_ABS_TOL:
            what = "missing slice(s)" if g > median else "non-uniform slice spacing"
            raise VolumeError(
                source, f"{what}: gap of {g:.4f} mm between {slices[n].path.name} and {slices[n + 1].path.name} "
                        f"where the series has {median:.4f} mm",
            )
    step = (pos[-1] - pos[0]) / (len(slices) - 1)
    expected = pos[0] + np.arange(len(slices))[:, None] * step
    off = np.linalg.norm(pos - expected, axis=1)
    worst = int(np.argmax(off))
    if off[worst] > _GAP_REL_TOL * float(np.linalg.norm(step)) + _GAP_ABS_TOL:
        raise VolumeError(
            source, f"slice positions are not on a line: {slices[worst].path.name} is {off[worst]:.4f} mm "
                    "off the line through the first and last slice",
        )
    return step


# ----------------------------------------------------------------------------------------------------
# PET units


def _pet_units(array: np.ndarray, ds: Dataset, meta: dict[str, Any]) -> np.ndarray:
    """Convert BQML to SUVbw when possible; record what the values are in ``meta``."""
    units = str(ds.get("Units", "")).strip().upper()
    if units == "GML":
        meta["units"] = "SUVbw"
        return array
    if units != "BQML":
        meta["units"] = units or "unknown"
        return array
    factor, info = _suv_factor(ds)
    if factor is None:
        meta["units"] = "BQML"
        meta["suv_conversion"] = {"done": False, "reason": info["reason"]}
        return array
    meta["units"] = "SUVbw"
    meta["suv_conversion"] = {"done": True, "from": "BQML", "factor": factor, **info}
    return array * factor


def _suv_factor(ds: Dataset) -> tuple[float | None, dict[str, Any]]:
    """Multiplier Bq/ml -> SUVbw (g/ml), with the decay-corrected dose at the reference time."""
    weight = ds.get("PatientWeight")
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not weight or float(weight) <= 0:
        return None, {"reason": "no PatientWeight"}
    if not seq:
        return None, {"reason": "no RadiopharmaceuticalInformationSequence"}
    rp = seq[0]
    dose = rp.get("RadionuclideTotalDose")
    half_life = rp.get("RadionuclideHalfLife")
    if not dose or not half_life or float(dose) <= 0 or float(half_life) <= 0:
        return None, {"reason": "no RadionuclideTotalDose or RadionuclideHalfLife"}
    correction = str(ds.get("DecayCorrection", "START")).strip().upper() or "START"
    if correction == "ADMIN":
        elapsed = 0.0
    elif correction == "START":
        elapsed = _seconds_between_injection_and_series(ds, rp)
        if elapsed is None:
            return None, {"reason": "no SeriesTime or RadiopharmaceuticalStartTime"}
    else:
        return None, {"reason": f"DecayCorrection {correction} is not supported for SUV conversion"}
    decayed_dose = float(dose) * 2.0 ** (-elapsed / float(half_life))
    factor = float(weight) * 1000.0 / decayed_dose
    return factor, {
        "patient_weight_kg": float(weight),
        "injected_dose_bq": float(dose),
        "half_life_s": float(half_life),
        "decay_seconds": elapsed,
        "decay_correction": correction,
        "reference_time": "SeriesTime",
    }


def _seconds_between_injection_and_series(ds: Dataset, rp: Dataset) -> float | None:
    series_time = _parse_tm(ds.get("SeriesTime"))
    if series_time is None:
        return None
    series_date = _parse_da(ds.get("SeriesDate"))
    start_dt = _parse_dt(rp.get("RadiopharmaceuticalStartDateTime"))
    if start_dt is not None and series_date is not None:
        series_dt = _dt.datetime.combine(series_date, _dt.time()) + _dt.timedelta(seconds=series_time)
        return (series_dt - start_dt).total_seconds()
    start = _parse_tm(rp.get("RadiopharmaceuticalStartTime"))
    if start is None:
        return None
    elapsed = series_time - start
    return elapsed + 86400.0 if elapsed < 0 else elapsed  # injection before midnight


def _parse_tm(value: Any) -> float | None:
    """DICOM TM ``HHMMSS.FFFFFF`` (shorter forms allowed) -> seconds since midnight."""
    if value in (None, ""):
        return None
    text = str(value).strip().replace(":", "")
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        return None
    hh, mm, ss = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    return hh * 3600.0 + mm * 60.0 + ss + (float(f"0.{frac}") if frac.isdigit() else 0.0)


def _parse_da(value: Any) -> _dt.date | None:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _parse_dt(value: Any) -> _dt.datetime | None:
    """DICOM DT ``YYYYMMDDHHMMSS.FFFFFF`` (time zone suffix ignored) -> naive datetime."""
    text = str(value or "").strip()
    for sign in "+-":
        text = text.split(sign)[0]
    date = _parse_da(text[:8])
    seconds = _parse_tm(text[8:]) if len(text) > 8 else 0.0
    if date is None or seconds is None:
        return None
    return _dt.datetime.combine(date, _dt.time()) + _dt.timedelta(seconds=seconds)
