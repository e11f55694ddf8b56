"""2.5D FID for volumes and per-class FID/KID, checked against numpy/nibabel slicing, separately fed
FID/KID metrics and frechet_distance / an unbiased MMD written here on np.mean / np.cov of the features."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from gan.metrics.features import ModuleExtractor, extract_features
from gan.metrics.fid import FrechetInceptionDistance, KernelInceptionDistance
from gan.metrics.fid_medical import (
    ClassConditionalFID,
    ClassConditionalKID,
    MissingClassWarning,
    SmallSampleFIDWarning,
    Volume25DFID,
    volume_slices,
)
from gan.metrics.frechet import frechet_distance

FG = -1.0 + 1.0 / 255.0  # default foreground threshold


def _tiny_extractor(seed: int = 0) -> ModuleExtractor:
    """A seeded random conv net (8-d features at 16 x 16): a fast stand-in for Inception."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ModuleExtractor(net, name=f"tiny-{seed}", input_size=16)


def _volumes(n: int, shape: tuple[int, int, int], seed: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, size=(n, *shape)) * scale).astype(np.float32)


def _images(n: int, seed: int, scale: float = 1.0, size: int = 12) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=gen) * 2 - 1) * scale


def _fid_reference(real: torch.Tensor, fake: torch.Tensor, ext: ModuleExtractor) -> float:
    fr = extract_features(real, ext, "pytorch-fid").double().numpy()
    ff = extract_features(fake, ext, "pytorch-fid").double().numpy()
    return frechet_distance(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))


def _mmd2_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased polynomial-kernel MMD^2 (degree 3, gamma 1/d, coef 1) of two equal-sized sets, in numpy."""
    m, d = x.shape
    kxx, kyy, kxy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return float(
        (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / (m * m)
    )


def _messages(caught: list[warnings.WarningMessage], category: type) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, category)]


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

        def pick(vols: np.ndarray) -> torch.Tensor:
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


# ---------------------------------------------------------------------------------------------
# per-class FID / KID


def _class_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class 0: 20 real / 22 fake; class 1: 19 real / 12 fake; class 2: 5 real / 0 fake; class 3: none."""
    gen = torch.Generator().manual_seed(0)
    real_labels = torch.tensor([0] * 20 + [1] * 19 + [2] * 5)[torch.randperm(44, generator=gen)]
    fake_labels = torch.tensor([0] * 22 + [1] * 12)[torch.randperm(34, generator=gen)]
    return _images(44, seed=10), real_labels, _images(34, seed=11, scale=0.7), fake_labels


def test_class_conditional_fid_equals_separate_metrics_with_flags_and_missing_classes() -> None:
    ext = _tiny_extractor()
    real, real_labels, fake, fake_labels = _class_data()
    metric = ClassConditionalFID(
        num_classes=4, class_names=["normal", "tumour", "rare", "absent"], extractor=ext, min_images_for_fid=20
    )
    for batch in (slice(0, 17), slice(17, None)):
        metric.update(real[batch], real_labels[batch], real=True)
        metric.update(fake[batch], fake_labels[batch].tolist(), real=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = metric.compute()
    small = _messages(caught, SmallSampleFIDWarning)
    assert len(small) == 1 and "class 1 ('tumour') has 19 real and 12 generated images" in small[0]
    assert "KID" in small[0] and "min_images_for_fid=20" in small[0]
    missing = _messages(caught, MissingClassWarning)
    assert len(missing) == 1
    assert "class 2 ('rare'): 5 real / 0 generated" in missing[0] and "class 3 ('absent'): 0 real / 0" in missing[0]

    for c in (0, 1):
        separate = FrechetInceptionDistance(extractor=ext)
        separate.update(real[real_labels == c], real=True)
        separate.update(fake[fake_labels == c], real=False)
        entry = result.per_class[c]
        assert entry.value == pytest.approx(separate.compute().value, rel=1e-9)
        assert entry.value == pytest.approx(
            _fid_reference(real[real_labels == c], fake[fake_labels == c], ext), rel=1e-6
        )
        assert not entry.missing
    assert (result.per_class[0].n_real, result.per_class[0].n_fake) == (20, 22)
    assert (result.per_class[1].n_real, result.per_class[1].n_fake) == (19, 12)
    assert result.per_class[0].fid_biased is False and result.per_class[1].fid_biased is True
    for c in (2, 3):
        assert result.per_class[c].missing and result.per_class[c].value is None
    assert result.per_class[2].n_real == 5 and result.per_class[2].n_fake == 0
    assert result.macro == pytest.approx((result.per_class[0].value + result.per_class[1].value) / 2, rel=1e-12)
    assert result.protocol["macro_over"] == [0, 1] and result.protocol["missing"] == [2, 3]
    assert result.protocol["fid_biased"] == [1] and result.protocol["n_real_per_class"] == [20, 19, 5, 0]


def test_class_conditional_kid_equals_separate_metrics_and_numpy_mmd() -> None:
    ext = _tiny_extractor()
    real, real_labels, fake, fake_labels = _class_data()
    metric = ClassConditionalKID(num_classes=3, extractor=ext, subsets=4, subset_size=15, seed=3)
    metric.update(real, real_labels, real=True)
    metric.update(fake, fake_labels, real=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = metric.compute()
    reduced = [m for m in _messages(caught, UserWarning) if "subset_size 15" in m]
    assert len(reduced) == 1 and reduced[0].startswith("per-class KID, class 1:")  # 12 fake images < 15
    assert any("class 2: 5 real / 0 generated" in m for m in _messages(caught, MissingClassWarning))
    for c in (0, 1):
        separate = KernelInceptionDistance(extractor=ext, subsets=4, subset_size=15, seed=3)
        separate.update(real[real_labels == c], real=True)
        separate.update(fake[fake_labels == c], real=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = separate.compute()
        assert result.per_class[c].mean == pytest.approx(expected.mean, rel=1e-9)
        assert result.per_class[c].std == pytest.approx(expected.std, rel=1e-9)
    assert result.per_class[2].missing and result.per_class[2].mean is None
    assert result.macro == pytest.approx((result.per_class[0].mean + result.per_class[1].mean) / 2, rel=1e-12)

    # a class of 12 vs 12 with subset_size >= 12: every subset is the whole class, so KID is the full MMD
    full = ClassConditionalKID(num_classes=2, extractor=ext, subsets=2, subset_size=50)
    full.update(real[:12], torch.ones(12, dtype=torch.long), real=True)
    full.update(fake[:12], torch.ones(12, dtype=torch.long), real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = full.compute()
    fr = extract_features(real[:12], ext, "pytorch-fid").double().numpy()
    ff = extract_features(fake[:12], ext, "pytorch-fid").double().numpy()
    assert res.per_class[1].mean == pytest.approx(_mmd2_reference(fr, ff), rel=1e-6)
    assert res.per_class[0].missing and res.protocol["macro_over"] == [1]


def test_class_conditional_label_errors_and_no_computable_class() -> None:
    ext = _tiny_extractor()
    metric = ClassConditionalFID(num_classes=2, extractor=ext)
    images = _images(4, seed=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\].*got values in \[0, 2\]"):
        metric.update(images, torch.tensor([0, 1, 2, 0]), real=True)
    with pytest.raises(ValueError, match=r"labels must be \(4,\) integers"):
        metric.update(images, torch.tensor([0, 1]), real=True)
    with pytest.raises(ValueError, match="integer class indices"):
        metric.update(images, torch.tensor([0.0, 1.0, 0.0, 1.0]), real=True)
    with pytest.raises(ValueError, match="class_names has 1 names"):
        ClassConditionalFID(num_classes=2, class_names=["a"], extractor=ext)
    bad = images.clone()
    bad[3] = 5.0  # only the class-1 image is out of range: nothing may be added, class 0 included
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]"):
        metric.update(bad, torch.tensor([0, 0, 0, 1]), real=True)
    assert int(metric.class_metrics[0].real_n) == 0 and int(metric.real_counts.sum()) == 0
    metric.update(images, torch.tensor([0, 0, 1, 1]), real=True)
    metric.update(images[:2], torch.tensor([1, 0]), real=False)
    with pytest.raises(ValueError, match=r"no class has at least 2 real and 2 generated images.*0: 2/1, 1: 2/1"):
        metric.compute()


def test_reset_keeps_real_images_when_asked() -> None:
    ext = _tiny_extractor()
    real, real_labels, fake, fake_labels = _class_data()
    kept = ClassConditionalFID(num_classes=3, extractor=ext, reset_real_features=False, min_images_for_fid=2)
    kept.update(real, real_labels, real=True)
    kept.update(_images(34, seed=99), fake_labels, real=False)
    kept.reset()
    kept.update(fake, fake_labels, real=False)
    fresh = ClassConditionalFID(num_classes=3, extractor=ext, min_images_for_fid=2)
    fresh.update(real, real_labels, real=True)
    fresh.update(fake, fake_labels, real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = kept.compute(), fresh.compute()
    assert a.macro == pytest.approx(b.macro, rel=1e-12)
    assert a.protocol["n_real_per_class"] == [20, 19, 5] and a.protocol["n_fake_per_class"] == [22, 12, 0]


# ---------------------------------------------------------------------------------------------
# real DDP: two gloo processes on CPU; a class present on one rank only must still be scored


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ext = _tiny_extractor()
        real, real_labels, fake, fake_labels = _class_data()
        fid = ClassConditionalFID(num_classes=3, extractor=ext, min_images_for_fid=2)
        # class 1: every real image on rank 0, every generated one on rank 1 (scored only after the sync);
        # class 2 (real only) all on rank 0; class 0 split evenly
        ri, fi = torch.arange(44) % 2, torch.arange(34) % 2
        real_part = ((real_labels == 0) & (ri == rank)) | ((real_labels != 0) & (rank == 0))
        fake_part = ((fake_labels == 0) & (fi == rank)) | ((fake_labels == 1) & (rank == 1))
        fid.update(real[real_part], real_labels[real_part], real=True)
        fid.update(fake[fake_part], fake_labels[fake_part], real=False)
        vols = torch.from_numpy(_volumes(4, (6, 7, 8), seed=6))
        vfid = Volume25DFID(extractor=ext, min_images_for_fid=2)
        vfid.update(vols[rank : rank + 1], real=True)
        vfid.update(vols[2 + rank : 3 + rank] * 0.5, real=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res, vres = fid.compute(), vfid.compute()
        out = {
            "values": [e.value for e in res.per_class.values()],
            "n_real": res.protocol["n_real_per_class"],
            "volume_mean": vres.mean,
            "n_real_volumes": vres.protocol["n_real_volumes"],
        }
        Path(out_dir, f"{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_two_processes_equal_single_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    ext = _tiny_extractor()
    real, real_labels, fake, fake_labels = _class_data()
    single = ClassConditionalFID(num_classes=3, extractor=ext, min_images_for_fid=2)
    single.update(real, real_labels, real=True)
    single.update(fake, fake_labels, real=False)
    vols = torch.from_numpy(_volumes(4, (6, 7, 8), seed=6))
    vsingle = Volume25DFID(extractor=ext, min_images_for_fid=2)
    vsingle.update(vols[:2, None], real=True)
    vsingle.update(vols[2:, None] * 0.5, real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, vexpected = single.compute(), vsingle.compute()
    for res in results:
        assert res["n_real"] == [20, 19, 5]
        assert res["values"][:2] == pytest.approx([expected.per_class[0].value, expected.per_class[1].value], rel=1e-9)
        assert res["values"][2] is None  # class 2 has real images (all on rank 0) but no generated ones
        assert res["volume_mean"] == pytest.approx(vexpected.mean, rel=1e-9)
        assert res["n_real_volumes"] == 2


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
        assert res.per_axis[axis].value == pytest.approx(ref.per_axis[axis].value, rel=1e-9), "one feature pass, same FID"
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
