"""Nearest neighbours between feature sets, exact at distance 0, and LPIPS re-ranking of the candidates.

:func:`nearest_neighbours` ranks candidates from blocks of inner products (never the full distance matrix, so
100k x 100k sets fit in memory) and recomputes the winners' distances from the vector differences.
:func:`lpips_nearest` re-ranks each image's ``k`` feature-space candidates by LPIPS (LPIPS over all pairs costs one
network pass per pair, far too many for real sets). The checks shared by the audit's modules live here too.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable, Union

import numpy as np
import torch
from torch import Tensor

FeatureLike = Union[Tensor, np.ndarray]

__all__ = [
    "DEFAULT_CHUNK",
    "Distance",
    "FeatureLike",
    "as_features",
    "check_image_batch",
    "check_positive_int",
    "lpips_nearest",
    "nearest_neighbours",
    "unit_rows",
]

#: Rows per block on each side of the neighbour searches (memory ~ chunk^2 floats).
DEFAULT_CHUNK = 4096
# entries gathered at once when exact candidate distances are recomputed (bounds the (rows, k, dim) block)
_GATHER_BUDGET = 1 << 24


class Distance(str, Enum):
    """Distance between feature vectors.

    ``COSINE``: ``1 - cos(a, b)`` (in [0, 2]); insensitive to feature scale, the usual choice for deep features.
    ``EUCLIDEAN``: ``||a - b||``, the distance of Meehan et al.'s test and of k-means.
    """

    COSINE = "cosine"
    EUCLIDEAN = "euclidean"


def as_features(feats: FeatureLike, name: str) -> Tensor:
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


def unit_rows(x: Tensor, name: str) -> Tensor:
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


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """``value`` as an int, refused unless it is an integer (not a bool) of at least ``minimum``.

    Args:
        value: the setting.
        name: its name, for the message.
        minimum: the smallest value allowed.
    """
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def nearest_neighbours(
    query_feats: FeatureLike,
    ref_feats: FeatureLike,
    *,
    k: int = 1,
    metric: Distance | str = Distance.COSINE,
    chunk: int = DEFAULT_CHUNK,
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
    k = check_positive_int(k, "k")
    chunk = check_positive_int(chunk, "chunk")
    q = as_features(query_feats, "query_feats")
    r = as_features(ref_feats, "ref_feats")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query_feats have dimension {q.shape[1]} but ref_feats have {r.shape[1]}")
    if k > r.shape[0]:
        raise ValueError(f"k={k} neighbours requested but ref_feats has only {r.shape[0]} rows")
    dtype = torch.float64 if q.dtype == r.dtype == torch.float64 else torch.float32
    q, r = q.to(dtype), r.to(q.device, dtype)
    if metric is Distance.COSINE:
        q, r = unit_rows(q, "query_feats"), unit_rows(r, "ref_feats")
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


def check_image_batch(images: Tensor, name: str) -> None:
    """Refuse anything but an (N, C, H, W) tensor of images with C = 1 or 3 and N >= 1.

    Args:
        images: the batch.
        name: set name for the message.
    """
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
    batch_size = check_positive_int(batch_size, "batch_size")
    check_image_batch(query_images, "query_images")
    check_image_batch(ref_images, "ref_images")
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
