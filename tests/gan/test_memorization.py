"""Memorization audit, checked against brute-force numpy/scipy distances, np.quantile, scipy's Mann-Whitney U
and planted copies of training tiles.

The feature extractor is a small seeded random conv net made flip-invariant (features of x plus features of
its mirror image), as a pretrained network trained with flip augmentation roughly is; LPIPS uses random
weights. Nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from scipy.spatial.distance import cdist
from torch import nn

from gan.losses.perceptual import LPIPSLoss
from gan.metrics.features import ModuleExtractor
from gan.metrics.memorization import (
    CopyingVerdict,
    audit,
    calibrate_threshold,
    data_copying_test,
    kmeans,
    lpips_nearest,
    mann_whitney_z,
    nearest_neighbours,
)

SIZE = 32
N = 200


# ----------------------------------------------------------------------------------------------
# synthetic tiles and a fixed feature extractor


def _texture_params(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Parameters of n random textures: 4 coloured sinusoid gratings and a colour offset each."""
    g = torch.Generator().manual_seed(seed)
    return {
        "freq": 1 + 7 * torch.rand(n, 4, generator=g),
        "angle": math.pi * torch.rand(n, 4, generator=g),
        "phase": 2 * math.pi * torch.rand(n, 4, generator=g),
        "colour": torch.rand(n, 4, 3, generator=g) * 2 - 1,
        "offset": 0.3 * (torch.rand(n, 3, generator=g) * 2 - 1),
    }


def _render(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n, 3, SIZE, SIZE) textures in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    direction = torch.cos(p["angle"])[..., None, None] * xx + torch.sin(p["angle"])[..., None, None] * yy
    waves = torch.sin(2 * math.pi * p["freq"][..., None, None] * direction + p["phase"][..., None, None])
    img = (p["colour"][..., None, None] * waves[:, :, None]).sum(dim=1) + p["offset"][..., None, None]
    return torch.tanh(0.6 * img)


def _tiles(n: int, seed: int) -> torch.Tensor:
    return _render(_texture_params(n, seed))


class _FlipInvariantRandomNet(nn.Module):
    """Seeded random conv net; features of x plus features of x mirrored left-right."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.body(x.flip(-1))


@pytest.fixture(scope="module")
def extractor() -> ModuleExtractor:
    return ModuleExtractor(_FlipInvariantRandomNet(), name="test-random-conv", input_size=SIZE,
                           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # fmt: skip


@pytest.fixture(scope="module")
def tile_sets() -> dict[str, torch.Tensor]:
    """Training, held-out and clean generated tiles (same distribution), and planted copies."""
    train, heldout, clean = _tiles(N, 1), _tiles(N, 2), _tiles(N, 3)
    g = torch.Generator().manual_seed(9)
    source = torch.randperm(N, generator=g)[:40]
    exact = train[source[:20]]
    augmented = (train[source[20:]].flip(-1) + 0.03 * torch.randn(20, 3, SIZE, SIZE, generator=g)).clamp(-1, 1)
    leaky = torch.cat([exact, augmented, clean[:160]])  # 10 % exact, 10 % augmented copies
    mostly = torch.cat([
        (train[:160].flip(-1) + 0.03 * torch.randn(160, 3, SIZE, SIZE, generator=g)).clamp(-1, 1), clean[:40]
    ])  # fmt: skip
    return {"train": train, "heldout": heldout, "clean": clean, "leaky": leaky, "mostly": mostly,
            "source": source}  # fmt: skip


def _random_lpips(reduction: str = "none") -> LPIPSLoss:
    """LPIPS with a seeded random backbone and random linear heads made non-negative (as trained heads are)."""
    torch.manual_seed(0)
    lpips = LPIPSLoss(net="alex", pretrained=False, reduction=reduction)
    with torch.no_grad():
        for lin in lpips.lpips.lins:
            lin.model[1].weight.abs_()
    return lpips


def _brute_nn(q: np.ndarray, r: np.ndarray, metric: str) -> np.ndarray:
    """(nq, nr) float64 distance matrix from scipy."""
    return cdist(q.astype(np.float64), r.astype(np.float64), metric=metric)


# ----------------------------------------------------------------------------------------------
# nearest neighbours and threshold


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_neighbours_match_brute_force(metric: str) -> None:
    rng = np.random.default_rng(0)
    query = rng.normal(size=(300, 16)).astype(np.float32)
    ref = rng.normal(size=(257, 16)).astype(np.float32)
    query[:5] = ref[[3, 100, 256, 0, 42]]  # exact copies
    d, i = nearest_neighbours(torch.from_numpy(query), ref, k=4, metric=metric, chunk=64)
    full = _brute_nn(query, ref, metric)
    expected_i = np.argsort(full, axis=1, kind="stable")[:, :4]
    assert d.shape == (300, 4) and i.shape == (300, 4) and d.dtype == torch.float32
    np.testing.assert_array_equal(i.numpy(), expected_i)
    np.testing.assert_allclose(d.numpy(), np.take_along_axis(full, expected_i, axis=1), rtol=1e-5, atol=1e-6)
    assert (d[:5, 0] == 0).all()  # an exact copy is at distance exactly 0, not a round-off residue
    np.testing.assert_array_equal(i[:5, 0].numpy(), [3, 100, 256, 0, 42])


def test_nearest_neighbours_float64_and_errors() -> None:
    rng = np.random.default_rng(1)
    q, r = rng.normal(size=(20, 5)), rng.normal(size=(30, 5))
    d, i = nearest_neighbours(q, r, k=1, metric="euclidean", chunk=7)
    full = _brute_nn(q, r, "euclidean")
    assert d.dtype == torch.float64
    np.testing.assert_allclose(d[:, 0].numpy(), full.min(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(i[:, 0].numpy(), full.argmin(axis=1))
    with pytest.raises(ValueError, match="dimension 5 but ref_feats have 4"):
        nearest_neighbours(q, r[:, :4])
    with pytest.raises(ValueError, match="k=31 neighbours requested but ref_feats has only 30"):
        nearest_neighbours(q, r, k=31)
    zero = r.copy()
    zero[7] = 0
    with pytest.raises(ValueError, match="ref_feats: row 7 is all zeros"):
        nearest_neighbours(q, zero, metric="cosine")
    with pytest.raises(ValueError, match="query_feats: expected an \\(N, D\\) feature matrix"):
        nearest_neighbours(q[None], r)


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


# ----------------------------------------------------------------------------------------------
# Mann-Whitney, k-means and the data-copying test


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


# ----------------------------------------------------------------------------------------------
# planted copies among generated tiles


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


def test_audit_with_lpips_and_save(tmp_path: Path, extractor: ModuleExtractor,
                                   tile_sets: dict[str, torch.Tensor]) -> None:  # fmt: skip
    t = tile_sets
    lpips = _random_lpips()
    train, heldout = t["train"][:60], t["heldout"][:40]
    generated = torch.cat([train[[5, 17, 33]], t["clean"][:27]])  # three exact copies
    report = audit(train, heldout, generated, extractor=extractor, lpips=lpips, k=2, n_cells=1, min_cell=10,
                   quantile=0.05, n_pairs=4, batch_size=16)  # fmt: skip
    assert report.lpips_distance is not None and report.lpips_threshold is not None
    np.testing.assert_array_equal(report.lpips_distance[:3], 0.0)
    np.testing.assert_array_equal(report.lpips_index[:3], [5, 17, 33])
    assert report.near_copy[:3].all()
    # LPIPS of one generated image against its two feature candidates, computed directly
    _, cand = nearest_neighbours(extractor(((generated[3:4] + 1) / 2 * 255 + 0.5).floor() / 255),
                                 extractor(((train + 1) / 2 * 255 + 0.5).floor() / 255), k=2)  # fmt: skip
    with torch.no_grad():
        direct = [float(lpips(generated[3:4], train[j : j + 1])) for j in cand[0].tolist()]
    assert report.lpips_distance[3] == pytest.approx(min(direct), rel=1e-5)

    paths = report.save(tmp_path / "audit")
    assert sorted(p.name for p in (tmp_path / "audit").iterdir()) == [
        "closest_pairs.png", "memorization.json", "nn_distance_histogram.png"
    ]  # fmt: skip  (and no temporary files left behind)
    data = json.loads(paths["json"].read_text())
    assert data["passed"] is report.passed
    assert data["n_generated"] == 30 and data["generated"]["near_copy"] == report.near_copy.tolist()
    assert data["closest_pairs"]["generated"][:3] == sorted(data["closest_pairs"]["generated"][:3]) == [0, 1, 2]
    assert data["data_copying_test"]["n_cells"] == 1
    with Image.open(paths["histogram"]) as im:
        assert im.format == "PNG" and im.size[0] > 300
    with Image.open(paths["pairs"]) as im:
        grid = np.asarray(im.convert("RGB"))
    # the first pair (generated 0 | train 5) sits at the top left, as uint8 of [-1, 1] images
    as_u8 = ((generated[0] + 1) / 2 * 255 + 0.5).floor().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    src_u8 = ((train[5] + 1) / 2 * 255 + 0.5).floor().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(grid[4 : 4 + SIZE, 4 : 4 + SIZE], as_u8)
    np.testing.assert_array_equal(grid[4 : 4 + SIZE, 4 + SIZE + 2 : 4 + 2 * SIZE + 2], src_u8)


def test_lpips_nearest_reranks_candidates() -> None:
    lpips = _random_lpips()
    ref = _tiles(6, 11)
    query = torch.cat([ref[[4]], _tiles(2, 12)])
    cand = torch.tensor([[0, 4, 2], [1, 3, 5], [5, 0, 1]])
    best, index, per_cand = lpips_nearest(query, ref, cand, lpips, batch_size=4)
    with torch.no_grad():
        direct = torch.tensor([[float(lpips(query[i : i + 1], ref[j : j + 1])) for j in row] for i, row in
                               enumerate(cand.tolist())])  # fmt: skip
    torch.testing.assert_close(per_cand, direct, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(best, direct.min(dim=1).values, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(index.numpy(), cand.gather(1, direct.argmin(dim=1, keepdim=True))[:, 0].numpy())
    assert index[0] == 4 and best[0] == 0
    with pytest.raises(ValueError, match="LPIPSLoss\\(reduction='none'\\)"):
        lpips_nearest(query, ref, cand, _random_lpips(reduction="mean"), batch_size=4)
    with pytest.raises(ValueError, match="negative distance"):
        lpips_nearest(query, ref, cand, lambda a, b: -(a - b).abs().mean(dim=(1, 2, 3)) - 1)
    with pytest.raises(ValueError, match="candidate_indices must lie in \\[0, 5\\]"):
        lpips_nearest(query, ref, cand + 1, lpips)


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
