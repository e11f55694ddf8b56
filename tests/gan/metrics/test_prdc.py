"""Precision/recall/density/coverage (gan.metrics.prdc) against the `prdc` package on the same features, against values
worked out by hand on tiny point sets, per class, across a reset, and under real DDP (two gloo processes)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from prdc import compute_prdc

from gan.metrics import PrecisionRecallDensityCoverage, precision_recall_density_coverage
from tests.gan.metrics.helpers import images, tiny_extractor

KEYS = ("precision", "recall", "density", "coverage")


def _features(seed: int, n: int, d: int = 8, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, scale, size=(n, d))


@pytest.mark.parametrize("k", [3, 5])
def test_equals_the_prdc_package_on_the_same_features(k: int, capsys: pytest.CaptureFixture) -> None:
    real, fake = _features(0, 120), _features(1, 90, shift=0.4, scale=1.3)
    ref = compute_prdc(real, fake, nearest_k=k)
    capsys.readouterr()  # prdc prints the set sizes
    ours = precision_recall_density_coverage(torch.from_numpy(real), torch.from_numpy(fake), k=k, chunk_size=37)
    assert set(ours) == set(KEYS)
    for key in KEYS:
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-12), key


def test_the_default_uses_k3_for_precision_recall_and_k5_for_density_coverage(capsys) -> None:
    real, fake = _features(2, 80), _features(3, 70, shift=0.3)
    ref3, ref5 = compute_prdc(real, fake, nearest_k=3), compute_prdc(real, fake, nearest_k=5)
    capsys.readouterr()
    ours = precision_recall_density_coverage(real, fake)
    assert ours["precision"] == pytest.approx(ref3["precision"]) and ours["recall"] == pytest.approx(ref3["recall"])
    assert ours["density"] == pytest.approx(ref5["density"]) and ours["coverage"] == pytest.approx(ref5["coverage"])


def test_hand_computed_values_on_a_line() -> None:
    """Reals at 0, 1, 2, 3 on a line; k = 1, so every real's radius is 1 (its nearest other real), open balls.

    Fakes at 0.5 (inside the balls of reals 0 and 1), 2.9 (balls of 2 and 3) and 10 (outside all):
    precision = 2/3; density = (2 + 2 + 0) / 3 / 1 = 4/3. Fake radii (nearest other fake): 0.5 -> 2.4, 2.9 -> 2.4,
    10 -> 7.1; reals inside some fake ball: 0 (|0-0.5| < 2.4), 1, 2, 3 (|3-2.9|) -> recall = 1.
    Coverage: the nearest fake of each real is 0.5, 0.5, 0.9 (2.9), 0.1 (2.9): all < 1 -> 1.0.
    """
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [2.9], [10.0]])
    out = precision_recall_density_coverage(real, fake, k=1)
    assert out == pytest.approx({"precision": 2 / 3, "recall": 1.0, "density": 4 / 3, "coverage": 1.0})


def test_hand_computed_values_on_a_square_with_a_point_on_the_boundary() -> None:
    """Reals on the corners of the unit square; k = 1: every radius is 1. A fake exactly at distance 1 from a corner
    (and sqrt(2) or more from the others) is outside: balls are open, as in prdc.

    Fakes (0.5, 0.5): distance sqrt(0.5) < 1 from all four corners -> inside 4 balls; (2, 0): distance 1 from (1, 0)
    -> inside none. precision = 1/2, density = 4 / 2 = 2. Fake radii: both sqrt(2.5) ~ 1.58 (each other);
    reals within 1.58 of a fake: all four corners (each is sqrt(0.5) from (0.5, 0.5)) -> recall = 1. Coverage:
    nearest fake of every corner is at sqrt(0.5) < 1 -> 1.
    """
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    fake = torch.tensor([[0.5, 0.5], [2.0, 0.0]])
    out = precision_recall_density_coverage(real, fake, k=1)
    assert out == pytest.approx({"precision": 0.5, "recall": 1.0, "density": 2.0, "coverage": 1.0})
    far = precision_recall_density_coverage(real, torch.tensor([[5.0, 5.0], [6.0, 5.0]]), k=1)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_identical_sets_are_perfect_and_a_collapsed_set_has_low_recall() -> None:
    real = torch.from_numpy(_features(4, 200))
    same = precision_recall_density_coverage(real, real.clone())
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    collapsed = real[:1].repeat(50, 1) + 1e-3 * torch.from_numpy(_features(5, 50))  # one mode
    out = precision_recall_density_coverage(real, collapsed)
    assert out["precision"] == 1.0 and out["recall"] < 0.05 and out["coverage"] < 0.1


def test_bad_inputs_are_refused() -> None:
    real = torch.zeros(10, 4)
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall_density_coverage(real[:3], real, k=3)
    with pytest.raises(ValueError, match="dimension"):
        precision_recall_density_coverage(torch.randn(10, 4), torch.randn(10, 5), k=3)
    with pytest.raises(ValueError, match="positive int or a pair"):
        precision_recall_density_coverage(real, real, k=0)
    with pytest.raises(ValueError, match="NaN"):
        precision_recall_density_coverage(torch.full((10, 4), float("nan")), real, k=3)


def test_metric_per_class_equals_the_functional_on_each_class_and_keeps_reals_across_reset() -> None:
    real = torch.from_numpy(_features(6, 60)).float()
    fake = torch.from_numpy(_features(7, 50, shift=0.5)).float()
    held = torch.from_numpy(_features(8, 40)).float()
    real_lab, fake_lab, held_lab = torch.arange(60) % 2, torch.arange(50) % 2, torch.arange(40) % 2
    metric = PrecisionRecallDensityCoverage(num_classes=2, class_names=["a", "b"], reset_real_features=False)
    for i in range(0, 60, 16):  # batches of any size
        metric.update(real[i:i + 16], real=True, labels=real_lab[i:i + 16])
    metric.update(fake, real=False, labels=fake_lab)
    result = metric.compute()
    assert result.overall == pytest.approx(precision_recall_density_coverage(real, fake))
    for c in (0, 1):
        ref = precision_recall_density_coverage(real[real_lab == c], fake[fake_lab == c])
        assert result.per_class[c] == pytest.approx(ref)
    assert result.counts["real_per_class"] == [30, 30] and result.protocol["k_precision_recall"] == 3
    assert result.scalars("val/")["val/b/coverage"] == pytest.approx(result.per_class[1]["coverage"])
    metric.reset()  # the reals stay: score held-out reals against them (the floor)
    metric.update(held, real=False, labels=held_lab)
    assert metric.compute().overall == pytest.approx(precision_recall_density_coverage(real, held))


def test_metric_with_an_extractor_scores_images_and_records_the_protocol() -> None:
    ext = tiny_extractor(0)
    metric = PrecisionRecallDensityCoverage(extractor=ext, k=3)
    real, fake = images(20, 32, seed=1), images(20, 32, seed=2, scale=0.5)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    result = metric.compute()
    from gan.metrics.features import extract_features

    ref = precision_recall_density_coverage(extract_features(real, ext, "pytorch-fid"),
                                            extract_features(fake, ext, "pytorch-fid"), k=3)
    assert result.overall == pytest.approx(ref, abs=1e-6)
    assert result.protocol["features"]["extractor"] == ext.name


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        real = torch.from_numpy(_features(6, 60)).float()
        fake = torch.from_numpy(_features(7, 51, shift=0.5)).float()  # uneven shards
        metric = PrecisionRecallDensityCoverage(num_classes=2)
        metric.update(real[rank::2], real=True, labels=(torch.arange(60) % 2)[rank::2])
        metric.update(fake[rank::2], real=False, labels=(torch.arange(51) % 2)[rank::2])
        result = metric.compute()
        Path(out_dir, f"{rank}.json").write_text(json.dumps({"overall": result.overall, "c1": result.per_class[1]}))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_two_processes_equal_single_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")  # fork: no re-import, a second instead of many
    real = torch.from_numpy(_features(6, 60)).float()
    fake = torch.from_numpy(_features(7, 51, shift=0.5)).float()
    ref = precision_recall_density_coverage(real, fake)
    ref1 = precision_recall_density_coverage(real[1::2], fake[1::2])
    for r in range(2):
        res = json.loads((tmp_path / f"{r}.json").read_text())
        assert res["overall"] == pytest.approx(ref) and res["c1"] == pytest.approx(ref1)
