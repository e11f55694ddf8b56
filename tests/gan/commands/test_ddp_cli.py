"""``medsynth fit`` on 2 CPU ranks for every experiment config (issue 12): the strategy is chosen for the user, and
global rank 0 alone writes the run folder, the checkpoint, the W&B run and the sample grids."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.gan.models.ddp_helpers import dist_env, run_procs

SCRIPT = Path(__file__).with_name("cli_ddp_script.py")


@pytest.mark.slow
def test_ddp_cli_every_config_on_two_ranks(phantom_dir, slide_dir, tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--volumes", str(phantom_dir), "--slides", str(slide_dir),
           "--out", str(tmp_path)]
    rc, log = run_procs([cmd], tmp_path, dist_env(), timeout=420)[0]
    assert rc == 0, log[-5000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["strategy"] == "GANDDPStrategy" and result["world"] == 2  # devices=2 picks ddp_gan
    assert result["finished"] and all(result["finished"].values()), result
    runs = [p for p in (tmp_path / "runs" / "medsynth-demo").iterdir() if p.is_dir()]
    assert len(runs) == 1, "one run folder"
    run = runs[0]
    assert [p.name for p in (run / "checkpoints").glob("*.ckpt")] == ["last.ckpt"]
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*"))) == 1, "one W&B run"
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["epoch_000.png"], "one grid"
