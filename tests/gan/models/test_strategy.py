"""The DDP rules every GAN module keeps (issue 12), checked without starting processes: the strategy check refuses
what is known to fail, no backward bypasses ``manual_backward``, the trainable parameters are exactly the
optimisers', and a device batch is cut into the chunks one process would accumulate."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from gan.models import CycleGAN, Pix2Pix, StyleGAN2
from gan.models.strategy import GANDDPStrategy, strategy_problem
from tests.helpers import TINY_CYCLEGAN, TINY_PIX2PIX

GAN_MODELS = Path(__file__).resolve().parents[3] / "gan" / "models"
TINY_STYLE = dict(resolution=32, class_names=["a", "b"], network={"z_dim": 16, "w_dim": 16, "mapping_layers": 2,
                                                                   "channel_base": 512, "channel_max": 32},
                  evaluation={"lpips_pretrained": False})


def test_unsafe_strategies_are_refused_with_the_ones_to_use():
    cpu = dict(accelerator="cpu", sync_batchnorm=False)
    assert strategy_problem(GANDDPStrategy(), **cpu) is None
    assert strategy_problem(DDPStrategy(find_unused_parameters=True), **cpu) is None
    assert strategy_problem(SingleDeviceStrategy(torch.device("cpu")), **cpu) is None
    for bad, why in ((DDPStrategy(), "without find_unused_parameters"),
                     (DDPStrategy(find_unused_parameters=True, static_graph=True), "static_graph")):
        msg = strategy_problem(bad, **cpu)
        assert msg and why in msg and "--trainer.strategy=ddp_gan" in msg
    assert "sync_batchnorm needs GPUs" in strategy_problem(GANDDPStrategy(), accelerator="cpu", sync_batchnorm=True)
    assert strategy_problem(GANDDPStrategy(), accelerator="cuda", sync_batchnorm=True) is None
    with pytest.raises(ValueError, match="find_unused_parameters.*do not apply"):
        GANDDPStrategy(find_unused_parameters=True)


def test_no_bare_backward_in_the_modules():
    """``loss.backward()`` skips Lightning's precision plugin and the strategy's hooks: only manual_backward."""
    for path in sorted(GAN_MODELS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
                pytest.fail(f"{path.name}:{node.lineno} calls .backward(); use self.manual_backward(loss)")


@pytest.mark.parametrize("make", [lambda: CycleGAN(**TINY_CYCLEGAN, lambda_lpips=0.5, lpips_pretrained=False),
                                  lambda: Pix2Pix(**TINY_PIX2PIX, lambda_lpips=1.0, lpips_pretrained=False),
                                  lambda: StyleGAN2(**TINY_STYLE)],
                         ids=["cyclegan", "pix2pix", "stylegan2"])
def test_trainable_parameters_are_the_optimisers_and_frozen_nets_are_frozen(make):
    model = make()
    optimisers = model.configure_optimizers()
    optimisers = optimisers[0] if isinstance(optimisers, tuple) else optimisers
    owned = [id(p) for opt in optimisers for g in opt.param_groups for p in g["params"]]
    assert len(owned) == len(set(owned)), "a parameter in two optimisers"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == set(owned)
    frozen = [m for m in (model.ema.module if model.ema else None, getattr(model, "lpips", None)) if m is not None]
    assert frozen and all(not p.requires_grad for m in frozen for p in m.parameters())


def test_a_device_batch_is_cut_into_batch_gpu_chunks():
    model = Pix2Pix(**TINY_PIX2PIX, batch_gpu=2)
    batch = {"ct": torch.arange(4.0).reshape(4, 1), "patient": ["a", "b", "c", "d"],
             "window": {"ct": {"low": torch.zeros(4), "log": False}}, "scalar": torch.tensor(1.0)}
    parts = model.chunks(batch)
    assert model.chunks_per_rank == 2 and [p["patient"] for p in parts] == [["a", "b"], ["c", "d"]]
    assert parts[1]["ct"].flatten().tolist() == [2.0, 3.0] and parts[1]["window"]["ct"]["low"].shape == (2,)
    assert parts[0]["scalar"] is batch["scalar"] and parts[0]["window"]["ct"]["log"] is False
    with pytest.raises(ValueError, match="cannot be cut into chunks of batch_gpu=3"):
        Pix2Pix(**TINY_PIX2PIX, batch_gpu=3).chunks(batch)
    assert model.slot(1) == 1  # one process: the global chunk is the chunk
