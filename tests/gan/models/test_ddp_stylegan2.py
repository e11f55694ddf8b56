"""StyleGAN2 under DDP (2 CPU ranks, gloo) equals one process accumulating the same chunks (issue 12)."""
from __future__ import annotations

import pytest

from tests.gan.models.ddp_helpers import check_family


@pytest.mark.slow
def test_ddp_stylegan2_two_ranks_equal_one_process_accumulating_chunks(slide_dir, tmp_path):
    """4 iterations with R1 and path length every 2 (iterations 0 and 2), ADA every 2, style mixing, EMA: weights,
    pl_mean, ADA p, w_avg and the EMA equal one process with batch_gpu chunks; per-class SWD, its floor and the
    diversity figures equal too (float64); the negative control drifts; a 2-rank resume is bit-exact."""
    check_family("stylegan2", slide_dir, tmp_path)
