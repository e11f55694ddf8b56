"""load_volume on NIfTI written by nibabel itself, DICOM/NIfTI equivalence and bad NIfTI input."""
from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from data.errors import VolumeError
from data.volumes import Volume, load_volume, sidecar_path, write_dicom_series


def _oblique_affine(spacing=(0.8, 0.8, 2.5), angles=(8.0, 15.0, -40.0), origin=(-90.0, 110.0, -35.5)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("zyx", angles, degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_float_matches_nibabel(tmp_path, suffix):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(10, 9, 7)).astype(np.float32)
    path = tmp_path / f"img{suffix}"
    nib.save(nib.Nifti1Image(data, _oblique_affine()), path)
    ref = nib.load(path)
    vol = load_volume(path)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, ref.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(vol.affine, ref.affine)
    assert vol.modality == "OT" and vol.source == str(path)


def test_nifti_scaled_int16_matches_nibabel(tmp_path):
    data = np.arange(-300, 330, dtype=np.int16).reshape(7, 9, 10)
    img = nib.Nifti1Image(data, _oblique_affine())
    img.header.set_slope_inter(0.5, -20.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    ref = nib.load(path)
    vol = load_volume(path)
    np.testing.assert_allclose(vol.array, ref.get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(vol.array, data * 0.5 - 20.0, rtol=1e-6)
    np.testing.assert_array_equal(vol.affine, ref.affine)


def test_nifti2_and_trailing_singleton(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5, 1)
    path = tmp_path / "n2.nii"
    nib.save(nib.Nifti2Image(data, np.diag([2.0, 3.0, 4.0, 1.0])), path)
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, data[..., 0])
    assert vol.spacing == (2.0, 3.0, 4.0)


def test_four_d_rejected(tmp_path):
    path = tmp_path / "dyn.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)), path)
    with pytest.raises(VolumeError, match="3D") as ei:
        load_volume(path)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_nifti_non_finite_rejected(tmp_path, bad, word):
    data = np.zeros((4, 5, 6), np.float32)
    data[1, 2, 3] = bad
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(VolumeError, match=f"1 {word}") as ei:
        load_volume(path)
    assert str(path) in str(ei.value)
    assert "(1, 2, 3)" in str(ei.value)


def test_truncated_nifti_rejected(tmp_path):
    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(1).normal(size=(20, 20, 20)).astype(np.float32), np.eye(4)), path)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(VolumeError, match="unreadable NIfTI") as ei:
        load_volume(path)
    assert str(path) in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="no such file") as ei:
        load_volume(tmp_path / "absent.nii.gz")
    assert "absent.nii.gz" in str(ei.value)


def test_modality_from_argument_and_sidecar(tmp_path):
    path = tmp_path / "sub-01_ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), np.eye(4)), path)
    assert load_volume(path).modality == "OT"
    sidecar_path(path).write_text(json.dumps({"Modality": "MR"}))  # BIDS style
    assert sidecar_path(path).name == "sub-01_ct.json"
    assert load_volume(path).modality == "MR"
    assert load_volume(path, modality="CT").modality == "CT"
    with pytest.raises(VolumeError, match="unknown modality"):
        load_volume(path, modality="XR")


def test_dicom_and_nifti_of_same_volume_compare_equal(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(-1024, 3000, size=(12, 10, 8)).astype(np.float32)
    affine = _oblique_affine()
    nii = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), nii)  # written by nibabel, not by us
    from_nifti = load_volume(nii)
    dcm = write_dicom_series(Volume(array=data, affine=affine, modality="CT"), tmp_path / "ct_dcm",
                             series_description="copy", shuffle_names=True)
    from_dicom = load_volume(dcm)
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
    # the NIfTI sform is float32, DICOM positions are 16-character decimals: equal to float32 precision
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
    assert from_dicom.same_geometry(from_nifti)
    assert from_dicom.modality == "CT"
