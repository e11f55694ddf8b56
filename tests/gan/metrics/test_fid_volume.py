"""2.5D FID/KID for volumes and the slice selection (gan.metrics.fid_volume), checked against numpy/nibabel
slicing, separately fed FID/KID metrics and frechet_distance / an unbiased MMD written here on np.mean / np.cov of
the features."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from gan.metrics.features import extract_features
from gan.metrics.fid import FrechetInceptionDistance, SmallSampleFIDWarning
from gan.metrics.fid_volume import Volume25DFID, volume_slices
from tests.gan.metrics.helpers import fid_reference as _fid_reference
from tests.gan.metrics.helpers import mmd2_reference as _mmd2_reference
from tests.gan.metrics.helpers import tiny_tanh_extractor as _tiny_extractor
from tests.gan.metrics.helpers import volumes as _volumes
from tests.gan.metrics.helpers import warning_messages as _messages

FG = -1.0 + 1.0 / 255.0  # default foreground threshold


# ---------------------------------------------------------------------------------------------
# slicing


def test_volume_slices_equal_numpy_indexing() -> None:
    vol = _volumes(1, (5, 6, 7), seed=0)[0]
    for given in (torch.from_numpy(vol), torch.from_numpy(vol)[None], vol):
        slices = volume_slices(given)
        assert set(slices) == {0, 1, 2}
        np.testing.assert_array_equal(slices[0].numpy(), np.stack([vol[i, :, :] for i in range(5)])[:, None])
        np.testing.assert_array_equal(slices[1].numpy(), np.stack([vol[:, j, :] for j in range(6)])[:, None])
        np.testing.assert_array_equal(slices[2].numpy(), np.stack([vol[:, :, k] for k in range(7)])[:, None])
    assert set(volume_slices(vol, axes=(2,))) == {2}


def test_volume_slices_subsampling_and_foreground() -> None:
    vol = np.full((10, 4, 5), -1.0, dtype=np.float32)
    fractions = np.array([0, 0.1, 0.5, 0.2, 0.9, 1.0, 0.3, 0.25, 0.6, 0.0])  # of the 20 voxels of each slice
    for i, f in enumerate(fractions):
        vol[i].flat[: int(round(f * 20))] = 0.5
    vol[9, 0, 0] = -1.0 + 0.5 / 255.0  # below the default threshold: still background
    # evenly spaced: centres of 3 equal bins of 10 -> indices 1, 5, 8
    sub = volume_slices(vol, axes=(0,), max_slices_per_axis=3)[0]
    np.testing.assert_array_equal(sub.numpy()[:, 0], vol[[1, 5, 8]])
    assert volume_slices(vol, axes=(0,), max_slices_per_axis=1)[0].shape[0] == 1
    np.testing.assert_array_equal(volume_slices(vol, axes=(0,), max_slices_per_axis=1)[0].numpy()[0, 0], vol[5])
    # foreground filter: fraction of voxels above the threshold, computed here with numpy
    keep = np.flatnonzero((vol > FG).mean(axis=(1, 2)) >= 0.25)
    assert keep.tolist() == [2, 4, 5, 6, 7, 8]
    fg = volume_slices(vol, axes=(0,), min_foreground=0.25)[0]
    np.testing.assert_array_equal(fg.numpy()[:, 0], vol[keep])
    # filter first, then subsample the 6 eligible slices: bins of 2 -> positions 1, 3, 5
    both = volume_slices(vol, axes=(0,), min_foreground=0.25, max_slices_per_axis=3)[0]
    np.testing.assert_array_equal(both.numpy()[:, 0], vol[keep[[1, 3, 5]]])


def test_volume_slices_with_affine_match_nibabel_closest_canonical() -> None:
    vol = _volumes(1, (4, 5, 6), seed=1)[0]
    # stored as (S->I, R->L... ): axis 0 along -z, axis 1 along +x, axis 2 along -y
    affine = np.array([[0, 2.0, 0, 10], [0, 0, -1.5, 5], [-3.0, 0, 0, 7], [0, 0, 0, 1]])
    canonical = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(vol, affine)).dataobj)
    assert nib.aff2axcodes(nib.as_closest_canonical(nib.Nifti1Image(vol, affine)).affine) == ("R", "A", "S")
    slices = volume_slices(torch.from_numpy(vol), affine=torch.from_numpy(affine))
    for axis in range(3):
        expected = np.moveaxis(canonical, axis, 0)[:, None]
        np.testing.assert_array_equal(slices[axis].numpy(), expected)


def test_volume_slices_reject_bad_volumes() -> None:
    with pytest.raises(ValueError, match=r"not in \[-1, 1\].*window it first"):
        volume_slices(torch.full((3, 3, 3), 100.0))
    with pytest.raises(ValueError, match=r"\(I, J, K\) or \(1, I, J, K\)"):
        volume_slices(torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="float volume"):
        volume_slices(torch.zeros(3, 3, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="axes must be distinct"):
        volume_slices(torch.zeros(3, 3, 3), axes=(0, 3))
    with pytest.raises(ValueError, match="min_foreground"):
        volume_slices(torch.zeros(3, 3, 3), min_foreground=2.0)


def test_slice_indices_name_the_slices_volume_slices_returns():
    from gan.metrics import slice_indices

    g = torch.Generator().manual_seed(0)
    vol = torch.full((10, 12, 14), -1.0)
    vol[2:8, 3:9, 3:11] = torch.rand(6, 6, 8, generator=g)  # anatomy only in slices 3..10 along axis 2
    for axis in (0, 1, 2):
        idx = slice_indices(vol, axis, max_slices=4, min_foreground=0.1)
        got = volume_slices(vol, axes=(axis,), max_slices_per_axis=4, min_foreground=0.1)[axis]
        torch.testing.assert_close(got, vol.movedim(axis, 0)[torch.as_tensor(idx)].unsqueeze(1))
    assert set(slice_indices(vol, 2, min_foreground=0.1).tolist()) == set(range(3, 11))


# ---------------------------------------------------------------------------------------------
# 2.5D FID


def test_25d_fid_equals_fid_of_numpy_slices_per_axis() -> None:
    ext = _tiny_extractor()
    shape = (8, 10, 12)  # three planes of different sizes
    real, fake = _volumes(3, shape, seed=2), _volumes(3, shape, seed=3, scale=0.6)
    metric = Volume25DFID(extractor=ext, batch_size=5)
    metric.update(torch.from_numpy(real)[:, None], real=True)  # a (B, 1, I, J, K) batch
    for v in fake:
        metric.update(torch.from_numpy(v)[None], real=False)  # one (1, I, J, K) volume at a time
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = metric.compute()
    small = _messages(caught, SmallSampleFIDWarning)
    assert len(small) == 3 and "axis 2 (axial) has 36 real and 36 generated slices" in small[2]
    assert all(w.filename == __file__ for w in caught if issubclass(w.category, SmallSampleFIDWarning))

    values = []
    for axis in range(3):
        # slices built with numpy indexing, fed straight to a plain FID metric
        r = torch.from_numpy(np.concatenate([np.moveaxis(v, axis, 0) for v in real]))[:, None]
        f = torch.from_numpy(np.concatenate([np.moveaxis(v, axis, 0) for v in fake]))[:, None]
        plain = FrechetInceptionDistance(extractor=ext)
        plain.update(r, real=True)
        plain.update(f, real=False)
        assert result.per_axis[axis].value == pytest.approx(plain.compute().value, rel=1e-9)
        reference = _fid_reference(r, f, ext)
        assert result.per_axis[axis].value == pytest.approx(reference, rel=1e-6)
        assert result.per_axis[axis].protocol["n_real"] == 3 * shape[axis]
        values.append(reference)
    assert result.mean == pytest.approx(np.mean(values), rel=1e-6)
    assert float(result) == result.mean
    assert result.fid_biased == {0: True, 1: True, 2: True}
    p = result.protocol
    assert p["n_real_volumes"] == 3 and p["n_fake_volumes"] == 3
    assert p["n_fake_slices"] == {0: 24, 1: 30, 2: 36}
    assert p["planes"] == ["sagittal", "coronal", "axial"] and p["extractor"] == "tiny-0"


def test_25d_fid_subsampled_reoriented_slices_and_small_sample_threshold() -> None:
    ext = _tiny_extractor()
    real, fake = _volumes(2, (6, 7, 8), seed=4), _volumes(2, (6, 7, 8), seed=5, scale=0.5)
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])  # L->R flipped first axis
    metric = Volume25DFID(
        extractor=ext, axes=(0, 2), max_slices_per_axis=4, reorient_to_ras=True, min_images_for_fid=8
    )
    for v in real:
        metric.update(torch.from_numpy(v), real=True, affine=affine)
    for v in fake:
        metric.update(torch.from_numpy(v), real=False, affine=affine)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = metric.compute()
    assert _messages(caught, SmallSampleFIDWarning) == []  # 2 volumes x 4 slices = 8, not below 8
    assert result.fid_biased == {0: False, 2: False}
    for axis in (0, 2):
        # reorientation by nibabel, subsampling at the centres of 4 bins, both done here
        idx = np.floor((np.arange(4) + 0.5) * real.shape[1 + axis] / 4).astype(int)

        def pick(vols: np.ndarray, axis: int = axis, idx: np.ndarray = idx) -> torch.Tensor:
            canon = [np.asarray(nib.as_closest_canonical(nib.Nifti1Image(v, affine)).dataobj) for v in vols]
            return torch.from_numpy(np.concatenate([np.moveaxis(c, axis, 0)[idx] for c in canon]))[:, None]

        assert result.per_axis[axis].value == pytest.approx(_fid_reference(pick(real), pick(fake), ext), rel=1e-6)
    assert result.protocol["orientation"].startswith("RAS+")

    small = Volume25DFID(extractor=ext, axes=(1,), max_slices_per_axis=4, min_images_for_fid=9)
    for v in real:
        small.update(torch.from_numpy(v), real=True)
    for v in fake:
        small.update(torch.from_numpy(v), real=False)
    with pytest.warns(SmallSampleFIDWarning, match=r"axis 1 \(coronal\) has 8 real and 8 generated"):
        assert small.compute().fid_biased == {1: True}


def test_25d_fid_input_errors() -> None:
    ext = _tiny_extractor()
    metric = Volume25DFID(extractor=ext)
    with pytest.raises(ValueError, match="reorient_to_ras=False"):
        metric.update(torch.zeros(4, 4, 4), real=True, affine=np.eye(4))
    with pytest.raises(ValueError, match=r"volume 1 of the batch values lie in"):
        metric.update(torch.stack([torch.zeros(1, 4, 4, 4), torch.full((1, 4, 4, 4), 3.0)]), real=True)
    assert int(metric.real_volumes) == 0 and int(metric.axis_metrics[0].real_n) == 0  # nothing was added
    with pytest.raises(ValueError, match="pass each volume's affine"):
        Volume25DFID(extractor=ext, reorient_to_ras=True).update(torch.zeros(4, 4, 4), real=True)
    empty = Volume25DFID(extractor=ext, min_foreground=0.5)
    empty.update(torch.full((4, 4, 4), -1.0), real=True)
    empty.update(torch.zeros(4, 4, 4), real=False)
    with pytest.raises(ValueError, match=r"axis 0 \(sagittal\) has 0 real and 4 generated slices"):
        empty.compute()
    with pytest.raises(NotImplementedError, match="update"):
        metric(torch.zeros(4, 4, 4), real=True)


def test_25d_fid_with_cached_real_stats_equals_accumulated_real_set(tmp_path: Path) -> None:
    ext = _tiny_extractor()
    real, fake = _volumes(2, (6, 7, 8), seed=7), _volumes(2, (6, 7, 8), seed=8, scale=0.5)
    full = Volume25DFID(extractor=ext, min_images_for_fid=2)
    full.update(torch.from_numpy(real)[:, None], real=True)
    full.update(torch.from_numpy(fake)[:, None], real=False)
    paths = {axis: stats.save(tmp_path / f"axis{axis}.npz") for axis, stats in full.real_stats().items()}
    cached = Volume25DFID(extractor=ext, min_images_for_fid=2, real_stats=paths)
    cached.update(torch.from_numpy(fake)[:, None], real=False)
    with pytest.raises(ValueError, match="cached real_stats"):
        cached.update(torch.from_numpy(real[0]), real=True)
    a, b = full.compute(), cached.compute()
    assert b.mean == pytest.approx(a.mean, rel=1e-9)
    assert b.protocol["n_real_slices"] == {0: 12, 1: 14, 2: 16} and b.protocol["n_real_volumes"] is None
    assert len(full.state_dict()) == 0  # no extractor weights, no states in checkpoints
    with pytest.raises(ValueError, match="cover every axis"):
        Volume25DFID(extractor=ext, real_stats={0: paths[0]})


def test_25d_kid_on_the_same_features_equals_numpy_mmd() -> None:
    ext = _tiny_extractor()
    shape = (8, 10, 12)
    real, fake = _volumes(3, shape, seed=2), _volumes(3, shape, seed=3, scale=0.6)
    both = Volume25DFID(extractor=ext, batch_size=5, kid=True, kid_subsets=1, kid_subset_size=10_000)
    fid_only = Volume25DFID(extractor=ext, batch_size=5)
    for m in (both, fid_only):
        m.update(torch.from_numpy(real)[:, None], real=True)
        m.update(torch.from_numpy(fake)[:, None], real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample FID and KID subset-size warnings
        res, ref = both.compute(), fid_only.compute()
    assert ref.kid_mean is None and ref.kid_per_axis is None
    kids = []
    for axis in range(3):
        assert res.per_axis[axis].value == pytest.approx(ref.per_axis[axis].value, rel=1e-9), (
            "one feature pass, same FID")
        r = torch.from_numpy(np.concatenate([np.moveaxis(v, axis, 0) for v in real]))[:, None]
        f = torch.from_numpy(np.concatenate([np.moveaxis(v, axis, 0) for v in fake]))[:, None]
        fr = extract_features(r, ext, "pytorch-fid").double().numpy()
        ff = extract_features(f, ext, "pytorch-fid").double().numpy()
        # one subset holding every slice: the unbiased MMD^2 of the full sets
        kids.append(_mmd2_reference(fr, ff))
        assert res.kid_per_axis[axis].mean == pytest.approx(kids[-1], rel=1e-6, abs=1e-9)
    assert res.kid_mean == pytest.approx(np.mean(kids), rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="cannot be combined with cached real_stats"):
        Volume25DFID(extractor=ext, kid=True, real_stats=fid_only.real_stats())
