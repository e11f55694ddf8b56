"""Helpers shared by the model and command tests: tiny networks, a datamodule on the phantom patients, a trainer."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

#: Tiny translation networks (fast on CPU).
TINY_CYCLEGAN: dict[str, Any] = dict(generator={"features": 4, "n_blocks": 1},
                                     discriminator={"features": 4, "layers": 2}, evaluation={"inference_batch": 32})
TINY_PIX2PIX: dict[str, Any] = dict(generator={"features": 4, "num_downs": 5},
                                    discriminator={"features": 4, "layers": 2}, evaluation={"inference_batch": 32})


def volume_dm(root: Path, **kw: Any):
    """A VolumeTranslationDataModule on the phantom patients (CT -> MR unpaired, 32x32 crops by default)."""
    from data.volumes import VolumeTranslationDataModule

    args = dict(source="ct", target="mr", paired=False, patch_size=(32, 32), batch_size=2, val_fraction=0.2,
                test_fraction=0.2, seed=0, augment=False)
    args.update(kw)
    return VolumeTranslationDataModule(str(root), **args)


def cpu_trainer(tmp: Path, **kw: Any) -> L.Trainer:
    """A quiet one-device CPU trainer (no logger, no checkpoints unless asked)."""
    args = dict(default_root_dir=str(tmp), logger=False, enable_progress_bar=False, enable_model_summary=False,
                accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=4, num_sanity_val_steps=0,
                enable_checkpointing=False, deterministic=True, use_distributed_sampler=False)
    args.update(kw)
    return L.Trainer(**args)


class RandomPairs(torch.utils.data.Dataset):
    """Eight random CT/PET pairs of 32x32 with fixed windows (no data layer involved)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(i)
        w = {"ct": {"low": -1024.0, "high": 3000.0, "log": False}, "pet": {"low": 0.0, "high": 20.0, "log": False}}
        return {"ct": torch.rand(1, 32, 32, generator=g) * 2 - 1, "pet": torch.rand(1, 32, 32, generator=g) * 2 - 1,
                "window": w}
