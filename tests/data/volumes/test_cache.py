"""VolumeCache: equivalence with direct reads, memory mapping, content keys, corrupt entries, concurrency."""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from data.errors import VolumeError
from data.volumes import Volume, VolumeCache, content_hash, load_volume, open_entry, write_dicom_series

AFFINE = np.array([[0.0, -0.9, 0.0, 40.0], [1.1, 0.0, 0.0, -12.0], [0.0, 0.0, 3.0, 7.5], [0, 0, 0, 1]])


def _nifti(path, seed=0, shape=(11, 9, 6)):
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return data


def test_nifti_entry_equals_direct_read_and_is_memmapped(tmp_path):
    src = tmp_path / "a.nii.gz"
    data = _nifti(src)
    cache = VolumeCache(tmp_path / "cache")
    first = cache.get(src)
    second = cache.get(src)
    ref = nib.load(src)
    for vol in (first, second):
        np.testing.assert_array_equal(vol.array, ref.get_fdata(dtype=np.float32))
        np.testing.assert_array_equal(vol.affine, ref.affine)
        assert vol.source == str(src)
    assert isinstance(second.array, np.memmap)
    assert not second.array.flags.writeable
    np.testing.assert_array_equal(second.array, data)
    key = hashlib.sha256(src.read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.npy")) == [f"{key}.npy"]
    info = json.loads((tmp_path / "cache" / f"{key}.json").read_text())
    assert info["shape"] == [11, 9, 6] and info["dtype"] == "float32" and info["format_version"] >= 1


def test_dicom_folder_entry_and_name_independent_key(tmp_path):
    arr = np.random.default_rng(1).integers(-500, 500, size=(7, 6, 5)).astype(np.float32)
    folder = write_dicom_series(Volume(arr, AFFINE, "CT"), tmp_path / "dcm", series_description="t")
    cache = VolumeCache(tmp_path / "cache")
    direct = load_volume(folder)
    cached = cache.get(folder)
    np.testing.assert_array_equal(cached.array, direct.array)
    np.testing.assert_allclose(cached.affine, direct.affine)
    assert cached.modality == "CT" and cached.meta["reference"] == direct.meta["reference"]
    assert isinstance(cache.get(folder).array, np.memmap)

    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for i, f in enumerate(sorted(folder.glob("*.dcm"))):
        shutil.copy(f, renamed / f"z{100 - i}.ima")
    assert content_hash(renamed) == content_hash(folder)
    per_file = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.glob("*.dcm"))
    assert content_hash(folder) == hashlib.sha256(("dicom-series\n" + "\n".join(per_file)).encode()).hexdigest()


def test_content_change_gives_new_entry(tmp_path):
    src = tmp_path / "a.nii.gz"
    _nifti(src, seed=0)
    cache = VolumeCache(tmp_path / "cache", racy_window_s=0.0)  # index even a file written just now
    cache.get(src)
    assert len(list((tmp_path / "cache" / "index").glob("*.json"))) == 1  # old file: stat fast path indexed
    cache.get(src)
    new = _nifti(src, seed=1)  # same size, new bytes
    vol = cache.get(src)
    np.testing.assert_array_equal(vol.array, new)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_fresh_files_are_not_indexed(tmp_path):
    src = tmp_path / "a.nii.gz"
    _nifti(src)  # just written: its mtime is too recent to trust
    cache = VolumeCache(tmp_path / "cache")
    cache.get(src)
    assert not list((tmp_path / "cache" / "index").glob("*.json"))


def test_stat_fast_path_not_fooled_by_restored_mtime(tmp_path):
    src = tmp_path / "a.nii"
    _nifti(src, seed=0)
    st = src.stat()
    cache = VolumeCache(tmp_path / "cache", racy_window_s=0.0)
    cache.get(src)
    assert len(list((tmp_path / "cache" / "index").glob("*.json"))) == 1
    new = _nifti(src, seed=5)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime as before; ctime differs
    np.testing.assert_array_equal(cache.get(src).array, new)
    np.testing.assert_array_equal(VolumeCache(tmp_path / "c2", trust_stat=False).get(src).array, new)


def test_truncated_npy_is_rebuilt_with_warning(tmp_path):
    src = tmp_path / "a.nii.gz"
    data = _nifti(src)
    cache = VolumeCache(tmp_path / "cache")
    cache.get(src)
    (npy,) = (tmp_path / "cache").glob("*.npy")
    npy.write_bytes(npy.read_bytes()[:-100])
    with pytest.raises(VolumeError, match="truncated or corrupt") as ei:
        open_entry(npy)
    assert str(npy) in str(ei.value)
    with pytest.warns(RuntimeWarning, match="rebuilding cache entry"):
        vol = cache.get(src)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_array_equal(open_entry(npy).array, data)


def test_json_shape_mismatch_is_rebuilt_with_warning(tmp_path):
    src = tmp_path / "a.nii.gz"
    data = _nifti(src)
    cache = VolumeCache(tmp_path / "cache")
    cache.get(src)
    (js,) = (tmp_path / "cache").glob("*.json")
    info = json.loads(js.read_text())
    info["shape"] = [6, 9, 11]
    js.write_text(json.dumps(info))
    with pytest.warns(RuntimeWarning, match="JSON says"):
        vol = cache.get(src)
    np.testing.assert_array_equal(vol.array, data)
    assert json.loads(js.read_text())["shape"] == [11, 9, 6]


def test_garbage_json_is_rebuilt(tmp_path):
    src = tmp_path / "a.nii.gz"
    data = _nifti(src)
    cache = VolumeCache(tmp_path / "cache")
    cache.get(src)
    (js,) = (tmp_path / "cache").glob("*.json")
    js.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        np.testing.assert_array_equal(cache.get(src).array, data)


def test_load_volume_with_cache_and_entry_path(tmp_path):
    src = tmp_path / "a.nii.gz"
    data = _nifti(src)
    vol = load_volume(src, cache=tmp_path / "cache", modality="MR")
    assert vol.modality == "MR" and isinstance(vol.array, np.memmap)
    (npy,) = (tmp_path / "cache").glob("*.npy")
    entry = load_volume(npy)
    np.testing.assert_array_equal(entry.array, data)
    np.testing.assert_array_equal(entry.affine, nib.load(src).affine)
    assert entry.source == str(src)


def test_errors_from_source_name_the_file(tmp_path):
    bad = tmp_path / "nan.nii.gz"
    data = np.zeros((3, 3, 3), np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), bad)
    cache = VolumeCache(tmp_path / "cache")
    with pytest.raises(VolumeError, match="NaN") as ei:
        cache.get(bad)
    assert str(bad) in str(ei.value)
    assert not list((tmp_path / "cache").glob("*.npy"))


def _worker(args):
    root, src = args
    return np.asarray(VolumeCache(root).get(src).array).sum(dtype=np.float64)


def test_concurrent_processes_populate_safely(tmp_path):
    src = tmp_path / "a.nii.gz"
    data = _nifti(src, shape=(40, 40, 20))
    root = tmp_path / "cache"
    with mp.get_context("fork").Pool(3) as pool:
        sums = pool.map(_worker, [(root, src)] * 6)
    assert np.allclose(sums, data.sum(dtype=np.float64))
    names = sorted(p.name for p in root.iterdir() if p.is_file())
    assert len(names) == 2 and names[0].endswith(".json") and names[1].endswith(".npy")  # no temp files left
    np.testing.assert_array_equal(VolumeCache(root).get(src).array, data)


def test_indexed_path_is_not_rehashed(tmp_path, monkeypatch):
    import data.volumes.cache as cache_module

    src = tmp_path / "a.nii.gz"
    expected = _nifti(src)
    cache = VolumeCache(tmp_path / "cache", racy_window_s=0.0)
    cache.get(src)

    def boom(path):
        raise AssertionError(f"rehashed {path}")

    monkeypatch.setattr(cache_module, "content_hash", boom)
    np.testing.assert_array_equal(cache.get(src).array, expected)
    _nifti(src, seed=3)
    with pytest.raises(AssertionError, match="rehashed"):
        cache.get(src)  # changed stat signature: falls back to the content hash
