"""The three-sample data-copying test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020).

Feature space is cut into cells by seeded k-means on the training features (:func:`kmeans`); in each cell a
Mann-Whitney U test (:func:`mann_whitney_z`) asks whether generated samples lie closer to the training samples
than held-out real samples do; the Z scores are averaged with weights equal to the share of held-out samples in
each cell (the statistic C_T, :func:`data_copying_test`). C_T well below 0 (say < -3) means data copying, even when
no single sample falls under a fixed threshold; C_T well above 0 means the generated samples are farther from the
training set than real data are (under-fitting in the paper's words).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from data.files import to_jsonable
from gan.metrics.memorization.neighbours import (
    DEFAULT_CHUNK,
    Distance,
    FeatureLike,
    as_features,
    check_positive_int,
    nearest_neighbours,
    unit_rows,
)

__all__ = ["CopyingVerdict", "DataCopyingResult", "data_copying_test", "kmeans", "mann_whitney_z"]


class CopyingVerdict(str, Enum):
    """Outcome of the three-sample data-copying test.

    ``DATA_COPYING``: C_T < -threshold, generated samples lie closer to the training set than real unseen data.
    ``UNDERFITTING``: C_T > threshold, generated samples lie farther from the training set than real data.
    ``NO_EVIDENCE``: |C_T| <= threshold.
    """

    DATA_COPYING = "data-copying"
    UNDERFITTING = "underfitting"
    NO_EVIDENCE = "no-evidence"


def kmeans(
    feats: FeatureLike,
    *,
    n_clusters: int,
    seed: int = 0,
    max_iter: int = 100,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Seeded k-means (k-means++ initialisation, then Lloyd iterations) in torch, on the features' device.

    An empty cluster is re-seeded at the point farthest from its centre. The returned labels are always
    the nearest centre of each row; after convergence each centre is the mean of its rows.

    Args:
        feats: (N, D) features.
        n_clusters: number of clusters, at most the number of distinct rows.
        seed: seed of the k-means++ draws (a CPU ``torch.Generator``).
        max_iter: most Lloyd iterations.
        chunk: block size of the assignment step.

    Returns:
        ``(centres, labels)``: (n_clusters, D) and (N,) int64.
    """
    n_clusters = check_positive_int(n_clusters, "n_clusters")
    max_iter = check_positive_int(max_iter, "max_iter")
    x = as_features(feats, "feats")
    if n_clusters > x.shape[0]:
        raise ValueError(f"n_clusters={n_clusters} exceeds the number of rows ({x.shape[0]})")
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        first = int(torch.randint(x.shape[0], (1,), generator=gen))
        centres = [x[first]]
        d2 = (x - x[first]).pow(2).sum(dim=1)
        for c in range(1, n_clusters):
            weights = d2.cpu().double()
            if float(weights.sum()) <= 0:
                raise ValueError(
                    f"k-means: only {c} distinct feature vectors found, fewer than n_clusters={n_clusters}; "
                    "use fewer cells"
                )
            pick = int(torch.multinomial(weights, 1, generator=gen))
            centres.append(x[pick])
            d2 = torch.minimum(d2, (x - x[pick]).pow(2).sum(dim=1))
        centre_t = torch.stack(centres)

        def assign(c: Tensor) -> tuple[Tensor, Tensor]:
            d, i = nearest_neighbours(x, c, k=1, metric=Distance.EUCLIDEAN, chunk=chunk)
            return d[:, 0], i[:, 0]

        dist, labels = assign(centre_t)
        for _ in range(max_iter):
            sums = torch.zeros_like(centre_t).index_add_(0, labels, x)
            counts = torch.bincount(labels, minlength=n_clusters)
            centre_t = sums / counts.clamp_min(1)[:, None].to(x.dtype)
            empties = (counts == 0).nonzero()[:, 0].tolist()
            if empties:  # re-seed each empty cluster at one of the points farthest from their centres
                farthest = dist.argsort(descending=True)[: len(empties)].tolist()
                for empty, far in zip(empties, farthest):
                    centre_t[empty] = x[far]
            new_dist, new_labels = assign(centre_t)
            if torch.equal(new_labels, labels):
                labels, dist = new_labels, new_dist
                break
            labels, dist = new_labels, new_dist
    return centre_t, labels


def mann_whitney_z(generated_dist: np.ndarray, heldout_dist: np.ndarray) -> tuple[float, float, float]:
    """Mann-Whitney U of generated vs held-out distances, as a Z score (negative: generated are closer).

    ``U`` is scipy's statistic for the generated sample (pairs where the generated distance is larger, ties
    count 1/2). ``Z = (U - m n / 2 + 1/2) / sigma`` is Meehan et al.'s continuity-corrected Z score; sigma is
    tie-corrected (exact copies tie at distance 0), which equals their sigma when there are no ties. Then
    ``Phi(Z)`` is scipy's asymptotic one-sided p-value (``alternative="less"``). With no spread at all
    (every distance equal) Z is 0.

    Args:
        generated_dist: (m,) distances of generated samples to the training set.
        heldout_dist: (n,) distances of held-out samples to the training set.

    Returns:
        ``(u, z, p)``: the U statistic, its Z score and the one-sided p-value that generated samples are closer.
    """
    g = np.asarray(generated_dist, dtype=np.float64).ravel()
    h = np.asarray(heldout_dist, dtype=np.float64).ravel()
    if g.size < 1 or h.size < 1:
        raise ValueError(f"Mann-Whitney needs at least one sample on each side, got {g.size} and {h.size}")
    res = stats.mannwhitneyu(g, h, alternative="less", method="asymptotic", use_continuity=True)
    u = float(res.statistic)
    m, n = g.size, h.size
    total = m + n
    _, tie_counts = np.unique(np.concatenate([g, h]), return_counts=True)
    tie_term = float((tie_counts.astype(np.float64) ** 3 - tie_counts).sum())
    var = m * n / 12.0 * ((total + 1) - (tie_term / (total * (total - 1)) if total > 1 else 0.0))
    z = (u - m * n / 2.0 + 0.5) / math.sqrt(var) if var > 0 else 0.0
    p = float(res.pvalue) if var > 0 else 1.0
    return u, float(z), p


@dataclass(frozen=True)
class DataCopyingResult:
    """The three-sample data-copying test (Meehan et al., 2020).

    Args:
        c_t: the statistic: mean of the used cells' Z scores weighted by their share of held-out samples.
        verdict: :class:`CopyingVerdict` from ``c_t`` and ``threshold``.
        threshold: |C_T| beyond which a verdict other than "no evidence" is given.
        cell_z: (n_cells,) Z score per cell (NaN where unused); negative when generated samples are closer.
        cell_u: (n_cells,) Mann-Whitney U per cell (NaN where unused).
        cell_p: (n_cells,) one-sided p-value per cell that generated samples are closer (NaN where unused).
        train_counts: (n_cells,) training samples per cell.
        heldout_counts: (n_cells,) held-out samples per cell.
        generated_counts: (n_cells,) generated samples per cell.
        used: (n_cells,) cells with at least ``min_cell`` held-out and generated samples.
        weights: (n_cells,) weight of each cell in C_T (0 where unused; sums to 1).
        n_cells: cells of the k-means partition.
        min_cell: fewest held-out and generated samples a cell needs to be used.
        seed: k-means seed.
        metric: distance to the nearest training sample within the cell.
        centres: (n_cells, D) k-means centres (fitted on the training features).
        train_labels: (M,) cell of each training sample.
        heldout_labels: (n,) cell of each held-out sample.
        generated_labels: (m,) cell of each generated sample.
    """

    c_t: float
    verdict: CopyingVerdict
    threshold: float
    cell_z: np.ndarray
    cell_u: np.ndarray
    cell_p: np.ndarray
    train_counts: np.ndarray
    heldout_counts: np.ndarray
    generated_counts: np.ndarray
    used: np.ndarray
    weights: np.ndarray
    n_cells: int
    min_cell: int
    seed: int
    metric: Distance
    centres: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    heldout_labels: np.ndarray = field(repr=False)
    generated_labels: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-cell arrays as lists, NaN as null; no centres or labels)."""
        return {
            "c_t": to_jsonable(self.c_t),
            "verdict": self.verdict.value,
            "threshold": self.threshold,
            "n_cells": self.n_cells,
            "n_cells_used": int(self.used.sum()),
            "min_cell": self.min_cell,
            "seed": self.seed,
            "metric": self.metric.value,
            "partition": "k-means on training features (k-means++ init, seeded)",
            "cells": {
                "z": to_jsonable(self.cell_z),
                "u": to_jsonable(self.cell_u),
                "p_generated_closer": to_jsonable(self.cell_p),
                "train_count": self.train_counts.tolist(),
                "heldout_count": self.heldout_counts.tolist(),
                "generated_count": self.generated_counts.tolist(),
                "used": self.used.tolist(),
                "weight": self.weights.tolist(),
            },
        }


def data_copying_test(
    train_feats: FeatureLike,
    heldout_feats: FeatureLike,
    generated_feats: FeatureLike,
    *,
    n_cells: int = 10,
    seed: int = 0,
    min_cell: int = 20,
    metric: Distance | str = Distance.EUCLIDEAN,
    threshold: float = 3.0,
    max_iter: int = 100,
    chunk: int = DEFAULT_CHUNK,
) -> DataCopyingResult:
    """Meehan et al. (2020) three-sample test: are generated samples closer to the training set than real ones?

    1. Partition feature space into ``n_cells`` cells by k-means on the training features (the cell of any
       sample is its nearest centre).
    2. In each cell, the distance of every held-out and generated sample to its nearest training sample *of
       that cell* (as in the authors' reference code), and the Mann-Whitney Z score of generated vs held-out
       distances (:func:`mann_whitney_z`; Z < 0 when generated samples are closer).
    3. ``C_T`` = average of the cell Z scores weighted by each cell's share of held-out samples, over the cells
       with at least ``min_cell`` held-out and ``min_cell`` generated samples (the paper's tau: 20 / m).

    A generator that reproduces training images with small changes is caught here even when no sample falls
    below a fixed near-copy threshold, because the test compares whole distributions of distances per region.

    Args:
        train_feats: (M, D) training features.
        heldout_feats: (n, D) held-out real features (never seen by the generator).
        generated_feats: (m, D) generated features.
        n_cells: k-means cells (1 gives the global, unpartitioned test).
        seed: k-means seed.
        min_cell: fewest held-out and generated samples for a cell to count.
        metric: distance within a cell, ``"euclidean"`` (the paper's) or ``"cosine"`` (features are then
            L2-normalised before k-means too).
        threshold: |C_T| above which the verdict is data copying (negative) or under-fitting (positive).
        max_iter: most k-means iterations.
        chunk: block size of the neighbour searches.

    Raises:
        ValueError: bad shapes, or no cell has enough held-out and generated samples.
    """
    metric = Distance(metric)
    n_cells = check_positive_int(n_cells, "n_cells")
    min_cell = check_positive_int(min_cell, "min_cell")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold!r}")
    t = as_features(train_feats, "train_feats")
    h = as_features(heldout_feats, "heldout_feats").to(t.device)
    g = as_features(generated_feats, "generated_feats").to(t.device)
    for name, x in (("heldout_feats", h), ("generated_feats", g)):
        if x.shape[1] != t.shape[1]:
            raise ValueError(f"{name} have dimension {x.shape[1]} but train_feats have {t.shape[1]}")
    if metric is Distance.COSINE:
        t, h, g = unit_rows(t, "train_feats"), unit_rows(h, "heldout_feats"), unit_rows(g, "generated_feats")

    centres, t_lab = kmeans(t, n_clusters=n_cells, seed=seed, max_iter=max_iter, chunk=chunk)
    h_lab = nearest_neighbours(h, centres, k=1, metric=Distance.EUCLIDEAN, chunk=chunk)[1][:, 0]
    g_lab = nearest_neighbours(g, centres, k=1, metric=Distance.EUCLIDEAN, chunk=chunk)[1][:, 0]
    counts = [torch.bincount(lab, minlength=n_cells).cpu().numpy() for lab in (t_lab, h_lab, g_lab)]
    t_cnt, h_cnt, g_cnt = counts
    used = (t_cnt >= 1) & (h_cnt >= min_cell) & (g_cnt >= min_cell)
    if not used.any():
        raise ValueError(
            f"data-copying test: no cell has at least min_cell={min_cell} held-out and generated samples "
            f"(held-out per cell {h_cnt.tolist()}, generated per cell {g_cnt.tolist()}); use fewer cells "
            "(n_cells) or a smaller min_cell, or provide more samples"
        )
    cell_z, cell_u, cell_p = (np.full(n_cells, np.nan) for _ in range(3))
    for c in np.nonzero(used)[0].tolist():
        tc = t[t_lab == c]
        dh = nearest_neighbours(h[h_lab == c], tc, k=1, metric=metric, chunk=chunk)[0][:, 0]
        dg = nearest_neighbours(g[g_lab == c], tc, k=1, metric=metric, chunk=chunk)[0][:, 0]
        cell_u[c], cell_z[c], cell_p[c] = mann_whitney_z(dg.cpu().double().numpy(), dh.cpu().double().numpy())
    weights = np.where(used, h_cnt, 0).astype(np.float64)
    weights /= weights.sum()
    c_t = float(np.sum(weights[used] * cell_z[used]))
    if c_t < -threshold:
        verdict = CopyingVerdict.DATA_COPYING
    elif c_t > threshold:
        verdict = CopyingVerdict.UNDERFITTING
    else:
        verdict = CopyingVerdict.NO_EVIDENCE
    return DataCopyingResult(
        c_t=c_t,
        verdict=verdict,
        threshold=float(threshold),
        cell_z=cell_z,
        cell_u=cell_u,
        cell_p=cell_p,
        train_counts=t_cnt,
        heldout_counts=h_cnt,
        generated_counts=g_cnt,
        used=used,
        weights=weights,
        n_cells=n_cells,
        min_cell=min_cell,
        seed=int(seed),
        metric=metric,
        centres=centres.cpu().numpy(),
        train_labels=t_lab.cpu().numpy(),
        heldout_labels=h_lab.cpu().numpy(),
        generated_labels=g_lab.cpu().numpy(),
    )
