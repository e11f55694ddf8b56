"""Two-process DDP run of a datamodule under Lightning (CPU, gloo), launched by ``test_ddp_loading.py``.

Every rank trains a one-parameter LightningModule for ``--steps`` steps, validates once, and writes the ids of
the samples it saw (per training step, and in validation) to ``<out>/rank<r>.json``.

    python tests/data/ddp_loading_script.py --kind volumes|tiles --data PATH... --out DIR --steps K --batch B (global)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch


def sample_ids(batch: dict[str, Any]) -> list[list[Any]]:
    """Ids of the samples of a batch: (slide, x, y) of a tile, (CT patient, MR partner, CT sum) of a volume slice,
    the patient of a whole held-out volume.

    Args:
        batch: a collated batch of either datamodule.
    """
    if "location" in batch:
        xs, ys = batch["location"]
        return [[s, int(x), int(y)] for s, x, y in zip(batch["slide"], xs, ys)]
    if "patient_a" in batch:
        return [[a, b, round(float(x.double().sum()), 4)]
                for a, b, x in zip(batch["patient_a"], batch["patient_b"], batch["ct"])]
    return [[p] for p in batch["patient"]]


class Probe(L.LightningModule):
    """One parameter pulled towards the batch mean; records what each rank sees.

    Args:
        key: the batch key of the image (``"image"`` for tiles, ``"ct"`` for volumes).
        out: folder of the per-rank files.
    """

    def __init__(self, key: str, out: Path) -> None:
        super().__init__()
        self.key, self.out = key, out
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.train_ids: list[list[list[Any]]] = []
        self.val_ids: list[list[Any]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.train_ids.append(sample_ids(batch))
        return (self.w - batch[self.key].float().mean()) ** 2

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_ids.extend(sample_ids(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_fit_end(self) -> None:
        path = self.out / f"rank{self.global_rank}.json"
        path.write_text(json.dumps({"world": self.trainer.world_size, "train": self.train_ids, "val": self.val_ids}))


def datamodule(kind: str, data: list[str], batch: int) -> L.LightningDataModule:
    """The datamodule under test, configured exactly as the test's single-process reference.

    Args:
        kind: ``"volumes"`` or ``"tiles"``.
        data: the phantom patients' folder, or the phantom slides.
        batch: the global batch (each of the 2 ranks takes half).
    """
    if kind == "volumes":
        from data.volumes import VolumeTranslationDataModule

        return VolumeTranslationDataModule(data[0], **volume_settings(batch))
    from data.slides import TileDataModule

    return TileDataModule(slides=data, **tile_settings(batch))


def volume_settings(batch: int) -> dict[str, Any]:
    """Settings of the volume datamodule (shared with the test's reference)."""
    return dict(source="ct", target="mr", paired=False, patch_size=(32, 32), batch_size=batch, val_fraction=0.34,
                test_fraction=0.0, seed=1, augment=False, num_workers=1)


def tile_settings(batch: int) -> dict[str, Any]:
    """Settings of the tile datamodule (shared with the test's reference)."""
    return dict(tile_size=128, mpp=0.5, batch_size=batch, val_fraction=0.5, seed=2, augment=True, balanced=False,
                num_workers=1, min_tissue=0.3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=("volumes", "tiles"), required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)  # global
    args = ap.parse_args()
    L.seed_everything(0)
    model = Probe("ct" if args.kind == "volumes" else "image", args.out)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=False, max_epochs=1,
                        limit_train_batches=args.steps, num_sanity_val_steps=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule(args.kind, args.data, args.batch))


if __name__ == "__main__":
    main()
