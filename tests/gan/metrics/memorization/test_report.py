"""The memorization report and its files (gan.metrics.memorization.report): JSON, histogram and closest-pairs PNG
of an audit with LPIPS re-ranking, checked against direct LPIPS calls and the uint8 images themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.metrics.features import ModuleExtractor
from gan.metrics.memorization import audit, nearest_neighbours
from tests.gan.metrics.memorization.helpers import SIZE
from tests.gan.metrics.memorization.helpers import random_lpips as _random_lpips


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
