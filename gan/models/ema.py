"""Exponential moving average of a network's weights (the generator used for evaluation and export)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """A frozen copy of ``model`` updated as ``ema = decay * ema + (1 - decay) * model`` after each step.

    Buffers (e.g. batch-norm statistics) are copied as they are. Being an ``nn.Module`` attribute of the
    LightningModule, the average is saved in and restored from checkpoints with the rest of the weights.

    Args:
        model: the network to average.
        decay: averaging factor per update (0.999 is typical).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """Move the average towards ``model``'s current weights.

        Args:
            model: the trained network (same architecture).
            decay: this update's factor (StyleGAN2 derives it from a half-life in images); default ``self.decay``.
        """
        d = self.decay if decay is None else float(decay)
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def forward(self, *args, **kwargs):  # noqa: D401 - nn.Module protocol
        """Run the averaged network."""
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> EMA:
        """The average always stays in eval mode."""
        super().train(False)
        return self
