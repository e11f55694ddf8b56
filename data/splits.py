"""Seeded train/val/test splits of whole units (patients, slides): never by slice or tile."""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def split_items(items: Sequence[T], *, val_fraction: float, test_fraction: float, seed: int,
                unit: str = "item") -> dict[str, list[T]]:
    """Deterministic train/val/test split; every item lands in exactly one split, whatever the input order.

    Args:
        items: sortable units (patient ids, slide paths).
        val_fraction: fraction for validation (at least one item when > 0).
        test_fraction: fraction for test (at least one item when > 0).
        seed: shuffling seed.
        unit: what an item is, for messages ("patient", "slide").
    """
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    ordered = sorted(items)
    perm = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    n_test = max(1, round(test_fraction * len(ordered))) if test_fraction > 0 else 0
    n_val = max(1, round(val_fraction * len(ordered))) if val_fraction > 0 else 0
    if n_test + n_val >= len(ordered):
        raise ValueError(f"{len(ordered)} {unit}(s) cannot be split into val={n_val}, test={n_test} and a non-empty "
                         f"train set (val_fraction={val_fraction}, test_fraction={test_fraction})")
    return {"train": sorted(perm[n_test + n_val:]), "val": sorted(perm[n_test:n_test + n_val]),
            "test": sorted(perm[:n_test])}
