"""The memorization audit (gan.metrics.memorization.audit): thresholds against np.quantile of brute-force
distances, planted copies of training tiles found, clean sets passed, bad inputs refused."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.metrics.features import ModuleExtractor, protocol_record, random_weights
from gan.metrics.memorization import CopyingVerdict, audit, calibrate_threshold
from tests.gan.metrics.memorization.helpers import brute_nn as _brute_nn
from tests.gan.metrics.memorization.helpers import tiles as _tiles


@pytest.mark.parametrize("quantile", [0.01, 0.1])
def test_threshold_is_quantile_of_heldout_distances(quantile: float) -> None:
    rng = np.random.default_rng(2)
    train, heldout = rng.normal(size=(150, 8)), rng.normal(size=(120, 8))
    for metric in ("cosine", "euclidean"):
        expected = np.quantile(_brute_nn(heldout, train, metric).min(axis=1), quantile)
        got = calibrate_threshold(heldout, train, quantile=quantile, metric=metric, chunk=50)
        assert got == pytest.approx(expected, rel=1e-5)


def test_threshold_warns_about_leaky_split() -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(100, 8)).astype(np.float32)
    heldout = np.concatenate([train[:2], rng.normal(size=(198, 8)).astype(np.float32)])
    with pytest.warns(UserWarning, match="2 held-out image\\(s\\) are \\(near-\\)exact copies"):
        calibrate_threshold(heldout, train, quantile=0.01)


def test_audit_finds_planted_copies(extractor: ModuleExtractor, tile_sets: dict[str, torch.Tensor]) -> None:
    t = tile_sets
    report = audit(t["train"], t["heldout"], t["leaky"], extractor=extractor, n_cells=4, min_cell=10, k=3)
    planted, clean = report.near_copy[:40], report.near_copy[40:]
    assert planted.mean() >= 0.9
    assert clean.mean() < 0.05
    # the planted copies point at their sources
    hits = report.feature_index[:40] == t["source"].numpy()
    assert hits[:20].all() and hits.mean() >= 0.9
    assert (report.feature_distance[:20] == 0).all()
    assert not report.passed and report.excess_p_value < report.alpha
    assert set(range(20)) <= set(report.flagged)
    # the threshold is the 1 % quantile of held-out distances, from an independent brute-force search
    ft = extractor(((t["train"] + 1) / 2 * 255 + 0.5).floor().clamp(0, 255) / 255).double().numpy()
    fh = extractor(((t["heldout"] + 1) / 2 * 255 + 0.5).floor().clamp(0, 255) / 255).double().numpy()
    expected = np.quantile(_brute_nn(fh, ft, "cosine").min(axis=1), 0.01)
    assert report.feature_threshold == pytest.approx(expected, rel=1e-4)


def test_audit_clean_and_mostly_copied_sets(extractor: ModuleExtractor, tile_sets: dict[str, torch.Tensor]) -> None:
    t = tile_sets
    clean = audit(t["train"], t["heldout"], t["clean"], extractor=extractor, n_cells=4, min_cell=10, k=3)
    assert clean.passed and clean.reasons == []
    assert abs(clean.copying.c_t) < 2.0 and clean.copying.verdict is CopyingVerdict.NO_EVIDENCE
    assert clean.near_copy_fraction < 0.05
    mostly = audit(t["train"], t["heldout"], t["mostly"], extractor=extractor, n_cells=4, min_cell=10, k=3)
    assert mostly.copying.c_t < -5 and mostly.copying.verdict is CopyingVerdict.DATA_COPYING
    assert not mostly.passed
    assert mostly.near_copy[:160].mean() >= 0.9


def test_audit_input_errors(extractor: ModuleExtractor) -> None:
    feats = np.random.default_rng(9).normal(size=(30, 4))
    images = _tiles(30, 13)
    with pytest.raises(ValueError, match="all be images or all be features.*generated=images"):
        audit(feats, feats, images, extractor=extractor)
    with pytest.raises(ValueError, match="lpips needs images"):
        audit(feats, feats, feats, lpips=lambda a, b: a)
    with pytest.raises(ValueError, match="heldout: expected \\(N, C, H, W\\) images or \\(N, D\\) features"):
        audit(feats, feats[0], feats)
    with pytest.raises(ValueError, match="must share \\(C, H, W\\)"):
        audit(images, images[:, :, :16], images, extractor=extractor)
    with pytest.raises(ValueError, match="quantile must lie strictly between 0 and 1"):
        audit(feats, feats, feats, quantile=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # held-out == train here, the warning is expected
        with pytest.raises(ValueError, match="same dimension"):
            audit(feats, feats, feats[:, :3])


def test_audit_records_the_extractor_weights_stamp(extractor: ModuleExtractor, tile_sets: dict[str, torch.Tensor],
                                                   tmp_path: Path) -> None:  # fmt: skip
    t = tile_sets
    sets = (t["train"][:60], t["heldout"][:40], t["clean"][:40])
    # an extractor with seeded random weights (as FIDInceptionV3(pretrained=False) is): its audit compares with nothing
    random_net = ModuleExtractor(extractor.module, name="test-random-conv", input_size=32, mean=(0.5, 0.5, 0.5),
                                 std=(0.5, 0.5, 0.5))  # fmt: skip
    random_net.weights = random_weights(0)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 40 held-out images are fewer than 1 / quantile
        report = audit(*sets, extractor=extractor, n_cells=1, min_cell=10, k=2)
        random_report = audit(*sets, extractor=random_net, n_cells=1, min_cell=10, k=2)
        features = audit(*(rng.normal(size=(40, 4)) for _ in range(3)), n_cells=1, min_cell=10)
    assert report.protocol == protocol_record("pytorch-fid", extractor)
    assert (report.protocol["weights"], report.protocol["comparable"]) == ("module", True)
    saved = json.loads(random_report.save(tmp_path / "audit")["json"].read_text())
    assert saved["protocol"]["weights"] == "random(seed=0)" and saved["protocol"]["comparable"] is False
    assert features.protocol is None  # precomputed features: the caller knows their extractor
