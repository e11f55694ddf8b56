"""FID/KID on a pinned protocol, checked against pytorch-fid, torchvision, PIL, torchmetrics and numpy.

No pretrained weights can be downloaded here, so "one weights file" is a randomly initialised FID
Inception saved to disk and loaded by both medsynth and pytorch-fid.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gan.metrics.features import (
    FID_WEIGHTS_FILENAME,
    FIDInceptionV3,
    FIDProtocol,
    ModuleExtractor,
    TorchvisionInceptionExtractor,
    extract_features,
    preprocess_images,
    protocol_record,
    pytorch_fid_protocol_record,
    quantize_uint8,
)
from gan.metrics.fid import (
    FeatureStats,
    FrechetInceptionDistance,
    KernelInceptionDistance,
    check_comparable,
    fid_from_stats,
)
from gan.metrics.frechet import frechet_distance, kid, kid_subsets

pytorch_fid_score = pytest.importorskip("pytorch_fid.fid_score")
pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def random_fid_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised FID Inception saved as a state dict (the one weights file for both libraries)."""
    path = tmp_path_factory.mktemp("weights") / "random_fid_inception.pth"
    torch.save(FIDInceptionV3(pretrained=False, seed=7).state_dict(), path)
    return path


def _tiny_extractor(seed: int = 0) -> ModuleExtractor:
    """A small conv net wrapped as an extractor (fast stand-in for Inception)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return ModuleExtractor(net, name=f"tiny-{seed}", input_size=32)


def _images(n: int, size: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=gen) * 2 - 1) * scale


# ---------------------------------------------------------------------------------------------
# Fréchet distance


def _random_cov(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    feats = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal(d)
    return feats.mean(0), np.cov(feats, rowvar=False)


@pytest.mark.parametrize("n_samples", [400, 12], ids=["full-rank", "near-singular"])
def test_frechet_matches_pytorch_fid(n_samples: int) -> None:
    rng = np.random.default_rng(n_samples)
    mu1, s1 = _random_cov(rng, n_samples, 48)
    mu2, s2 = _random_cov(rng, n_samples, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pytorch_fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
        ours = frechet_distance(mu1, s1, mu2, s2)
        ours_torch = frechet_distance(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2)))
    assert abs(ours - ref) <= 1e-6 * abs(ref)
    assert abs(ours_torch - ref) <= 1e-6 * abs(ref)


def test_frechet_singular_product_takes_the_eps_path_like_pytorch_fid() -> None:
    # sigma1 @ sigma2 is a nilpotent Jordan block: it has no square root until eps is added to the diagonals
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 0.25])
    sigma1, sigma2 = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pytorch_fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
    with pytest.warns(RuntimeWarning, match="adding 1e-06 to the diagonals"):
        ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert np.isfinite(ref) and abs(ours - ref) <= 1e-6 * abs(ref)


def test_frechet_closed_form_for_diagonal_covariances() -> None:
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    v1, v2 = rng.uniform(0.1, 2.0, 10), rng.uniform(0.1, 2.0, 10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


# ---------------------------------------------------------------------------------------------
# features equal pytorch-fid's, on the same weights file and the same images (read from PNGs)


def test_features_and_stats_equal_pytorch_fid(
    random_fid_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.utils import save_image

    images = _images(4, 64, seed=11)  # float in [-1, 1], as a generator outputs them
    files = []
    for i, img in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        save_image(img, files[-1], normalize=True, value_range=(-1, 1))

    def local_weights(*args: object, **kwargs: object) -> dict:
        return torch.load(random_fid_weights, map_location="cpu", weights_only=True)

    monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url", local_weights)
    reference_model = pytorch_fid_inception.InceptionV3([3], use_fid_inception=True)
    ref = pytorch_fid_score.get_activations(files, reference_model, batch_size=4, dims=2048, num_workers=0)

    ours = FIDInceptionV3(random_fid_weights, sha256_prefix=None)
    # the images pytorch-fid read back from PNG are our quantisation of the float images
    read_back = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in files])
    assert torch.equal(quantize_uint8(images), read_back.permute(0, 3, 1, 2))

    feats = extract_features(images, ours, FIDProtocol.PYTORCH_FID).double().numpy()
    assert feats.std() > 0.1  # non-degenerate features
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-5)

    metric = FrechetInceptionDistance(extractor=ours)
    metric.update(images[:3], real=True)
    metric.update(images[3:], real=True)
    stats = metric.real_stats()
    np.testing.assert_allclose(stats.mu, ref.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.sigma, np.cov(ref, rowvar=False), rtol=1e-5, atol=1e-6)
    assert stats.n == 4
    assert stats.protocol["weights_sha256"] == ours.weights_sha256 != "random-init-seed-7"


def test_torchvision_extractor_equals_torchvision_pool_features(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False).eval()
    for m in net.modules():  # He init keeps activations of order one through the 94 convolutions
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path / "tv_inception.pth"
    torch.save(net.state_dict(), path)
    pooled = {}
    net.avgpool.register_forward_hook(lambda m, i, o: pooled.setdefault("x", o.flatten(1)))
    x01 = _images(2, 299, seed=5).add(1).div(2)
    with torch.no_grad():
        net(x01 * 2 - 1)  # the Google weights expect [-1, 1]
        ours = TorchvisionInceptionExtractor(path, sha256_prefix=None)(x01)
    torch.testing.assert_close(ours, pooled["x"], rtol=1e-5, atol=1e-5)
    assert ours.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# pre-processing of the two protocols


def test_pytorch_fid_preprocessing_matches_its_pipeline_for_grey_images() -> None:
    from torchvision.transforms import ToTensor

    gen = torch.Generator().manual_seed(2)
    grey = torch.randint(0, 256, (2, 1, 57, 83), dtype=torch.uint8, generator=gen)
    # pytorch-fid: PIL convert('RGB'), ToTensor, bilinear interpolate (align_corners=False)
    ref = torch.stack([ToTensor()(Image.fromarray(g[0].numpy(), mode="L").convert("RGB")) for g in grey])
    ref = F.interpolate(ref, size=(41, 41), mode="bilinear", align_corners=False)
    torch.testing.assert_close(preprocess_images(grey, "pytorch-fid", 41), ref, rtol=0, atol=0)


def test_clean_preprocessing_is_pil_bicubic_per_channel() -> None:
    gen = torch.Generator().manual_seed(3)
    u8 = torch.randint(0, 256, (2, 3, 19, 27), dtype=torch.uint8, generator=gen)
    ref = np.empty((2, 3, 37, 37), dtype=np.float32)
    for i in range(2):
        for c in range(3):
            img = Image.fromarray(u8[i, c].numpy().astype(np.float32), mode="F")
            ref[i, c] = np.clip(np.asarray(img.resize((37, 37), Image.BICUBIC)), 0, 255) / 255
    clean = preprocess_images(u8, FIDProtocol.CLEAN, 37)
    np.testing.assert_allclose(clean.numpy(), ref, rtol=0, atol=1e-7)
    bilinear = preprocess_images(u8, FIDProtocol.PYTORCH_FID, 37)
    assert (clean - bilinear).abs().max() > 1e-3  # the protocols really differ


def test_bad_images_are_rejected() -> None:
    ext = _tiny_extractor()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        extract_features(torch.full((1, 3, 8, 8), 200.0), ext, "pytorch-fid")
    with pytest.raises(ValueError, match="C in"):
        extract_features(torch.zeros(1, 4, 8, 8), ext, "pytorch-fid")
    with pytest.raises(ValueError, match="dtype"):
        extract_features(torch.zeros(1, 3, 8, 8, dtype=torch.int32), ext, "pytorch-fid")
    with pytest.raises(ValueError):
        FIDProtocol("bicubic")


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


# ---------------------------------------------------------------------------------------------
# weights files: missing, wrong hash, wrong layout


def test_missing_weights_error_names_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError) as err:
        FIDInceptionV3(weights_path=tmp_path)
    assert FID_WEIGHTS_FILENAME in str(err.value) and str(tmp_path) in str(err.value)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(FileNotFoundError) as err:
        FIDInceptionV3()
    assert str(hub / "checkpoints" / FID_WEIGHTS_FILENAME) in str(err.value)
    with pytest.raises(FileNotFoundError, match="inception_v3_google-0cc3c7bd.pth"):
        TorchvisionInceptionExtractor()


def test_weights_with_wrong_sha256_are_refused(random_fid_weights: Path, tmp_path: Path) -> None:
    (tmp_path / FID_WEIGHTS_FILENAME).symlink_to(random_fid_weights)
    with pytest.raises(ValueError, match="sha256 .* does not start with '6726825d'"):
        FIDInceptionV3(weights_path=tmp_path)


def test_weights_with_wrong_layout_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="wrong.pth"):
        FIDInceptionV3(weights_path=path, sha256_prefix=None)


def test_module_extractor_checks_output_and_hashes_weights() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"\(N, dim\)"):
        ModuleExtractor(conv, name="conv", input_size=16)
    a, b = _tiny_extractor(0), _tiny_extractor(1)
    assert a.dim == 32 and a.weights_sha256 != b.weights_sha256


# ---------------------------------------------------------------------------------------------
# KID


def _mmd2_reference(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased polynomial-kernel MMD^2 (Bińkowski et al. 2018; clean-fid's kernel_distance)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + coef) ** degree
    k_yy = (y @ y.T / d + coef) ** degree
    k_xy = (x @ y.T / d + coef) ** degree
    return (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.sum() / m**2


def test_kid_equals_reference_on_full_sets_and_subsets() -> None:
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(0)
    real = rng.standard_normal((50, 16))
    fake = rng.standard_normal((50, 16)) * 1.2 + 0.3
    # subsets covering the whole set: every subset gives the full-set MMD
    mean, std = kid(real, fake, subsets=3, subset_size=50)
    assert mean == pytest.approx(_mmd2_reference(real, fake), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10 * abs(mean))
    # random subsets: numpy reference and torchmetrics' poly_mmd on the same draws
    mean, std = kid(real, fake, subsets=7, subset_size=20, seed=5)
    draws = kid_subsets(50, 50, subsets=7, subset_size=20, seed=5)
    draws = [(i.numpy(), j.numpy()) for i, j in draws]
    ref = np.array([_mmd2_reference(real[i], fake[j]) for i, j in draws])
    tm = np.array([float(poly_mmd(torch.from_numpy(real[i]), torch.from_numpy(fake[j]))) for i, j in draws])
    np.testing.assert_allclose(ref, tm, rtol=1e-10)
    assert mean == pytest.approx(ref.mean(), rel=1e-10)
    assert std == pytest.approx(ref.std(), rel=1e-8)
    assert std > 0


def test_kid_reduces_large_subset_with_warning() -> None:
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((12, 8)), rng.standard_normal((9, 8))
    with pytest.warns(UserWarning, match="subset_size 1000"):
        mean, _ = kid(real, fake, subsets=2, subset_size=1000)
    assert np.isfinite(mean)


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
