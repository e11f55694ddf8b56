"""Launching ``ddp_train_script.py`` (2 CPU ranks over gloo on 127.0.0.1, a free port, a timeout that kills the
whole process group) and comparing what the ranks wrote."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("ddp_train_script.py")
TIMEOUT_S = 240


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dist_env(port: int | None = None) -> dict[str, str]:
    """Environment of a local CPU DDP launch."""
    return {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port or free_port()),
            "GLOO_SOCKET_IFNAME": "lo", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run_procs(cmds: list[list[str]], cwd: Path, env: dict[str, str],
              timeout: float = TIMEOUT_S) -> list[tuple[int, str]]:
    """Run commands concurrently, each in its own process group; a hang kills them all and fails the test."""
    procs = [subprocess.Popen(c, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for c in cmds]
    out = []
    try:
        for p in procs:
            log, _ = p.communicate(timeout=timeout)
            out.append((p.returncode, log))
    except subprocess.TimeoutExpired:
        logs = []
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            logs.append(p.communicate()[0])
        pytest.fail(f"DDP launch did not finish in {timeout} s (hang):\n" + "\n---\n".join(x[-3000:] for x in logs))
    return out


def launch(family: str, data: Path, out: Path, *, devices: int, runs: str, batch: int = 4,
           batch_gpu: int | None = None, check: bool = True) -> tuple[int, str]:
    """Run the training script once (``devices`` ranks, or 1 process); returns (exit status, log)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(SCRIPT), "--family", family, "--data", str(data), "--out", str(out),
           "--devices", str(devices), "--batch", str(batch), "--runs", runs]
    if batch_gpu is not None:
        cmd += ["--batch-gpu", str(batch_gpu)]
    rc, log = run_procs([cmd], out, dist_env())[0]
    if check:
        assert rc == 0, log[-5000:]
    return rc, log


def state(out: Path, name: str, rank: int = 0) -> dict[str, torch.Tensor]:
    """A rank's recorded state dict (float64)."""
    return torch.load(out / f"{name}_rank{rank}.pt", weights_only=True)


def facts(out: Path, name: str, rank: int = 0) -> dict[str, Any]:
    """A rank's recorded facts (iterations, chunks per rank, validation metrics)."""
    return json.loads((out / f"{name}_rank{rank}.json").read_text())


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                   keep: Callable[[str], bool] = lambda k: True) -> tuple[float, str | None]:
    """Largest absolute difference over the entries ``keep`` selects (integer entries: inf when unequal)."""
    assert a.keys() == b.keys()
    worst, where = 0.0, None
    for k in a:
        if not keep(k):
            continue
        if not a[k].is_floating_point():
            if not torch.equal(a[k], b[k]):
                return float("inf"), k
            continue
        d = float((a[k] - b[k]).abs().max()) if a[k].numel() else 0.0
        if d > worst:
            worst, where = d, k
    return worst, where


def assert_close_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float,
                        keep: Callable[[str], bool] = lambda k: True, what: str = "") -> None:
    """Fail naming the worst entry when any selected entry differs by more than ``tol``."""
    worst, where = max_difference(a, b, keep)
    assert worst <= tol, f"{what}: {where} differs by {worst:.3g} (tolerance {tol:g})"


def check_family(family: str, data: Path, tmp: Path, *, keep_vs_single: Callable[[str], bool] = lambda k: True,
                 metrics_vs_single: bool = True) -> None:
    """The proof of issue 12 for one family: 2 ranks on the global batch 4 (2 per rank) against one process
    accumulating the same two chunks (batch_gpu 2), in float64 and float32, plus the negative control and a resume
    after a kill in the middle of an epoch.
    """
    two, one = tmp / "two", tmp / "one"
    launch(family, data, two, devices=2, runs="full@64,nosync@64,full@32,kill@32,resumekill@32")
    launch(family, data, one, devices=1, batch_gpu=2, runs="full@64,full@32")
    assert facts(two, "full64")["chunks_per_rank"] == 1 and facts(one, "full64")["chunks_per_rank"] == 2
    assert facts(two, "full64")["iteration"] == facts(one, "full64")["iteration"] > 0
    for prec, tol in (("64", 1e-10), ("32", 1e-5)):
        r0, r1, single = state(two, f"full{prec}", 0), state(two, f"full{prec}", 1), state(one, f"full{prec}")
        assert_close_states(r0, r1, 0.0, what=f"rank 0 vs rank 1 ({prec} bit)")  # bitwise, buffers too
        assert_close_states(r0, single, tol, keep_vs_single, what=f"2 ranks vs 1 process ({prec} bit)")
    m2, m1 = facts(two, "full64")["metrics"], facts(one, "full64")["metrics"]
    assert m2 and m2 == facts(two, "full64", 1)["metrics"], "every rank logs the same validation metrics"
    if metrics_vs_single:
        assert m2.keys() == m1.keys()
        for k in m1:
            assert m2[k] == pytest.approx(m1[k], rel=1e-6, abs=1e-9), k
    # the negative control: without the gradient all-reduce the same checks fail
    n0, n1 = state(two, "nosync64", 0), state(two, "nosync64", 1)
    assert max_difference(n0, n1)[0] > 1e-6, "ranks without gradient sync must drift apart"
    assert max_difference(n0, state(one, "full64"), keep_vs_single)[0] > 1e-6
    # killed mid-epoch at 2 ranks and resumed: exactly the uninterrupted 2-rank run (float32, bitwise, every rank)
    killed = facts(two, "kill32")
    assert killed["checkpoint_iteration"] == facts(two, "full32")["iteration"] - 1, killed  # 1 batch into epoch 2
    assert facts(two, "resumekill32")["iteration"] == facts(two, "full32")["iteration"]
    for rank in (0, 1):
        assert_close_states(state(two, "resumekill32", rank), state(two, "full32", rank), 0.0,
                            what=f"kill + resume, rank {rank}")
