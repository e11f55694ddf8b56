"""CycleGAN (Zhu et al. 2017) for unpaired translation, e.g. CT <-> MRI, as a LightningModule."""
from __future__ import annotations

from typing import Any

import torch

from gan.inference import Mode
from gan.losses import AdversarialLoss, AdversarialMode, LPIPSLoss, cycle_loss, identity_loss, mind_loss
from gan.models.builders import build_discriminator, build_generator
from gan.models.config import DiscriminatorConfig, GeneratorConfig, OptimConfig, VolumeEvalConfig
from gan.models.translation import TranslationModule
from gan.nets import init_weights


class CycleGAN(TranslationModule):
    """Two generators (source -> target = ``generator``, target -> source = ``generator_ba``) and two PatchGANs.

    Generator loss: adversarial (both directions) + ``lambda_cycle`` * cycle L1 (both) + ``lambda_identity`` *
    ``lambda_cycle`` * identity L1 (both, as the reference weights it) + optional ``lambda_lpips`` * LPIPS on the
    cycle reconstructions + optional ``lambda_structure`` * MIND structure loss between each input and its
    translation (structure-constrained CycleGAN, Yang et al. 2018). Discriminators see fakes through image pools.
    In 2.5D the generators map a stack of slices to a stack of the same size (so cycles close).

    Args:
        source: input modality key (domain A), e.g. ``ct``.
        target: output modality key (domain B), e.g. ``mr``.
        mode: ``"2d"``, ``"2.5d"`` or ``"3d"``.
        slices: slices per 2.5D stack.
        generator: both generators (ResNet-9, 64 filters, instance norm in the paper).
        discriminator: both discriminators (70x70 PatchGAN).
        optim: Adam 2e-4 (0.5, 0.999), 100 + 100 epochs in the paper.
        evaluation: whole-volume inference and evaluation (see :class:`~gan.models.config.VolumeEvalConfig`).
        gan_mode: ``"lsgan"`` (paper), ``"nonsaturating"`` or ``"hinge"``.
        lambda_cycle: cycle-consistency weight (10).
        lambda_identity: identity weight relative to ``lambda_cycle`` (0.5).
        lambda_lpips: LPIPS weight on reconstructions (0 disables).
        lambda_structure: weight of the MIND structure loss between input and translation, both directions (0
            disables, as the paper; see :mod:`gan.losses.structure`).
        structure_distance: MIND neighbour distance in voxels.
        structure_sigma: MIND patch Gaussian width in voxels.
        lpips_pretrained: use pretrained LPIPS (AlexNet from a local file or the torch hub cache).
        pool_size: image pool size (50).
        channels_last: channels-last memory format for networks and inputs.
        batch_gpu: samples per chunk of a device's batch, gradients accumulated over the chunks (None: one chunk).
        seed: seed of training's random draws; image pool ``i`` of global chunk ``s`` uses ``seed + i + 1000 s``.
    """

    family = "CycleGAN"

    def __init__(
        self,
        source: str = "ct",
        target: str = "mr",
        mode: Mode = "2d",
        slices: int = 1,
        generator: GeneratorConfig = GeneratorConfig(),
        discriminator: DiscriminatorConfig = DiscriminatorConfig(),
        optim: OptimConfig = OptimConfig(),
        evaluation: VolumeEvalConfig = VolumeEvalConfig(baseline="copy"),
        gan_mode: AdversarialMode = "lsgan",
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        lambda_lpips: float = 0.0,
        lambda_structure: float = 0.0,
        structure_distance: int = 2,
        structure_sigma: float = 1.5,
        lpips_pretrained: bool = True,
        pool_size: int = 50,
        channels_last: bool = False,
        batch_gpu: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(source=source, target=target, mode=mode, slices=slices, evaluation=evaluation,
                         channels_last=channels_last, seed=seed, batch_gpu=batch_gpu)
        gen, disc = self.group("generator", generator), self.group("discriminator", discriminator)
        self.optim = self.group("optim", optim)
        ch, dims = self.in_slices, self.spatial_dims
        self.generator = build_generator(gen, spatial_dims=dims, in_channels=ch, out_channels=ch)     # A -> B
        self.generator_ba = build_generator(gen, spatial_dims=dims, in_channels=ch, out_channels=ch)  # B -> A
        self.discriminator_b = build_discriminator(disc, spatial_dims=dims, in_channels=ch)  # real vs fake B
        self.discriminator_a = build_discriminator(disc, spatial_dims=dims, in_channels=ch)  # real vs fake A
        for net in (self.generator_ba, self.discriminator_a):
            init_weights(net)
        self.adversarial = AdversarialLoss(gan_mode)
        self.lpips = LPIPSLoss(pretrained=lpips_pretrained, spatial_dims=dims) if lambda_lpips > 0 else None
        self.add_pool("a", pool_size)
        self.add_pool("b", pool_size)
        self.init_ema(self.generator, self.optim.ema_decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate source -> target (network range)."""
        return self.generator(x)

    def configure_optimizers(self) -> Any:
        """Adam for both generators together and both discriminators together, with linear-decay schedules."""
        opt_g = self.adam(list(self.generator.parameters()) + list(self.generator_ba.parameters()), self.optim)
        opt_d = self.adam(list(self.discriminator_a.parameters()) + list(self.discriminator_b.parameters()),
                          self.optim)
        return [opt_g, opt_d], self.decay_schedules(self.optim, opt_g, opt_d)

    def _perceptual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "2.5d":
            x, y = self.centre(x), self.centre(y)
        return self.lpips(x, y)

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generators' losses on one chunk (``loss_g`` their weighted sum) and its fakes (``fake_a/b``)."""
        hp = self.hparams
        zero = real_a.new_zeros(())
        fake_b, fake_a = self.generator(real_a), self.generator_ba(real_b)
        rec_a, rec_b = self.generator_ba(fake_b), self.generator(fake_a)
        adv = (self.adversarial.generator_loss(self.discriminator_b(fake_b))
               + self.adversarial.generator_loss(self.discriminator_a(fake_a)))
        cyc = cycle_loss(rec_a, real_a) + cycle_loss(rec_b, real_b)
        loss_g = adv + hp.lambda_cycle * cyc
        idt = perc = struct = zero
        if hp.lambda_identity > 0:
            idt = identity_loss(self.generator(real_b), real_b) + identity_loss(self.generator_ba(real_a), real_a)
            loss_g = loss_g + hp.lambda_identity * hp.lambda_cycle * idt
        if self.lpips is not None:
            perc = self._perceptual(rec_a, real_a) + self._perceptual(rec_b, real_b)
            loss_g = loss_g + hp.lambda_lpips * perc
        if hp.lambda_structure > 0:
            kw = dict(spatial_dims=self.spatial_dims, distance=hp.structure_distance, sigma=hp.structure_sigma)
            struct = mind_loss(fake_b, real_a, **kw) + mind_loss(fake_a, real_b, **kw)
            loss_g = loss_g + hp.lambda_structure * struct
        return {"loss_g": loss_g, "adv": adv, "cycle": cyc, "identity": idt, "lpips": perc, "structure": struct,
                "fake_a": fake_a, "fake_b": fake_b}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One generator step (both directions) then one discriminator step (both domains), each accumulated over
        the device batch's chunks (``batch_gpu``)."""
        opt_g, opt_d = self.optimizers()
        parts = self.chunks(batch)
        n = len(parts)
        reals = []
        for part in parts:
            real_a, real_b = self.fmt(part[self.source]), self.fmt(part[self.target])
            self.check_channels(real_a, self.source)
            self.check_channels(real_b, self.target)
            reals.append((real_a, real_b))
        logs: dict[str, torch.Tensor] = {}
        fakes = []

        with self.optimizing(opt_g):
            for c, (real_a, real_b) in enumerate(reals):
                self.seed_rng(c)
                out = self.generator_losses(real_a, real_b)
                self.manual_backward(out["loss_g"] / n)
                fakes.append((out["fake_a"].detach(), out["fake_b"].detach()))
                for k in ("loss_g", "adv", "cycle", "identity", "lpips", "structure"):
                    logs[f"train/{k}"] = logs.get(f"train/{k}", 0) + out[k].detach() / n
            self.step(opt_g)

        with self.optimizing(opt_d):
            loss_d_total = reals[0][0].new_zeros(())
            for c, ((real_a, real_b), (fake_a, fake_b)) in enumerate(zip(reals, fakes)):
                pooled_b, pooled_a = self.pool("b", c).query(fake_b), self.pool("a", c).query(fake_a)
                loss_d = (self.adversarial.discriminator_loss(self.discriminator_b(real_b),
                                                              self.discriminator_b(pooled_b))
                          + self.adversarial.discriminator_loss(self.discriminator_a(real_a),
                                                                self.discriminator_a(pooled_a)))
                self.manual_backward(loss_d / n)
                loss_d_total = loss_d_total + loss_d.detach() / n
            self.step(opt_d)

        if self.ema is not None:
            self.ema.update(self.generator)
        logs["train/loss_d"] = loss_d_total
        self.log_losses(logs, batch[self.source].shape[0])
        return logs["train/loss_g"]
