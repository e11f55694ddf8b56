"""FID/KID metrics and statistics files (gan.metrics.fid), checked against pytorch-fid, torchmetrics and numpy:
batch-size invariance, float64 statistics, DDP merging, protocol checks and the random-weights stamp."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gan.metrics.features import ModuleExtractor, extract_features, protocol_record, pytorch_fid_protocol_record
from gan.metrics.fid import (
    FeatureStats,
    FrechetInceptionDistance,
    KernelInceptionDistance,
    check_comparable,
    fid_from_stats,
)
from tests.gan.metrics.helpers import images as _images
from tests.gan.metrics.helpers import mmd2_reference as _mmd2_reference
from tests.gan.metrics.helpers import tiny_extractor as _tiny_extractor

pytorch_fid_score = pytest.importorskip("pytorch_fid.fid_score")

pytestmark = pytest.mark.usefixtures("no_network")


# ---------------------------------------------------------------------------------------------
# FID metric: batch-size invariance, float64 statistics, DDP-style merging


def _fid_with_batches(real: torch.Tensor, fake: torch.Tensor, batch: int, ext: ModuleExtractor) -> float:
    metric = FrechetInceptionDistance(extractor=ext)
    for i in range(0, real.shape[0], batch):
        metric.update(real[i : i + batch], real=True)
        metric.update(fake[i : i + batch], real=False)
    return metric.compute().value


def test_fid_is_independent_of_batch_size_and_matches_reference() -> None:
    ext = _tiny_extractor()
    real, fake = _images(64, 40, seed=1), _images(64, 40, seed=2, scale=0.7)
    values = [_fid_with_batches(real, fake, b, ext) for b in (1, 7, 32)]
    assert max(values) - min(values) <= 1e-6 * max(values)
    # reference: numpy mean/cov of the same features and pytorch-fid's distance
    fr = extract_features(real, ext, "pytorch-fid").double().numpy()
    ff = extract_features(fake, ext, "pytorch-fid").double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pytorch-fid passes scipy's deprecated disp=
        ref = pytorch_fid_score.calculate_frechet_distance(
            fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False)
        )
    assert values[0] == pytest.approx(ref, rel=1e-6)
    assert values[0] > 1e-3


def test_fid_result_carries_protocol_and_counts() -> None:
    ext = _tiny_extractor()
    metric = FrechetInceptionDistance(extractor=ext, protocol="clean")
    metric.update(_images(5, 16, seed=1), real=True)
    metric.update(_images(3, 16, seed=2), real=False)
    result = metric.compute()
    p = result.protocol
    assert (p["protocol"], p["extractor"], p["n_real"], p["n_fake"]) == ("clean", "tiny-0", 5, 3)
    assert p["weights_sha256"] == ext.weights_sha256 and len(ext.weights_sha256) == 64
    assert p["resize_filter"].startswith("pil-bicubic") and p["quantisation"] == "uint8"
    assert np.isfinite(float(result))


def test_fid_merge_equals_single_metric() -> None:
    """States reduce by summation as in DDP: two halves merged give the single-process value."""
    ext = _tiny_extractor()
    real, fake = _images(20, 24, seed=3), _images(20, 24, seed=4, scale=0.5)
    whole, a, b = (FrechetInceptionDistance(extractor=ext) for _ in range(3))
    whole.update(real, real=True)
    whole.update(fake, real=False)
    a.update(real[:9], real=True)
    a.update(fake[:12], real=False)
    b.update(real[9:], real=True)
    b.update(fake[12:], real=False)
    a.merge_state(b)
    assert a.compute().value == pytest.approx(whole.compute().value, rel=1e-9)


def test_fid_needs_two_images_and_refuses_real_updates_with_cached_stats(tmp_path: Path) -> None:
    ext = _tiny_extractor()
    metric = FrechetInceptionDistance(extractor=ext)
    metric.update(_images(1, 16, seed=1), real=True)
    metric.update(_images(4, 16, seed=2), real=False)
    with pytest.raises(ValueError, match="at least 2 real"):
        metric.compute()
    full = FrechetInceptionDistance(extractor=ext)
    full.update(_images(6, 16, seed=1), real=True)
    cached = FrechetInceptionDistance(extractor=ext, real_stats=full.real_stats().save(tmp_path / "r.npz"))
    with pytest.raises(ValueError, match="real_stats"):
        cached.update(_images(2, 16, seed=1), real=True)


def test_extractor_is_not_in_state_dict_and_survives_half() -> None:
    ext = _tiny_extractor()
    metric = FrechetInceptionDistance(extractor=ext)
    assert not any(k.startswith(("extractor", "_extractor", "module")) for k in metric.state_dict())
    holder = nn.Module()
    holder.fid = metric
    holder.half()
    assert ext.dtype == torch.float32 and metric.real_outer.dtype == torch.float64
    holder.to("meta")  # the extractor follows the metric's device
    assert ext.device.type == "meta" and metric.real_outer.device.type == "meta"


# ---------------------------------------------------------------------------------------------
# statistics files and protocol checks


def test_stats_npz_roundtrip_readable_by_pytorch_fid(tmp_path: Path) -> None:
    ext = _tiny_extractor()
    metric = FrechetInceptionDistance(extractor=ext)
    metric.update(_images(10, 16, seed=1), real=True)
    stats = metric.real_stats()
    path = stats.save(tmp_path / "real.npz")
    assert sorted(os.listdir(tmp_path)) == ["real.npz"]  # no temporary file left behind
    mu, sigma = pytorch_fid_score.compute_statistics_of_path(str(path), None, 1, 32, "cpu")
    np.testing.assert_array_equal(mu, stats.mu)
    np.testing.assert_array_equal(sigma, stats.sigma)
    loaded = FeatureStats.load(path)
    assert loaded.n == 10 and loaded.protocol == protocol_record("pytorch-fid", ext)
    with np.load(path) as data:
        assert json.loads(str(data["protocol"]))["extractor"] == "tiny-0"
    with pytest.raises(ValueError, match=r"\.npz"):
        stats.save(tmp_path / "real.npy")


def test_plain_pytorch_fid_npz_needs_explicit_protocol(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez_compressed(path, mu=np.zeros(2048), sigma=np.eye(2048))  # what pytorch-fid --save-stats writes
    with pytest.raises(ValueError, match="assume_protocol='pytorch-fid'"):
        FeatureStats.load(path)
    with pytest.raises(ValueError, match="only be assumed"):
        FeatureStats.load(path, assume_protocol="clean")
    stats = FeatureStats.load(path, assume_protocol="pytorch-fid")
    assert stats.protocol == pytorch_fid_protocol_record(2048) and stats.n is None
    # the file-name hash prefix matches the full sha256 of the real weights file; other weights do not
    full = dict(stats.protocol, weights_sha256="6726825d" + "0" * 56)
    check_comparable(stats.protocol, full)
    with pytest.raises(ValueError, match="weights_sha256"):
        check_comparable(stats.protocol, dict(full, weights_sha256="deadbeef" + "0" * 56))


def test_statistics_of_different_protocols_or_extractors_are_never_compared(tmp_path: Path) -> None:
    ext, other = _tiny_extractor(0), _tiny_extractor(1)
    images = _images(6, 16, seed=1)
    stats = {}
    settings = (("fid", ext, "pytorch-fid"), ("clean", ext, "clean"), ("other", other, "pytorch-fid"))
    for key, extractor, protocol in settings:
        m = FrechetInceptionDistance(extractor=extractor, protocol=protocol)
        m.update(images, real=True)
        stats[key] = m.real_stats()
    with pytest.raises(ValueError, match="resize_filter"):
        fid_from_stats(stats["fid"], stats["clean"])
    with pytest.raises(ValueError, match="extractor"):
        fid_from_stats(stats["fid"], stats["other"])
    assert fid_from_stats(stats["fid"], stats["fid"]).value == pytest.approx(0.0, abs=1e-6)
    path = stats["clean"].save(tmp_path / "clean.npz")
    with pytest.raises(ValueError, match="protocol"):
        FrechetInceptionDistance(extractor=ext, protocol="pytorch-fid", real_stats=path)


def test_statistics_written_before_the_weights_stamp_get_it_derived(tmp_path: Path) -> None:
    ext = _tiny_extractor()
    stamp = ("weights", "comparable")
    legacy = {k: v for k, v in protocol_record("pytorch-fid", ext).items() if k not in stamp}
    # a user module's record gets "module", and compares with the same module's new record
    stats = FeatureStats(mu=np.zeros(3), sigma=np.eye(3), n=4, protocol=legacy)
    assert stats.protocol == protocol_record("pytorch-fid", ext)
    check_comparable(legacy, protocol_record("pytorch-fid", ext))
    # a file of a seeded random extractor (weights_sha256 "random-init-seed-N") says so once loaded
    path = tmp_path / "legacy_random.npz"
    record = json.dumps(dict(legacy, extractor="fid-inception-v3", weights_sha256="random-init-seed-3"))
    np.savez_compressed(path, mu=np.zeros(3), sigma=np.eye(3), n=np.int64(4), protocol=np.array(record))
    loaded = FeatureStats.load(path)
    assert (loaded.protocol["weights"], loaded.protocol["comparable"]) == ("random(seed=3)", False)
    # a record of the real FID Inception file still compares with pytorch-fid's own statistics
    fid_legacy = {k: v for k, v in pytorch_fid_protocol_record(2048).items() if k not in stamp}
    check_comparable(dict(fid_legacy, weights_sha256="6726825d" + "0" * 56), pytorch_fid_protocol_record(2048))
    with pytest.raises(ValueError, match=r"weights: 'random\(seed=3\)' vs 'pretrained'"):
        check_comparable(loaded.protocol, dict(loaded.protocol, weights="pretrained", comparable=True))


# ---------------------------------------------------------------------------------------------
# KID metric


def test_kid_metric_matches_reference_and_records_protocol() -> None:
    ext = _tiny_extractor()
    real, fake = _images(24, 20, seed=1), _images(24, 20, seed=2, scale=0.6)
    metric = KernelInceptionDistance(extractor=ext, subsets=4, subset_size=24)
    metric.update(real[:10], real=True)
    metric.update(real[10:], real=True)
    metric.update(fake, real=False)
    result = metric.compute()
    fr = extract_features(real, ext, "pytorch-fid").double().numpy()
    ff = extract_features(fake, ext, "pytorch-fid").double().numpy()
    assert result.mean == pytest.approx(_mmd2_reference(fr, ff), rel=1e-6)
    assert result.protocol["n_real"] == 24 and result.protocol["kid_subset_size"] == 24


# ---------------------------------------------------------------------------------------------
# real DDP: two gloo processes on CPU


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on the loopback interface
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ext = _tiny_extractor()
        real, fake = _images(16, 24, seed=3), _images(16, 24, seed=4, scale=0.5)
        fid = FrechetInceptionDistance(extractor=ext)
        kid_metric = KernelInceptionDistance(extractor=ext, subsets=3, subset_size=16)
        for m in (fid, kid_metric):
            m.update(real[rank::2], real=True)
            m.update(fake[rank::2], real=False)
        fid_result, kid_result = fid.compute(), kid_metric.compute()
        result = {"fid": fid_result.value, "n_real": fid_result.protocol["n_real"], "kid": kid_result.mean}
        Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_two_processes_equal_single_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    ext = _tiny_extractor()
    real, fake = _images(16, 24, seed=3), _images(16, 24, seed=4, scale=0.5)
    single = FrechetInceptionDistance(extractor=ext)
    single.update(real, real=True)
    single.update(fake, real=False)
    fr = extract_features(real, ext, "pytorch-fid").double().numpy()
    ff = extract_features(fake, ext, "pytorch-fid").double().numpy()
    for res in results:
        assert res["n_real"] == 16
        assert res["fid"] == pytest.approx(single.compute().value, rel=1e-9)
        assert res["kid"] == pytest.approx(_mmd2_reference(fr, ff), rel=1e-6)  # subsets = whole gathered set


def test_precomputed_features_give_the_same_fid_and_kid():
    import torch as _torch

    from gan.metrics.features import ModuleExtractor
    from gan.metrics.fid import FrechetInceptionDistance as _FID
    from gan.metrics.fid import KernelInceptionDistance as _KID

    _torch.manual_seed(0)
    net = _torch.nn.Sequential(_torch.nn.Conv2d(3, 8, 3, stride=2), _torch.nn.ReLU(), _torch.nn.AdaptiveAvgPool2d(1),
                               _torch.nn.Flatten())
    ext = ModuleExtractor(net, name="tiny", input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), dim=8)
    real, fake = _torch.rand(20, 3, 32, 32) * 2 - 1, _torch.rand(20, 3, 32, 32) * 2 - 1
    a, b = _FID(extractor=ext), _FID(extractor=ext)
    ka, kb = _KID(extractor=ext, subsets=5, subset_size=10), _KID(extractor=ext, subsets=5, subset_size=10)
    from gan.metrics.features import extract_features

    for metric in (a, ka):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    fr, ff = extract_features(real, ext, "pytorch-fid"), extract_features(fake, ext, "pytorch-fid")
    for metric in (b, kb):
        metric.update(fr, real=True, precomputed=True)
        metric.update(ff, real=False, precomputed=True)
    assert b.compute().value == pytest.approx(a.compute().value, rel=1e-9)
    assert kb.compute().mean == pytest.approx(ka.compute().mean, rel=1e-9)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        b.update(_torch.zeros(3, 5), real=False, precomputed=True)
