"""``GANModule``: what every GAN family of the project shares, and nothing about the data it trains on.

* Manual optimisation: :meth:`GANModule.optimizing` toggles an optimiser around its pass and
  :meth:`GANModule.step` backpropagates through ``manual_backward`` (never a bare ``loss.backward()``, which would
  skip mixed precision and DDP gradient sync), steps and clears the gradients.
* Randomness as a pure function of (seed, iteration, global chunk): :meth:`GANModule.seed_rng` seeds torch's global
  generator before every training batch and chunk, so dropout masks and any other draw do not depend on what ran
  before (validation, a data loader starting, a resume), ranks never repeat each other's stream, and the ranks'
  draws together are what one process accumulating all the chunks draws.
* Global batch semantics under DDP: the datamodule's batch is the global one; each rank gets ``batch / world`` and
  cuts it into chunks of ``batch_gpu`` (:meth:`GANModule.chunks`), gradients accumulated over the chunks and
  synchronised once per optimiser step by the strategy (:mod:`gan.models.strategy`, checked in :meth:`setup`).
  Global chunk ``rank * chunks_per_rank + chunk`` ("slot") names every per-chunk stream and state.
* Loss logging without host syncs: :meth:`GANModule.log_losses` sums detached tensors and logs ``<name>_step`` every
  ``log_every_n_steps`` iterations plus ``<name>_epoch`` means.
* A generator EMA (:class:`gan.models.ema.EMA`), Adam with the constant-then-linear-decay schedule.
* Exact resume: the iteration counter, the running loss sums of the epoch and each family's extra state (image
  pools) travel in the checkpoint, in plain tensors and builtins (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Any, Iterable, Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn

from gan.models.config import OptimConfig, as_config, config_dict
from gan.models.ema import EMA
from gan.models.strategy import broadcast_tensors, check_strategy

#: Version of the checkpoint layout written by :meth:`GANModule.on_save_checkpoint` (1: flat hyperparameters).
CHECKPOINT_FORMAT = 2


def linear_decay(epochs_constant: int, epochs_decay: int):
    """LR factor per epoch: 1 for ``epochs_constant`` epochs, then linearly to 0 over ``epochs_decay`` (pix2pix), and 0
    after that (the reference formula turns negative past the schedule; a run trained longer must not ascend).

    Args:
        epochs_constant: epochs at the initial learning rate.
        epochs_decay: epochs of linear decay after that.
    """
    def factor(epoch: int) -> float:
        return max(0.0, 1.0 - max(0, epoch + 1 - epochs_constant) / float(epochs_decay + 1))
    return factor


class GANModule(L.LightningModule):
    """Base of the GAN LightningModules: subclasses build their networks and write ``training_step``.

    Args:
        seed: seed of every random draw of training (dropout, image pools, latents): each iteration's draws are a
            function of (seed, iteration, global chunk), so a resumed run and an uninterrupted one draw the same,
            and so do 1 and N devices with the same global batch and ``batch_gpu``.
        batch_gpu: samples per chunk of a device's batch (gradients accumulated over the chunks, one optimiser
            step per network and iteration; None: the device's whole batch in one chunk).
    """

    #: Name stored in checkpoints; the checkpoint loader's allow-list maps it back to the class.
    family: str = ""

    def __init__(self, *, seed: int = 0, batch_gpu: int | None = None) -> None:
        super().__init__()
        if batch_gpu is not None and batch_gpu < 1:
            raise ValueError(f"batch_gpu must be >= 1, got {batch_gpu}")
        self.automatic_optimization = False
        self.seed = int(seed)
        self.batch_gpu = batch_gpu
        self.chunks_per_rank = 1
        self.ema: EMA | None = None
        self._iteration = 0
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_count = 0
        self._loss_epoch = -1

    def group(self, name: str, value: Any) -> Any:
        """Resolve the config group argument ``name`` and store it in the hyperparameters as a plain dict.

        A dict (from a checkpoint, or a partial one given in Python) overrides the fields it names of THIS
        family's default for the argument (read from the constructor's signature), so
        ``Pix2Pix(generator={"features": 16})`` keeps pix2pix's U-Net, batch norm and dropout.

        Args:
            name: constructor argument name (``generator``, ``optim``, ...).
            value: the argument's value: a group instance, a dict or None.
        """
        default = inspect.signature(type(self).__init__).parameters[name].default
        cfg = as_config(type(default), value, default=default)
        self.hparams[name] = config_dict(cfg)
        return cfg

    # -- randomness ---------------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        """Training batches completed so far (over all epochs; restored on resume). Lightning's ``global_step``
        counts optimiser steps instead: two per iteration for a generator + discriminator module."""
        return self._iteration

    def derived_seed(self, *keys: int) -> int:
        """A 63-bit seed that is a pure function of (``seed``, ``keys``).

        Args:
            keys: integers that name the stream (e.g. iteration, rank, chunk).
        """
        state = np.random.SeedSequence([self.seed, *[int(k) for k in keys]]).generate_state(2, dtype=np.uint32)
        return int(state[0]) << 31 ^ int(state[1])

    def slot(self, chunk: int = 0) -> int:
        """The global index of this rank's chunk ``chunk``: ``rank * chunks_per_rank + chunk``.

        Args:
            chunk: the chunk within this device's batch.
        """
        return self.global_rank * self.chunks_per_rank + int(chunk)

    def seed_rng(self, chunk: int = 0) -> None:
        """Seed torch's global generators (CPU and CUDA) for this iteration and global chunk.

        Called before every training batch with ``chunk=0``; a module that splits a batch into chunks calls it again
        per chunk, so global chunk ``s`` draws the same whichever process runs it.

        Args:
            chunk: index of the part of this device's batch about to be processed.
        """
        torch.manual_seed(self.derived_seed(self._iteration, 0, self.slot(chunk)))

    # -- batches and ranks --------------------------------------------------------------------------
    @property
    def world(self) -> int:
        """Number of training processes (1 without a Trainer)."""
        return max(1, int(self.trainer.world_size)) if self._trainer is not None else 1

    def chunks(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        """The device's batch cut into chunks of ``batch_gpu`` samples (tensors and lists cut; other values
        shared); sets :attr:`chunks_per_rank`, which every rank must agree on.

        Args:
            batch: a collated dict batch.
        """
        n = next(v.shape[0] if isinstance(v, torch.Tensor) else len(v) for v in batch.values()
                 if isinstance(v, (list, tuple)) or (isinstance(v, torch.Tensor) and v.dim() > 0))
        size = self.batch_gpu or n
        if n % size:
            raise ValueError(f"a device batch of {n} cannot be cut into chunks of batch_gpu={size}: make the global "
                             f"batch a multiple of devices x batch_gpu")

        def part(v: Any, i: int) -> Any:
            if isinstance(v, dict):
                return {k: part(x, i) for k, x in v.items()}
            if (isinstance(v, (list, tuple)) and len(v) == n) or (isinstance(v, torch.Tensor) and v.dim() > 0
                                                                   and v.shape[0] == n):
                return v[i:i + size]
            return v
        self.chunks_per_rank = n // size
        return [{k: part(v, i) for k, v in batch.items()} for i in range(0, n, size)]

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over the ranks (itself on one device).

        Args:
            x: a tensor of the same shape on every rank.
        """
        if self.world == 1:
            return x
        return self.trainer.strategy.reduce(x.clone(), reduce_op="sum")

    def all_mean(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` averaged over the ranks.

        Args:
            x: a tensor of the same shape on every rank.
        """
        return self.all_sum(x) / self.world

    def sync_norm_buffers(self) -> None:
        """Give every rank rank 0's running statistics of its normalisation layers (batch norm): each rank
        normalises its own chunks, so they drift apart. Called before evaluation and checkpoints (every rank)."""
        if self.world == 1:
            return
        stats = [b for m in self.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
                 for b in m.buffers()]
        broadcast_tensors(stats)

    def setup(self, stage: str) -> None:
        """Lightning hook: refuse a strategy known to break GAN training (see :mod:`gan.models.strategy`).

        Under DDP, also silences Lightning's advice to log this module's epoch-level values with ``sync_dist=True``:
        they are already the same on every rank (torchmetrics ``compute()`` syncs on every rank; the training
        losses' epoch means are all-reduced), and a mean over ranks would only add rounding.
        """
        if stage == "fit" and self._trainer is not None:
            check_strategy(self.trainer)
        if self._trainer is not None and self.world > 1:
            warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('(train|val|test)/",
                                    category=PossibleUserWarning)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Lightning hook: seed the random draws of this iteration."""
        self.seed_rng(0)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Lightning hook: count the iteration."""
        self._iteration += 1

    # -- optimisation -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def optimizing(self, optimizer: Any) -> Iterator[None]:
        """Make only ``optimizer``'s parameters require gradients for the enclosed pass (Lightning's
        ``toggle_optimizer``), restoring them afterwards.

        Args:
            optimizer: the (Lightning-wrapped) optimiser of the pass.
        """
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def step(self, optimizer: Any, loss: torch.Tensor | None = None) -> None:
        """Backpropagate ``loss`` through ``manual_backward`` (when given: gradients accumulated over chunks are
        already there otherwise), step ``optimizer`` (the strategy syncs its gradients first) and clear them.

        Args:
            optimizer: the optimiser whose parameters ``loss`` trains.
            loss: scalar loss, or None after per-chunk ``manual_backward`` calls.
        """
        if loss is not None:
            self.manual_backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @staticmethod
    def adam(params: Iterable[nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
        """Adam with the group's learning rate and betas.

        Args:
            params: parameters to train.
            optim: the optimiser group.
        """
        return torch.optim.Adam(params, lr=optim.lr, betas=tuple(optim.betas))

    @staticmethod
    def decay_schedules(optim: OptimConfig, *optimizers: torch.optim.Optimizer) -> list[dict[str, Any]]:
        """Constant-then-linear-decay LR schedules, brought to the current epoch by :meth:`on_train_epoch_start`.

        Args:
            optim: the optimiser group (``epochs_constant``, ``epochs_decay``).
            optimizers: the optimisers to schedule.
        """
        f = linear_decay(optim.epochs_constant, optim.epochs_decay)
        return [{"scheduler": torch.optim.lr_scheduler.LambdaLR(o, f), "interval": "epoch"} for o in optimizers]

    def init_ema(self, network: nn.Module, decay: float) -> None:
        """Keep an exponential moving average of ``network`` (no-op for ``decay == 0``).

        Args:
            network: the generator to average.
            decay: averaging factor per update.
        """
        self.ema = EMA(network, decay=decay) if decay > 0 else None

    # -- logging ------------------------------------------------------------------------------------
    def log_losses(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log training losses as ``<name>_step`` every ``log_every_n_steps`` iterations and ``<name>_epoch`` means.

        What ``self.log(on_step=True, on_epoch=True)`` gives, but the per-step work is one detached tensor sum per
        loss, with no host synchronisation: ``self.log`` costs about 1 ms per call, over 10% of a small CPU step
        and far more of a GPU step. ``loss_g`` goes to the progress bar at the same interval.

        Args:
            values: scalar losses of this batch (``train/...`` names).
            batch_size: samples in the batch (weights the epoch mean).
        """
        for k, v in values.items():
            v = v.detach() * batch_size
            self._loss_sums[k] = self._loss_sums[k] + v if k in self._loss_sums else v
        self._loss_count += batch_size
        trainer = self._trainer
        every = max(int(getattr(trainer, "log_every_n_steps", 1) or 1), 1) if trainer is not None else 1
        if trainer is None or trainer.fast_dev_run or (self._iteration + 1) % every == 0:
            step = {f"{k}_step": v.detach().float() for k, v in values.items()}
            self.log_dict(step, on_step=True, on_epoch=False, batch_size=batch_size)
            if "train/loss_g" in values:
                self.log("loss_g", values["train/loss_g"].detach().float(), prog_bar=True, logger=False,
                         on_step=True, on_epoch=False, batch_size=batch_size)

    def on_train_epoch_start(self) -> None:
        """Drop loss sums restored from a checkpoint of an already finished epoch, and bring the per-epoch LR
        schedules to this epoch (idempotent, so a resumed run gets the same learning rate as an uninterrupted one
        whichever hook wrote its checkpoint)."""
        if self._loss_epoch != self.current_epoch:
            self._loss_sums, self._loss_count = {}, 0
        self._loss_epoch = self.current_epoch
        schedulers = self.lr_schedulers()
        for s in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers is not None else []:
            while s.last_epoch < self.current_epoch:
                s.step()

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training losses, over the samples of every rank (under DDP each rank holds
        its own chunks' sums; they are all-reduced, so every rank logs the single process's mean)."""
        if self._loss_count > 0:
            keys = sorted(self._loss_sums)  # the same losses on every rank: one schedule of lazy regularisation
            sums = torch.stack([self._loss_sums[k].detach().double() for k in keys]
                               + [torch.tensor(float(self._loss_count), dtype=torch.float64, device=self.device)])
            sums = self.all_sum(sums)
            self.log_dict({f"{k}_epoch": (sums[i] / sums[-1]).float() for i, k in enumerate(keys)},
                          on_step=False, on_epoch=True)
        self._loss_sums, self._loss_count = {}, 0

    # -- resume -------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Family-specific state for the checkpoint beyond parameters and buffers (e.g. image pools), as tensors
        and builtins. Subclasses extend it and :meth:`load_extra_state`."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned.

        Args:
            state: the stored dict.
        """

    def checkpoint_meta(self) -> dict[str, Any]:
        """What the checkpoint loader reads before building the module: the family and the layout version."""
        return {"family": self.family or type(self).__name__, "format": CHECKPOINT_FORMAT}

    def run_record(self) -> dict[str, Any] | None:
        """The logger's run (save_dir, name, id), so ``medsynth fit --ckpt_path`` continues the same run."""
        logger = self.logger if self._trainer is not None else None
        if logger is None or getattr(logger, "save_dir", None) is None:
            return None
        return {"save_dir": str(logger.save_dir), "name": str(logger.name), "id": str(logger.version)}

    def on_validation_epoch_start(self) -> None:
        """Lightning hook (every rank): the evaluation sees rank 0's normalisation statistics on every rank."""
        self.sync_norm_buffers()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the family, the iteration, the epoch's running loss sums, the run and the family's extra state.

        Lightning calls this on every rank (rank 0 writes): per-rank state is gathered here, and the normalisation
        statistics are made rank 0's on every rank, so a resume continues as the uninterrupted run does."""
        self.sync_norm_buffers()
        checkpoint["medsynth"] = {**self.checkpoint_meta(), "iteration": self._completed_iterations(checkpoint),
                                  "run": self.run_record(),
                                  "loss_sums": {k: v.detach().cpu() for k, v in self._loss_sums.items()},
                                  "loss_count": self._loss_count, "loss_epoch": self._loss_epoch,
                                  "extra": self.extra_state()}
        self._mark_unfinished_epoch(checkpoint)

    def _completed_iterations(self, checkpoint: dict[str, Any]) -> int:
        """Training batches whose step has finished, as Lightning's loop counts them: a checkpoint written by a
        callback's ``on_train_batch_end`` runs before this module's own hook counts the batch."""
        loops = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        progress = loops.get("epoch_loop.batch_progress")
        return int(progress["total"]["processed"]) if progress else self._iteration

    def _mark_unfinished_epoch(self, checkpoint: dict[str, Any]) -> None:
        """A run stopped by ``max_steps`` in the middle of an epoch: Lightning counts that epoch as finished and would
        resume at the next one, skipping the rest of this epoch's batches. Record it as unfinished instead, so
        ``--ckpt_path`` continues with exactly the batches an uninterrupted run would have seen."""
        trainer = self._trainer
        loops = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        epochs, batches = loops.get("epoch_progress"), loops.get("epoch_loop.batch_progress")
        if trainer is None or not epochs or not batches:
            return
        done = int(batches["current"]["completed"])
        per_epoch = trainer.num_training_batches
        finished = epochs["current"]["completed"] == epochs["current"]["started"]
        if finished and 0 < done < per_epoch and not batches.get("is_last_batch", False):
            for scope in ("current", "total"):
                for key in ("completed", "processed"):
                    epochs[scope][key] = max(0, int(epochs[scope][key]) - 1)
            checkpoint["epoch"] = int(epochs["current"]["completed"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what :meth:`on_save_checkpoint` stored."""
        meta = checkpoint.get("medsynth") or {}
        self._iteration = int(meta.get("iteration", 0))
        self._loss_sums = {k: v.to(self.device) for k, v in (meta.get("loss_sums") or {}).items()}
        self._loss_count = int(meta.get("loss_count", 0))
        self._loss_epoch = int(meta.get("loss_epoch", -1))
        self.load_extra_state(meta.get("extra") or {})


__all__ = ["CHECKPOINT_FORMAT", "GANModule", "linear_decay"]
