"""Launching DDP (issue 12): ``torchrun`` with 2 "nodes" on localhost gives the weights of ``devices=2``; a rank
that fails in setup stops the whole run with its own error instead of leaving the others waiting."""
from __future__ import annotations

import sys

import pytest

from tests.gan.models.ddp_helpers import SCRIPT, assert_close_states, dist_env, free_port, launch, run_procs, state


@pytest.mark.slow
def test_ddp_torchrun_two_nodes_equal_two_devices(phantom_dir, tmp_path):
    launch("cyclegan", phantom_dir, tmp_path / "devices", devices=2, runs="full@64")
    out = tmp_path / "nodes"
    out.mkdir()
    port = free_port()
    cmds = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
             "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
             str(SCRIPT), "--family", "cyclegan", "--data", str(phantom_dir), "--out", str(out), "--devices", "1",
             "--num-nodes", "2", "--batch", "4", "--runs", "full@64"] for node in (0, 1)]
    for rc, log in run_procs(cmds, out, dist_env(port)):
        assert rc == 0, log[-5000:]
    for rank in (0, 1):
        assert_close_states(state(out, "full64", rank), state(tmp_path / "devices", "full64", rank), 0.0,
                            what=f"torchrun node {rank} vs devices=2 rank {rank}")


@pytest.mark.slow
def test_ddp_a_failing_rank_stops_the_run_with_its_error(phantom_dir, tmp_path):
    rc, log = launch("cyclegan", phantom_dir, tmp_path, devices=2, runs="fail@32", check=False)
    assert rc != 0
    assert "rank 1 could not read its data" in log
