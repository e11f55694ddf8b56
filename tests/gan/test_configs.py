"""Every experiment config runs (fast_dev_run) and every sweep's sampled parameters are accepted by the CLI."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from gan.cli import run_lightning_cli

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*.yaml"))
SWEEPS = sorted((EXPERIMENTS / "sweeps").glob("*.yaml"))


def _data_overrides(root: Path) -> list[str]:
    return [f"--data.init_args.data_dir={root}", "--data.init_args.splits=null", "--data.init_args.num_workers=0",
            "--data.init_args.cache_dir=null", "--data.init_args.val_fraction=0.2", "--data.init_args.test_fraction=0.2"]


def test_there_are_configs_and_sweeps():
    names = {p.name for p in CONFIGS}
    assert {"cyclegan_ct2mri.yaml", "cyclegan_ct2mri_demo.yaml", "pix2pix_ct2pet.yaml", "pix2pix_ct2pet_demo.yaml"} <= names
    assert len(SWEEPS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_fast_dev_run(config, phantom_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    cli = run_lightning_cli(["--config", str(config), *_data_overrides(phantom_dir), "--trainer.fast_dev_run=1",
                             f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu", "--trainer.devices=1"],
                            run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.state.finished
    m = cli.trainer.callback_metrics
    assert torch.isfinite(m["val/mae"]) and torch.isfinite(m["val/baseline_mae"])


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


def _wandb_arg(key: str, value) -> str:
    """How `wandb agent` renders ${args}: --key=value (booleans as True/False)."""
    return f"--{key}={value}"


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.stem)
def test_sweep_parameters_are_accepted_by_the_cli(sweep, phantom_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = yaml.safe_load(sweep.read_text())
    assert spec["method"] in ("grid", "random", "bayes")
    assert spec["metric"]["goal"] in ("minimize", "maximize") and spec["metric"]["name"].startswith("val/")
    cmd = spec["command"]
    assert cmd[:3] == ["${env}", "medsynth", "fit"] and "${args}" in cmd
    config = Path(__file__).resolve().parents[2] / cmd[cmd.index("--config") + 1]
    assert config.is_file()
    rng = random.Random(0)
    for _ in range(3):
        sample = {k: _sample(v, rng) for k, v in spec["parameters"].items()}
        args = [_wandb_arg(k, v) for k, v in sample.items()]
        cli = run_lightning_cli(["--config", str(config), *_data_overrides(phantom_dir), *args,
                                 f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false",
                                 "--trainer.accelerator=cpu", "--trainer.devices=1"], run=False)
        for key, value in sample.items():
            part, _, name = key.partition(".init_args.")
            obj = cli.model if part == "model" else cli.datamodule
            got = obj.hparams[name]
            assert got == pytest.approx(value) if isinstance(value, float) else got == value, key


def test_unknown_argument_is_refused(phantom_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        run_lightning_cli(["--config", str(EXPERIMENTS / "cyclegan_ct2mri_demo.yaml"), "--model.init_args.lamda_cycle=3"],
                          run=False)
