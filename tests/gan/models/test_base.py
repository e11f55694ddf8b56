"""The shared GAN base: LR schedule, image pool, per-iteration seeding, loss logging, manual-optimisation rules."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger

from gan.models import CycleGAN, GANModule, Pix2Pix
from gan.models.base import linear_decay
from gan.models.image_pool import ImagePool
from tests.helpers import TINY_PIX2PIX, RandomPairs, cpu_trainer

GAN_MODELS = Path(__file__).resolve().parents[3] / "gan" / "models"


def test_linear_decay_matches_the_reference_rule():
    f = linear_decay(3, 4)
    # pytorch-CycleGAN-and-pix2pix: 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1),
    # with epoch_count=1
    assert [round(f(e), 6) for e in range(8)] == [round(1.0 - max(0, e + 1 - 3) / 5.0, 6) for e in range(8)]
    assert f(8) == f(20) == 0.0, "past the schedule the rate stays 0 (the formula would turn negative)"


def test_image_pool_returns_history_and_restores_exactly():
    pool = ImagePool(3, seed=0)
    imgs = [torch.full((1, 1, 2, 2), float(i)) for i in range(10)]
    for i in range(3):
        assert torch.equal(pool.query(imgs[i]), imgs[i])  # filling up: returned as is
    outs = [pool.query(imgs[i])[0, 0, 0, 0].item() for i in range(3, 10)]
    assert any(o < 3 for o in outs), "some queries return older images"
    state = pool.state_dict()
    clone = ImagePool(3, seed=99)
    clone.load_state_dict(state)
    x = torch.full((4, 1, 2, 2), 42.0)
    assert torch.equal(pool.query(x), clone.query(x))
    a, b = ImagePool(3, seed=0), ImagePool(3, seed=5)
    b.reseed(0)
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


def test_seed_rng_is_a_function_of_seed_iteration_rank_and_chunk():
    m = Pix2Pix(**TINY_PIX2PIX, seed=7)
    draws = {}
    for it in (0, 1):
        for chunk in (0, 1):
            m._iteration = it
            torch.rand(5)  # whatever ran before must not matter
            m.seed_rng(chunk)
            draws[it, chunk] = torch.rand(3)
    m._iteration = 1
    m.seed_rng(1)
    assert torch.equal(torch.rand(3), draws[1, 1])
    assert len({tuple(v.tolist()) for v in draws.values()}) == 4, "iterations and chunks draw different numbers"
    other = Pix2Pix(**TINY_PIX2PIX, seed=8)
    other._iteration = 1
    other.seed_rng(1)
    assert not torch.equal(torch.rand(3), draws[1, 1]), "another seed, another stream"
    ref = np.random.SeedSequence([7, 1, 0, 1]).generate_state(2, dtype=np.uint32)
    assert m.derived_seed(1, 0, 1) == (int(ref[0]) << 31 ^ int(ref[1]))


class _RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.records.append(dict(metrics))


@pytest.mark.parametrize("every", [1, 2])
def test_training_losses_are_logged_per_interval_and_as_epoch_means(every, tmp_path):
    torch.manual_seed(0)
    logger = _RecordingLogger()
    model = Pix2Pix(**TINY_PIX2PIX)
    trainer = cpu_trainer(tmp_path, logger=logger, log_every_n_steps=every, limit_val_batches=0,
                          limit_train_batches=None, deterministic=False)
    trainer.fit(model, torch.utils.data.DataLoader(RandomPairs(), batch_size=2))  # 4 batches
    steps = [r["train/loss_g_step"] for r in logger.records if "train/loss_g_step" in r]
    epochs = [r["train/loss_g_epoch"] for r in logger.records if "train/loss_g_epoch" in r]
    assert len(steps) == 4 // every and len(epochs) == 1
    if every == 1:  # equal batch sizes: the epoch value is the mean of the step values
        assert epochs[0] == pytest.approx(float(np.mean(steps)), rel=1e-5)
    assert trainer.callback_metrics["train/l1_epoch"] > 0
    assert model.iteration == 4


def test_lr_schedule_follows_the_epoch(tmp_path):
    from lightning.pytorch.callbacks import Callback

    model = Pix2Pix(**{**TINY_PIX2PIX, "optim": {"lr": 1e-3, "epochs_constant": 1, "epochs_decay": 2}})
    seen = []

    class LR(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append([g["lr"] for o in pl_module.optimizers() for g in o.param_groups])

    trainer = cpu_trainer(tmp_path, max_epochs=4, limit_val_batches=0, limit_train_batches=1, callbacks=[LR()])
    trainer.fit(model, torch.utils.data.DataLoader(RandomPairs(), batch_size=2))
    f = linear_decay(1, 2)
    assert seen == [pytest.approx([1e-3 * f(e)] * 2) for e in range(4)]


def test_every_backward_goes_through_manual_backward():
    """A bare ``loss.backward()`` would skip mixed-precision scaling and DDP gradient sync."""
    offenders = []
    for path in GAN_MODELS.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\.backward\(", code) and "manual_backward" not in code:
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_gan_module_knows_no_volume():
    src = (GAN_MODELS / "base.py").read_text().lower()
    for word in ("volume", "window", "patient", "slice"):
        assert word not in src, f"gan/models/base.py mentions {word!r}"
    assert issubclass(CycleGAN, GANModule) and issubclass(Pix2Pix, GANModule)
