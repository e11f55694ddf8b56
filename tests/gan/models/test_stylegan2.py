"""The StyleGAN2 LightningModule: lazy-regularisation rescaling, the EMA half-life formula, w_avg and pl_mean
tracking, ADA's p moving, weights-only checkpoints and the generator they load, exact resume, and a real learning
test (a tiny model on two-colour tiles moves each class's colour towards its data)."""
from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from data.loading import loop_progress, split_item, train_loader
from gan.models import StyleGAN2
from gan.models.checkpoint import load_generator, load_module
from tests.helpers import cpu_trainer

TINY = dict(resolution=32, class_names=["red", "blue"], network={"z_dim": 16, "w_dim": 16, "mapping_layers": 2,
                                                                  "channel_base": 512, "channel_max": 32},
            evaluation={"grid_seeds": 2, "diversity_tiles": 3, "lpips_pretrained": False})


class TwoColours(torch.utils.data.Dataset):
    """Tiles of class 0 reddish, class 1 bluish, with a little noise ([-1, 1])."""

    def __init__(self, n: int = 64) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        i, _ = split_item(key, 0)
        g = torch.Generator().manual_seed(i)
        label = i % 2
        colour = torch.tensor([0.8, -0.6, -0.6]) if label == 0 else torch.tensor([-0.6, -0.6, 0.8])
        img = colour[:, None, None] + 0.1 * torch.randn(3, 32, 32, generator=g)
        return {"image": img.clamp(-1, 1), "label": label}


def _loader(n: int = 64, batch: int = 8) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(TwoColours(n), batch_size=batch)


def test_lazy_regularisation_rescales_adam():
    m = StyleGAN2(**TINY, optim={"lr": 0.002, "betas": (0.0, 0.99)},
                  regularization={"pl_interval": 4, "r1_interval": 16})
    opt_g, opt_d = m.configure_optimizers()
    cg, cd = 4 / 5, 16 / 17
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.002 * cg)
    assert opt_g.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** cg))
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.002 * cd)
    assert opt_d.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** cd))
    off = StyleGAN2(**TINY, regularization={"pl_weight": 0.0, "r1_gamma": 0.0})
    assert off.configure_optimizers()[0].param_groups[0]["lr"] == pytest.approx(0.0025), "no rescale without reg"


class _Snapshot(Callback):
    """Keeps G, the EMA and the batch size around one training step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 2:
            self.ema_before = copy.deepcopy(pl_module.ema.module.state_dict())
            self.nimg_before = float(pl_module.nimg)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 2:
            self.g_after = copy.deepcopy(pl_module.generator.state_dict())
            self.ema_after = copy.deepcopy(pl_module.ema.module.state_dict())


def test_ema_follows_the_half_life_formula(tmp_path):
    torch.manual_seed(0)
    m = StyleGAN2(**TINY, ema_kimg=0.01, ema_rampup=None)
    snap = _Snapshot()
    trainer = cpu_trainer(tmp_path, callbacks=[snap], limit_train_batches=3, limit_val_batches=0)
    trainer.fit(m, _loader())
    beta = 0.5 ** (8 / (0.01 * 1000))  # batch 8, half-life 10 images
    for name, g in snap.g_after.items():
        if not g.is_floating_point() or "noise_const" in name:
            continue
        expected = g + beta * (snap.ema_before[name] - g) if "w_avg" not in name else g  # buffers are copied
        torch.testing.assert_close(snap.ema_after[name], expected, rtol=1e-5, atol=1e-6, msg=name)
    assert float(m.nimg) == 3 * 8


def test_training_tracks_w_avg_and_pl_mean(tmp_path):
    torch.manual_seed(0)
    m = StyleGAN2(**TINY, regularization={"pl_interval": 2, "r1_interval": 2})
    class_avg = m.generator.mapping.class_w_avg.clone()
    trainer = cpu_trainer(tmp_path, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(m, _loader())
    assert float(m.pl_mean) > 0, "path-length mean follows the batches"
    assert not torch.equal(m.generator.mapping.class_w_avg, class_avg), "per-class w averages are tracked"


@pytest.mark.parametrize("target, start, expected", [(-1.5, 0.0, 0.16), (1.5, 0.5, 0.34), (-1.5, 0.95, 1.0)])
def test_ada_p_moves_one_step_towards_its_target(tmp_path, target, start, expected):
    """r_t = E[sign D(real)] lies in [-1, 1], so a target below it must raise p and one above it lower it, each by
    batch * interval / (speed_kimg * 1000) = 8 * 1 / 50 per adjustment, clamped to [0, 1] (the paper's rule)."""
    torch.manual_seed(0)
    m = StyleGAN2(**TINY, regularization={"pl_weight": 0.0, "r1_gamma": 0.0},
                  d_augment={"kind": "ada", "interval": 1, "speed_kimg": 0.05, "target": target, "initial_p": start})
    trainer = cpu_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(m, _loader())
    rt = float(trainer.callback_metrics["train/ada_rt_epoch"])
    assert -1 <= rt <= 1
    assert float(m.augment_pipe.p) == pytest.approx(expected)


def test_checkpoint_loads_weights_only_and_its_generator_draws_the_same_tiles(tmp_path):
    torch.manual_seed(0)
    m = StyleGAN2(**TINY)
    trainer = cpu_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(m, _loader())
    path = tmp_path / "sg.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)
    assert state["medsynth"]["family"] == "StyleGAN2" and state["medsynth"]["class_names"] == ["red", "blue"]
    loaded = load_module(path).module
    torch.testing.assert_close(loaded.sample([3, 4], label=1), m.sample([3, 4], label=1))
    G, info = load_generator(path)
    assert info["class_names"] == ["red", "blue"] and info["tile_size"] == 32
    z = torch.cat([torch.randn(1, 16, generator=torch.Generator().manual_seed(s)) for s in (3, 4)])
    torch.testing.assert_close(G(z, torch.tensor([1, 1]), noise_mode="const").clamp(-1, 1), m.sample([3, 4], label=1))
    assert not torch.equal(m.sample([3], label=0), m.sample([3], label=1)), "the label changes the tile"
    assert torch.equal(m.sample([5], label=0), m.sample([5], label=0)), "the same seed gives the same tile"


class _Killed(RuntimeError):
    """A crash in the middle of an epoch."""


def test_validation_scores_swd_per_class_beside_the_real_floor(tmp_path):
    """An untrained generator's tiles are far from the real ones; two halves of the real tiles are close: the
    per-class SWD of the fakes must exceed the floor, for each class."""
    torch.manual_seed(0)
    m = StyleGAN2(**TINY)
    trainer = cpu_trainer(tmp_path, limit_train_batches=1, limit_val_batches=8)
    trainer.fit(m, _loader(), _loader(64, 8))
    logged = trainer.callback_metrics
    for key in ("val/swd", "val/swd_floor", "val/swd/red", "val/swd/blue", "val/swd/32px", "val/swd/16px"):
        assert key in logged and torch.isfinite(logged[key]), key
    for name in ("red", "blue"):
        assert float(logged[f"val/swd/{name}"]) > 2 * float(logged[f"val/swd_floor/{name}"]), name


def test_validation_scores_prdc_per_class_with_an_extractor(tmp_path):
    """With an extractor configured (here a seeded random FID Inception), precision/recall/density/coverage of the
    validation tiles are logged overall and per class, each in [0, 1] (density may exceed 1)."""
    torch.manual_seed(0)
    evaluation = {**TINY["evaluation"], "prdc_extractor": "fid-inception", "prdc_weights": "random", "swd_tiles": 24}
    m = StyleGAN2(**{**TINY, "evaluation": evaluation})
    trainer = cpu_trainer(tmp_path, limit_train_batches=1, limit_val_batches=3)
    trainer.fit(m, _loader(), _loader(24, 8))
    logged = trainer.callback_metrics
    for name in ("precision", "recall", "coverage", "red/precision", "blue/recall"):
        value = float(logged[f"val/prdc/{name}"])
        assert 0.0 <= value <= 1.0, (name, value)
    assert float(logged["val/prdc/density"]) >= 0


def _fit(tmp: Path, ckpt: Path | None = None, kill: bool = False) -> StyleGAN2:
    L.seed_everything(0)
    m = StyleGAN2(**TINY, regularization={"pl_interval": 2, "r1_interval": 3}, d_augment={"kind": "ada", "interval": 2},
                  batch_gpu=4)

    class Kill(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if kill and pl_module.iteration >= 5:
                raise _Killed(f"killed after iteration {pl_module.iteration}")

    cb = ModelCheckpoint(dirpath=str(tmp / "ckpt"), every_n_train_steps=1, save_top_k=-1, filename="{step}")
    trainer = cpu_trainer(tmp, max_epochs=2, limit_train_batches=4, limit_val_batches=0, enable_checkpointing=True,
                          callbacks=[cb, Kill()])
    # the project's resumable loader (as the tile datamodule's): a kill mid-epoch resumes at the next batch
    loader = train_loader(TwoColours(32), batch_size=8, seed=0, progress=lambda: loop_progress(trainer))
    try:
        trainer.fit(m, loader, ckpt_path=str(ckpt) if ckpt else None)
    except _Killed:
        pass
    return m


@pytest.mark.slow
def test_resume_after_a_kill_gives_identical_weights(tmp_path):
    full = _fit(tmp_path / "full")
    killed = _fit(tmp_path / "killed", kill=True)
    assert killed.iteration == 5
    ckpts = sorted((tmp_path / "killed" / "ckpt").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    state = torch.load(ckpts[-1], weights_only=True)
    assert state["medsynth"]["iteration"] == 5, "the last checkpoint is mid-epoch 1 (4 batches per epoch)"
    resumed = _fit(tmp_path / "resumed", ckpt=ckpts[-1])
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"


@pytest.mark.slow
def test_a_tiny_model_learns_the_colours_of_its_classes(tmp_path):
    """A real learning test: after a few hundred steps the generated colour of each class has moved towards the
    data's (red for class 0, blue for class 1), far more than the untrained generator's."""
    torch.manual_seed(0)
    m = StyleGAN2(**TINY, optim={"lr": 0.005}, regularization={"r1_gamma": 0.05, "pl_weight": 0.0},
                  d_augment={"kind": "none"}, ema_kimg=0.2, ema_rampup=0.1)
    target = {0: torch.tensor([0.8, -0.6, -0.6]), 1: torch.tensor([-0.6, -0.6, 0.8])}

    def error() -> float:
        return sum(float((m.sample(list(range(16)), label=k).mean(dim=(0, 2, 3)) - target[k]).abs().mean())
                   for k in (0, 1)) / 2

    before = error()
    trainer = cpu_trainer(tmp_path, max_epochs=25, limit_train_batches=None, limit_val_batches=0)
    trainer.fit(m, _loader(64, 8))  # 200 iterations
    after = error()
    assert after < 0.5 * before and after < 0.25, (before, after)
    red, blue = (m.sample(list(range(16)), label=k).mean(dim=(0, 2, 3)) for k in (0, 1))
    assert red[0] > red[2] and blue[2] > blue[0], (red, blue)


def test_unconditional_training_and_its_generator(tmp_path):
    """Without classes the model is unconditional: labels are ignored, truncation pulls towards the global w_avg."""
    torch.manual_seed(0)
    m = StyleGAN2(**{**TINY, "class_names": None})
    assert m.num_classes == 0 and m.generator.num_classes == 0
    trainer = cpu_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(m, _loader(), _loader(16, 8))
    assert torch.isfinite(trainer.callback_metrics["val/swd"]) and "val/diversity_all" in trainer.callback_metrics
    path = tmp_path / "u.ckpt"
    trainer.save_checkpoint(path)
    G, info = load_generator(path)
    assert info["class_names"] == [] and G.num_classes == 0
    torch.testing.assert_close(G(torch.randn(1, 16, generator=torch.Generator().manual_seed(7)), None,
                                 noise_mode="const").clamp(-1, 1), m.sample([7]))
    centre = m.sample([1, 2, 3], psi=0.0)
    torch.testing.assert_close(centre[0], centre[2], msg="psi = 0: every seed gives the global centre")
