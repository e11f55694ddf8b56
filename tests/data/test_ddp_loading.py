"""Both datamodules under a real 2-process Lightning DDP run (CPU, gloo on 127.0.0.1), launched as a subprocess.

The ranks' training batches at each step together are exactly the single-process batch of the global batch
size, chunk r being rank r's; every held-out item is evaluated on exactly one rank; the run finishes (no hang).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from data.slides import TileDataModule, make_phantom_slide
from data.volumes import VolumeTranslationDataModule
from tests.data.ddp_loading_script import sample_ids, tile_settings, volume_settings

SCRIPT = Path(__file__).with_name("ddp_loading_script.py")
REPO = Path(__file__).resolve().parents[2]
STEPS, BATCH = 3, 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(kind: str, data: list[str], out: Path) -> list[dict]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "GLOO_SOCKET_IFNAME": "lo",
           "WANDB_MODE": "offline", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--kind", kind, "--data", *data, "--out", str(out), "--steps", str(STEPS),
           "--batch", str(2 * BATCH)]  # the GLOBAL batch: BATCH per rank
    proc = subprocess.Popen(cmd, cwd=str(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: a hang kills both ranks
    try:
        log, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"2-process {kind} run did not finish in 150 s (hang):\n{log[-4000:]}")
    assert proc.returncode == 0, log[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _reference(dm) -> tuple[list[list], list]:
    """Single-process batches of the global batch (2 x BATCH) and the held-out order."""
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, current_epoch=0, training=True,
                                 _accelerator_connector=SimpleNamespace(use_distributed_sampler=False))
    dm.setup("fit")
    train = []
    for batch in dm.train_dataloader():
        train.append(sample_ids(batch))
        if len(train) == STEPS:
            break
    val = [i for batch in dm.val_dataloader() for i in sample_ids(batch)]
    return train, val


def _check(ranks: list[dict], train: list[list], val: list) -> None:
    assert [r["world"] for r in ranks] == [2, 2]
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == STEPS
    for t in range(STEPS):
        assert ranks[0]["train"][t] == train[t][:BATCH] and ranks[1]["train"][t] == train[t][BATCH:]
    seen = [tuple(i) for r in ranks for step in r["train"] for i in step]
    assert len(seen) == len(set(seen)) == STEPS * 2 * BATCH  # disjoint across ranks and steps
    assert not set(map(tuple, ranks[0]["val"])) & set(map(tuple, ranks[1]["val"]))
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == sorted(val)  # every held-out item on exactly one rank
    assert ranks[0]["val"] == val[0::2] and ranks[1]["val"] == val[1::2]


@pytest.mark.slow
def test_ddp_volume_loading_two_processes(phantom_dir, tmp_path):
    ranks = _run("volumes", [str(phantom_dir)], tmp_path)
    train, val = _reference(VolumeTranslationDataModule(str(phantom_dir), **volume_settings(2 * BATCH)))
    assert len(val) == 2
    _check(ranks, train, val)


@pytest.mark.slow
def test_ddp_tile_loading_two_processes(tmp_path):
    slides = [str(make_phantom_slide(tmp_path / f"s{i}.svs", width=2048, height=1536, seed=i).path) for i in range(2)]
    ranks = _run("tiles", slides, tmp_path)
    train, val = _reference(TileDataModule(slides=slides, **tile_settings(2 * BATCH)))
    _check(ranks, train, val)
