"""Precision and speed options (issue 12): bf16 autocast on CPU keeps the losses within bf16 round-off of float32
and trains through Lightning's precision plugin; ``CompileNets`` (torch.compile, graph-only backend here) trains
to the eager weights."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from gan.callbacks import CompileNets
from gan.models import CycleGAN, StyleGAN2
from tests.helpers import TINY_CYCLEGAN, cpu_trainer, volume_dm


def test_bf16_autocast_losses_match_float32():
    torch.manual_seed(0)
    model = CycleGAN(**TINY_CYCLEGAN, lambda_structure=1.0)
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = model.generator_losses(a, b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.generator_losses(a, b)
    for key in ("loss_g", "adv", "cycle", "structure"):
        assert low[key].float().item() == pytest.approx(ref[key].item(), rel=3e-2), key


@pytest.mark.slow
def test_bf16_mixed_training_runs_and_stays_finite(phantom_dir, tmp_path):
    L.seed_everything(0)
    model = CycleGAN(**TINY_CYCLEGAN)
    trainer = cpu_trainer(tmp_path, precision="bf16-mixed", limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=volume_dm(phantom_dir))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32
    assert torch.isfinite(trainer.callback_metrics["val/mae"])


def _fit(tmp_path, compile_nets: bool, make):
    L.seed_everything(0)
    model = make()
    cb = CompileNets(backend="aot_eager")
    trainer = cpu_trainer(tmp_path, limit_train_batches=2, limit_val_batches=0, callbacks=[cb] if compile_nets else [])
    return model, trainer, cb


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cyclegan", "stylegan2"])
def test_compiled_networks_train_to_the_eager_weights(family, phantom_dir, tmp_path):
    from data.loading import train_loader
    from tests.gan.models.test_stylegan2 import TINY, TwoColours

    reg = {"r1_gamma": 0.0, "pl_weight": 0.0}  # compile has no double backward (R1, path length)
    makes = {"cyclegan": lambda: CycleGAN(**TINY_CYCLEGAN),
             "stylegan2": lambda: StyleGAN2(**TINY, batch_gpu=4, regularization=reg)}
    states = []
    for compiled in (False, True):
        model, trainer, cb = _fit(tmp_path / str(compiled), compiled, makes[family])
        if family == "cyclegan":
            trainer.fit(model, datamodule=volume_dm(phantom_dir))
        else:
            trainer.fit(model, train_loader(TwoColours(16), batch_size=8, seed=0))
        if compiled:
            assert cb.compiled, "nothing was compiled"
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert states[0].keys() == states[1].keys()  # compile keeps the parameter names (checkpoints unchanged)
    for k in states[0]:
        torch.testing.assert_close(states[1][k], states[0][k], rtol=1e-5, atol=1e-6, msg=k)


def test_compile_refuses_stylegan2_with_double_backward_penalties(tmp_path):
    from tests.gan.models.test_stylegan2 import TINY

    with pytest.raises(ValueError, match="double backward"):
        CompileNets(backend="aot_eager").setup(cpu_trainer(tmp_path), StyleGAN2(**TINY), "fit")
