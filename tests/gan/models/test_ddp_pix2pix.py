"""pix2pix under DDP (2 CPU ranks, gloo): batch norm and dropout active (issue 12)."""
from __future__ import annotations

import pytest

from tests.gan.models.ddp_helpers import check_family


def _not_bn_statistics(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


@pytest.mark.slow
def test_ddp_pix2pix_two_ranks_equal_one_process_accumulating_chunks(phantom_dir, tmp_path):
    """Parameters equal one process accumulating the chunks (dropout masks per global chunk). The batch-norm
    running statistics are each rank's own chunks' until the sync point (rank 0's broadcast before every evaluation
    and checkpoint), so after it they are bitwise equal across ranks but not the single process's (which saw both
    chunks); eval-mode validation metrics therefore agree across ranks, not with the single process."""
    check_family("pix2pix", phantom_dir, tmp_path, keep_vs_single=_not_bn_statistics, metrics_vs_single=False)
