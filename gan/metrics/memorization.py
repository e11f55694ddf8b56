"""Memorization audit: does a generator hand out (near-)copies of its training images?

Run it before a synthetic dataset is released. Three sets of images (or of their features) go in: the
training set, a held-out real set the generator never saw, and the generated set. The audit reports

* the nearest training image of every generated image, in feature space (cosine or Euclidean) and,
  optionally, by LPIPS. LPIPS over all pairs is far too expensive (N x M network passes), so LPIPS only
  re-ranks the ``k`` nearest feature-space candidates of each image;
* a near-copy threshold calibrated on real data: the distance below which only ``quantile`` (1 %) of the
  held-out real images lie from their nearest training image. A generated image closer to a training image
  than 99 % of unseen real images are is suspicious; by construction about 1 % of honest samples are
  flagged too, so the audit also tests whether the flagged fraction exceeds the rate seen on held-out data
  (one-sided binomial test);
* the three-sample data-copying test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020, "A non-parametric test
  to detect data-copying in generative models"): feature space is cut into cells by k-means on the training
  features; in each cell a Mann-Whitney U test asks whether generated samples lie closer to the training
  samples than held-out real samples do; the Z scores are averaged with weights equal to the share of
  held-out samples in each cell (the statistic C_T). C_T well below 0 (say < -3) means data copying, even
  when no single sample falls under a fixed threshold; C_T well above 0 means the generated samples are
  farther from the training set than real data are (under-fitting in the paper's words).

Everything is torch on the features' device, chunked so that 100k x 100k comparisons never hold the full
distance matrix. :meth:`MemorizationReport.save` writes a JSON report, a histogram of nearest-neighbour
distances and a PNG of the closest pairs, each file atomically (temporary sibling, then ``os.replace``).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from gan.metrics.features import (
    FeatureExtractor,
    FIDInceptionV3,
    FIDProtocol,
    extract_features,
    protocol_record,
    quantize_uint8,
)

PathLike = Union[str, Path]
FeatureLike = Union[Tensor, np.ndarray]

__all__ = [
    "CopyingVerdict",
    "DataCopyingResult",
    "Distance",
    "MemorizationReport",
    "audit",
    "calibrate_threshold",
    "data_copying_test",
    "kmeans",
    "lpips_nearest",
    "mann_whitney_z",
    "nearest_neighbours",
]

_DEFAULT_CHUNK = 4096
# entries gathered at once when exact candidate distances are recomputed (bounds the (rows, k, dim) block)
_GATHER_BUDGET = 1 << 24


class Distance(str, Enum):
    """Distance between feature vectors.

    ``COSINE``: ``1 - cos(a, b)`` (in [0, 2]); insensitive to feature scale, the usual choice for deep features.
    ``EUCLIDEAN``: ``||a - b||``, the distance of Meehan et al.'s test and of k-means.
    """

    COSINE = "cosine"
    EUCLIDEAN = "euclidean"


class CopyingVerdict(str, Enum):
    """Outcome of the three-sample data-copying test.

    ``DATA_COPYING``: C_T < -threshold, generated samples lie closer to the training set than real unseen data.
    ``UNDERFITTING``: C_T > threshold, generated samples lie farther from the training set than real data.
    ``NO_EVIDENCE``: |C_T| <= threshold.
    """

    DATA_COPYING = "data-copying"
    UNDERFITTING = "underfitting"
    NO_EVIDENCE = "no-evidence"


# ----------------------------------------------------------------------------------------------
# nearest neighbours


def _as_features(feats: FeatureLike, name: str) -> Tensor:
    """Check an (N, D) feature matrix and return it as a float32 (or float64) tensor.

    Args:
        feats: tensor or numpy array.
        name: how the set is called in error messages.
    """
    if isinstance(feats, np.ndarray):
        feats = torch.from_numpy(np.ascontiguousarray(feats))
    if not isinstance(feats, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor or numpy array of features, got {type(feats).__name__}")
    if feats.ndim != 2:
        raise ValueError(f"{name}: expected an (N, D) feature matrix, got shape {tuple(feats.shape)}")
    if feats.shape[0] < 1 or feats.shape[1] < 1:
        raise ValueError(f"{name}: feature matrix is empty (shape {tuple(feats.shape)})")
    if not (feats.is_floating_point() or feats.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"{name}: features must be real numbers, got dtype {feats.dtype}")
    feats = feats.detach()
    feats = feats if feats.dtype == torch.float64 else feats.to(torch.float32)
    if not torch.isfinite(feats).all():
        bad = int((~torch.isfinite(feats)).any(dim=1).nonzero()[0])
        raise ValueError(f"{name}: row {bad} contains NaN or infinite values")
    return feats


def _unit_rows(x: Tensor, name: str) -> Tensor:
    """Rows scaled to unit L2 norm (for cosine distance); zero rows are an error.

    Args:
        x: (N, D) features.
        name: set name for the error message.
    """
    norms = x.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        bad = int((norms[:, 0] == 0).nonzero()[0])
        raise ValueError(f"{name}: row {bad} is all zeros; its cosine distance is undefined (use metric='euclidean')")
    return x / norms


def _check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def nearest_neighbours(
    query_feats: FeatureLike,
    ref_feats: FeatureLike,
    *,
    k: int = 1,
    metric: Distance | str = Distance.COSINE,
    chunk: int = _DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest reference rows of every query row, computed block by block.

    Candidates are ranked from ``chunk x chunk`` blocks of inner products (never the full distance matrix,
    so 100k x 100k sets fit in memory), then the distances of the ``k`` winners are recomputed directly from
    the vector differences, so an exact copy has distance exactly 0 rather than a round-off residue.

    Args:
        query_feats: (N, D) query features (e.g. generated images), tensor or numpy array.
        ref_feats: (M, D) reference features (e.g. training images); moved to the query's device.
        k: neighbours per query, at most M.
        metric: ``"cosine"`` (1 - cosine similarity) or ``"euclidean"``.
        chunk: rows per block on each side (memory ~ chunk^2 floats).

    Returns:
        ``(distances, indices)``, both (N, k), sorted by increasing distance; float32 distances (float64 when
        both inputs are float64) on the query's device and int64 indices into ``ref_feats``.
    """
    metric = Distance(metric)
    k = _check_positive_int(k, "k")
    chunk = _check_positive_int(chunk, "chunk")
    q = _as_features(query_feats, "query_feats")
    r = _as_features(ref_feats, "ref_feats")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query_feats have dimension {q.shape[1]} but ref_feats have {r.shape[1]}")
    if k > r.shape[0]:
        raise ValueError(f"k={k} neighbours requested but ref_feats has only {r.shape[0]} rows")
    dtype = torch.float64 if q.dtype == r.dtype == torch.float64 else torch.float32
    q, r = q.to(dtype), r.to(q.device, dtype)
    if metric is Distance.COSINE:
        q, r = _unit_rows(q, "query_feats"), _unit_rows(r, "ref_feats")
    r_sq = (r * r).sum(dim=1) if metric is Distance.EUCLIDEAN else None

    out_d = torch.empty(q.shape[0], k, dtype=dtype, device=q.device)
    out_i = torch.empty(q.shape[0], k, dtype=torch.long, device=q.device)
    with torch.no_grad():
        for qs in range(0, q.shape[0], chunk):
            qc = q[qs : qs + chunk]
            best_s: Tensor | None = None
            best_i: Tensor | None = None
            for rs in range(0, r.shape[0], chunk):
                dots = qc @ r[rs : rs + chunk].T
                # a score that orders references like the distance does (smaller = closer)
                score = r_sq[rs : rs + chunk] - 2.0 * dots if r_sq is not None else -dots
                s, i = score.topk(min(k, score.shape[1]), dim=1, largest=False)
                i = i + rs
                if best_s is not None:
                    s, i = torch.cat([best_s, s], dim=1), torch.cat([best_i, i], dim=1)
                    s, pos = s.topk(min(k, s.shape[1]), dim=1, largest=False)
                    i = i.gather(1, pos)
                best_s, best_i = s, i
            assert best_i is not None
            d = _candidate_distances(qc, r, best_i, metric)
            d, order = d.sort(dim=1, stable=True)
            out_d[qs : qs + chunk] = d
            out_i[qs : qs + chunk] = best_i.gather(1, order)
    return out_d, out_i


def _candidate_distances(q: Tensor, r: Tensor, idx: Tensor, metric: Distance) -> Tensor:
    """Exact distances between each query row and its candidate reference rows.

    Args:
        q: (n, D) queries (unit rows for cosine).
        r: (M, D) references (unit rows for cosine).
        idx: (n, k) candidate indices into ``r``.
        metric: the distance.
    """
    rows = max(1, _GATHER_BUDGET // max(1, idx.shape[1] * q.shape[1]))
    parts = []
    for s in range(0, q.shape[0], rows):
        diff = q[s : s + rows, None, :] - r[idx[s : s + rows]]
        if metric is Distance.EUCLIDEAN:
            parts.append(diff.norm(dim=-1))
        else:  # for unit vectors 1 - cos = ||a - b||^2 / 2, exact 0 for identical rows
            parts.append(diff.pow(2).sum(dim=-1).mul(0.5).clamp(0.0, 2.0))
    return torch.cat(parts, dim=0)


def _quantile_threshold(distances: Tensor | np.ndarray, quantile: float) -> float:
    """``np.quantile`` (linear interpolation) of nearest-neighbour distances.

    Args:
        distances: (N,) distances.
        quantile: in (0, 1).
    """
    d = distances.detach().cpu().double().numpy() if isinstance(distances, Tensor) else np.asarray(distances, float)
    return float(np.quantile(d, quantile))


def _check_quantile(quantile: float) -> float:
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"quantile must lie strictly between 0 and 1, got {quantile!r}")
    return float(quantile)


def _warn_about_heldout(distances: Tensor, quantile: float) -> None:
    """Warn when the held-out set is too small for the quantile or holds copies of training images.

    Args:
        distances: (n,) nearest-training distances of the held-out images.
        quantile: the calibration quantile.
    """
    n = distances.shape[0]
    distances = distances.detach().cpu().double()
    if n * quantile < 1.0:
        warnings.warn(
            f"held-out set has {n} images, fewer than 1/quantile = {1.0 / quantile:.0f}: the near-copy threshold "
            "is (an interpolation of) the smallest held-out distance and is poorly determined",
            stacklevel=3,
        )
    scale = float(distances.median())
    n_dup = int((distances <= 1e-6 * scale).sum()) if scale > 0 else n
    if n_dup:
        warnings.warn(
            f"{n_dup} held-out image(s) are (near-)exact copies of training images (distance <= 1e-6 x median): "
            "the train/held-out split leaks, and the near-copy threshold is meaningless until it is fixed",
            stacklevel=3,
        )


def calibrate_threshold(
    heldout_feats: FeatureLike,
    train_feats: FeatureLike,
    *,
    quantile: float = 0.01,
    metric: Distance | str = Distance.COSINE,
    chunk: int = _DEFAULT_CHUNK,
) -> float:
    """Near-copy threshold: the ``quantile`` of held-out real images' distances to their nearest training image.

    Rationale: held-out real images are drawn from the same distribution as the training images but were
    never seen, so their nearest-training distances show how close an honest, independent sample comes by
    chance. A generated image closer to a training image than 99 % (``quantile=0.01``) of unseen real images
    are is suspicious. The threshold is ``np.quantile(distances, quantile)`` (linear interpolation); an honest
    generator has about ``quantile`` of its images under it.

    Args:
        heldout_feats: (n, D) features of held-out real images (disjoint from training; warns otherwise).
        train_feats: (M, D) features of the training images.
        quantile: fraction of held-out images allowed under the threshold, in (0, 1).
        metric: ``"cosine"`` or ``"euclidean"``.
        chunk: block size of :func:`nearest_neighbours`.
    """
    quantile = _check_quantile(quantile)
    d, _ = nearest_neighbours(heldout_feats, train_feats, k=1, metric=metric, chunk=chunk)
    _warn_about_heldout(d[:, 0], quantile)
    return _quantile_threshold(d[:, 0], quantile)


# ----------------------------------------------------------------------------------------------
# LPIPS re-ranking


def _to_unit_range(images: Tensor, name: str) -> Tensor:
    """Float images in [-1, 1] from float [-1, 1] or uint8 [0, 255] images.

    Args:
        images: (N, C, H, W).
        name: set name for error messages.
    """
    if images.dtype == torch.uint8:
        return images.float().div(127.5).sub(1.0)
    if not images.is_floating_point():
        raise ValueError(f"{name}: images must be float in [-1, 1] or uint8, got dtype {images.dtype}")
    return images


def _check_images(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of images, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        raise ValueError(f"{name}: expected (N, C, H, W) images with C = 1 or 3 and N >= 1, got {tuple(images.shape)}")


def _module_device(module: Callable[..., Tensor]) -> torch.device:
    if isinstance(module, torch.nn.Module):
        for t in list(module.parameters()) + list(module.buffers()):
            return t.device
    return torch.device("cpu")


def lpips_nearest(
    query_images: Tensor,
    ref_images: Tensor,
    candidate_indices: Tensor,
    lpips_module: Callable[[Tensor, Tensor], Tensor],
    *,
    batch_size: int = 64,
) -> tuple[Tensor, Tensor, Tensor]:
    """LPIPS distance from each query image to its candidate reference images, and the LPIPS-nearest one.

    LPIPS between all query/reference pairs costs one network pass per pair, far too many for real sets.
    So the candidates are the ``k`` nearest neighbours in feature space (from :func:`nearest_neighbours`)
    and LPIPS only re-ranks them: a copy that the feature extractor does not place among the ``k`` nearest
    is not found by LPIPS either.

    Args:
        query_images: (N, C, H, W) images in [-1, 1] (or uint8).
        ref_images: (M, C, H, W) reference images of the same channel count and size.
        candidate_indices: (N, k) int indices into ``ref_images``.
        lpips_module: ``f(a, b) -> (B,)`` per-pair distances of [-1, 1] images, e.g.
            ``LPIPSLoss(reduction="none")`` (an ``lpips.LPIPS`` returning (B, 1, 1, 1) also works).
        batch_size: pairs per LPIPS call.

    Returns:
        ``(distance, index, candidate_distances)``: (N,) smallest LPIPS, (N,) the reference index achieving it,
        (N, k) LPIPS to every candidate, in the order of ``candidate_indices``.
    """
    batch_size = _check_positive_int(batch_size, "batch_size")
    _check_images(query_images, "query_images")
    _check_images(ref_images, "ref_images")
    if query_images.shape[1:] != ref_images.shape[1:]:
        raise ValueError(
            f"query_images {tuple(query_images.shape[1:])} and ref_images {tuple(ref_images.shape[1:])} must have "
            "the same (C, H, W)"
        )
    idx = torch.as_tensor(candidate_indices)
    if idx.ndim != 2 or idx.shape[0] != query_images.shape[0] or idx.shape[1] < 1:
        raise ValueError(
            f"candidate_indices must be (N, k) with N = {query_images.shape[0]} query images, got {tuple(idx.shape)}"
        )
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ValueError(f"candidate_indices must be integers, got dtype {idx.dtype}")
    idx = idx.long().cpu()
    if idx.min() < 0 or idx.max() >= ref_images.shape[0]:
        raise ValueError(
            f"candidate_indices must lie in [0, {ref_images.shape[0] - 1}] (ref_images rows), "
            f"got values in [{int(idx.min())}, {int(idx.max())}]"
        )
    n, k = idx.shape
    flat_q = torch.arange(n).repeat_interleave(k)
    flat_r = idx.reshape(-1)
    device = _module_device(lpips_module)
    out = torch.empty(n * k, dtype=torch.float32)
    with torch.no_grad():
        for s in range(0, n * k, batch_size):
            a = _to_unit_range(query_images[flat_q[s : s + batch_size]], "query_images").to(device)
            b = _to_unit_range(ref_images[flat_r[s : s + batch_size]], "ref_images").to(device)
            d = lpips_module(a, b)
            if not isinstance(d, Tensor) or d.numel() != a.shape[0]:
                shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                raise ValueError(
                    f"lpips_module must return one distance per pair ({a.shape[0]} values), got {shape}; "
                    "build it with LPIPSLoss(reduction='none')"
                )
            d = d.reshape(-1).float().cpu()
            if bool((d < -1e-6).any()):
                raise ValueError(
                    f"lpips_module returned a negative distance ({float(d.min()):.4g}); LPIPS must be non-negative "
                    "(its linear heads are; a randomly initialised LPIPS is not a distance)"
                )
            out[s : s + a.shape[0]] = d
    per_candidate = out.reshape(n, k)
    best, pos = per_candidate.min(dim=1)
    return best, idx.gather(1, pos[:, None])[:, 0], per_candidate


# ----------------------------------------------------------------------------------------------
# k-means and the data-copying test


def kmeans(
    feats: FeatureLike,
    *,
    n_clusters: int,
    seed: int = 0,
    max_iter: int = 100,
    chunk: int = _DEFAULT_CHUNK,
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
    n_clusters = _check_positive_int(n_clusters, "n_clusters")
    max_iter = _check_positive_int(max_iter, "max_iter")
    x = _as_features(feats, "feats")
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
            "c_t": _json_float(self.c_t),
            "verdict": self.verdict.value,
            "threshold": self.threshold,
            "n_cells": self.n_cells,
            "n_cells_used": int(self.used.sum()),
            "min_cell": self.min_cell,
            "seed": self.seed,
            "metric": self.metric.value,
            "partition": "k-means on training features (k-means++ init, seeded)",
            "cells": {
                "z": _json_list(self.cell_z),
                "u": _json_list(self.cell_u),
                "p_generated_closer": _json_list(self.cell_p),
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
    chunk: int = _DEFAULT_CHUNK,
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
    n_cells = _check_positive_int(n_cells, "n_cells")
    min_cell = _check_positive_int(min_cell, "min_cell")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold!r}")
    t = _as_features(train_feats, "train_feats")
    h = _as_features(heldout_feats, "heldout_feats").to(t.device)
    g = _as_features(generated_feats, "generated_feats").to(t.device)
    for name, x in (("heldout_feats", h), ("generated_feats", g)):
        if x.shape[1] != t.shape[1]:
            raise ValueError(f"{name} have dimension {x.shape[1]} but train_feats have {t.shape[1]}")
    if metric is Distance.COSINE:
        t, h, g = _unit_rows(t, "train_feats"), _unit_rows(h, "heldout_feats"), _unit_rows(g, "generated_feats")

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


# ----------------------------------------------------------------------------------------------
# report


def _json_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _json_list(a: np.ndarray | None) -> list[Any] | None:
    if a is None:
        return None
    if a.dtype.kind == "f":
        return [_json_float(v) for v in a.tolist()]
    return a.tolist()


def _json_text(obj: Any, level: int = 0) -> str:
    """JSON with nested objects indented and lists of plain values kept on one line (compact per-image columns).

    Args:
        obj: JSON-ready value (no NaN or infinity).
        level: current indentation level.
    """
    inner, outer = "  " * (level + 1), "  " * level
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(key))}: {_json_text(value, level + 1)}" for key, value in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + outer + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _json_text(v, level + 1) for v in obj) + "\n" + outer + "]"
    return json.dumps(obj, allow_nan=False)


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary sibling of ``path``, fsync it, then rename it onto ``path``.

    The file gets the usual permissions (0666 less the umask), not the private 0600 of a temporary file.

    Args:
        path: destination file; its folder must exist.
        payload: the bytes.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class MemorizationReport:
    """Result of :func:`audit`.

    Args:
        metric: feature-space distance used for nearest neighbours and the threshold.
        quantile: calibration quantile of the near-copy thresholds.
        k: feature-space candidates re-ranked by LPIPS.
        feature_distance: (m,) distance of each generated image to its nearest training image (features).
        feature_index: (m,) index of that training image.
        heldout_feature_distance: (n,) the same for the held-out real images (the calibration sample).
        feature_threshold: near-copy threshold in feature space.
        lpips_distance: (m,) LPIPS to the LPIPS-nearest of the ``k`` feature candidates, or None.
        lpips_index: (m,) index of that training image, or None.
        heldout_lpips_distance: (n,) the same for held-out images, or None.
        lpips_threshold: near-copy LPIPS threshold, or None.
        near_copy: (m,) True where a generated image lies under the feature threshold or the LPIPS threshold.
        near_copy_fraction: fraction of generated images flagged.
        heldout_flag_rate: fraction of held-out images under the same rule (the rate expected by chance).
        excess_p_value: one-sided binomial p-value of seeing this many flags at ``heldout_flag_rate``.
        alpha: significance level of the excess test.
        copying: the three-sample data-copying test.
        passed: no excess of near-copies (``excess_p_value >= alpha``) and no data-copying verdict.
        protocol: feature protocol record (extractor, weights hash, ...), None for precomputed features.
        pair_generated: (p,) generated indices of the closest pairs, closest first.
        pair_train: (p,) their nearest training indices.
        pair_distance: (p,) their distances (LPIPS when available, else feature distance).
        pair_images: (p, 2, C, H, W) uint8 images of the closest pairs (generated, training), or None.
    """

    metric: Distance
    quantile: float
    k: int
    feature_distance: np.ndarray
    feature_index: np.ndarray
    heldout_feature_distance: np.ndarray
    feature_threshold: float
    lpips_distance: np.ndarray | None
    lpips_index: np.ndarray | None
    heldout_lpips_distance: np.ndarray | None
    lpips_threshold: float | None
    near_copy: np.ndarray
    near_copy_fraction: float
    heldout_flag_rate: float
    excess_p_value: float
    alpha: float
    copying: DataCopyingResult
    passed: bool
    protocol: dict[str, Any] | None = None
    pair_generated: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pair_train: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pair_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pair_images: np.ndarray | None = field(default=None, repr=False)

    @property
    def flagged(self) -> list[int]:
        """Indices of the generated images flagged as near-copies, closest (feature distance) first."""
        idx = np.nonzero(self.near_copy)[0]
        return idx[np.argsort(self.feature_distance[idx], kind="stable")].tolist()

    @property
    def reasons(self) -> list[str]:
        """Why the audit failed (empty when it passed)."""
        out = []
        if self.excess_p_value < self.alpha:
            out.append(
                f"{int(self.near_copy.sum())} of {self.near_copy.size} generated images "
                f"({self.near_copy_fraction:.2%}) are near-copies, more than the {self.heldout_flag_rate:.2%} "
                f"of held-out real images (binomial p = {self.excess_p_value:.3g} < {self.alpha})"
            )
        if self.copying.verdict is CopyingVerdict.DATA_COPYING:
            out.append(f"data-copying test: C_T = {self.copying.c_t:.2f} < -{self.copying.threshold}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report: summary, thresholds, data-copying test and per-generated-image columns."""
        return {
            "passed": bool(self.passed),
            "reasons": self.reasons,
            "n_train": int(self.copying.train_counts.sum()),
            "n_generated": int(self.near_copy.size),
            "n_heldout": int(self.heldout_feature_distance.size),
            "metric": self.metric.value,
            "quantile": self.quantile,
            "k": self.k,
            "feature_threshold": _json_float(self.feature_threshold),
            "lpips_threshold": _json_float(self.lpips_threshold),
            "lpips_reranks": f"LPIPS re-ranks the {self.k} nearest feature-space training images",
            "near_copy_fraction": self.near_copy_fraction,
            "n_near_copies": int(self.near_copy.sum()),
            "heldout_flag_rate": self.heldout_flag_rate,
            "excess_p_value": _json_float(self.excess_p_value),
            "alpha": self.alpha,
            "flagged": self.flagged,
            "data_copying_test": self.copying.to_dict(),
            "protocol": self.protocol,
            "closest_pairs": {
                "ranked_by": "lpips" if self.lpips_distance is not None else f"feature-{self.metric.value}",
                "generated": self.pair_generated.tolist(),
                "train": self.pair_train.tolist(),
                "distance": _json_list(self.pair_distance),
            },
            "generated": {
                "feature_distance": _json_list(self.feature_distance),
                "nearest_train": self.feature_index.tolist(),
                "lpips_distance": _json_list(self.lpips_distance),
                "lpips_nearest_train": _json_list(self.lpips_index),
                "near_copy": self.near_copy.tolist(),
            },
            "heldout": {
                "feature_distance": _json_list(self.heldout_feature_distance),
                "lpips_distance": _json_list(self.heldout_lpips_distance),
            },
        }

    def histogram_png(self) -> bytes:
        """PNG of nearest-training distance histograms, generated vs held-out, with the threshold line(s)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        panels = [("feature", self.feature_distance, self.heldout_feature_distance, self.feature_threshold)]
        if self.lpips_distance is not None and self.heldout_lpips_distance is not None:
            panels.append(("LPIPS", self.lpips_distance, self.heldout_lpips_distance, self.lpips_threshold))
        fig = Figure(figsize=(5.5 * len(panels), 4.0), dpi=100)
        FigureCanvasAgg(fig)
        for j, (label, gen, held, thr) in enumerate(panels, start=1):
            ax = fig.add_subplot(1, len(panels), j)
            both = np.concatenate([gen, held]).astype(np.float64)
            lo, hi = float(both.min()), float(both.max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
            ax.hist(held, bins=bins, density=True, alpha=0.55, label=f"held-out real (n={held.size})")
            ax.hist(gen, bins=bins, density=True, alpha=0.55, label=f"generated (n={gen.size})")
            if thr is not None:
                ax.axvline(thr, color="k", linestyle="--", label=f"near-copy threshold {thr:.4g}")
            metric = self.metric.value if label == "feature" else "LPIPS"
            ax.set_xlabel(f"distance to nearest training image ({metric})")
            ax.set_ylabel("density")
            ax.legend(fontsize=8)
        fig.suptitle(
            f"near-copies {self.near_copy_fraction:.2%} (held-out {self.heldout_flag_rate:.2%}); "
            f"C_T = {self.copying.c_t:.2f} ({self.copying.verdict.value})",
            fontsize=10,
        )
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def pairs_png(self, *, pad: int = 2) -> bytes | None:
        """PNG grid of the closest pairs (generated | nearest training image), closest first; None without images.

        Args:
            pad: pixels of white between the two images of a pair (four times that between pairs).
        """
        from PIL import Image

        if self.pair_images is None or self.pair_images.shape[0] == 0:
            return None
        p, _, c, h, w = self.pair_images.shape
        cols = int(math.ceil(math.sqrt(p)))
        rows = int(math.ceil(p / cols))
        pair_w = 2 * w + pad
        gap = 4 * pad  # between pairs, wider than the pad inside a pair
        canvas = np.full((rows * (h + gap) - gap + 4 * pad, cols * (pair_w + gap) - gap + 4 * pad, c), 255, np.uint8)
        for j in range(p):
            r, q = divmod(j, cols)
            y = 2 * pad + r * (h + gap)
            x = 2 * pad + q * (pair_w + gap)
            canvas[y : y + h, x : x + w] = self.pair_images[j, 0].transpose(1, 2, 0)
            canvas[y : y + h, x + w + pad : x + 2 * w + pad] = self.pair_images[j, 1].transpose(1, 2, 0)
        image = Image.fromarray(canvas[..., 0] if c == 1 else canvas, mode="L" if c == 1 else "RGB")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    def save(self, out_dir: PathLike) -> dict[str, Path]:
        """Write ``memorization.json``, ``nn_distance_histogram.png`` and (with images) ``closest_pairs.png``.

        Each file is written to a temporary sibling and renamed into place.

        Args:
            out_dir: folder (created if missing).

        Returns:
            The written paths by kind: ``"json"``, ``"histogram"``, ``"pairs"``.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        written = {"json": out / "memorization.json", "histogram": out / "nn_distance_histogram.png"}
        text = _json_text(self.to_dict()) + "\n"
        _atomic_write_bytes(written["json"], text.encode("utf-8"))
        _atomic_write_bytes(written["histogram"], self.histogram_png())
        pairs = self.pairs_png()
        if pairs is not None:
            written["pairs"] = out / "closest_pairs.png"
            _atomic_write_bytes(written["pairs"], pairs)
        return written


# ----------------------------------------------------------------------------------------------
# the audit


def _is_images(x: FeatureLike) -> bool:
    return x.ndim == 4


def _features_of(
    x: FeatureLike, name: str, extractor: FeatureExtractor, protocol: FIDProtocol, batch_size: int
) -> Tensor:
    """Features of an image set, batch by batch.

    Args:
        x: (N, C, H, W) images in [-1, 1] or uint8.
        name: set name for error messages.
        extractor: the feature extractor.
        protocol: pre-processing protocol.
        batch_size: images per extractor call.
    """
    _check_images(x, name)
    parts = []
    for s in range(0, x.shape[0], batch_size):
        try:
            parts.append(extract_features(x[s : s + batch_size], extractor, protocol).float())
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from exc
    return torch.cat(parts, dim=0)


def audit(
    train: FeatureLike,
    heldout: FeatureLike,
    generated: FeatureLike,
    *,
    extractor: FeatureExtractor | None = None,
    protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID,
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
    quantile: float = 0.01,
    k: int = 5,
    batch_size: int = 64,
    metric: Distance | str = Distance.COSINE,
    n_cells: int = 10,
    min_cell: int = 20,
    seed: int = 0,
    ct_metric: Distance | str = Distance.EUCLIDEAN,
    ct_threshold: float = 3.0,
    alpha: float = 0.01,
    n_pairs: int = 16,
    chunk: int = _DEFAULT_CHUNK,
) -> MemorizationReport:
    """Memorization audit of a generated set against its training set, calibrated on held-out real data.

    The three sets are either all images ((N, C, H, W), float in [-1, 1] or uint8; features come from
    ``extractor`` under ``protocol``) or all precomputed (N, D) features of one extractor (then LPIPS and the
    pair images are unavailable). Steps: nearest training image of every generated and held-out image in
    feature space; near-copy threshold = ``quantile`` of the held-out distances (:func:`calibrate_threshold`);
    with ``lpips``, LPIPS re-ranks the ``k`` nearest feature candidates and gets its own threshold the same
    way; a generated image is a near-copy when it is under either threshold; a binomial test compares the
    flagged fraction with the held-out rate under the same rule; and :func:`data_copying_test` gives C_T.

    Args:
        train: training images or features.
        heldout: held-out real images or features (same distribution, never seen in training).
        generated: generated images or features.
        extractor: feature extractor for images; None loads :class:`FIDInceptionV3` from the hub cache.
        protocol: pre-processing protocol of :func:`extract_features`.
        lpips: per-pair LPIPS, e.g. ``LPIPSLoss(reduction="none")``; None skips LPIPS.
        quantile: calibration quantile of the thresholds.
        k: feature candidates per image re-ranked by LPIPS (also the neighbours searched).
        batch_size: images per extractor / LPIPS call.
        metric: feature distance for the near-copy search, ``"cosine"`` or ``"euclidean"``.
        n_cells: k-means cells of the data-copying test.
        min_cell: fewest held-out and generated samples for a cell to count in C_T.
        seed: k-means seed.
        ct_metric: distance within cells of the data-copying test (the paper's is Euclidean).
        ct_threshold: C_T below ``-ct_threshold`` fails the audit.
        alpha: significance level of the near-copy excess test.
        n_pairs: closest pairs kept for the PNG and the JSON.
        chunk: block size of the neighbour searches.
    """
    metric = Distance(metric)
    quantile = _check_quantile(quantile)
    k = _check_positive_int(k, "k")
    batch_size = _check_positive_int(batch_size, "batch_size")
    n_pairs = _check_positive_int(n_pairs, "n_pairs", minimum=0)
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    sets = {"train": train, "heldout": heldout, "generated": generated}
    for name, x in sets.items():
        if not isinstance(x, (Tensor, np.ndarray)) or x.ndim not in (2, 4):
            shape = tuple(x.shape) if isinstance(x, (Tensor, np.ndarray)) else type(x).__name__
            raise ValueError(f"{name}: expected (N, C, H, W) images or (N, D) features, got {shape}")
    kinds = {name: _is_images(x) for name, x in sets.items()}
    if len(set(kinds.values())) != 1:
        raise ValueError(
            "train, heldout and generated must all be images or all be features, got "
            + ", ".join(f"{n}={'images' if v else 'features'}" for n, v in kinds.items())
        )
    images = kinds["train"]
    record: dict[str, Any] | None = None
    images_t: dict[str, Tensor] = {}
    if images:
        images_t = {n: torch.as_tensor(x) for n, x in sets.items()}
        shapes = {n: tuple(x.shape[1:]) for n, x in images_t.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"train, heldout and generated images must share (C, H, W), got {shapes}")
        if extractor is None:
            extractor = FIDInceptionV3()
        protocol = FIDProtocol(protocol)
        record = protocol_record(protocol, extractor)
        feats = {n: _features_of(x, n, extractor, protocol, batch_size) for n, x in images_t.items()}
    else:
        if lpips is not None:
            raise ValueError("lpips needs images, but precomputed features were given")
        feats = {n: _as_features(x, n) for n, x in sets.items()}
        dims = {n: f.shape[1] for n, f in feats.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"train, heldout and generated features must have the same dimension, got {dims}")
    n_train = feats["train"].shape[0]
    k = min(k, n_train)

    g_d, g_i = nearest_neighbours(feats["generated"], feats["train"], k=k, metric=metric, chunk=chunk)
    h_d, h_i = nearest_neighbours(feats["heldout"], feats["train"], k=k, metric=metric, chunk=chunk)
    _warn_about_heldout(h_d[:, 0], quantile)
    feature_threshold = _quantile_threshold(h_d[:, 0], quantile)
    g_feat = g_d[:, 0].cpu().double().numpy()
    h_feat = h_d[:, 0].cpu().double().numpy()
    g_flag = g_feat <= feature_threshold
    h_flag = h_feat <= feature_threshold

    lp_g = lp_gi = lp_h = None
    lpips_threshold = None
    if lpips is not None:
        lg, lgi, _ = lpips_nearest(images_t["generated"], images_t["train"], g_i.cpu(), lpips, batch_size=batch_size)
        lh, _, _ = lpips_nearest(images_t["heldout"], images_t["train"], h_i.cpu(), lpips, batch_size=batch_size)
        lp_g, lp_gi, lp_h = lg.double().numpy(), lgi.numpy(), lh.double().numpy()
        lpips_threshold = _quantile_threshold(lp_h, quantile)
        g_flag |= lp_g <= lpips_threshold
        h_flag |= lp_h <= lpips_threshold

    n_flag = int(g_flag.sum())
    heldout_rate = float(h_flag.mean())
    excess_p = float(stats.binomtest(n_flag, g_flag.size, heldout_rate, alternative="greater").pvalue)
    copying = data_copying_test(
        feats["train"], feats["heldout"], feats["generated"], n_cells=n_cells, seed=seed, min_cell=min_cell,
        metric=ct_metric, threshold=ct_threshold, chunk=chunk,
    )  # fmt: skip
    passed = excess_p >= alpha and copying.verdict is not CopyingVerdict.DATA_COPYING

    rank_d = lp_g if lp_g is not None else g_feat
    rank_i = lp_gi if lp_gi is not None else g_i[:, 0].cpu().numpy()
    order = np.argsort(rank_d, kind="stable")[:n_pairs]
    pair_images = None
    if images and order.size:
        gen_u8 = quantize_uint8(images_t["generated"][torch.from_numpy(order)].cpu())
        train_u8 = quantize_uint8(images_t["train"][torch.from_numpy(rank_i[order])].cpu())
        pair_images = torch.stack([gen_u8, train_u8], dim=1).numpy()
    return MemorizationReport(
        metric=metric,
        quantile=quantile,
        k=k,
        feature_distance=g_feat,
        feature_index=g_i[:, 0].cpu().numpy(),
        heldout_feature_distance=h_feat,
        feature_threshold=feature_threshold,
        lpips_distance=lp_g,
        lpips_index=lp_gi,
        heldout_lpips_distance=lp_h,
        lpips_threshold=lpips_threshold,
        near_copy=g_flag,
        near_copy_fraction=n_flag / g_flag.size,
        heldout_flag_rate=heldout_rate,
        excess_p_value=excess_p,
        alpha=float(alpha),
        copying=copying,
        passed=bool(passed),
        protocol=record,
        pair_generated=order.astype(np.int64),
        pair_train=np.asarray(rank_i[order], dtype=np.int64),
        pair_distance=np.asarray(rank_d[order], dtype=np.float64),
        pair_images=pair_images,
    )
