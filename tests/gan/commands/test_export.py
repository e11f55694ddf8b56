"""``medsynth export``: the exported folder loads without Lightning into a generator that draws the checkpoint's
own tiles (the module's ``sample``) bit for bit, carries the checkpoint's metadata so ``load_generator`` reads it
like the checkpoint, and follows the overwrite policy."""
from __future__ import annotations

import json

import pytest
import torch

from data.files import sha256_file
from gan.cli import main
from gan.models.checkpoint import load_generator, load_module
from gan.nets.stylegan2 import load_exported
from gan.style import sample_images
from tests.gan.style.tiny import CLASSES, tiny_checkpoint


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "g"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    return out


def test_exported_generator_reproduces_the_checkpoint_tiles(ckpt, exported):
    module = load_module(ckpt).module
    G = load_exported(exported)
    for label in range(len(CLASSES)):
        for psi in (1.0, 0.5):
            expected = module.sample([0, 5, 11], label=label, psi=psi)  # the training module's own sampling path
            assert torch.equal(sample_images(G, [0, 5, 11], label=label, psi=psi).clamp(-1, 1), expected)
    ema = module.inference_generator.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in G.state_dict().items()), "the EMA generator is exported"
    assert G.config == module.inference_generator.config


def test_export_carries_the_checkpoint_metadata(ckpt, exported):
    _, from_ckpt = load_generator(ckpt)
    _, from_export = load_generator(exported)
    for key in ("class_names", "mpp", "tile_size", "checkpoint_sha256"):
        assert from_export[key] == from_ckpt[key], key
    assert from_export["checkpoint_sha256"] == sha256_file(ckpt)
    config = json.loads((exported / "config.json").read_text())
    assert config["metadata"]["class_names"] == CLASSES and config["metadata"]["mpp"] == 0.5


def test_export_of_an_export_is_the_same_generator(exported, tmp_path):
    again = tmp_path / "again"
    assert main(["export", "--ckpt", str(exported), "--out", str(again)]) == 0
    a, b = load_exported(again), load_exported(exported)
    assert a.config == b.config
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert load_generator(again)[1]["checkpoint_sha256"] == load_generator(exported)[1]["checkpoint_sha256"]


def test_existing_output_is_refused_unless_overwrite(exported, tmp_path, capsys):
    out = tmp_path / "g"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    assert main(["export", "--ckpt", str(exported), "--out", str(out)]) == 2
    assert f"{out}: export folder exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(exported), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generator.safetensors"]


def test_bad_ckpt_is_a_usage_error_naming_it(tmp_path, capsys):
    missing = tmp_path / "none.ckpt"
    assert main(["export", "--ckpt", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"--ckpt {missing}: no such file or folder" in capsys.readouterr().err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["export", "--ckpt", str(junk), "--out", str(tmp_path / "o")]) == 2
    assert f"--ckpt {junk}: not a loadable checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert main(["export", "--ckpt", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no exported generator here" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
