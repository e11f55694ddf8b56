"""CycleGAN under DDP (2 CPU ranks, gloo) equals one process accumulating the same chunks (issue 12)."""
from __future__ import annotations

import pytest

from tests.gan.models.ddp_helpers import check_family


@pytest.mark.slow
def test_ddp_cyclegan_two_ranks_equal_one_process_accumulating_chunks(phantom_dir, tmp_path):
    """Weights (float64: 1e-10; float32: 1e-5), image pools per global chunk, validation metrics; a run without
    gradient sync fails the same check; a 2-rank resume is bit-exact."""
    check_family("cyclegan", phantom_dir, tmp_path)
