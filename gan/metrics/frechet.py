"""Pure math behind FID and KID: the Fréchet distance of two Gaussians and the kernel MMD.

No networks and no images here: these functions take feature statistics or feature matrices
(numpy arrays or torch tensors) and return plain Python floats computed in float64.
"""

from __future__ import annotations

import math
import warnings
from typing import Union

import numpy as np
import torch
from scipy import linalg

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["frechet_distance", "kid", "kid_subsets", "polynomial_mmd2"]


def _as_float64(x: ArrayLike, what: str) -> np.ndarray:
    """Convert a numpy array or a torch tensor to a float64 numpy array.

    Args:
        x: the array or tensor.
        what: its name, used in error messages.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), with the same numerical
    safeguards as pytorch-fid's ``calculate_frechet_distance``: when the matrix square root of the
    product is not finite (a singular product), ``eps`` is added to both diagonals and the root is
    taken again; a small imaginary part from round-off is dropped, a large one is an error.

    Args:
        mu1: mean feature vector of the first set, shape (d,).
        sigma1: covariance of the first set, shape (d, d).
        mu2: mean feature vector of the second set, shape (d,).
        sigma2: covariance of the second set, shape (d, d).
        eps: diagonal offset used only when the covariance product is singular.

    Returns:
        The squared Fréchet distance (what is reported as FID) as a Python float.
    """
    m1 = np.atleast_1d(_as_float64(mu1, "mu1"))
    m2 = np.atleast_1d(_as_float64(mu2, "mu2"))
    s1 = np.atleast_2d(_as_float64(sigma1, "sigma1"))
    s2 = np.atleast_2d(_as_float64(sigma2, "sigma2"))
    if m1.ndim != 1 or m2.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mean vectors must be 1-D of equal length, got shapes {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"covariances must be ({d}, {d}) to match the means, got {s1.shape} and {s2.shape}"
        )

    diff = m1 - m2
    with warnings.catch_warnings():
        # a singular product is handled below, as pytorch-fid does (it silences scipy with disp=False)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"Fréchet distance: singular covariance product; adding {eps} to the diagonals",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                "Fréchet distance: the square root of the covariance product has a large imaginary "
                f"component ({np.max(np.abs(covmean.imag)):.3g}); the covariances are not valid"
            )
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def polynomial_mmd2(
    features_x: ArrayLike, features_y: ArrayLike, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> float:
    """Unbiased MMD^2 between two equally sized feature sets with a polynomial kernel.

    k(a, b) = (gamma <a, b> + coef) ** degree, gamma defaulting to 1 / dim. The within-set sums leave out
    the diagonal (divided by m(m-1)); the cross term averages all m^2 pairs (Bińkowski et al., 2018).

    Args:
        features_x: (m, d) features of the first set.
        features_y: (m, d) features of the second set.
        degree: polynomial degree.
        gamma: kernel scale; None means 1 / d.
        coef: kernel offset.
    """
    x = torch.as_tensor(features_x).detach().to(torch.float64)
    y = torch.as_tensor(features_y).detach().to(x.device, torch.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"MMD needs two (m, d) feature sets of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    m, d = x.shape
    if m < 2:
        raise ValueError(f"MMD needs at least 2 samples per set, got {m}")
    g = 1.0 / d if gamma is None else float(gamma)
    k_xx = (x @ x.T * g + coef) ** degree
    k_yy = (y @ y.T * g + coef) ** degree
    k_xy = (x @ y.T * g + coef) ** degree
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid_subsets(
    n_real: int, n_fake: int, subsets: int, subset_size: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Index pairs that :func:`kid` draws: each subset is sampled without replacement from each set.

    Args:
        n_real: number of real features.
        n_fake: number of fake features.
        subsets: number of subsets.
        subset_size: samples per subset (must not exceed either set).
        seed: seed of the CPU generator that draws the subsets.
    """
    if subset_size > min(n_real, n_fake):
        raise ValueError(f"subset_size {subset_size} exceeds the smaller set ({min(n_real, n_fake)})")
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(subsets):
        idx_real = torch.randperm(n_real, generator=gen)[:subset_size]
        idx_fake = torch.randperm(n_fake, generator=gen)[:subset_size]
        out.append((idx_real, idx_fake))
    return out


def kid(
    features_real: ArrayLike,
    features_fake: ArrayLike,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased polynomial MMD^2 averaged over random subsets.

    A ``subset_size`` larger than either set is reduced to the smaller set size with a warning.
    Computation runs in float64 on the device of ``features_real`` (CPU for numpy input).

    Args:
        features_real: (n_real, d) features of the real images.
        features_fake: (n_fake, d) features of the generated images.
        subsets: number of random subsets.
        subset_size: samples drawn (without replacement) from each set per subset.
        degree: polynomial kernel degree.
        gamma: kernel scale; None means 1 / d.
        coef: kernel offset.
        seed: seed for the subset draws, so a score is reproducible.

    Returns:
        (mean, std) over subsets; std is the population standard deviation (ddof=0).
    """
    real = torch.as_tensor(features_real).detach().to(torch.float64)
    fake = torch.as_tensor(features_fake).detach().to(real.device, torch.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"KID needs (n, d) feature matrices with the same d, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        raise ValueError("KID: features contain NaN or infinite values")
    if subsets < 1:
        raise ValueError(f"KID: subsets must be >= 1, got {subsets}")
    n_small = min(real.shape[0], fake.shape[0])
    if n_small < 2:
        raise ValueError(f"KID needs at least 2 real and 2 fake samples, got {real.shape[0]} and {fake.shape[0]}")
    if subset_size > n_small:
        warnings.warn(
            f"KID: subset_size {subset_size} is larger than the smaller set ({n_small}); using {n_small}",
            UserWarning,
            stacklevel=2,
        )
        subset_size = n_small
    if subset_size < 2:
        raise ValueError(f"KID: subset_size must be >= 2, got {subset_size}")
    values = []
    for idx_real, idx_fake in kid_subsets(real.shape[0], fake.shape[0], subsets, subset_size, seed):
        values.append(
            polynomial_mmd2(
                real[idx_real.to(real.device)], fake[idx_fake.to(real.device)], degree=degree, gamma=gamma, coef=coef
            )
        )
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    return mean, float(math.sqrt(max(float(((arr - mean) ** 2).mean()), 0.0)))
