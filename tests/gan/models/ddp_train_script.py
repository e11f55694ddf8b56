"""Train one family for the DDP equivalence tests (launched as a subprocess by ``tests/gan/models/test_ddp_*.py``).

    python tests/gan/models/ddp_train_script.py --family cyclegan|pix2pix|stylegan2 --data PATH --out DIR
        --devices 1|2 --batch B --batch-gpu G --epochs E --batches N [--runs full@64,nosync@64,full@32,...]

One launch runs the named runs one after another in the same processes (the DDP process group is set up once),
each ``<run>@<precision>`` (64: ``64-true``, 32: ``32-true``); files are named ``<run><precision>_rank<r>``:

* ``full``: E epochs of N iterations, validated after each; writes ``full_rank<r>.pt`` (state dict, float64) and
  ``full_rank<r>.json`` (the last validation's metrics, iterations, chunks per rank).
* ``half`` + ``resume``: E // 2 epochs ending in a checkpoint (``last.ckpt``), then a resume from it to E epochs.
  (Run these at 32: under ``64-true`` Lightning's resume itself is not bit-exact, in one process too, ~3e-9.)
* ``kill`` + ``resumekill``: a run killed in its last iteration (every rank raises before that iteration's checkpoint;
  Lightning runs checkpoint callbacks last), so the last checkpoint is one iteration into the last epoch; then a
  resume from it to E epochs.
* ``nosync``: E epochs with the strategy's gradient averaging switched off (the negative control).
* ``fail``: rank 1 raises in setup (the run must stop with that error, not hang).

``--devices 1`` is the reference: one process whose ``batch_gpu`` cuts the global batch into the same chunks the
ranks hold.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402

from gan.models import CycleGAN, Pix2Pix, StyleGAN2  # noqa: E402
from gan.models.strategy import GANDDPStrategy  # noqa: E402


class NoSync(GANDDPStrategy):
    """The negative control: the project's strategy with its gradient averaging switched off."""

    def sync_gradients(self, params: list) -> None:
        """Leave every rank with its own gradients."""


class Killed(RuntimeError):
    """Stands in for a job killed by the scheduler."""


class KillAt(Callback):
    """Every rank stops after ``iteration`` training batches, as a killed job would (after the step's checkpoint)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.iteration >= self.iteration:
            raise Killed(f"killed after iteration {pl_module.iteration}")


class FailOnRank1(Callback):
    """Rank 1 fails while the ranks set up (a bad file seen by one node, say)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank == 1:
            raise RuntimeError("rank 1 could not read its data (the injected failure)")


def build(family: str, data: str, batch: int, batch_gpu: int | None) -> tuple[L.LightningModule, Any]:
    """The family's tiny module and its datamodule (global batch ``batch``)."""
    from data.slides import TileDataModule
    from data.volumes import VolumeTranslationDataModule

    vol = dict(source="ct", patch_size=(32, 32), batch_size=batch, val_fraction=0.34, test_fraction=0.0, seed=0,
               augment=True)
    if family == "cyclegan":
        model = CycleGAN(generator={"features": 4, "n_blocks": 1}, discriminator={"features": 4, "layers": 2},
                         evaluation={"inference_batch": 64}, pool_size=3, lambda_identity=0.5, batch_gpu=batch_gpu)
        return model, VolumeTranslationDataModule(data, target="mr", paired=False, **vol)
    if family == "pix2pix":  # batch norm and dropout active
        model = Pix2Pix(generator={"features": 4, "num_downs": 5}, discriminator={"features": 4, "layers": 2},
                        evaluation={"inference_batch": 64}, pool_size=2, batch_gpu=batch_gpu)
        return model, VolumeTranslationDataModule(data, target="pet", paired=True, **vol)
    dm = TileDataModule(slides=data, tile_size=32, mpp=0.5, batch_size=batch, val_fraction=0.34, seed=0,
                        augment=True, samples_per_epoch=batch * 8)
    model = StyleGAN2(resolution=32, class_names=dm.class_names, mpp=0.5,
                      network={"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 512, "channel_max": 32},
                      regularization={"pl_interval": 2, "r1_interval": 2, "style_mixing": 0.9},
                      d_augment={"kind": "ada", "interval": 2, "initial_p": 0.2}, ema_kimg=0.05, batch_gpu=batch_gpu,
                      evaluation={"grid_seeds": 2, "diversity_tiles": 4, "lpips_pretrained": False, "swd_tiles": 8,
                                  "swd_patches": 16, "swd_projections": 8})
    return model, dm


def fit(args: argparse.Namespace, run: str, *, epochs: int, precision: str, ckpt: str | None = None,
        strategy: Any = None, callbacks: list[Callback] | None = None) -> tuple[L.LightningModule, L.Trainer]:
    """One run; returns the module and its trainer."""
    L.seed_everything(0)
    model, dm = build(args.family, args.data, args.batch, args.batch_gpu)
    if strategy is None:
        multi = args.devices * args.num_nodes > 1
        strategy = GANDDPStrategy(process_group_backend="gloo") if multi else "auto"
    cbs = list(callbacks or [])
    if run == "half":
        cbs.append(ModelCheckpoint(dirpath=str(args.out / f"ckpt{precision}"), save_last=True, save_top_k=0))
    if run == "kill":  # a checkpoint after every iteration, as a long job keeps
        cbs.insert(0, ModelCheckpoint(dirpath=str(args.out / f"kill{precision}"), every_n_train_steps=1,
                                      save_last=True, save_top_k=0))
    trainer = L.Trainer(accelerator="cpu", devices=args.devices, num_nodes=args.num_nodes, strategy=strategy,
                        use_distributed_sampler=False,
                        precision=f"{precision}-true", max_epochs=epochs, limit_train_batches=args.batches,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=run in ("half", "kill"),
                        enable_progress_bar=False, enable_model_summary=False, callbacks=cbs,
                        default_root_dir=str(args.out), deterministic=True)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    return model, trainer


def record(args: argparse.Namespace, name: str, model: L.LightningModule, trainer: L.Trainer,
           metrics: dict[str, float] | None = None) -> None:
    """Write this rank's state dict (float64) and facts of the run."""
    rank = trainer.global_rank
    state = {k: v.detach().double().cpu() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    torch.save(state, args.out / f"{name}_rank{rank}.pt")
    facts = {"iteration": model.iteration, "chunks_per_rank": model.chunks_per_rank, "world": trainer.world_size,
             "metrics": metrics or {}}
    (args.out / f"{name}_rank{rank}.json").write_text(json.dumps(facts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=("cyclegan", "pix2pix", "stylegan2"), required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--num-nodes", type=int, default=1)  # torchrun --nnodes: one process per "node"
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--batch-gpu", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--runs", default="full@64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for spec in args.runs.split(","):
        run, prec = spec.split("@")
        name, kw = run + prec, dict(precision=prec)
        if run == "full":
            model, trainer = fit(args, run, epochs=args.epochs, **kw)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                       if k.startswith("val/") or (k.startswith("train/") and k.endswith("_epoch"))}
            record(args, name, model, trainer, metrics)
        elif run == "half":
            fit(args, run, epochs=args.epochs // 2, **kw)
        elif run == "resume":
            model, trainer = fit(args, run, epochs=args.epochs, ckpt=str(args.out / f"ckpt{prec}" / "last.ckpt"), **kw)
            record(args, name, model, trainer)
        elif run == "kill":
            try:
                fit(args, run, epochs=args.epochs, callbacks=[KillAt(args.batches * args.epochs - 1)], **kw)
            except Killed as e:
                ckpt = torch.load(args.out / f"kill{prec}" / "last.ckpt", weights_only=True)
                facts = {"killed": str(e), "checkpoint_iteration": ckpt["medsynth"]["iteration"]}
                (args.out / f"{name}_rank{torch.distributed.get_rank() if args.devices > 1 else 0}.json").write_text(
                    json.dumps(facts))
        elif run == "resumekill":
            model, trainer = fit(args, run, epochs=args.epochs, ckpt=str(args.out / f"kill{prec}" / "last.ckpt"), **kw)
            record(args, name, model, trainer)
        elif run == "nosync":
            model, trainer = fit(args, run, epochs=args.epochs, strategy=NoSync(process_group_backend="gloo"), **kw)
            record(args, name, model, trainer)
        elif run == "fail":
            fit(args, run, epochs=args.epochs, callbacks=[FailOnRank1()], **kw)
        else:
            raise SystemExit(f"unknown run {run!r}")


if __name__ == "__main__":
    main()
