"""Precision and memory-format speed-ups of the translation modules: bf16 autocast and channels-last against float32.

The same Lightning module and in-memory samples as ``bench_training.py``, trained for ``--steps`` iterations after a
warm-up with ``Trainer(precision=...)``; ``channels_last`` is the module's own option. Every variant is a ratio
against the float32, contiguous run measured in the same process. On a GPU (bf16 tensor cores, cuDNN) these are the
figures the README asks for; on a CPU the result depends on its bf16 units (this VM: faster), shown as is.

    python benchmarks/bench_precision.py [--model cyclegan|pix2pix] [--size 128] [--batch 8] [--steps 10]
        [--device cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import harness
import lightning as L
import torch
from bench_training import Batches
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from gan.models import CycleGAN, Pix2Pix

QUICK = ["--size", "64", "--batch", "4", "--steps", "4"]
VARIANTS = (("32-true", False), ("bf16-mixed", False), ("32-true", True), ("bf16-mixed", True))


class _Clock(Callback):
    """Wall time of the iterations after ``warmup`` (device synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.stop, self.seen = warmup, 0.0, 0.0, 0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        if self.seen == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, out: Any, batch: Any,
                           i: int) -> None:
        self.seen += 1
        self._sync(pl_module)
        self.stop = time.perf_counter()


def measure(kind: str, size: int, batch: int, steps: int, device: str, precision: str, channels_last: bool) -> float:
    """Training images/s of one variant."""
    L.seed_everything(0)
    keys = ("ct", "mr") if kind == "cyclegan" else ("ct", "pet")
    small = dict(generator={"features": 32}, discriminator={"features": 32}, channels_last=channels_last)
    model = (CycleGAN(**small, pool_size=0) if kind == "cyclegan"
             else Pix2Pix(**small, generator={"features": 32, "num_downs": 6}))
    warmup = 2
    loader = DataLoader(Batches((steps + warmup) * batch, size, keys), batch_size=batch)
    clock = _Clock(warmup)
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=precision,
                        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[clock], num_sanity_val_steps=0,
                        use_distributed_sampler=False)
    trainer.fit(model, loader)
    return (clock.seen - warmup) * batch / max(clock.stop - clock.start, 1e-9)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("cyclegan", "pix2pix"), default="cyclegan")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def rows(quick: bool = False, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per variant against float32 contiguous, measured in this run."""
    args = _parser().parse_args((QUICK if quick else []) + list(argv or []))
    rates = {v: measure(args.model, args.size, args.batch, args.steps, args.device, *v) for v in VARIANTS}
    base = rates[VARIANTS[0]]
    out = []
    for (precision, cl), rate in list(rates.items())[1:]:
        name = f"{args.model} {precision}{' + channels_last' if cl else ''}"
        out.append(harness.row("precision", name, baseline_name="32-true, contiguous", baseline=base, result=rate,
                               unit="img/s", detail=f"{args.size}px batch {args.batch}, {args.steps} iterations, "
                                                    f"{args.device}"))
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the rows.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    print(harness.format_table(rows(argv=sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
