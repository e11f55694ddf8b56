"""L1 reconstruction losses (plain, masked, weighted, lesion-weighted) against numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.losses import cycle_loss, identity_loss, l1_loss, lesion_weighted_l1

torch.set_num_threads(1)


@pytest.fixture()
def pair():
    rng = np.random.default_rng(0)
    p = rng.uniform(-1, 1, (2, 3, 5, 6, 4))
    t = rng.uniform(-1, 1, (2, 3, 5, 6, 4))
    return p, t


def test_l1_plain_masked_weighted_against_numpy(pair):
    p, t = pair
    rng = np.random.default_rng(1)
    mask = rng.uniform(size=(2, 1, 5, 6, 4)) > 0.6  # one mask for all channels
    weight = rng.uniform(0.1, 3.0, size=(2, 3, 5, 6, 4))
    P, T = torch.tensor(p), torch.tensor(t)
    d = np.abs(p - t)
    m3 = np.broadcast_to(mask, d.shape)
    assert l1_loss(P, T).item() == pytest.approx(d.mean(), rel=1e-12)
    assert l1_loss(P, T, mask=torch.tensor(mask)).item() == pytest.approx(d[m3].mean(), rel=1e-12)
    assert l1_loss(P, T, weight=torch.tensor(weight)).item() == pytest.approx(np.average(d, weights=weight), rel=1e-12)
    both = l1_loss(P, T, mask=torch.tensor(mask), weight=torch.tensor(weight)).item()
    assert both == pytest.approx(np.average(d[m3], weights=weight[m3]), rel=1e-12)
    assert cycle_loss(P, T).item() == pytest.approx(d.mean(), rel=1e-12)
    assert identity_loss(P, T, mask=torch.tensor(mask)).item() == pytest.approx(d[m3].mean(), rel=1e-12)


def test_l1_empty_mask_is_zero_and_differentiable(pair):
    p, t = pair
    P = torch.tensor(p, requires_grad=True)
    out = l1_loss(P, torch.tensor(t), mask=torch.zeros(2, 1, 5, 6, 4, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0 and torch.all(P.grad == 0)


def test_l1_shape_errors(pair):
    p, t = pair
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 6, 4\).*\(2, 3, 5, 6\)"):
        l1_loss(torch.tensor(p), torch.tensor(t[..., 0]))
    with pytest.raises(ValueError, match=r"mask shape \(2, 2, 5, 6, 4\)"):
        l1_loss(torch.tensor(p), torch.tensor(t), mask=torch.ones(2, 2, 5, 6, 4))


def test_lesion_weighted_l1_against_numpy(pair):
    p, t = pair
    rng = np.random.default_rng(2)
    lesion = rng.uniform(size=(2, 1, 5, 6, 4)) > 0.85
    d = np.abs(p - t)
    w = np.where(np.broadcast_to(lesion, d.shape), 5.0, 1.0)
    expected = (w * d).sum() / w.sum()
    P, T, M = torch.tensor(p), torch.tensor(t), torch.tensor(lesion)
    assert lesion_weighted_l1(P, T, M).item() == pytest.approx(expected, rel=1e-12)
    assert lesion_weighted_l1(P, T, M, lesion_weight=1.0).item() == pytest.approx(d.mean(), rel=1e-12)
    # lesion voxels dominate: a lesion-only error weighs more than plain L1 says
    assert lesion_weighted_l1(P, T, M).item() != pytest.approx(d.mean(), rel=1e-3)
    with pytest.raises(ValueError, match="lesion_weight"):
        lesion_weighted_l1(P, T, M, lesion_weight=0.0)
