"""Adversarial losses on discriminator logits: least squares (LSGAN), non-saturating (BCE) and hinge."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

AdversarialMode = Literal["lsgan", "nonsaturating", "hinge"]
_MODES: tuple[str, ...] = get_args(AdversarialMode)

Logits = torch.Tensor | Sequence[torch.Tensor]
"""One logit map, or one per discriminator scale (a multiscale discriminator's output)."""


def _as_list(logits: Logits, what: str) -> list[torch.Tensor]:
    """Logit maps as a non-empty list of tensors."""
    items = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise ValueError(f"{what} must be a tensor or a non-empty list of tensors, got {type(logits).__name__}")
    return items


class AdversarialLoss(nn.Module):
    """GAN loss on raw discriminator logits (no sigmoid in the discriminator).

    ======================  ===========================================  ===================================
    mode                    discriminator loss                           generator loss
    ======================  ===========================================  ===================================
    ``"lsgan"``             0.5 * (mean((real - 1)^2) + mean(fake^2))     mean((fake - 1)^2)
    ``"nonsaturating"``     mean(softplus(-real)) + mean(softplus(fake))  mean(softplus(-fake))
    ``"hinge"``             mean(relu(1 - real)) + mean(relu(1 + fake))   -mean(fake)
    ======================  ===========================================  ===================================

    The LSGAN discriminator loss is halved as in pytorch-CycleGAN-and-pix2pix; the non-saturating one is
    binary cross-entropy with logits (real label 1, fake label 0), as in StyleGAN2. A list of logit maps (one
    per scale of a multiscale discriminator) gives the mean of the per-scale losses.

    Args:
        mode: ``"lsgan"``, ``"nonsaturating"`` or ``"hinge"``.
    """

    def __init__(self, mode: AdversarialMode = "lsgan") -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"adversarial loss mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode

    def extra_repr(self) -> str:
        """The loss mode (printed with the module)."""
        return f"mode={self.mode!r}"

    def _generator_term(self, fake: torch.Tensor) -> torch.Tensor:
        if self.mode == "lsgan":
            return F.mse_loss(fake, torch.ones_like(fake))
        if self.mode == "nonsaturating":
            return F.softplus(-fake).mean()
        return -fake.mean()

    def _discriminator_term(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.mode == "lsgan":
            return 0.5 * (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)))
        if self.mode == "nonsaturating":
            return F.softplus(-real).mean() + F.softplus(fake).mean()
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def generator_loss(self, fake_logits: Logits) -> torch.Tensor:
        """Loss the generator minimises so that its samples are scored as real.

        Args:
            fake_logits: discriminator logits on generated samples (a tensor, or one per scale).
        """
        fakes = _as_list(fake_logits, "fake_logits")
        return torch.stack([self._generator_term(f) for f in fakes]).mean()

    def discriminator_loss(self, real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
        """Loss the discriminator minimises to tell real from generated samples.

        Args:
            real_logits: logits on real samples (a tensor, or one per scale).
            fake_logits: logits on generated samples, detached from the generator by the caller.
        """
        reals = _as_list(real_logits, "real_logits")
        fakes = _as_list(fake_logits, "fake_logits")
        if len(reals) != len(fakes):
            raise ValueError(f"got {len(reals)} real logit maps but {len(fakes)} fake ones; one per scale expected")
        return torch.stack([self._discriminator_term(r, f) for r, f in zip(reals, fakes)]).mean()

    def forward(self, fake_logits: Logits, real_logits: Logits | None = None) -> torch.Tensor:
        """Generator loss if only ``fake_logits`` is given, otherwise the discriminator loss.

        Args:
            fake_logits: logits on generated samples.
            real_logits: logits on real samples (discriminator step only).
        """
        if real_logits is None:
            return self.generator_loss(fake_logits)
        return self.discriminator_loss(real_logits, fake_logits)
