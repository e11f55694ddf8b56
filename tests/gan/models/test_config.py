"""Config groups: partial overrides keep each family's defaults, hyperparameters are plain dicts (weights_only
checkpoints), ``Family(**hparams)`` rebuilds, and format-1 (flat) checkpoints still load and translate the same."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.models import CycleGAN, DiscriminatorConfig, GeneratorConfig, OptimConfig, Pix2Pix, VolumeEvalConfig
from gan.models.checkpoint import FAMILIES, load_module, read_checkpoint
from gan.models.config import as_config, config_dict
from tests.helpers import TINY_PIX2PIX, RandomPairs, cpu_trainer

DATA = Path(__file__).parent / "data"


def test_as_config_merges_a_partial_dict_over_the_given_default():
    default = GeneratorConfig(arch="unet", norm="batch", dropout=0.5)
    got = as_config(GeneratorConfig, {"features": 16}, default=default)
    assert got == dataclasses.replace(default, features=16)
    assert as_config(GeneratorConfig, None, default=default) is default
    inst = GeneratorConfig(n_blocks=3)
    assert as_config(GeneratorConfig, inst, default=default) is inst
    assert as_config(OptimConfig, {"betas": [0.0, 0.99]}).betas == (0.0, 0.99)
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['n_block'\]"):
        as_config(GeneratorConfig, {"n_block": 3})
    assert config_dict(OptimConfig()) == {"lr": 2e-4, "betas": [0.5, 0.999], "epochs_constant": 100,
                                          "epochs_decay": 100, "ema_decay": 0.0}


def test_partial_group_keeps_the_family_default():
    p = Pix2Pix(generator={"features": 8, "num_downs": 6})
    assert p.hparams["generator"] == {**config_dict(GeneratorConfig(arch="unet", norm="batch", dropout=0.5)),
                                      "features": 8, "num_downs": 6}
    assert p.hparams["discriminator"]["norm"] == "batch" and p.hparams["evaluation"]["baseline"] == "mean"
    c = CycleGAN(generator={"features": 4, "n_blocks": 1})
    assert c.hparams["generator"]["arch"] == "resnet" and c.hparams["generator"]["norm"] == "instance"
    assert c.hparams["evaluation"]["baseline"] == "copy"
    # the nets really are what the groups say (pix2pix: U-Net with dropout 0.5 and batch norm)
    assert type(p.generator).__name__ == "UnetGenerator"
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in p.generator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in p.generator.modules())


def test_hyperparameters_are_plain_and_rebuild_the_module(tmp_path):
    torch.manual_seed(0)
    model = Pix2Pix(generator=GeneratorConfig(arch="unet", features=4, num_downs=5, norm="batch", dropout=0.5),
                    discriminator=DiscriminatorConfig(features=4, layers=2), optim=OptimConfig(lr=1e-3),
                    evaluation=VolumeEvalConfig(inference_batch=4, baseline="mean"))
    trainer = cpu_trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, torch.utils.data.DataLoader(RandomPairs(), batch_size=2))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)  # no dataclass objects pickled
    assert state["hyper_parameters"]["optim"]["lr"] == 1e-3
    assert state["medsynth"]["family"] == "Pix2Pix" and state["medsynth"]["format"] == 2
    rebuilt = Pix2Pix(**state["hyper_parameters"])
    rebuilt.load_state_dict(state["state_dict"])
    for (k, a), b in zip(model.state_dict().items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), k
    loaded = load_module(path)
    assert loaded.family == "Pix2Pix" and not loaded.module.training
    assert loaded.module.hparams == model.hparams


@pytest.mark.parametrize("family", ["cyclegan", "pix2pix"])
def test_format1_checkpoints_load_and_translate_as_before(family):
    """Checkpoints of the flat-hyperparameter layout (written by the code before the config groups) load, and
    translate a volume exactly as that code did (reference output stored beside them)."""
    from data.phantoms import make_patient
    from gan.commands.translate import Translator

    path = DATA / f"format1_{family}.ckpt"
    state = read_checkpoint(path)
    assert state["medsynth"]["format"] == 2 and "window_sums" not in state["state_dict"]
    assert state["datamodule_hyper_parameters"]["ct_window"] == (-1000.0, 1000.0)
    translator = Translator.load(path)
    ct = make_patient(102, shape=(32, 32, 12), patient_id="p2").ct
    out = translator.translate(ct)
    expected = np.load(DATA / f"format1_{family}_p2.npy")
    np.testing.assert_allclose(out.array, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(out.affine, ct.affine)


def test_unknown_or_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a medsynth checkpoint of a known family"):
        load_module(bad)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_module(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load_module(tmp_path / "junk.ckpt")
    newer = tmp_path / "newer.ckpt"
    torch.save({"medsynth": {"family": "Pix2Pix", "format": 99}}, newer)
    with pytest.raises(ValueError, match="newer than this medsynth"):
        load_module(newer)
    assert set(FAMILIES) >= {"CycleGAN", "Pix2Pix"}


def test_tiny_pix2pix_groups_are_what_the_tests_use():
    m = Pix2Pix(**TINY_PIX2PIX)
    assert m.hparams["generator"]["features"] == 4 and m.hparams["generator"]["arch"] == "unet"
