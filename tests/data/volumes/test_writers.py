"""Volume writers: NIfTI headers via nibabel, DICOM series via pydicom/apply_modality_lut, with manifests."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from scipy.spatial.transform import Rotation

from data.errors import VolumeError
from data.volumes import Volume, load_volume, write_dicom_series, write_nifti
from tests.data.common import check_manifest as _check_manifest

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _affine(spacing=(0.8, 0.8, 2.5)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("xyz", (20.0, -10.0, 5.0), degrees=True).as_matrix() @ np.diag(spacing)
    a[:3, 3] = (-30.0, 45.25, 12.0)
    return a


def _series(folder):
    """(datasets sorted by InstanceNumber, file names) read with pydicom."""
    files = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
    datasets = [pydicom.dcmread(f) for f in files]
    order = np.argsort([int(d.InstanceNumber) for d in datasets])
    return [datasets[i] for i in order], [files[i].name for i in order]



# ---------------------------------------------------------------------------------------------------- NIfTI


def test_write_nifti_header_and_manifest(tmp_path):
    data = np.random.default_rng(0).normal(size=(8, 7, 5)).astype(np.float32)
    vol = Volume(array=data, affine=_affine(), modality="MR", source="in/mr.nii.gz")
    prov = {"model": "cyclegan", "seed": 3}
    out = write_nifti(vol, tmp_path / "out" / "mr.nii.gz", provenance=prov)
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_allclose(img.get_sform(), vol.affine, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), vol.affine, atol=1e-5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert img.header.get_xyzt_units()[0] == "mm"
    info = json.loads((tmp_path / "out" / "mr.json").read_text())
    _check_manifest(info, source="in/mr.nii.gz", provenance=prov)
    assert info["modality"] == "MR"
    # the sidecar carries the modality back
    assert load_volume(out).modality == "MR"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files


def test_write_nifti_sheared_affine_sform_only(tmp_path):
    affine = np.array([[1.0, 0.3, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    with pytest.warns(RuntimeWarning, match="shear"):
        out = write_nifti(Volume(np.zeros((3, 4, 5), np.float32), affine), tmp_path / "s.nii")
    img = nib.load(out)
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-6)
    assert int(img.header["qform_code"]) == 0
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)


def test_write_nifti_rejects_bad_input(tmp_path):
    bad = np.zeros((3, 3, 3), np.float32)
    bad[1, 1, 1] = np.inf
    with pytest.raises(VolumeError, match="Inf") as ei:
        write_nifti(Volume(bad, np.eye(4)), tmp_path / "x.nii.gz")
    assert "x.nii.gz" in str(ei.value)
    with pytest.raises(VolumeError, match=".nii"):
        write_nifti(Volume(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp_path / "x.mha")


# ---------------------------------------------------------------------------------------------------- DICOM


def test_integer_ct_round_trip_exact_with_slope_one(tmp_path):
    data = np.random.default_rng(1).integers(-1024, 3071, size=(9, 8, 4)).astype(np.float32)
    vol = Volume(array=data, affine=_affine(), modality="CT")
    out = write_dicom_series(vol, tmp_path / "ct", series_description="synthetic CT")
    datasets, _ = _series(out)
    for k, ds in enumerate(datasets):
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
        assert ds.pixel_array.dtype == np.int16
        np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds).T, data[:, :, k])


@pytest.mark.parametrize(
    "lo,hi,modality,dtype",
    [(-850.3, 1234.7, "MR", np.int16), (0.0, 37.25, "PT", np.uint16), (1e-3, 7e5, "OT", np.uint16)],
)
def test_float_round_trip_within_half_slope(tmp_path, lo, hi, modality, dtype):
    rng = np.random.default_rng(2)
    data = rng.uniform(lo, hi, size=(10, 6, 5)).astype(np.float32)
    data[0, 0, 0], data[1, 0, 0] = lo, hi  # extremes are representable
    vol = Volume(array=data, affine=_affine(), modality=modality)
    out = write_dicom_series(vol, tmp_path / "s", series_description="t")
    datasets, _ = _series(out)
    slope = float(datasets[0].RescaleSlope)
    assert slope <= (hi - lo) / 65535 * 1.001 or slope <= hi / 65535 * 1.001
    for k, ds in enumerate(datasets):
        assert ds.pixel_array.dtype == dtype
        decoded = apply_modality_lut(ds.pixel_array, ds).T
        err = np.abs(decoded - data[:, :, k].astype(np.float64))
        assert err.max() <= slope / 2 + 1e-7 * max(abs(lo), abs(hi))
    back = load_volume(out)
    assert np.abs(back.array - data).max() <= slope / 2 + 1e-6 * max(abs(lo), abs(hi))
    assert back.modality == modality


def test_geometry_tags_from_affine(tmp_path):
    affine = _affine()
    data = np.zeros((6, 5, 4), np.float32)
    out = write_dicom_series(Volume(data, affine, "CT"), tmp_path / "g", series_description="t")
    datasets, _ = _series(out)
    lps = LPS_TO_RAS @ affine
    row, col = lps[:3, 0] / 0.8, lps[:3, 1] / 0.8
    for k, ds in enumerate(datasets):
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], (lps @ [0, 0, k, 1])[:3], atol=1e-8)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], [*row, *col], atol=1e-12)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.8, 0.8], atol=1e-12)
        assert float(ds.SliceThickness) == pytest.approx(2.5) and float(ds.SpacingBetweenSlices) == pytest.approx(2.5)
        assert (ds.Rows, ds.Columns) == (5, 6)


def test_anisotropic_pixel_spacing_order(tmp_path):
    affine = np.diag([0.5, 0.7, 3.0, 1.0])  # i: 0.5 mm along a row (column spacing), j: 0.7 mm (row spacing)
    out = write_dicom_series(Volume(np.zeros((4, 3, 2), np.float32), affine, "MR"), tmp_path / "a",
                             series_description="t")
    ds = _series(out)[0][0]
    assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.5]  # DICOM order: (between rows, between columns)
    assert [float(v) for v in ds.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]


def test_derived_series_identifiers(tmp_path):
    source = get_testdata_file("CT_small.dcm")
    src_ds = pydicom.dcmread(source)
    src = load_volume(source)
    ref = src.meta["reference"]
    prov = {"checkpoint_sha256": "ab" * 32, "seed": 7}
    out = write_dicom_series(src, tmp_path / "syn", series_description="medsynth cyclegan CT",
                             reference=ref, provenance=prov)
    datasets, _ = _series(out)
    uids = {ds.SOPInstanceUID for ds in datasets}
    assert len(uids) == len(datasets) and src_ds.SOPInstanceUID not in uids
    for ds in datasets:
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "synthetic" in ds.DerivationDescription.lower() and "medsynth" in ds.DerivationDescription
        assert "synthetic" in ds.ImageComments.lower()
        assert ds.BurnedInAnnotation == "NO"
        assert ds.SeriesInstanceUID != src_ds.SeriesInstanceUID
        assert ds.StudyInstanceUID == src_ds.StudyInstanceUID
        assert ds.FrameOfReferenceUID == src_ds.FrameOfReferenceUID
        assert str(ds.PatientName) == str(src_ds.PatientName) and ds.PatientID == src_ds.PatientID
        # nothing else identifying from the input travels along
        for key in ("OtherPatientIDsSequence", "InstitutionName", "StationName", "PatientAge", "PatientWeight"):
            assert key not in ds
        assert ds.PatientBirthDate == "" and ds.PatientSex == ""
        assert ds.SeriesDescription == "medsynth cyclegan CT"
    info = json.loads((out / "manifest.json").read_text())
    _check_manifest(info, source=str(source), provenance=prov)
    assert info["referenced_series"] == src_ds.SeriesInstanceUID
    assert info["SeriesInstanceUID"] == datasets[0].SeriesInstanceUID
    assert info["synthetic"] is True


def test_no_reference_gives_anonymous_new_uids(tmp_path):
    out = write_dicom_series(Volume(np.zeros((3, 3, 2), np.float32), np.eye(4), "MR"), tmp_path / "a",
                             series_description="t")
    ds = _series(out)[0][0]
    assert str(ds.PatientName) == "ANONYMOUS" and ds.PatientID == "ANONYMOUS"
    assert ds.StudyInstanceUID != ds.SeriesInstanceUID != ds.FrameOfReferenceUID
    out2 = write_dicom_series(Volume(np.zeros((3, 3, 2), np.float32), np.eye(4), "MR"), tmp_path / "b",
                              series_description="t")
    assert _series(out2)[0][0].StudyInstanceUID != ds.StudyInstanceUID


def test_not_derived_is_original(tmp_path):
    out = write_dicom_series(Volume(np.zeros((3, 3, 2), np.float32), np.eye(4), "CT"), tmp_path / "o",
                             series_description="phantom", derived=False)
    ds = _series(out)[0][0]
    assert list(ds.ImageType)[:2] == ["ORIGINAL", "PRIMARY"]
    assert "DerivationDescription" not in ds


def test_shuffled_names_are_seeded_and_unordered(tmp_path):
    vol = Volume(np.random.default_rng(0).normal(size=(4, 4, 12)).astype(np.float32), np.eye(4), "MR")
    a = write_dicom_series(vol, tmp_path / "a", series_description="t", shuffle_names=True, seed=1)
    b = write_dicom_series(vol, tmp_path / "b", series_description="t", shuffle_names=True, seed=1)
    c = write_dicom_series(vol, tmp_path / "c", series_description="t", shuffle_names=True, seed=2)
    names_a = _series(a)[1]
    assert names_a == _series(b)[1] != _series(c)[1]
    assert names_a != sorted(names_a)
    plain = _series(write_dicom_series(vol, tmp_path / "d", series_description="t"))[1]
    assert plain == sorted(plain)


def test_series_folder_replaced_atomically(tmp_path):
    vol = Volume(np.zeros((3, 3, 4), np.float32), np.eye(4), "CT")
    out = write_dicom_series(vol, tmp_path / "s", series_description="first")
    write_dicom_series(Volume(np.ones((3, 3, 2), np.float32), np.eye(4), "CT"), out, series_description="second")
    datasets, _ = _series(out)
    assert len(datasets) == 2 and datasets[0].SeriesDescription == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp or old folders left


def test_dicom_writer_rejects_bad_input(tmp_path):
    vol = Volume(np.zeros((3, 3, 2), np.float32), np.eye(4), "SEG")
    with pytest.raises(VolumeError, match="NIfTI") as ei:
        write_dicom_series(vol, tmp_path / "m", series_description="t")
    assert str(tmp_path / "m") in str(ei.value)
    vol = Volume(np.zeros((3, 3, 2), np.float32), np.eye(4), "CT")
    with pytest.raises(VolumeError, match="unsupported keys"):
        write_dicom_series(vol, tmp_path / "r", series_description="t", reference={"PatientBirthDate": "19700101"})
    with pytest.raises(VolumeError, match="64"):
        write_dicom_series(vol, tmp_path / "d", series_description="x" * 65)
    sheared = np.array([[1.0, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    with pytest.raises(VolumeError, match="orthogonal"):
        write_dicom_series(Volume(np.zeros((3, 3, 2), np.float32), sheared, "CT"), tmp_path / "sh",
                           series_description="t")
    nan = np.zeros((3, 3, 2), np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(VolumeError, match="NaN"):
        write_dicom_series(Volume(nan, np.eye(4), "CT"), tmp_path / "n", series_description="t")
    assert not list(tmp_path.iterdir())
