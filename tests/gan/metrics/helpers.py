"""Small seeded stand-ins shared by the FID/KID tests: tiny extractors, images, volumes and numpy references."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from gan.metrics.features import ModuleExtractor, extract_features
from gan.metrics.frechet import frechet_distance


def tiny_extractor(seed: int = 0) -> ModuleExtractor:
    """A small conv net wrapped as an extractor (fast stand-in for Inception): 32-d features at 32 x 32."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return ModuleExtractor(net, name=f"tiny-{seed}", input_size=32)


def tiny_tanh_extractor(seed: int = 0) -> ModuleExtractor:
    """A seeded random conv net (8-d features at 16 x 16): a fast stand-in for Inception."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ModuleExtractor(net, name=f"tiny-{seed}", input_size=16)


def images(n: int, size: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """``n`` seeded random RGB images in [-scale, scale], ``size`` x ``size``."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=gen) * 2 - 1) * scale


def volumes(n: int, shape: tuple[int, int, int], seed: int, scale: float = 1.0) -> np.ndarray:
    """``n`` seeded random float32 volumes in [-scale, scale]."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, size=(n, *shape)) * scale).astype(np.float32)


def mmd2_reference(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased polynomial-kernel MMD^2 of two equal-sized sets (Bińkowski et al. 2018; clean-fid's kernel_distance)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + coef) ** degree
    k_yy = (y @ y.T / d + coef) ** degree
    k_xy = (x @ y.T / d + coef) ** degree
    return float((k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.sum() / m**2)


def fid_reference(real: torch.Tensor, fake: torch.Tensor, ext: ModuleExtractor) -> float:
    """FID from np.mean / np.cov of the extractor's features and frechet_distance."""
    fr = extract_features(real, ext, "pytorch-fid").double().numpy()
    ff = extract_features(fake, ext, "pytorch-fid").double().numpy()
    return frechet_distance(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))


def warning_messages(caught: list[warnings.WarningMessage], category: type) -> list[str]:
    """The messages of the caught warnings of one category."""
    return [str(w.message) for w in caught if issubclass(w.category, category)]
