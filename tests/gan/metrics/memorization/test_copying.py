"""Mann-Whitney Z, k-means and the three-sample data-copying test (gan.metrics.memorization.copying), checked
against scipy's Mann-Whitney U, Meehan et al.'s formula and scipy distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import cdist

from gan.metrics.memorization import CopyingVerdict, audit, data_copying_test, kmeans, mann_whitney_z


def test_mann_whitney_z_matches_scipy_and_meehan() -> None:
    rng = np.random.default_rng(4)
    gen, held = rng.gamma(2.0, size=37), rng.gamma(2.3, size=45)
    u, z, p = mann_whitney_z(gen, held)
    ref = stats.mannwhitneyu(gen, held, alternative="less", method="asymptotic", use_continuity=True)
    m, n = gen.size, held.size
    assert u == ref.statistic
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    # without ties: Meehan et al.'s formula, (U - (nm/2 - 0.5)) / sqrt(nm(n+m+1)/12)
    assert z == pytest.approx((ref.statistic - (n * m / 2 - 0.5)) / math.sqrt(n * m * (n + m + 1) / 12), rel=1e-12)
    # with ties (exact copies at distance 0): tie-corrected, so Phi(Z) is scipy's p-value
    gen_tied = np.concatenate([np.zeros(10), gen[:20]])
    u, z, p = mann_whitney_z(gen_tied, np.concatenate([np.zeros(2), held]))
    ref = stats.mannwhitneyu(gen_tied, np.concatenate([np.zeros(2), held]), alternative="less", method="asymptotic")
    assert u == ref.statistic
    assert stats.norm.cdf(z) == pytest.approx(ref.pvalue, rel=1e-9)


def test_kmeans_is_a_converged_voronoi_partition() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(loc=c, size=(60, 4)) for c in (-4.0, 0.0, 4.0)])
    centres, labels = kmeans(x, n_clusters=3, seed=0)
    c, lab = centres.numpy(), labels.numpy()
    np.testing.assert_array_equal(lab, cdist(x, c).argmin(axis=1))
    for j in range(3):
        np.testing.assert_allclose(c[j], x[lab == j].mean(axis=0), rtol=1e-10)
    assert sorted(np.bincount(lab).tolist()) == [60, 60, 60]  # the three blobs are recovered
    again_c, again_l = kmeans(x, n_clusters=3, seed=0)
    assert torch.equal(again_c, centres) and torch.equal(again_l, labels)


def test_data_copying_cells_match_scipy() -> None:
    rng = np.random.default_rng(6)
    train = rng.normal(size=(300, 6))
    heldout = rng.normal(size=(240, 6))
    generated = np.concatenate([train[:120] + 0.05 * rng.normal(size=(120, 6)), rng.normal(size=(120, 6))])
    res = data_copying_test(train, heldout, generated, n_cells=4, seed=1, min_cell=15)
    h_counts = np.bincount(res.heldout_labels, minlength=4)
    g_counts = np.bincount(res.generated_labels, minlength=4)
    np.testing.assert_array_equal(res.heldout_labels, cdist(heldout, res.centres).argmin(axis=1))
    np.testing.assert_array_equal(res.generated_labels, cdist(generated, res.centres).argmin(axis=1))
    np.testing.assert_array_equal(res.used, (h_counts >= 15) & (g_counts >= 15))
    assert res.used.sum() >= 2
    z_expected = np.full(4, np.nan)
    for c in np.nonzero(res.used)[0]:
        cell_train = train[res.train_labels == c]
        dh = cdist(heldout[res.heldout_labels == c], cell_train).min(axis=1)
        dg = cdist(generated[res.generated_labels == c], cell_train).min(axis=1)
        ref = stats.mannwhitneyu(dg, dh, alternative="less", method="asymptotic", use_continuity=True)
        assert res.cell_u[c] == ref.statistic
        assert res.cell_p[c] == pytest.approx(ref.pvalue, rel=1e-9)
        z_expected[c] = stats.norm.ppf(ref.pvalue)  # Phi(Z) is the one-sided p-value
        assert res.cell_z[c] == pytest.approx(z_expected[c], rel=1e-6, abs=1e-9)
    w = np.where(res.used, h_counts, 0) / h_counts[res.used].sum()
    assert res.c_t == pytest.approx(float(np.nansum(w * z_expected)), rel=1e-6)
    assert np.isnan(res.cell_z[~res.used]).all()
    assert res.c_t < -3 and res.verdict is CopyingVerdict.DATA_COPYING


def test_data_copying_catches_what_a_fixed_threshold_misses() -> None:
    """Every generated sample sits at a distance typical of the closest 10-40 % of real unseen samples:
    none is under the 1 % near-copy threshold, yet generated samples are systematically closer."""
    rng = np.random.default_rng(7)
    train, heldout = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    held_d = cdist(heldout, train).min(axis=1)
    radius = rng.uniform(np.quantile(held_d, 0.1), np.quantile(held_d, 0.4), size=400)
    direction = rng.normal(size=(400, 8))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    generated = train[rng.permutation(400)] + radius[:, None] * direction
    report = audit(train, heldout, generated, metric="euclidean", n_cells=4, min_cell=20)
    assert report.near_copy_fraction <= 0.02 and report.excess_p_value > 0.05  # the threshold sees nothing
    assert report.copying.c_t < -3 and report.copying.verdict is CopyingVerdict.DATA_COPYING
    assert not report.passed and any("C_T" in r for r in report.reasons)


def test_data_copying_errors() -> None:
    rng = np.random.default_rng(8)
    train, heldout, generated = rng.normal(size=(50, 3)), rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="no cell has at least min_cell=20 held-out and generated samples"):
        data_copying_test(train, heldout, generated, n_cells=2, min_cell=20)
    with pytest.raises(ValueError, match="generated_feats have dimension 2 but train_feats have 3"):
        data_copying_test(train, heldout, generated[:, :2])
    with pytest.raises(ValueError, match="only 1 distinct feature vectors"):
        kmeans(np.ones((10, 3)), n_clusters=2)
