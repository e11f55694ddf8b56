"""CycleGAN (Zhu et al. 2017) for unpaired translation, e.g. CT <-> MRI, as a LightningModule."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch

from gan.losses import AdversarialLoss, AdversarialMode, LPIPSLoss, cycle_loss, identity_loss, mind_loss
from gan.models.builders import GeneratorArch, Norm, build_discriminator, build_generator
from gan.models.image_pool import ImagePool
from gan.models.translation import Mode, Protocol, TranslationModule
from gan.nets import init_weights


class CycleGAN(TranslationModule):
    """Two generators (source -> target = ``generator``, target -> source = ``generator_ba``) and two PatchGANs.

    Generator loss: adversarial (both directions) + ``lambda_cycle`` * cycle L1 (both) + ``lambda_identity`` *
    ``lambda_cycle`` * identity L1 (both, as the reference weights it) + optional ``lambda_lpips`` * LPIPS on the
    cycle reconstructions + optional ``lambda_structure`` * MIND structure loss between each input and its
    translation (structure-constrained CycleGAN, Yang et al. 2018; keeps edges where the input has them). Discriminators see fakes through image pools of 50. In 2.5D the generators map a
    stack of slices to a stack of the same size (so cycles close); the centre slice is the output.

    Args:
        source: input modality key (domain A), e.g. ``ct``.
        target: output modality key (domain B), e.g. ``mr``.
        mode: ``"2d"``, ``"2.5d"`` or ``"3d"``.
        slices: slices per 2.5D stack.
        roi_size: 3D sliding-window inference size (usually the training patch size).
        generator_arch: ``"resnet"`` (paper) or ``"unet"``.
        features: generator filters.
        n_blocks: residual blocks (9 in the paper at 256 px).
        num_downs: U-Net downsamplings.
        norm: generator normalisation.
        dropout: generator dropout.
        upsample: ``"transpose"`` or ``"resize"``.
        d_features: discriminator filters.
        d_layers: discriminator strided layers (3 = 70x70 PatchGAN).
        d_norm: discriminator normalisation.
        d_scales: discriminator scales (1 = PatchGAN).
        spectral_norm: spectral normalisation in the discriminators.
        gan_mode: ``"lsgan"`` (paper), ``"nonsaturating"`` or ``"hinge"``.
        lambda_cycle: cycle-consistency weight (10).
        lambda_identity: identity weight relative to ``lambda_cycle`` (0.5).
        lambda_lpips: LPIPS weight on reconstructions (0 disables; needs LPIPS backbone weights unless
            ``lpips_pretrained`` is False).
        lambda_structure: weight of the MIND structure loss between input and translation, both directions (0
            disables, as the paper; see :mod:`gan.losses.structure`).
        structure_distance: MIND neighbour distance in voxels (2: on noisy MR this separates aligned from 2-voxel
            shifted anatomy better than 1).
        structure_sigma: MIND patch Gaussian width in voxels.
        lpips_pretrained: use pretrained LPIPS (AlexNet from a local file or the torch hub cache).
        pool_size: image pool size (50).
        lr: Adam learning rate.
        beta1: Adam beta1.
        beta2: Adam beta2.
        epochs_constant: epochs at the initial learning rate (100 in the paper).
        epochs_decay: epochs of linear decay (100 in the paper).
        ema_decay: generator EMA decay (0 disables).
        eval_protocol: metric protocol for CT targets.
        eval_window: evaluation window in physical units; None = modality default.
        baseline: ``"copy"`` or ``"mean"``.
        inference_batch: slices per forward pass at evaluation.
        fid_weights: enables validation/test 2.5D FID with these Inception weights (see :class:`TranslationModule`).
        fid_max_slices: slices per axis and volume for the FID.
        channels_last: channels-last memory format for networks and inputs (see :class:`TranslationModule`).
        pool_seed: seed of the image pools.
    """

    def __init__(
        self,
        source: str = "ct",
        target: str = "mr",
        mode: Mode = "2d",
        slices: int = 1,
        roi_size: Sequence[int] | None = None,
        generator_arch: GeneratorArch = "resnet",
        features: int = 64,
        n_blocks: int = 9,
        num_downs: int = 8,
        norm: Norm = "instance",
        dropout: float = 0.0,
        upsample: Literal["transpose", "resize"] = "transpose",
        d_features: int = 64,
        d_layers: int = 3,
        d_norm: Norm = "instance",
        d_scales: int = 1,
        spectral_norm: bool = False,
        gan_mode: AdversarialMode = "lsgan",
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        lambda_lpips: float = 0.0,
        lambda_structure: float = 0.0,
        structure_distance: int = 2,
        structure_sigma: float = 1.5,
        lpips_pretrained: bool = True,
        pool_size: int = 50,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        epochs_constant: int = 100,
        epochs_decay: int = 100,
        ema_decay: float = 0.0,
        eval_protocol: Protocol = "default",
        eval_window: tuple[float, float] | None = None,
        baseline: Literal["copy", "mean"] = "copy",
        inference_batch: int = 16,
        pool_seed: int = 0,
        fid_weights: str | None = None,
        fid_max_slices: int = 32,
        channels_last: bool = False,
    ) -> None:
        super().__init__(source=source, target=target, mode=mode, slices=slices, roi_size=roi_size, lr=lr,
                         beta1=beta1, beta2=beta2, epochs_constant=epochs_constant, epochs_decay=epochs_decay,
                         ema_decay=ema_decay, eval_protocol=eval_protocol, eval_window=eval_window, baseline=baseline,
                         inference_batch=inference_batch, pool_seed=pool_seed,
                         fid_weights=fid_weights, fid_max_slices=fid_max_slices, channels_last=channels_last)
        self.save_hyperparameters()
        ch = self.in_slices
        g = dict(arch=generator_arch, spatial_dims=self.spatial_dims, in_channels=ch, out_channels=ch, features=features,
                 n_blocks=n_blocks, num_downs=num_downs, norm=norm, dropout=dropout, upsample=upsample)
        d = dict(spatial_dims=self.spatial_dims, in_channels=ch, features=d_features, n_layers=d_layers, norm=d_norm,
                 spectral_norm=spectral_norm, num_scales=d_scales)
        self.generator = build_generator(**g)      # A -> B
        self.generator_ba = build_generator(**g)   # B -> A
        self.discriminator_b = build_discriminator(**d)  # real vs fake B
        self.discriminator_a = build_discriminator(**d)  # real vs fake A
        for net in (self.generator_ba, self.discriminator_a):
            init_weights(net)
        self.adversarial = AdversarialLoss(gan_mode)
        self.lpips = LPIPSLoss(pretrained=lpips_pretrained, spatial_dims=self.spatial_dims) if lambda_lpips > 0 else None
        self.pool_a = ImagePool(pool_size, seed=pool_seed)
        self.pool_b = ImagePool(pool_size, seed=pool_seed + 1)
        self._init_ema()

    def _pools(self) -> dict[str, ImagePool]:
        return {"a": self.pool_a, "b": self.pool_b}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate source -> target (network range)."""
        return self.generator(x)

    def configure_optimizers(self) -> Any:
        """Adam for both generators together and both discriminators together, with linear-decay schedules."""
        opt_g = self._adam(list(self.generator.parameters()) + list(self.generator_ba.parameters()))
        opt_d = self._adam(list(self.discriminator_a.parameters()) + list(self.discriminator_b.parameters()))
        return [opt_g, opt_d], self._schedulers(opt_g, opt_d)

    def _perceptual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.lpips is None:
            return x.new_zeros(())
        if self.mode == "2.5d":
            x, y = self._centre(x), self._centre(y)
        return self.lpips(x, y)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One generator step (both directions) then one discriminator step (both domains)."""
        hp = self.hparams
        real_a, real_b = self._fmt(batch[self.source]), self._fmt(batch[self.target])
        self._check_channels(real_a, self.source)
        self._check_channels(real_b, self.target)
        opt_g, opt_d = self.optimizers()
        self._record_windows(batch)

        self.toggle_optimizer(opt_g)
        fake_b = self.generator(real_a)
        fake_a = self.generator_ba(real_b)
        rec_a = self.generator_ba(fake_b)
        rec_b = self.generator(fake_a)
        adv = self.adversarial.generator_loss(self.discriminator_b(fake_b)) + self.adversarial.generator_loss(self.discriminator_a(fake_a))
        cyc = cycle_loss(rec_a, real_a) + cycle_loss(rec_b, real_b)
        loss_g = adv + hp.lambda_cycle * cyc
        idt = real_a.new_zeros(())
        if hp.lambda_identity > 0:
            idt = identity_loss(self.generator(real_b), real_b) + identity_loss(self.generator_ba(real_a), real_a)
            loss_g = loss_g + hp.lambda_identity * hp.lambda_cycle * idt
        perc = real_a.new_zeros(())
        if self.lpips is not None:
            perc = self._perceptual(rec_a, real_a) + self._perceptual(rec_b, real_b)
            loss_g = loss_g + hp.lambda_lpips * perc
        struct = real_a.new_zeros(())
        if hp.lambda_structure > 0:
            kw = dict(spatial_dims=self.spatial_dims, distance=hp.structure_distance, sigma=hp.structure_sigma)
            struct = mind_loss(fake_b, real_a, **kw) + mind_loss(fake_a, real_b, **kw)
            loss_g = loss_g + hp.lambda_structure * struct
        self._step(opt_g, loss_g)
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)
        pooled_b = self.pool_b.query(fake_b)
        pooled_a = self.pool_a.query(fake_a)
        loss_d_b = self.adversarial.discriminator_loss(self.discriminator_b(real_b), self.discriminator_b(pooled_b))
        loss_d_a = self.adversarial.discriminator_loss(self.discriminator_a(real_a), self.discriminator_a(pooled_a))
        loss_d = loss_d_a + loss_d_b
        self._step(opt_d, loss_d)
        self.untoggle_optimizer(opt_d)

        if self.ema is not None:
            self.ema.update(self.generator)
        self._log_train({"train/loss_g": loss_g, "train/loss_d": loss_d, "train/adv": adv, "train/cycle": cyc,
                         "train/identity": idt, "train/lpips": perc, "train/structure": struct}, real_a.shape[0])
        return loss_g.detach()
