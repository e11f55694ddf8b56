"""Memorization audit before a synthetic dataset is released, in four parts.

* ``neighbours``: nearest neighbours in feature space (exact at distance 0) and LPIPS re-ranking;
* ``copying``: k-means cells and the Meehan et al. (2020) three-sample data-copying test (C_T);
* ``report``: :class:`MemorizationReport` and its JSON / PNG files;
* ``audit``: :func:`calibrate_threshold` and :func:`audit`, which ties the three together.
"""
from gan.metrics.memorization.audit import audit, calibrate_threshold
from gan.metrics.memorization.copying import (
    CopyingVerdict,
    DataCopyingResult,
    data_copying_test,
    kmeans,
    mann_whitney_z,
)
from gan.metrics.memorization.neighbours import Distance, lpips_nearest, nearest_neighbours
from gan.metrics.memorization.report import MemorizationReport

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
