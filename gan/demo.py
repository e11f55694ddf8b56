"""The training part of ``make demo``: fit the CPU-sized CycleGAN CT -> MR config on the demo data, test the best
checkpoint on held-out patients and print model vs baseline."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from data.atomic import atomic_write_text
from gan.callbacks import CheckpointWithMetrics, SamplePanels, metrics_json_for


@dataclass
class DemoReport:
    """Where the demo put its results, and the printed table.

    Args:
        table: markdown table of test metrics (model vs baseline).
        metrics: test metrics as numbers.
        checkpoint: best checkpoint.
        metrics_json: metrics JSON beside the checkpoint.
        panel: last validation sample panel (PNG).
        wandb_dir: folder of the offline W&B run.
    """

    table: str
    metrics: dict[str, float]
    checkpoint: Path
    metrics_json: Path
    panel: Path | None
    wandb_dir: Path


def metrics_table(metrics: dict[str, float], names: tuple[str, ...] = ("mae", "psnr", "ssim"), stage: str = "test") -> str:
    """Markdown table: metric | model | baseline | better? (lower MAE, higher PSNR/SSIM is better)."""
    rows = ["| metric | model | baseline (input copied) | model better |", "|---|---|---|---|"]
    for n in names:
        m, b = metrics.get(f"{stage}/{n}"), metrics.get(f"{stage}/baseline_{n}")
        if m is None or b is None:
            continue
        better = m < b if n == "mae" else m > b
        rows.append(f"| {n.upper()} | {m:.4g} | {b:.4g} | {'yes' if better else 'no'} |")
    return "\n".join(rows)


def run_training_demo(config: str | Path, out: str | Path, data_dir: str | Path) -> DemoReport:
    """Fit ``config`` on ``data_dir`` with outputs under ``out/runs``, then test the best checkpoint.

    Args:
        config: LightningCLI YAML (``experiments/cyclegan_ct2mri_demo.yaml``).
        out: demo output folder.
        data_dir: demo data folder (with ``volumes/`` and ``splits.json``).
    """
    from gan.cli import run_lightning_cli

    out, data_dir = Path(out), Path(data_dir)
    runs = out / "runs"
    cli = run_lightning_cli(["--config", str(config),
                             f"--data.init_args.data_dir={data_dir / 'volumes'}",
                             f"--data.init_args.splits={data_dir / 'splits.json'}",
                             f"--trainer.default_root_dir={runs}",
                             f"--trainer.logger.init_args.save_dir={runs}"], run=False)
    trainer = cli.trainer
    trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt_cb = next(c for c in trainer.callbacks if isinstance(c, CheckpointWithMetrics))
    best = Path(ckpt_cb.best_model_path or ckpt_cb.last_model_path)
    results = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(best))[0]
    metrics = {k: float(v) for k, v in results.items()}
    table = metrics_table(metrics)
    atomic_write_text(out / "demo_results.md", "Held-out test patients, CycleGAN CT -> MR, metrics in MR units inside "
                      "the body mask, averaged over patients\n\n" + table + "\n")
    atomic_write_text(out / "demo_results.json", json.dumps(metrics, indent=2, sort_keys=True))
    panels = next((c for c in trainer.callbacks if isinstance(c, SamplePanels)), None)
    return DemoReport(table=table, metrics=metrics, checkpoint=best, metrics_json=metrics_json_for(best),
                      panel=panels.last_path if panels else None, wandb_dir=runs / "wandb")
