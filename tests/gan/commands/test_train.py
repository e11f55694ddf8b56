"""``medsynth fit``: every experiment config runs on top of base.yaml (fast_dev_run), every sweep's sampled values
reach the model or datamodule through the CLI, data settings are linked into the model, and a resumed run continues
its own run folder and W&B run."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from gan.commands.train import LINKED_ARGUMENTS, run_lightning_cli

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments"
BASE = EXPERIMENTS / "base.yaml"
CONFIGS = sorted(p for p in EXPERIMENTS.glob("*.yaml") if p.name != "base.yaml")
TRANSLATION = [p for p in CONFIGS if p.name.startswith(("cyclegan", "pix2pix"))]
SWEEPS = sorted((EXPERIMENTS / "sweeps").glob("*.yaml"))


def _data_overrides(root: Path) -> list[str]:
    return [f"--data.init_args.data_dir={root}", "--data.init_args.splits=null", "--data.init_args.num_workers=0",
            "--data.init_args.cache_dir=null", "--data.init_args.val_fraction=0.2",
            "--data.init_args.test_fraction=0.2"]


def _slide_overrides(slides: Path) -> list[str]:
    return [f"--data.init_args.slides={slides}", "--data.init_args.num_workers=0", "--data.init_args.val_fraction=0.34"]


def test_there_are_configs_and_sweeps():
    names = {p.name for p in CONFIGS}
    assert {"cyclegan_ct2mri.yaml", "cyclegan_ct2mri_demo.yaml", "pix2pix_ct2pet.yaml",
            "pix2pix_ct2pet_demo.yaml", "stylegan2_pathology.yaml", "stylegan2_pathology_demo.yaml"} <= names
    assert len(SWEEPS) >= 3
    for p in CONFIGS:  # the shared blocks live in base.yaml only
        cfg = yaml.safe_load(p.read_text())
        assert "class_path" not in (cfg.get("trainer", {}).get("logger") or {}), f"{p.name} repeats the logger"
        assert not set(LINKED_ARGUMENTS) & set(cfg["model"].get("init_args", {})), f"{p.name} repeats linked args"


@pytest.mark.slow
@pytest.mark.parametrize("config", TRANSLATION, ids=lambda p: p.stem)
def test_config_fast_dev_run(config, phantom_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    cli = run_lightning_cli(["--config", str(BASE), "--config", str(config), *_data_overrides(phantom_dir),
                             "--trainer.fast_dev_run=1", f"--trainer.default_root_dir={tmp_path}",
                             "--trainer.accelerator=cpu", "--trainer.devices=1",
                             f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.state.finished
    m = cli.trainer.callback_metrics
    assert torch.isfinite(m["val/mae"]) and torch.isfinite(m["val/baseline_mae"])
    for key in LINKED_ARGUMENTS:  # given once under data, linked into the model
        assert cli.model.hparams[key] == cli.datamodule.hparams[key], key


@pytest.mark.slow
def test_stylegan2_demo_config_fast_dev_run(slide_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    cli = run_lightning_cli(["--config", str(BASE), "--config", str(EXPERIMENTS / "stylegan2_pathology_demo.yaml"),
                             *_slide_overrides(slide_dir), "--trainer.fast_dev_run=1",
                             f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu",
                             "--trainer.devices=1", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"],
                            run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["val/diversity_necrosis"])
    # linked from the datamodule: the tile size is the resolution, its classes and scale are the model's
    assert cli.model.hparams.resolution == cli.datamodule.hparams.tile_size == 32
    assert list(cli.model.class_names) == list(cli.datamodule.class_names) and "necrosis" in cli.model.class_names
    assert cli.model.mpp == pytest.approx(0.5)


def _sample(spec: dict, rng: random.Random):
    if "values" in spec:
        return rng.choice(spec["values"])
    if "value" in spec:
        return spec["value"]
    lo, hi = float(spec["min"]), float(spec["max"])
    dist = spec.get("distribution", "uniform")
    if dist == "log_uniform_values":
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if dist == "uniform":
        return rng.uniform(lo, hi)
    if dist == "int_uniform":
        return rng.randint(int(lo), int(hi))
    raise AssertionError(f"distribution {dist} not handled by this test")


def _hparam(obj, dotted: str):
    """``obj.hparams`` looked up along ``generator.n_blocks``-style keys (config groups are dicts)."""
    value = obj.hparams
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_sweep_parameters_are_accepted_by_the_cli(sweep, phantom_dir, slide_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = yaml.safe_load(sweep.read_text())
    assert spec["method"] in ("grid", "random", "bayes")
    assert spec["metric"]["goal"] in ("minimize", "maximize") and spec["metric"]["name"].startswith("val/")
    cmd = spec["command"]
    assert cmd[:3] == ["${env}", "medsynth", "fit"] and "${args}" in cmd
    configs = [Path(__file__).resolve().parents[3] / cmd[i + 1] for i, a in enumerate(cmd) if a == "--config"]
    assert configs[0] == BASE and all(c.is_file() for c in configs)
    rng = random.Random(0)
    for _ in range(3):
        sample = {k: _sample(v, rng) for k, v in spec["parameters"].items()}
        args = [f"--{k}={v}" for k, v in sample.items()]  # how `wandb agent` renders ${args}
        config_args = [a for c in configs for a in ("--config", str(c))]
        data = _slide_overrides(slide_dir) if "stylegan2" in sweep.name else _data_overrides(phantom_dir)
        cli = run_lightning_cli([*config_args, *data, *args,
                                 f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false",
                                 "--trainer.accelerator=cpu", "--trainer.devices=1"], run=False)
        for key, value in sample.items():
            part, _, name = key.partition(".init_args.")
            got = _hparam(cli.model if part == "model" else cli.datamodule, name)
            if isinstance(got, list):
                got = tuple(got)
            assert got == pytest.approx(value) if isinstance(value, float) else got == value, key


def test_unknown_argument_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        run_lightning_cli(["--config", str(BASE), "--config", str(EXPERIMENTS / "cyclegan_ct2mri_demo.yaml"),
                           "--model.init_args.lamda_cycle=3"], run=False)
    with pytest.raises(SystemExit):  # a group field that does not exist
        run_lightning_cli(["--config", str(BASE), "--config", str(EXPERIMENTS / "cyclegan_ct2mri_demo.yaml"),
                           "--model.init_args.generator.depth=3"], run=False)


def test_partial_group_override_keeps_the_family_default(phantom_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_lightning_cli(["--config", str(BASE), "--config", str(EXPERIMENTS / "pix2pix_ct2pet_demo.yaml"),
                             *_data_overrides(phantom_dir), "--model.init_args.generator.features=8",
                             "--trainer.logger=false"], run=False)
    g = cli.model.hparams["generator"]
    assert g["features"] == 8 and g["num_downs"] == 6 and g["arch"] == "unet" and g["norm"] == "batch"
    assert g["dropout"] == 0.5
