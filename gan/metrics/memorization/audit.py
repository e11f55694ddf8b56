"""The memorization audit: does a generator hand out (near-)copies of its training images?

Run it before a synthetic dataset is released. Three sets of images (or of their features) go in: the
training set, a held-out real set the generator never saw, and the generated set. The audit reports

* the nearest training image of every generated image, in feature space (cosine or Euclidean) and,
  optionally, by LPIPS re-ranking the ``k`` nearest feature-space candidates (``neighbours``);
* a near-copy threshold calibrated on real data (:func:`calibrate_threshold`): the distance below which only
  ``quantile`` (1 %) of the held-out real images lie from their nearest training image. A generated image closer
  to a training image than 99 % of unseen real images are is suspicious; by construction about 1 % of honest
  samples are flagged too, so the audit also tests whether the flagged fraction exceeds the rate seen on held-out
  data (one-sided binomial test);
* the three-sample data-copying test of Meehan et al. (``copying``).

Everything is torch on the features' device, chunked so that 100k x 100k comparisons never hold the full
distance matrix. The result is a :class:`~gan.metrics.memorization.report.MemorizationReport`; with images, its
protocol record names the extractor and its weights stamp (a random extractor's audit says it compares with
nothing).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from gan.metrics.features.extractor import FeatureExtractor, extract_features
from gan.metrics.features.inception import FIDInceptionV3
from gan.metrics.features.protocol import FIDProtocol, protocol_record, quantize_uint8
from gan.metrics.memorization.copying import CopyingVerdict, data_copying_test
from gan.metrics.memorization.neighbours import (
    DEFAULT_CHUNK,
    Distance,
    FeatureLike,
    as_features,
    check_image_batch,
    check_positive_int,
    lpips_nearest,
    nearest_neighbours,
)
from gan.metrics.memorization.report import MemorizationReport

__all__ = ["audit", "calibrate_threshold"]


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
    chunk: int = DEFAULT_CHUNK,
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
    check_image_batch(x, name)
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
    chunk: int = DEFAULT_CHUNK,
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
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    n_pairs = check_positive_int(n_pairs, "n_pairs", minimum=0)
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
        feats = {n: as_features(x, n) for n, x in sets.items()}
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
