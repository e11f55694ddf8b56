"""StyleGAN2 (Karras et al. 2020) for pathology tiles, class-conditional or not, with ADA, as a LightningModule.

One training iteration, in the reference's order, each phase over the batch's chunks (``batch_gpu``) with one
optimiser step at the end:

1. G main: fakes from fresh latents (style mixing with probability ``style_mixing``), augmented, non-saturating loss.
2. G regularisation, every ``pl_interval`` iterations: path-length penalty on ``batch // pl_batch_shrink`` fakes,
   weighted by the interval; the running mean length ``pl_mean`` is a buffer (saved, all-reducible).
3. D main: logistic loss on augmented reals and (detached) fakes; ADA observes sign(D(real)).
4. D regularisation, every ``r1_interval`` iterations: R1 on the reals (before augmentation), weighted by the interval.

Lazy regularisation rescales Adam's lr and betas by ``c = interval / (interval + 1)`` (lr * c, beta ** c). After the
steps: ADA's p moves every ``d_augment.interval`` iterations, the generator EMA follows with a half-life of
``ema_kimg`` thousand images (``beta = 0.5 ** (batch / (ema_kimg * 1000))``, optionally ramped up), and the mapping
network's global and per-class ``w_avg`` follow the batch's w. Latents, noise, mixing cut-offs and augmentation come
from generators seeded by (seed, iteration, phase, chunk), so a resumed run draws exactly what an uninterrupted one
would. Batches are the tile datamodule's dicts (``image`` in [-1, 1], ``label``).
"""
from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from torch import Tensor, nn

from data.batches import EVAL_INDEX_KEY, is_padding
from gan.augment import AdaController, AdaptiveAugment, DiffAugment
from gan.losses import (
    d_logistic_fake,
    d_logistic_real,
    g_nonsaturating,
    path_length_penalty,
    r1_penalty,
    update_pl_mean,
)
from gan.metrics.ragged import agree_on
from gan.models.base import GANModule
from gan.models.config import StyleAugmentConfig, StyleNetConfig, StyleOptimConfig, StyleRegConfig, TileEvalConfig
from gan.nets.stylegan2 import Discriminator, Generator
from gan.style import seed_z

log = logging.getLogger("medsynth.stylegan2")

# streams of the per-iteration generators (one per phase, so phases never share draws)
_G_MAIN, _G_REG, _D_MAIN, _D_REG = 1, 2, 3, 4


class StyleGAN2(GANModule):
    """StyleGAN2 with lazy R1 and path-length regularisation, style mixing, a generator EMA and ADA.

    Args:
        resolution: tile size in pixels (linked from the datamodule's ``tile_size``), a power of 2 in [32, 1024].
        class_names: classes in label order (linked from the datamodule; [] or one class: unconditional).
        mpp: microns per pixel of the training tiles (linked from the datamodule; recorded for generation).
        img_channels: image channels (3 for H&E).
        network: generator/discriminator sizes.
        optim: Adam settings (both networks).
        regularization: R1, path length and style mixing.
        d_augment: the discriminator's augmentation: ADA / DiffAugment / none (tile flips and rotations are the
            datamodule's `augment`).
        ema_kimg: half-life of the generator EMA in thousands of images (20 at 256 px with batch 64 in the paper).
        ema_rampup: ramp the EMA half-life up to ``ema_rampup`` x the images seen so far (None: no ramp-up).
        batch_gpu: images per chunk inside a device's batch (gradients accumulated over the chunks; None: the whole
            batch in one chunk). The minibatch-stddev group works within a chunk.
        label_sampling: labels of the fakes: ``"uniform"`` over the classes (rare classes as often as common ones)
            or ``"data"`` (the labels of the real batch).
        total_kimg: stop after this many thousand real images (None: Lightning's max_epochs/max_steps decide).
        evaluation: sample grids and the per-class diversity figure of each validation.
        seed: seed of every random draw of training.
    """

    family = "StyleGAN2"

    def __init__(
        self,
        resolution: int = 256,
        class_names: list[str] | None = None,
        mpp: float | None = None,
        img_channels: int = 3,
        network: StyleNetConfig = StyleNetConfig(),
        optim: StyleOptimConfig = StyleOptimConfig(),
        regularization: StyleRegConfig = StyleRegConfig(),
        d_augment: StyleAugmentConfig = StyleAugmentConfig(),
        ema_kimg: float = 20.0,
        ema_rampup: float | None = None,
        batch_gpu: int | None = None,
        label_sampling: Literal["uniform", "data"] = "uniform",
        total_kimg: float | None = None,
        evaluation: TileEvalConfig = TileEvalConfig(),
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed, batch_gpu=batch_gpu)
        self.save_hyperparameters()
        net, self.optim = self.group("network", network), self.group("optim", optim)
        self.reg, self.aug_config = self.group("regularization", regularization), self.group("d_augment", d_augment)
        self.eval_config = self.group("evaluation", evaluation)
        if label_sampling not in ("uniform", "data"):
            raise ValueError(f"label_sampling must be 'uniform' or 'data', got {label_sampling!r}")
        self.class_names = list(class_names or [])
        self.num_classes = len(self.class_names) if len(self.class_names) > 1 else 0
        self.mpp = mpp
        self.generator = Generator(resolution=resolution, img_channels=img_channels, z_dim=net.z_dim, w_dim=net.w_dim,
                                   num_classes=self.num_classes, mapping_layers=net.mapping_layers,
                                   channel_base=net.channel_base, channel_max=net.channel_max,
                                   fused_modconv=net.fused_modconv)
        self.discriminator = Discriminator(resolution=resolution, img_channels=img_channels,
                                           num_classes=self.num_classes, channel_base=net.channel_base,
                                           channel_max=net.channel_max, mbstd_group=net.mbstd_group,
                                           mapping_layers=net.mapping_layers)  # the label mapping, as the reference
        self.init_ema(self.generator, 0.5)  # the decay of each update is computed from ema_kimg
        self.augment_pipe: nn.Module | None = None
        self.ada: AdaController | None = None
        if self.aug_config.kind == "ada":
            self.augment_pipe = AdaptiveAugment(p=self.aug_config.initial_p)
            self.ada = AdaController(target=self.aug_config.target, interval=self.aug_config.interval,
                                     speed_kimg=self.aug_config.speed_kimg)
        elif self.aug_config.kind == "diffaugment":
            self.augment_pipe = DiffAugment()
        self.register_buffer("pl_mean", torch.zeros(()))
        self.register_buffer("nimg", torch.zeros((), dtype=torch.float64))  # real images seen (all ranks)

    # -- setup ----------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Adam for G and D with the lazy-regularisation rescaling of lr and betas."""
        def adam(params: Any, interval: int) -> torch.optim.Optimizer:
            c = interval / (interval + 1) if interval > 0 else 1.0
            b1, b2 = self.optim.betas
            return torch.optim.Adam(params, lr=self.optim.lr * c, betas=(b1 ** c, b2 ** c), eps=self.optim.eps)

        pl = self.reg.pl_interval if self.reg.pl_weight > 0 else 0
        r1 = self.reg.r1_interval if self.reg.r1_gamma > 0 else 0
        return [adam(self.generator.parameters(), pl), adam(self.discriminator.parameters(), r1)]

    @property
    def inference_generator(self) -> Generator:
        """The network used for sampling, evaluation and export: the EMA generator."""
        return self.ema.module if self.ema is not None else self.generator

    # -- randomness -----------------------------------------------------------------------------------
    def phase_generator(self, phase: int, chunk: int) -> torch.Generator:
        """A torch generator on the module's device seeded by (seed, iteration, phase, global chunk index).

        The global chunk index is ``rank * chunks + chunk``, so the union of the ranks' draws at an iteration is what
        one process accumulating all the chunks draws.

        Args:
            phase: which phase of the iteration (G main, G reg, D main, D reg).
            chunk: the chunk within this device's batch.
        """
        g = torch.Generator(device=self.device)
        g.manual_seed(self.derived_seed(self._iteration, phase, self.slot(chunk)) % 2**63)
        return g

    def fake_labels(self, n: int, real_labels: Tensor, gen: torch.Generator) -> Tensor | None:
        """Labels of ``n`` fakes: uniform over the classes, or the real batch's labels (None: unconditional)."""
        if not self.num_classes:
            return None
        if self.hparams.label_sampling == "data":
            return real_labels[:n].to(self.device)
        return torch.randint(self.num_classes, (n,), generator=gen, device=self.device)

    def generate(self, n: int, labels: Tensor | None, gen: torch.Generator, *, mixing: bool) -> tuple[Tensor, Tensor]:
        """``n`` training fakes and their ws: latents from ``gen``, style mixing, random noise from ``gen``.

        Args:
            n: number of images.
            labels: their labels (None: unconditional).
            gen: the phase's generator.
            mixing: apply style mixing (with probability ``regularization.style_mixing``).
        """
        G = self.generator
        z = torch.randn(n, G.z_dim, generator=gen, device=self.device)
        ws = G.mapping(z, labels)
        if mixing and self.reg.style_mixing > 0:
            z2 = torch.randn(n, G.z_dim, generator=gen, device=self.device)
            draw = torch.rand((), generator=gen, device=self.device)
            cut = int(torch.randint(1, G.num_ws, (), generator=gen, device=self.device))
            if float(draw) < self.reg.style_mixing:
                ws = torch.cat([ws[:, :cut], G.mapping(z2, labels)[:, cut:]], dim=1)
        return G.synthesis(ws, noise_mode="random", generator=gen), ws

    def augmented(self, images: Tensor, gen: torch.Generator) -> Tensor:
        """The discriminator's view of ``images``: through ADA/DiffAugment (identity when off)."""
        return self.augment_pipe(images, generator=gen) if self.augment_pipe is not None else images

    # -- training -------------------------------------------------------------------------------------
    def _split(self, batch: dict[str, Any]) -> list[tuple[Tensor, Tensor]]:
        images, labels = batch["image"], batch["label"]
        labels = (labels if isinstance(labels, Tensor) else torch.as_tensor(labels)).to(images.device)
        return [(c["image"], c["label"]) for c in self.chunks({"image": images, "label": labels})]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """G main, [G reg], D main, [D reg], then ADA, EMA and w_avg (see the module docstring)."""
        chunks = self._split(batch)
        opt_g, opt_d = self.optimizers()
        it, n_chunks = self._iteration, len(chunks)
        reals_labels = [(x, c if self.num_classes else None) for x, c in chunks]
        zero = chunks[0][0].new_zeros(())
        logs: dict[str, Tensor] = {}

        with self.optimizing(opt_g):  # 1. G main
            loss_g = zero
            w_sums: list[tuple[Tensor, Tensor]] = []
            for ci, (real, _) in enumerate(reals_labels):
                gen = self.phase_generator(_G_MAIN, ci)
                fake_lab = self.fake_labels(real.shape[0], chunks[ci][1], gen)
                fake, ws = self.generate(real.shape[0], fake_lab, gen, mixing=True)
                loss = g_nonsaturating(self.discriminator(self.augmented(fake, gen), fake_lab))
                self.manual_backward(loss / n_chunks)
                loss_g = loss_g + loss.detach() / n_chunks
                w_sums.append(self.generator.mapping.w_stats(ws, fake_lab))
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
        logs["train/loss_g"] = loss_g

        if self.reg.pl_weight > 0 and self.reg.pl_interval > 0 and it % self.reg.pl_interval == 0:  # 2. G reg
            with self.optimizing(opt_g):
                pen_total, lengths = zero, []
                for ci, (real, _) in enumerate(reals_labels):
                    gen = self.phase_generator(_G_REG, ci)
                    n = max(1, real.shape[0] // self.reg.pl_batch_shrink)
                    fake, ws = self.generate(n, self.fake_labels(n, chunks[ci][1], gen), gen, mixing=True)
                    pl = path_length_penalty(fake, ws, self.pl_mean, decay=self.reg.pl_decay,
                                             weight=self.reg.pl_weight, generator=gen)
                    self.manual_backward(pl.penalty * self.reg.pl_interval / n_chunks)
                    pen_total = pen_total + pl.penalty.detach() / n_chunks
                    lengths.append(pl.mean_length)
                opt_g.step()
                opt_g.zero_grad(set_to_none=True)
            update_pl_mean(self.pl_mean, self.all_mean(torch.stack(lengths).mean()), decay=self.reg.pl_decay)
            logs["train/pl_penalty"] = pen_total

        with self.optimizing(opt_d):  # 3. D main
            loss_d, sign_real = zero, zero
            for ci, (real, lab) in enumerate(reals_labels):
                gen = self.phase_generator(_D_MAIN, ci)
                fake_lab = self.fake_labels(real.shape[0], chunks[ci][1], gen)
                with torch.no_grad():
                    fake, _ = self.generate(real.shape[0], fake_lab, gen, mixing=True)
                logits_fake = self.discriminator(self.augmented(fake, gen), fake_lab)
                logits_real = self.discriminator(self.augmented(real, gen), lab)
                loss = d_logistic_fake(logits_fake) + d_logistic_real(logits_real)
                self.manual_backward(loss / n_chunks)
                loss_d = loss_d + loss.detach() / n_chunks
                sign_real = sign_real + logits_real.detach().sign().mean() / n_chunks
                if self.ada is not None:
                    self.ada.observe(logits_real.detach())
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
        logs.update({"train/loss_d": loss_d, "train/sign_real": sign_real})

        if self.reg.r1_gamma > 0 and self.reg.r1_interval > 0 and it % self.reg.r1_interval == 0:  # 4. D reg
            with self.optimizing(opt_d):
                r1_total = zero
                for ci, (real, lab) in enumerate(reals_labels):
                    gen = self.phase_generator(_D_REG, ci)
                    real_in = real.detach().requires_grad_(True)
                    logits = self.discriminator(self.augmented(real_in, gen), lab)
                    pen = r1_penalty(real_in, logits, gamma=self.reg.r1_gamma)
                    self.manual_backward(pen * self.reg.r1_interval / n_chunks)
                    r1_total = r1_total + pen.detach() / n_chunks
                opt_d.step()
                opt_d.zero_grad(set_to_none=True)
            logs["train/r1_penalty"] = r1_total

        self._after_steps(batch["image"].shape[0], w_sums, logs)
        self.log_losses(logs, batch["image"].shape[0])
        return loss_g

    def _after_steps(self, batch_size: int, w_sums: list[tuple[Tensor, Tensor]], logs: dict[str, Tensor]) -> None:
        """ADA p, the images counter, the generator EMA and the tracked w averages, from all-reduced statistics."""
        global_batch = batch_size * self.world
        if self.ada is not None and self.augment_pipe is not None:
            if (self._iteration + 1) % self.aug_config.interval == 0:
                for buf in (self.ada.sign_sum, self.ada.count):
                    buf.copy_(self.all_sum(buf))
                rt = self.ada.update(self.augment_pipe.p, batch_size=global_batch)
                if rt is not None:
                    logs["train/ada_rt"] = rt.detach()
            logs["train/ada_p"] = self.augment_pipe.p.detach().clone()
        self.nimg += global_batch
        sums = self.all_sum(torch.stack([s for s, _ in w_sums]).sum(0))
        counts = self.all_sum(torch.stack([c for _, c in w_sums]).sum(0))
        self.generator.mapping.update_w_avg(sums, counts)
        ema_nimg = self.hparams.ema_kimg * 1000
        if self.hparams.ema_rampup is not None:
            ema_nimg = min(ema_nimg, float(self.nimg) * self.hparams.ema_rampup)
        if self.ema is not None:
            self.ema.update(self.generator, decay=0.5 ** (global_batch / max(ema_nimg, 1e-8)))
        logs["train/kimg"] = (self.nimg / 1000).float()
        total = self.hparams.total_kimg
        if total is not None and self._trainer is not None and float(self.nimg) >= total * 1000:
            self.trainer.should_stop = True

    # -- sampling and validation ----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, seeds: list[int], label: int | None = None, psi: float = 1.0) -> Tensor:
        """Tiles of the EMA generator, one per seed (z from ``torch.Generator().manual_seed(seed)``), in [-1, 1].

        Args:
            seeds: one tile per seed.
            label: class index (conditional models).
            psi: truncation towards the class's (or the global) average w.
        """
        G = self.inference_generator
        lab = None if not self.num_classes else torch.full((len(seeds),), int(label or 0), dtype=torch.long)
        return G(self._seed_latents(G, seeds), None if lab is None else lab.to(self.device), psi=psi,
                 noise_mode="const").clamp(-1, 1)

    def sample_grid(self) -> Tensor:
        """uint8 (H, W, 3) grid: one row per class (one row when unconditional) of ``grid_seeds`` tiles."""
        cfg = self.eval_config
        rows = [self.sample(list(range(cfg.grid_seeds)), label=k, psi=cfg.truncation)
                for k in range(max(1, self.num_classes))]
        grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # (3, rows*H, cols*W)
        return ((grid + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu()

    def _swd_metric(self) -> Any:
        from gan.metrics import SlicedWassersteinDistance

        cfg = self.eval_config
        return SlicedWassersteinDistance(patches_per_image=cfg.swd_patches, projections=cfg.swd_projections,
                                         num_classes=self.num_classes or None,
                                         class_names=self.class_names or None).to(self.device)

    def on_validation_epoch_start(self) -> None:
        """Start collecting real tiles per class for the diversity figure, and the SWD of this validation."""
        super().on_validation_epoch_start()
        self._val_real: dict[int, list[tuple[int, Tensor]]] = {}  # class -> (position in the split, tile)
        self._swd_seen = 0
        self._val_counted = 0
        use = self.eval_config.swd_tiles > 0
        # fixed metrics, not submodules (kept out of checkpoints and of the trainable/frozen bookkeeping)
        object.__setattr__(self, "_swd", self._swd_metric() if use else None)
        object.__setattr__(self, "_swd_floor", self._swd_metric() if use else None)
        object.__setattr__(self, "_prdc", self._prdc_metric() if use and self.eval_config.prdc_extractor else None)

    def _prdc_metric(self) -> Any:
        from gan.metrics import PrecisionRecallDensityCoverage
        from gan.metrics.features.factory import build_extractor

        cfg = self.eval_config
        if getattr(self, "_prdc_net", None) is None:  # built once (weights read once), kept out of checkpoints
            object.__setattr__(self, "_prdc_net", build_extractor(cfg.prdc_extractor, cfg.prdc_weights).eval())
        return PrecisionRecallDensityCoverage(num_classes=self.num_classes or None,
                                              class_names=self.class_names or None,
                                              extractor=self._prdc_net.to(self.device)).to(self.device)

    @torch.no_grad()
    def fakes_like(self, labels: Tensor, seeds: list[int]) -> Tensor:
        """EMA-generator tiles for per-sample ``labels`` (ignored when unconditional), one z per seed, in [-1, 1].

        Args:
            labels: (N,) class indices.
            seeds: N seeds.
        """
        G = self.inference_generator
        lab = labels.to(self.device).long() if self.num_classes else None
        return G(self._seed_latents(G, seeds), lab, noise_mode="const").clamp(-1, 1)

    def _seed_latents(self, G: Generator, seeds: list[int]) -> Tensor:
        """The latents of ``seeds`` by gan.style's seed rule (generate, mix and export use it too), on the module's
        device in the generator's dtype (float64 under precision 64-true)."""
        return seed_z(seeds, G.z_dim).to(self.device, dtype=next(G.parameters()).dtype)

    def _eval_indices(self, batch: dict[str, Any]) -> list[int]:
        """Positions of the batch's tiles in the validation split (``eval_index`` of the project's evaluation loader;
        a plain loader: counted per rank), so the tiles chosen and the fakes' seeds do not depend on the ranks."""
        n = batch["image"].shape[0]
        if EVAL_INDEX_KEY in batch:
            idx = batch[EVAL_INDEX_KEY]
            return [int(i) for i in (idx.tolist() if isinstance(idx, Tensor) else idx)]
        start = self.global_rank * 10**5 + self._val_counted
        self._val_counted += n
        return list(range(start, start + n))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Keep the real tiles of the diversity figure and update the SWD (and PRDC) with the first ``swd_tiles``
        tiles of the split, each beside the fake of seed ``10**6 + its position``; no per-step collective. A rank's
        padding batch (fewer validation tiles than ranks) is skipped."""
        if is_padding(batch):
            return
        need = self.eval_config.diversity_tiles
        labels = batch["label"].tolist() if isinstance(batch["label"], Tensor) else list(batch["label"])
        index = self._eval_indices(batch)
        for img, k, i in zip(batch["image"], labels, index):
            kept = self._val_real.setdefault(int(k) if self.num_classes else 0, [])
            if len(kept) < need:  # this rank's first tiles of the class: they include the split's first ones
                kept.append((i, img.detach().cpu()))
        take = torch.tensor([i < self.eval_config.swd_tiles for i in index], dtype=torch.bool)
        if getattr(self, "_swd", None) is None or not bool(take.any()):
            return
        real = batch["image"][take.to(batch["image"].device)]
        chosen = [i for i, t in zip(index, take.tolist()) if t]
        lab = torch.as_tensor([k for k, t in zip(labels, take.tolist()) if t], device=self.device).long()
        lab_or_none = lab if self.num_classes else None
        fake = self.fakes_like(lab, [10**6 + i for i in chosen])  # the same tiles at every validation
        self._swd.update(real, real=True, labels=lab_or_none)
        self._swd.update(fake, real=False, labels=lab_or_none)
        if self._prdc is not None:
            self._prdc.update(real, real=True, labels=lab_or_none)
            self._prdc.update(fake, real=False, labels=lab_or_none)
        # the floor: the real tiles against each other, per class, in two halves drawn by a hash of their position
        # (not its parity, which a split ordered by class would align with the labels)
        odd = torch.tensor([_half(i) for i in chosen], dtype=torch.bool, device=real.device)
        for part, is_real in ((~odd, True), (odd, False)):
            if bool(part.any()):
                self._swd_floor.update(real[part], real=is_real, labels=lab[part] if self.num_classes else None)
        self._swd_seen += len(chosen)

    def _diversity_reals(self) -> dict[int, list[Tensor]]:
        """The split's first ``diversity_tiles`` real tiles of each class, gathered from every rank (every rank
        calls this)."""
        merged: dict[int, list[tuple[int, Tensor]]] = {}
        for kept in agree_on(self._val_real):
            for k, items in kept.items():
                merged.setdefault(int(k), []).extend(items)
        need = self.eval_config.diversity_tiles
        return {k: [t for _, t in sorted(items, key=lambda it: it[0])[:need]] for k, items in merged.items()}

    def on_validation_epoch_end(self) -> None:
        """Per-class diversity (mean pairwise LPIPS) of generated tiles beside the real tiles', with a warning when
        a class collapses."""
        if getattr(self, "_lpips", None) is None:
            from gan.losses import LPIPSLoss

            with torch.random.fork_rng(devices=[]):  # random heads (no weights file): the same on every rank and run
                torch.manual_seed(0)
                lpips = LPIPSLoss(pretrained=self.eval_config.lpips_pretrained, reduction="none").eval()
            if not self.eval_config.lpips_pretrained:  # random heads: keep them non-negative, as LPIPS's own are,
                for p in lpips.lpips.lins.parameters():  # so the random distance stays a distance
                    p.data.abs_()
            object.__setattr__(self, "_lpips", lpips)  # not a submodule: a fixed metric, kept out of checkpoints
        lpips = self._lpips.to(self.device)
        n = self.eval_config.diversity_tiles
        values: dict[str, Tensor] = {}
        gaps: list[Tensor] = []
        reals = self._diversity_reals()
        for k in range(max(1, self.num_classes)):
            name = self.class_names[k] if self.num_classes else "all"
            fake = self.sample(list(range(1000, 1000 + n)), label=k)
            real = reals.get(k, [])
            d_fake = mean_pairwise(lpips, fake)
            values[f"val/diversity_{name}"] = d_fake
            if len(real) >= 2:
                d_real = mean_pairwise(lpips, torch.stack(real).to(self.device))
                values[f"val/diversity_real_{name}"] = d_real
                ratio = float(d_fake / d_real.clamp_min(1e-8))
                gaps.append((1 - d_fake / d_real.clamp_min(1e-8)).clamp_min(0))
                if ratio < self.eval_config.diversity_warning and self.global_rank == 0:
                    log.warning("class %s: generated diversity %.3g is %.0f%% of the real tiles' %.3g (collapse?)",
                                name, float(d_fake), 100 * ratio, float(d_real))
        if gaps:  # 0 when every class is at least as diverse as its real tiles: a sweep's collapse alarm
            values["val/diversity_gap"] = torch.stack(gaps).mean()
        self.log_dict({k: v.float() for k, v in values.items()})
        seen = self.all_sum(torch.tensor(float(self._swd_seen), device=self.device))  # the same on every rank
        if getattr(self, "_swd", None) is not None and float(seen) >= 2:  # compute() syncs: every rank or none
            scores = {**self._swd.compute().scalars("val/swd"), **self._swd_floor.compute().scalars("val/swd_floor")}
            if self._prdc is not None:
                scores.update(self._prdc.compute().scalars("val/prdc/"))
            self.log_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in scores.items()})

    # -- checkpoints ----------------------------------------------------------------------------------
    def checkpoint_meta(self) -> dict[str, Any]:
        """Family and layout, plus what generation records about the tiles."""
        return {**super().checkpoint_meta(), "class_names": list(self.class_names), "mpp": self.mpp,
                "tile_size": int(self.hparams.resolution)}


def _half(position: int) -> bool:
    """Which half of the SWD floor the real tile at ``position`` of the split joins (Knuth's multiplicative hash)."""
    return bool(((int(position) * 2654435761) & 0xFFFFFFFF) >> 31)


@torch.no_grad()
def mean_pairwise(lpips: nn.Module, images: Tensor) -> Tensor:
    """Mean LPIPS over all pairs of ``images`` (N >= 2), the diversity of a set.

    Args:
        lpips: per-pair LPIPS (``reduction="none"``) on images in [-1, 1].
        images: (N, 3, H, W).
    """
    n = images.shape[0]
    i, j = torch.triu_indices(n, n, offset=1)
    if i.numel() == 0:
        return images.new_zeros(())
    return lpips(images[i], images[j]).reshape(-1).mean()


__all__ = ["StyleGAN2", "mean_pairwise"]
