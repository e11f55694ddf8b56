"""Per-class FID/KID (gan.metrics.fid_per_class), checked against separately fed FID/KID metrics and
frechet_distance / an unbiased MMD written here on np.mean / np.cov of the features; real DDP on two CPU ranks."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

from gan.metrics.features import extract_features
from gan.metrics.fid import FrechetInceptionDistance, KernelInceptionDistance, SmallSampleFIDWarning
from gan.metrics.fid_per_class import ClassConditionalFID, ClassConditionalKID, MissingClassWarning
from gan.metrics.fid_volume import Volume25DFID
from tests.gan.metrics.helpers import fid_reference as _fid_reference
from tests.gan.metrics.helpers import images
from tests.gan.metrics.helpers import mmd2_reference as _mmd2_reference
from tests.gan.metrics.helpers import tiny_tanh_extractor as _tiny_extractor
from tests.gan.metrics.helpers import volumes as _volumes
from tests.gan.metrics.helpers import warning_messages as _messages


def _images(n: int, seed: int, scale: float = 1.0, size: int = 12) -> torch.Tensor:
    return images(n, size, seed, scale)


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
# real DDP: two gloo processes on CPU; a class present on one rank only must still be scored (with a 2.5D FID
# fed the same way)


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
