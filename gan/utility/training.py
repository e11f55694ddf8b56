"""Training and prediction of the utility test's classifier: one seeded loop, the same for every regime.

A run draws ``steps`` batches of ``batch_size`` tiles from seeded epoch permutations of its training set; every tile
goes through the same random augmentation (a dihedral transform, i.e. flips and 90-degree rotations, and a
brightness factor in [0.9, 1.1]); the optimiser is AdamW with a cosine learning-rate decay and cross-entropy loss.
Sampling, augmentation and the initialisation come from ``seed`` alone (a private generator, the global RNG is
forked), so a regime's result is a function of its data and its seed, and the regimes of one seed differ only in
their data.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gan.reports import progress
from gan.utility.classifier import TileClassifier, build_classifier, classifier_kind

PathLike = Union[str, Path]

__all__ = ["TrainSettings", "augment_batch", "cpu_threads", "predict_probabilities", "train_classifier"]


@dataclass(frozen=True)
class TrainSettings:
    """The budget and recipe of every training run.

    Args:
        classifier: ``"resnet18"`` (from scratch, the default), ``"tiny"`` (tests, smoke runs) or ``"timm:<model>"``.
        classifier_weights: timm only: local backbone weights file (None: from scratch).
        steps: optimiser steps per run (the budget: ``steps x batch_size`` tiles seen in every regime).
        batch_size: tiles per step.
        lr: AdamW learning rate (cosine-decayed to 0 over ``steps``).
        weight_decay: AdamW weight decay.
        device: torch device.
        threads: torch intra-op CPU threads while training and predicting (restored afterwards); None: torch's
            setting. 1 is as fast for small networks and immune to the stalls of spinning OpenMP threads on a busy
            machine (measured on 2 shared cores: the tiny classifier 10x slower with 2 threads than with 1).
    """

    classifier: str = "resnet18"
    classifier_weights: PathLike | None = None
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        classifier_kind(self.classifier)
        if self.classifier_weights is not None and not self.classifier.startswith("timm:"):
            raise ValueError(f"classifier {self.classifier!r} is trained from scratch; classifier weights apply to "
                             "timm:<model>")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) < 1:
                raise ValueError(f"utility {name} must be >= 1, got {value!r}")
        if not float(self.lr) > 0:
            raise ValueError(f"utility lr must be > 0, got {self.lr}")
        if self.threads is not None and (isinstance(self.threads, bool) or int(self.threads) < 1):
            raise ValueError(f"utility threads must be >= 1 or None, got {self.threads!r}")

    def record(self) -> dict[str, object]:
        """The settings as written in reports."""
        return {"classifier": self.classifier, "classifier_weights": None if self.classifier_weights is None else
                str(self.classifier_weights), "steps": int(self.steps), "batch_size": int(self.batch_size),
                "lr": float(self.lr), "weight_decay": float(self.weight_decay), "optimizer": "AdamW, cosine decay",
                "loss": "cross-entropy", "augmentation": "random dihedral (flips, 90-degree rotations) and "
                "brightness x U(0.9, 1.1), every tile of every regime", "device": self.device,
                "threads": self.threads}


def augment_batch(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random dihedral transform and brightness factor per tile; uint8 in, float in [0, 1] out.

    Args:
        images: (B, 3, S, S) uint8 tiles (square).
        generator: the run's CPU generator.
    """
    x = images.float().div(255.0)
    b = x.shape[0]
    rot = torch.randint(0, 4, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    bright = 0.9 + 0.2 * torch.rand(b, generator=generator)
    out = torch.empty_like(x)
    for k in range(4):
        for f in (False, True):
            sel = (rot == k) & (flip == f)
            if bool(sel.any()):
                y = torch.rot90(x[sel], k, dims=(2, 3))
                out[sel] = torch.flip(y, dims=(3,)) if f else y
    return (out * bright.view(b, 1, 1, 1).to(out.dtype)).clamp_(0.0, 1.0)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, then restore the previous setting (None: unchanged).

    Args:
        threads: intra-op threads, or None.
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """``steps`` index batches of ``batch_size`` from consecutive seeded permutations of ``range(n)``."""
    pool = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while pool.numel() < batch_size:
            pool = torch.cat([pool, torch.randperm(n, generator=generator)])
        yield pool[:batch_size]
        pool = pool[batch_size:]


def train_classifier(images: Tensor, labels: Tensor, *, num_classes: int, seed: int, settings: TrainSettings,
                     desc: str = "utility training", quiet: bool = True) -> TileClassifier:
    """Train a fresh classifier on one training set.

    Args:
        images: (N, 3, S, S) uint8 tiles.
        labels: (N,) class indices.
        num_classes: number of classes.
        seed: seed of the initialisation, the batches and the augmentation.
        settings: the budget and recipe.
        desc: label of the progress bar.
        quiet: no progress bar.
    """
    device = torch.device(settings.device)
    clf = build_classifier(settings.classifier, num_classes, seed=seed,
                           weights_path=settings.classifier_weights).to(device)
    clf.train()
    opt = torch.optim.AdamW(clf.parameters(), lr=float(settings.lr), weight_decay=float(settings.weight_decay))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(settings.steps))
    gen = torch.Generator().manual_seed(int(seed) + 7919)  # a stream apart from the initialisation's
    labels = torch.as_tensor(labels, dtype=torch.long)
    steps = int(settings.steps)
    with cpu_threads(settings.threads):
        for idx in progress(_batches(images.shape[0], int(settings.batch_size), steps, gen), total=steps, desc=desc,
                            quiet=quiet):
            x = augment_batch(images[idx], gen).to(device)
            loss = F.cross_entropy(clf(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return clf.eval()


@torch.no_grad()
def predict_probabilities(clf: TileClassifier, images: Tensor, *, batch_size: int = 256,
                          threads: int | None = None) -> np.ndarray:
    """Class probabilities (softmax, float64) of tiles, in eval mode, without augmentation.

    Args:
        clf: the trained classifier.
        images: (N, 3, S, S) uint8 tiles.
        batch_size: tiles per forward pass.
        threads: torch intra-op CPU threads meanwhile (None: unchanged).
    """
    clf.eval()
    device = next(clf.parameters()).device
    with cpu_threads(threads):
        out = [torch.softmax(clf(images[i:i + batch_size].to(device)).double(), dim=1).cpu()
               for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy()
