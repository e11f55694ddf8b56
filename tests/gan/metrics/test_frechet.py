"""The Fréchet distance and KID math (gan.metrics.frechet), checked against pytorch-fid, torchmetrics and numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gan.metrics.frechet import frechet_distance, kid, kid_subsets
from tests.gan.metrics.helpers import mmd2_reference as _mmd2_reference

pytorch_fid_score = pytest.importorskip("pytorch_fid.fid_score")

pytestmark = pytest.mark.usefixtures("no_network")


def _random_cov(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    feats = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal(d)
    return feats.mean(0), np.cov(feats, rowvar=False)


@pytest.mark.parametrize("n_samples", [400, 12], ids=["full-rank", "near-singular"])
def test_frechet_matches_pytorch_fid(n_samples: int) -> None:
    rng = np.random.default_rng(n_samples)
    mu1, s1 = _random_cov(rng, n_samples, 48)
    mu2, s2 = _random_cov(rng, n_samples, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pytorch_fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
        ours = frechet_distance(mu1, s1, mu2, s2)
        ours_torch = frechet_distance(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2)))
    assert abs(ours - ref) <= 1e-6 * abs(ref)
    assert abs(ours_torch - ref) <= 1e-6 * abs(ref)


def test_frechet_singular_product_takes_the_eps_path_like_pytorch_fid() -> None:
    # sigma1 @ sigma2 is a nilpotent Jordan block: it has no square root until eps is added to the diagonals
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 0.25])
    sigma1, sigma2 = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pytorch_fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
    with pytest.warns(RuntimeWarning, match="adding 1e-06 to the diagonals"):
        ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert np.isfinite(ref) and abs(ours - ref) <= 1e-6 * abs(ref)


def test_frechet_closed_form_for_diagonal_covariances() -> None:
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    v1, v2 = rng.uniform(0.1, 2.0, 10), rng.uniform(0.1, 2.0, 10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_kid_equals_reference_on_full_sets_and_subsets() -> None:
    from torchmetrics.image.kid import poly_mmd

    rng = np.random.default_rng(0)
    real = rng.standard_normal((50, 16))
    fake = rng.standard_normal((50, 16)) * 1.2 + 0.3
    # subsets covering the whole set: every subset gives the full-set MMD
    mean, std = kid(real, fake, subsets=3, subset_size=50)
    assert mean == pytest.approx(_mmd2_reference(real, fake), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10 * abs(mean))
    # random subsets: numpy reference and torchmetrics' poly_mmd on the same draws
    mean, std = kid(real, fake, subsets=7, subset_size=20, seed=5)
    draws = kid_subsets(50, 50, subsets=7, subset_size=20, seed=5)
    draws = [(i.numpy(), j.numpy()) for i, j in draws]
    ref = np.array([_mmd2_reference(real[i], fake[j]) for i, j in draws])
    tm = np.array([float(poly_mmd(torch.from_numpy(real[i]), torch.from_numpy(fake[j]))) for i, j in draws])
    np.testing.assert_allclose(ref, tm, rtol=1e-10)
    assert mean == pytest.approx(ref.mean(), rel=1e-10)
    assert std == pytest.approx(ref.std(), rel=1e-8)
    assert std > 0


def test_kid_reduces_large_subset_with_warning() -> None:
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((12, 8)), rng.standard_normal((9, 8))
    with pytest.warns(UserWarning, match="subset_size 1000"):
        mean, _ = kid(real, fake, subsets=2, subset_size=1000)
    assert np.isfinite(mean)
