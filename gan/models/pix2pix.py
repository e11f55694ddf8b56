"""Conditional GAN (pix2pix, Isola et al. 2017) for paired translation, e.g. CT -> PET, as a LightningModule."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch

from gan.losses import AdversarialLoss, AdversarialMode, LPIPSLoss, l1_loss, lesion_weighted_l1
from gan.models.builders import GeneratorArch, Norm, build_discriminator, build_generator
from gan.models.image_pool import ImagePool
from gan.models.translation import Mode, Protocol, TranslationModule


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
        roi_size: 3D sliding-window inference size (usually the training patch size).
        generator_arch: ``"unet"`` (paper) or ``"resnet"``.
        features: generator filters.
        n_blocks: residual blocks (ResNet).
        num_downs: U-Net downsamplings (8 at 256 px).
        norm: generator normalisation (batch in the paper).
        dropout: generator dropout (0.5: the paper's noise source).
        upsample: ResNet upsampling.
        d_features: discriminator filters.
        d_layers: discriminator strided layers.
        d_norm: discriminator normalisation.
        d_scales: discriminator scales.
        spectral_norm: spectral normalisation in the discriminator.
        gan_mode: ``"nonsaturating"`` (paper's vanilla GAN), ``"lsgan"`` or ``"hinge"``.
        lambda_l1: L1 weight (100).
        lesion_weight: weight of lesion voxels in the L1 term (1 = plain L1).
        lambda_lpips: LPIPS weight (0 disables).
        lpips_pretrained: use pretrained LPIPS weights.
        pool_size: image pool size (0 in the paper).
        lr: Adam learning rate.
        beta1: Adam beta1.
        beta2: Adam beta2.
        epochs_constant: epochs at the initial learning rate.
        epochs_decay: epochs of linear decay.
        ema_decay: generator EMA decay (0 disables).
        eval_protocol: metric protocol (CT targets only).
        eval_window: evaluation window; None = modality default (PET [0, 20] SUV).
        baseline: ``"mean"`` (mean SUV image, default) or ``"copy"``.
        inference_batch: slices per forward pass at evaluation.
        fid_weights: enables validation/test 2.5D FID with these Inception weights (see :class:`TranslationModule`).
        fid_max_slices: slices per axis and volume for the FID.
        channels_last: channels-last memory format for networks and inputs (see :class:`TranslationModule`).
        pool_seed: seed of the image pool.
    """

    def __init__(
        self,
        source: str = "ct",
        target: str = "pet",
        mode: Mode = "2d",
        slices: int = 1,
        roi_size: Sequence[int] | None = None,
        generator_arch: GeneratorArch = "unet",
        features: int = 64,
        n_blocks: int = 9,
        num_downs: int = 8,
        norm: Norm = "batch",
        dropout: float = 0.5,
        upsample: Literal["transpose", "resize"] = "transpose",
        d_features: int = 64,
        d_layers: int = 3,
        d_norm: Norm = "batch",
        d_scales: int = 1,
        spectral_norm: bool = False,
        gan_mode: AdversarialMode = "nonsaturating",
        lambda_l1: float = 100.0,
        lesion_weight: float = 1.0,
        lambda_lpips: float = 0.0,
        lpips_pretrained: bool = True,
        pool_size: int = 0,
        lr: float = 2e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        epochs_constant: int = 100,
        epochs_decay: int = 100,
        ema_decay: float = 0.0,
        eval_protocol: Protocol = "default",
        eval_window: tuple[float, float] | None = None,
        baseline: Literal["copy", "mean"] = "mean",
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
        self.generator = build_generator(arch=generator_arch, spatial_dims=self.spatial_dims, in_channels=self.in_slices,
                                         out_channels=1, features=features, n_blocks=n_blocks, num_downs=num_downs,
                                         norm=norm, dropout=dropout, upsample=upsample)
        self.discriminator = build_discriminator(spatial_dims=self.spatial_dims, in_channels=self.in_slices + 1,
                                                 features=d_features, n_layers=d_layers, norm=d_norm,
                                                 spectral_norm=spectral_norm, num_scales=d_scales)
        self.adversarial = AdversarialLoss(gan_mode)
        self.lpips = LPIPSLoss(pretrained=lpips_pretrained, spatial_dims=self.spatial_dims) if lambda_lpips > 0 else None
        self.pool = ImagePool(pool_size, seed=pool_seed)
        self._init_ema()

    def _pools(self) -> dict[str, ImagePool]:
        return {"pairs": self.pool}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate source -> target (network range)."""
        return self.generator(x)

    def configure_optimizers(self) -> Any:
        """Adam for generator and discriminator, with linear-decay schedules."""
        opt_g = self._adam(self.generator.parameters())
        opt_d = self._adam(self.discriminator.parameters())
        return [opt_g, opt_d], self._schedulers(opt_g, opt_d)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One discriminator step on (input, real) vs (input, fake) pairs, then one generator step."""
        hp = self.hparams
        x = self._fmt(batch[self.source])
        self._check_channels(x, self.source)
        y = batch[self.target]
        y = self._fmt(self._centre(y) if y.shape[1] > 1 else y)
        opt_g, opt_d = self.optimizers()
        self._record_windows(batch)
        self._track_target(y, batch.get("body_mask"), batch["window"][self.target])

        fake = self.generator(x)

        self.toggle_optimizer(opt_d)
        fake_pair = self.pool.query(torch.cat([x, fake], 1))
        loss_d = self.adversarial.discriminator_loss(self.discriminator(torch.cat([x, y], 1)), self.discriminator(fake_pair))
        self._step(opt_d, loss_d)
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        adv = self.adversarial.generator_loss(self.discriminator(torch.cat([x, fake], 1)))
        if hp.lesion_weight != 1.0 and "lesion_mask" in batch:
            rec = lesion_weighted_l1(fake, y, batch["lesion_mask"], lesion_weight=hp.lesion_weight)
        else:
            rec = l1_loss(fake, y)
        loss_g = adv + hp.lambda_l1 * rec
        perc = x.new_zeros(())
        if self.lpips is not None:
            perc = self.lpips(fake, y)
            loss_g = loss_g + hp.lambda_lpips * perc
        self._step(opt_g, loss_g)
        self.untoggle_optimizer(opt_g)

        if self.ema is not None:
            self.ema.update(self.generator)
        self._log_train({"train/loss_g": loss_g, "train/loss_d": loss_d, "train/adv": adv, "train/l1": rec,
                         "train/lpips": perc}, x.shape[0])
        return loss_g.detach()
