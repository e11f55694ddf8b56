"""Nearest neighbours and LPIPS re-ranking (gan.metrics.memorization.neighbours), checked against brute-force
scipy distances and direct LPIPS calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.metrics.memorization import lpips_nearest, nearest_neighbours
from tests.gan.metrics.memorization.helpers import brute_nn as _brute_nn
from tests.gan.metrics.memorization.helpers import random_lpips as _random_lpips
from tests.gan.metrics.memorization.helpers import tiles as _tiles


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
