"""Exact resume, the matrix of issue 10: CycleGAN and pix2pix (dropout and batch norm active, validation on),
resumed from an end-of-epoch checkpoint, from the mid-epoch one written when ``max_steps`` stops a run, and after a
kill, with 0 and 2 loader workers: final weights, optimiser states and the logged losses after the resume point
equal an uninterrupted run's bit for bit (CPU)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from gan.models import CycleGAN, Pix2Pix
from tests.helpers import cpu_trainer, volume_dm

EPOCHS, BATCHES = 3, 3  # 3 epochs of 3 batches; two optimiser steps (G, D) per batch
FAMILIES = {
    # dropout 0.5 and batch norm in both, so the random state and the BN statistics matter
    "cyclegan": (lambda: CycleGAN(generator={"features": 4, "n_blocks": 1, "norm": "batch", "dropout": 0.5},
                                  discriminator={"features": 4, "layers": 2}, pool_size=3,
                                  evaluation={"inference_batch": 32}),
                 dict(target="mr", paired=False)),
    "pix2pix": (lambda: Pix2Pix(generator={"features": 4, "num_downs": 6}, discriminator={"features": 4, "layers": 2},
                                pool_size=2, evaluation={"inference_batch": 32}),
                dict(target="pet", paired=True, mask_keys=["lesion_mask"], patch_size=(64, 64))),
}


class _Killed(RuntimeError):
    """Stands in for a killed job."""


class _Kill(Callback):
    def __init__(self, at_batch: int) -> None:
        self.at_batch = at_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.iteration >= self.at_batch:
            raise _Killed(f"killed after iteration {pl_module.iteration}")


class _Losses(Logger):
    """Records every logged training loss with its step."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str, float]] = []

    @property
    def name(self) -> str:
        return "losses"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.records += [(int(step), k, float(v)) for k, v in metrics.items() if k.startswith("train/")]


def _fit(family: str, root: Path, tmp: Path, *, workers: int, ckpt: Path | None = None, max_steps: int = -1,
         kill_at: int | None = None) -> tuple[L.LightningModule, L.Trainer, _Losses]:
    L.seed_everything(0, workers=True)
    make, data_kw = FAMILIES[family]
    model = make()
    dm = volume_dm(root, augment=True, num_workers=workers, **data_kw)
    losses = _Losses()
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=str(tmp / "ckpt"), every_n_train_steps=10, save_top_k=-1, filename="step{step}",
                        save_last=True),
        ModelCheckpoint(dirpath=str(tmp / "ckpt"), every_n_epochs=1, save_top_k=-1, filename="epoch{epoch}")]
    if kill_at is not None:
        callbacks.append(_Kill(kill_at))
    trainer = cpu_trainer(tmp, max_epochs=EPOCHS, limit_train_batches=BATCHES, limit_val_batches=1, logger=losses,
                          log_every_n_steps=1, enable_checkpointing=True, callbacks=callbacks, max_steps=max_steps)
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
    except _Killed:
        assert kill_at is not None
    return model, trainer, losses


def _assert_same(full: tuple, resumed: tuple, after_step: int, what: str) -> None:
    (m_full, t_full, l_full), (m_res, t_res, l_res) = full, resumed
    for (name, a), b in zip(m_full.state_dict().items(), m_res.state_dict().values()):
        assert torch.equal(a, b), f"{what}: {name} differs after resume"
    for o_full, o_res in zip(t_full.optimizers, t_res.optimizers):
        s_full, s_res = o_full.state_dict()["state"], o_res.state_dict()["state"]
        assert s_full.keys() == s_res.keys()
        for k in s_full:
            for n in s_full[k]:
                same = torch.equal(torch.as_tensor(s_full[k][n]), torch.as_tensor(s_res[k][n]))
                assert same, f"{what}: optim {k}.{n}"
    expected = [r for r in l_full.records if r[0] > after_step]
    got = [r for r in l_res.records if r[0] > after_step]
    assert got == expected, f"{what}: logged losses differ after step {after_step}"
    assert m_full.iteration == m_res.iteration == EPOCHS * BATCHES


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_resume_matrix_gives_identical_runs(family, workers, phantom_dir, tmp_path):
    full = _fit(family, phantom_dir, tmp_path / "full", workers=workers)

    # 1. end of epoch 0: the checkpoint Lightning writes after epoch 0's validation (3 batches = global step 6)
    end0 = tmp_path / "full" / "ckpt" / "epochepoch=0.ckpt"
    assert end0.is_file(), sorted(p.name for p in (tmp_path / "full" / "ckpt").iterdir())
    assert torch.load(end0, weights_only=True)["epoch"] == 0
    _assert_same(full, _fit(family, phantom_dir, tmp_path / "r1", workers=workers, ckpt=end0), 6, "end of epoch")

    # 2. mid-epoch: max_steps stops the run after 4 batches (global step 8, epoch 1); resume its last.ckpt
    _fit(family, phantom_dir, tmp_path / "stopped", workers=workers, max_steps=8)
    last = tmp_path / "stopped" / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 8 and state["medsynth"]["iteration"] == 4
    _assert_same(full, _fit(family, phantom_dir, tmp_path / "r2", workers=workers, ckpt=last), 8, "max_steps")

    # 3. killed after 7 batches; the newest checkpoint is the step-interval one at global step 10 (5 batches)
    _fit(family, phantom_dir, tmp_path / "killed", workers=workers, kill_at=7)
    mid = tmp_path / "killed" / "ckpt" / "stepstep=10.ckpt"
    assert mid.is_file(), sorted(p.name for p in (tmp_path / "killed" / "ckpt").iterdir())
    _assert_same(full, _fit(family, phantom_dir, tmp_path / "r3", workers=workers, ckpt=mid), 10, "kill")
