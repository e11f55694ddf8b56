"""DICOM reading: pydicom's own test files, hand-built series and MONAI's PydicomReader as references."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.spatial.transform import Rotation

from data.errors import VolumeError
from data.volumes import Volume, load_volume, read_dicom, write_dicom_series

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _oblique_affine(spacing=(0.8, 0.8, 2.5), angles=(12.0, -25.0, 33.0), origin=(-60.0, 25.0, 40.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def _write_slice(
    path: Path,
    pixels: np.ndarray,
    *,
    position,
    orientation=(1, 0, 0, 0, 1, 0),
    spacing=(1.0, 1.0),
    series_uid: str,
    modality: str = "CT",
    instance: int = 1,
    slope: float = 1.0,
    intercept: float = 0.0,
    extra: dict | None = None,
) -> None:
    """A minimal single-frame image written with pydicom only (independent of data.volumes.writers)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [f"{v:.6f}" for v in spacing]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = f"{slope}"
    ds.RescaleIntercept = f"{intercept}"
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<i2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _simple_series(folder: Path, n: int = 5, gap: float = 2.0, shape=(6, 7)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    rng = np.random.default_rng(1)
    paths = []
    for k in range(n):
        p = folder / f"s{k}.dcm"
        _write_slice(p, rng.integers(-100, 100, shape), position=(0, 0, k * gap), series_uid=uid, instance=k + 1)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"]
)
def test_pydicom_testdata_values_and_geometry(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    vol = load_volume(path)
    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    assert vol.shape == (ds.Columns, ds.Rows, 1)
    np.testing.assert_array_equal(vol.array[:, :, 0], expected.T)
    assert vol.modality == ds.Modality

    row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * dc, col * dr
    lps[:3, 2] = np.cross(row, col) * float(ds.SliceThickness)
    lps[:3, 3] = [float(v) for v in ds.ImagePositionPatient]
    np.testing.assert_allclose(vol.affine, LPS_TO_RAS @ lps, atol=1e-9)
    np.testing.assert_allclose(vol.spacing, [dc, dr, float(ds.SliceThickness)], atol=1e-9)
    assert vol.meta["reference"]["StudyInstanceUID"] == ds.StudyInstanceUID
    assert vol.meta["reference"]["PatientID"] == ds.PatientID


def test_ct_small_hu_range_is_physical():
    vol = read_dicom(get_testdata_file("CT_small.dcm"))
    # RescaleIntercept -1024: stored 0 must read as -1024 HU, air-like values must exist
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert float(ds.RescaleIntercept) == -1024
    assert vol.array.min() == ds.pixel_array.min() - 1024


def test_slope_and_intercept_applied(tmp_path):
    pix = np.arange(-20, 22, dtype=np.int16).reshape(6, 7)
    p = tmp_path / "a.dcm"
    _write_slice(p, pix, position=(1, 2, 3), series_uid="1.2.3", slope=2.5, intercept=-100)
    ds = pydicom.dcmread(p)
    np.testing.assert_allclose(load_volume(p).array[:, :, 0], apply_modality_lut(ds.pixel_array, ds).T, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------- series vs MONAI


def _written_series(tmp_path: Path, *, shuffle: bool, affine: np.ndarray | None = None) -> tuple[Volume, Path]:
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 2000, size=(9, 8, 6)).astype(np.float32)
    vol = Volume(array=arr, affine=_oblique_affine() if affine is None else affine, modality="CT", source="phantom")
    out = write_dicom_series(vol, tmp_path / ("shuffled" if shuffle else "ordered"), series_description="t",
                             shuffle_names=shuffle, seed=3)
    return vol, out


def test_series_matches_monai_pydicom_reader(tmp_path):
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    vol, folder = _written_series(tmp_path, shuffle=True)
    names = sorted(p.name for p in folder.glob("*.dcm"))
    order = [pydicom.dcmread(folder / n).InstanceNumber for n in names]
    assert order != sorted(order), "shuffled names must not follow slice order"

    ours = load_volume(folder)
    img, meta = LoadImage(reader=PydicomReader(affine_lps_to_ras=True), image_only=False)(str(folder))
    np.testing.assert_allclose(ours.array, np.asarray(img), rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.affine, np.asarray(meta["affine"]), atol=1e-6)
    # and both equal the written volume, anisotropic spacing included
    np.testing.assert_array_equal(ours.array, vol.array)
    np.testing.assert_allclose(ours.affine, vol.affine, atol=1e-6)
    np.testing.assert_allclose(ours.spacing, (0.8, 0.8, 2.5), atol=1e-6)


def test_file_names_do_not_matter(tmp_path):
    _, shuffled = _written_series(tmp_path, shuffle=True)
    _, ordered = _written_series(tmp_path, shuffle=False)
    a, b = load_volume(shuffled), load_volume(ordered)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-9)


def test_left_handed_volume_reads_back_as_same_image_in_space(tmp_path):
    affine = _oblique_affine() @ np.diag([1.0, 1.0, -1.0, 1.0])  # det < 0
    vol, folder = _written_series(tmp_path, shuffle=False, affine=affine)
    back = load_volume(folder)
    n = vol.shape[2]
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, n - 1
    np.testing.assert_array_equal(back.array, vol.array[:, :, ::-1])
    np.testing.assert_allclose(back.affine, affine @ flip, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- PET units


def _pet_series(folder: Path, units: str, *, weight: str | None = "70", slopes=(0.5, 2.0, 1.0)) -> np.ndarray:
    folder.mkdir()
    uid = generate_uid()
    rp = Dataset()
    rp.RadionuclideTotalDose = "370000000"  # 370 MBq
    rp.RadionuclideHalfLife = "6586.2"  # F-18
    rp.RadiopharmaceuticalStartTime = "093000"
    extra = {"Units": units, "SeriesTime": "103000.00", "SeriesDate": "20240102", "DecayCorrection": "START",
             "RadiopharmaceuticalInformationSequence": [rp]}
    if weight is not None:
        extra["PatientWeight"] = weight
    expected = []
    for k, slope in enumerate(slopes):
        pix = (np.arange(20).reshape(4, 5) * (k + 1)).astype(np.int16)
        _write_slice(folder / f"{k}.dcm", pix, position=(0, 0, 3.0 * k), series_uid=uid, modality="PT",
                     slope=slope, extra=extra)
        expected.append(pix.T * slope)
    return np.stack(expected, axis=-1)


def test_pet_bqml_converted_to_suvbw(tmp_path):
    bqml = _pet_series(tmp_path / "pet", "BQML")
    vol = load_volume(tmp_path / "pet")
    # SUVbw = C[Bq/ml] * weight[g] / (dose * 2^(-t/T1/2)), t = 1 h between injection and SeriesTime
    decayed = 370e6 * 0.5 ** (3600.0 / 6586.2)
    np.testing.assert_allclose(vol.array, bqml * 70000.0 / decayed, rtol=1e-6)
    assert vol.meta["units"] == "SUVbw"
    assert vol.meta["suv_conversion"]["done"] is True
    assert vol.meta["suv_conversion"]["decay_seconds"] == pytest.approx(3600.0)


def test_pet_gml_is_already_suv(tmp_path):
    suv = _pet_series(tmp_path / "pet", "GML")
    vol = load_volume(tmp_path / "pet")
    np.testing.assert_allclose(vol.array, suv, rtol=1e-6)
    assert vol.meta["units"] == "SUVbw"


def test_pet_bqml_without_weight_keeps_values(tmp_path):
    bqml = _pet_series(tmp_path / "pet", "BQML", weight=None)
    vol = load_volume(tmp_path / "pet")
    np.testing.assert_allclose(vol.array, bqml, rtol=1e-6)
    assert vol.meta["units"] == "BQML"
    assert vol.meta["suv_conversion"]["done"] is False


# ---------------------------------------------------------------------------------------------------- bad input


def _assert_names(excinfo, *paths) -> None:
    message = str(excinfo.value)
    for p in paths:
        assert str(p) in message or Path(p).name in message, (p, message)


def test_not_dicom_file(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not DICOM\n" * 20)
    with pytest.raises(VolumeError, match="not a DICOM file") as ei:
        load_volume(p)
    _assert_names(ei, p)


def test_truncated_file():
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(VolumeError, match="pixel data") as ei:
        load_volume(path)
    assert str(path) in str(ei.value)


def test_truncated_copy_in_series(tmp_path):
    paths = _simple_series(tmp_path / "s")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 30])
    with pytest.raises(VolumeError) as ei:
        load_volume(tmp_path / "s")
    _assert_names(ei, paths[2])


@pytest.mark.parametrize("name,word", [("rtdose.dcm", "multi-frame"), ("SC_rgb_rle.dcm", "colour")])
def test_unsupported_images(name, word):
    path = get_testdata_file(name)
    with pytest.raises(VolumeError, match=word) as ei:
        load_volume(path)
    assert str(path) in str(ei.value)


def test_missing_pixel_data():
    path = get_testdata_file("rtplan.dcm")
    with pytest.raises(VolumeError, match="no pixel data") as ei:
        load_volume(path)
    assert str(path) in str(ei.value)


def test_mixed_series_uid(tmp_path):
    paths = _simple_series(tmp_path / "s")
    ds = pydicom.dcmread(paths[3])
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(paths[3])
    with pytest.raises(VolumeError, match="mixed series") as ei:
        load_volume(tmp_path / "s")
    _assert_names(ei, tmp_path / "s", paths[3])


def test_mixed_shapes(tmp_path):
    paths = _simple_series(tmp_path / "s")
    uid = pydicom.dcmread(paths[0]).SeriesInstanceUID
    _write_slice(paths[1], np.zeros((5, 7)), position=(0, 0, 2.0), series_uid=uid)
    with pytest.raises(VolumeError, match="mixed series") as ei:
        load_volume(tmp_path / "s")
    _assert_names(ei, tmp_path / "s", paths[1])


def test_inconsistent_pixel_spacing(tmp_path):
    paths = _simple_series(tmp_path / "s")
    ds = pydicom.dcmread(paths[2])
    ds.PixelSpacing = ["1.0", "1.2"]
    ds.save_as(paths[2])
    with pytest.raises(VolumeError, match="PixelSpacing") as ei:
        load_volume(tmp_path / "s")
    _assert_names(ei, tmp_path / "s", paths[2])


def test_inconsistent_orientation(tmp_path):
    paths = _simple_series(tmp_path / "s")
    ds = pydicom.dcmread(paths[4])
    c, s = np.cos(0.1), np.sin(0.1)
    ds.ImageOrientationPatient = [f"{c:.8f}", f"{s:.8f}", "0", f"{-s:.8f}", f"{c:.8f}", "0"]
    ds.save_as(paths[4])
    with pytest.raises(VolumeError, match="ImageOrientationPatient") as ei:
        load_volume(tmp_path / "s")
    _assert_names(ei, tmp_path / "s", paths[4])


def test_missing_slice(tmp_path):
    paths = _simple_series(tmp_path / "s", n=6)
    paths[3].unlink()
    with pytest.raises(VolumeError, match="missing slice") as ei:
        load_volume(tmp_path / "s")
    _assert_names(ei, tmp_path / "s", paths[2], paths[4])


def test_duplicate_position(tmp_path):
    paths = _simple_series(tmp_path / "s")
    ds = pydicom.dcmread(paths[1])
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "s" / "copy.dcm")
    with pytest.raises(VolumeError, match="duplicate slice position") as ei:
        load_volume(tmp_path / "s")
    _assert_names(ei, tmp_path / "s", "copy.dcm")


def test_sidecars_in_series_folder_are_ignored(tmp_path):
    _simple_series(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_text("{}")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"\0junk")
    assert load_volume(tmp_path / "s").shape == (7, 6, 5)


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeError, match="no DICOM files") as ei:
        load_volume(tmp_path / "empty")
    _assert_names(ei, tmp_path / "empty")
    with pytest.raises(VolumeError, match="no such") as ei:
        load_volume(tmp_path / "nope")
    _assert_names(ei, tmp_path / "nope")


def test_copy_of_testdata_series_folder(tmp_path):
    """A one-file folder reads like the file itself."""
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "x")
    a, b = load_volume(folder), load_volume(get_testdata_file("CT_small.dcm"))
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)
