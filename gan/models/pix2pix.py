"""Conditional GAN (pix2pix, Isola et al. 2017) for paired translation, e.g. CT -> PET, as a LightningModule."""
from __future__ import annotations

from typing import Any

import torch

from gan.inference import Mode
from gan.losses import AdversarialLoss, AdversarialMode, LPIPSLoss, l1_loss, lesion_weighted_l1
from gan.models.builders import build_discriminator, build_generator
from gan.models.config import DiscriminatorConfig, GeneratorConfig, OptimConfig, VolumeEvalConfig
from gan.models.translation import TranslationModule


class Pix2Pix(TranslationModule):
    """U-Net generator and a PatchGAN conditioned on (input, output) pairs.

    Generator loss: adversarial + ``lambda_l1`` * L1 to the target (lesion-weighted when ``lesion_weight`` > 1
    and the batch has ``lesion_mask``) + optional ``lambda_lpips`` * LPIPS. In 2.5D the input is a stack of
    slices and the output the centre slice.

    Args:
        source: input modality key, e.g. ``ct``.
        target: output modality key, e.g. ``pet``.
        mode: ``"2d"``, ``"2.5d"`` or ``"3d"``.
        slices: slices per 2.5D input stack.
        generator: the generator (U-Net-256, batch norm, dropout 0.5 in the paper).
        discriminator: the pair discriminator (70x70 PatchGAN, batch norm).
        optim: Adam 2e-4 (0.5, 0.999), 100 + 100 epochs in the paper.
        evaluation: whole-volume evaluation; the baseline is the mean training target (mean SUV image).
        gan_mode: ``"nonsaturating"`` (paper's vanilla GAN), ``"lsgan"`` or ``"hinge"``.
        lambda_l1: L1 weight (100).
        lesion_weight: weight of lesion voxels in the L1 term (1 = plain L1).
        lambda_lpips: LPIPS weight (0 disables).
        lpips_pretrained: use pretrained LPIPS weights.
        pool_size: image pool size (0 in the paper).
        channels_last: channels-last memory format for networks and inputs.
        batch_gpu: samples per chunk of a device's batch, gradients accumulated over the chunks (None: one chunk).
            Batch norm normalises each chunk with its own statistics; under DDP rank 0's running statistics are
            broadcast to the other ranks before every evaluation and checkpoint.
        seed: seed of training's random draws (dropout masks are a function of (seed, iteration, global chunk)); the
            image pool of global chunk ``s`` uses ``seed + 1000 s``.
    """

    family = "Pix2Pix"

    def __init__(
        self,
        source: str = "ct",
        target: str = "pet",
        mode: Mode = "2d",
        slices: int = 1,
        generator: GeneratorConfig = GeneratorConfig(arch="unet", norm="batch", dropout=0.5),
        discriminator: DiscriminatorConfig = DiscriminatorConfig(norm="batch"),
        optim: OptimConfig = OptimConfig(),
        evaluation: VolumeEvalConfig = VolumeEvalConfig(baseline="mean"),
        gan_mode: AdversarialMode = "nonsaturating",
        lambda_l1: float = 100.0,
        lesion_weight: float = 1.0,
        lambda_lpips: float = 0.0,
        lpips_pretrained: bool = True,
        pool_size: int = 0,
        channels_last: bool = False,
        batch_gpu: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(source=source, target=target, mode=mode, slices=slices, evaluation=evaluation,
                         channels_last=channels_last, seed=seed, batch_gpu=batch_gpu)
        gen, disc = self.group("generator", generator), self.group("discriminator", discriminator)
        self.optim = self.group("optim", optim)
        dims = self.spatial_dims
        self.generator = build_generator(gen, spatial_dims=dims, in_channels=self.in_slices, out_channels=1)
        self.discriminator = build_discriminator(disc, spatial_dims=dims, in_channels=self.in_slices + 1)
        self.adversarial = AdversarialLoss(gan_mode)
        self.lpips = LPIPSLoss(pretrained=lpips_pretrained, spatial_dims=dims) if lambda_lpips > 0 else None
        self.add_pool("pairs", pool_size)
        self.init_ema(self.generator, self.optim.ema_decay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate source -> target (network range)."""
        return self.generator(x)

    def configure_optimizers(self) -> Any:
        """Adam for generator and discriminator, with linear-decay schedules."""
        opt_g, opt_d = self.adam(self.generator.parameters(), self.optim), self.adam(self.discriminator.parameters(),
                                                                                    self.optim)
        return [opt_g, opt_d], self.decay_schedules(self.optim, opt_g, opt_d)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One discriminator step on (input, real) vs (input, fake) pairs, then one generator step, each accumulated
        over the device batch's chunks (``batch_gpu``)."""
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        parts = self.chunks(batch)
        n = len(parts)
        chunks = []
        for c, part in enumerate(parts):
            x = self.fmt(part[self.source])
            self.check_channels(x, self.source)
            y = part[self.target]
            y = self.fmt(self.centre(y) if y.shape[1] > 1 else y)
            self.track_target(y, part.get("body_mask"), part["window"][self.target])
            self.seed_rng(c)  # the chunk's dropout masks
            chunks.append((x, y, self.generator(x), part.get("lesion_mask")))

        with self.optimizing(opt_d):
            loss_d = chunks[0][0].new_zeros(())
            for c, (x, y, fake, _) in enumerate(chunks):
                fake_pair = self.pool("pairs", c).query(torch.cat([x, fake], 1))
                loss = self.adversarial.discriminator_loss(self.discriminator(torch.cat([x, y], 1)),
                                                           self.discriminator(fake_pair))
                self.manual_backward(loss / n)
                loss_d = loss_d + loss.detach() / n
            self.step(opt_d)

        logs: dict[str, torch.Tensor] = {}
        with self.optimizing(opt_g):
            for x, y, fake, lesion in chunks:
                adv = self.adversarial.generator_loss(self.discriminator(torch.cat([x, fake], 1)))
                if hp.lesion_weight != 1.0 and lesion is not None:
                    rec = lesion_weighted_l1(fake, y, lesion, lesion_weight=hp.lesion_weight)
                else:
                    rec = l1_loss(fake, y)
                loss_g = adv + hp.lambda_l1 * rec
                perc = x.new_zeros(())
                if self.lpips is not None:
                    perc = self.lpips(fake, y)
                    loss_g = loss_g + hp.lambda_lpips * perc
                self.manual_backward(loss_g / n)
                for k, v in (("loss_g", loss_g), ("adv", adv), ("l1", rec), ("lpips", perc)):
                    logs[f"train/{k}"] = logs.get(f"train/{k}", 0) + v.detach() / n
            self.step(opt_g)

        if self.ema is not None:
            self.ema.update(self.generator)
        logs["train/loss_d"] = loss_d
        self.log_losses(logs, batch[self.source].shape[0])
        return logs["train/loss_g"]
