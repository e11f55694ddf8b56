"""The three training sets of the downstream-utility test, built from the same real training tiles.

* ``real_only``: the real training tiles;
* ``oversampled``: the real tiles plus as many repeats of the real rare-class tiles as there are synthetic tiles
  (round robin, so every rare tile is repeated equally often); every training tile goes through the same random
  augmentation (:mod:`gan.utility.training`), so a repeat is an augmented copy: the honest baseline;
* ``synthetic``: the real tiles plus the synthetic rare-class tiles.

``oversampled`` and ``synthetic`` therefore have the same size and class counts; all three are trained with the
same number of steps and batch size (the budget) from the same seeds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["REGIMES", "Regime", "build_regimes"]

#: The regimes, in report order.
REGIMES: tuple[str, ...] = ("real_only", "oversampled", "synthetic")
_DESCRIPTIONS = {
    "real_only": "real training tiles only",
    "oversampled": "real tiles + augmented repeats of the real rare-class tiles (as many as synthetic tiles)",
    "synthetic": "real tiles + synthetic rare-class tiles",
}


@dataclass(frozen=True)
class Regime:
    """One training set.

    Args:
        name: ``"real_only"``, ``"oversampled"`` or ``"synthetic"``.
        description: what it holds, in words.
        images: (N, 3, S, S) uint8 tiles.
        labels: (N,) class indices.
        added: how many tiles were added to the real ones.
    """

    name: str
    description: str
    images: Tensor
    labels: Tensor
    added: int

    def class_counts(self, num_classes: int) -> list[int]:
        """Tiles per class index.

        Args:
            num_classes: number of classes.
        """
        return torch.bincount(self.labels, minlength=num_classes).tolist()


def build_regimes(train_images: Tensor, train_labels: Tensor, synthetic_images: Tensor, *,
                  rare: int) -> dict[str, Regime]:
    """The three training sets (see the module docstring).

    Args:
        train_images: (N, 3, S, S) uint8 real training tiles.
        train_labels: (N,) their class indices.
        synthetic_images: (M, 3, S, S) uint8 synthetic tiles of the rare class, M >= 1.
        rare: index of the rare class.

    Raises:
        ValueError: no real rare tile, no synthetic tile, or tiles of different sizes.
    """
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    if train_images.dtype != torch.uint8 or synthetic_images.dtype != torch.uint8:
        raise ValueError("tiles must be uint8 tensors")
    if train_images.shape[1:] != synthetic_images.shape[1:]:
        raise ValueError(f"real and synthetic tiles differ in shape: {tuple(train_images.shape[1:])} vs "
                         f"{tuple(synthetic_images.shape[1:])}")
    rare_idx = torch.nonzero(labels == rare).flatten()
    if rare_idx.numel() == 0:
        raise ValueError(f"no real training tile of the rare class (index {rare}) to oversample")
    m = int(synthetic_images.shape[0])
    if m == 0:
        raise ValueError("no synthetic tile of the rare class")
    repeats = rare_idx[torch.arange(m) % rare_idx.numel()]
    rare_labels = torch.full((m,), rare, dtype=torch.long)
    sets = {
        "real_only": (train_images, labels, 0),
        "oversampled": (torch.cat([train_images, train_images[repeats]]), torch.cat([labels, rare_labels]), m),
        "synthetic": (torch.cat([train_images, synthetic_images]), torch.cat([labels, rare_labels]), m),
    }
    return {name: Regime(name=name, description=_DESCRIPTIONS[name], images=x, labels=y, added=added)
            for name, (x, y, added) in sets.items()}
