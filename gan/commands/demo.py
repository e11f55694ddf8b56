"""``medsynth demo`` (what ``make demo`` runs): the demo data set and its previews, then each demo config trained on
it and tested on the held-out patients, with the model-vs-baseline table printed and written to ``demo_results.md``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from gan.commands import demo_data

REPO = Path(__file__).resolve().parents[2]
HELP = "demo data, previews, demo training runs and their held-out evaluation (what `make demo` runs)"
DESCRIPTION = """Write the demo data set and its previews under --out, train the CPU-sized demo config(s) on it
(default: CycleGAN CT -> MR, about 6 minutes on 2 cores), test the best checkpoint of each on the held-out patients
and print the model beside the trivial baseline. Then (unless --skip-stylegan2) a tiny conditional StyleGAN2 on the
demo slides: its per-class grid, a style-mixing grid, the exported generator and an audited synthetic rare-class
tile set under OUT/stylegan2/. Every run gets its own folder under OUT/runs/<project>/<run id>/.

Example:
  medsynth demo --out demo_out
  medsynth demo --out demo_out --config experiments/cyclegan_ct2mri_demo.yaml \
      --config experiments/pix2pix_ct2pet_demo.yaml
"""

@dataclass
class DemoRun:
    """Where one demo training run put its results, and its printed table.

    Args:
        config: the experiment config.
        table: markdown table of test metrics (model vs baseline).
        metrics: test metrics as numbers.
        checkpoint: the best checkpoint (by validation MAE).
        run_dir: the run's folder (checkpoints, samples, config, metrics.json).
        panel: last validation sample panel (PNG), if any.
        wandb_dir: folder of the offline W&B runs.
    """

    config: Path
    table: str
    metrics: dict[str, float]
    checkpoint: Path
    run_dir: Path
    panel: Path | None
    wandb_dir: Path


def train_demo(config: str | Path, out: str | Path, data_dir: str | Path) -> DemoRun:
    """Fit ``config`` (on top of ``experiments/base.yaml``) on ``data_dir`` with runs under ``out/runs``, then test
    the best checkpoint on the held-out patients.

    Args:
        config: experiment YAML (e.g. ``experiments/cyclegan_ct2mri_demo.yaml``).
        out: demo output folder.
        data_dir: demo data folder (with ``volumes/`` and ``splits.json``).
    """
    from gan.callbacks import BASELINE_NAMES, CheckpointWithMetrics, SamplePanels, metrics_table, run_dir
    from gan.commands.train import run_lightning_cli
    from gan.tracking import finish_run

    out, data_dir = Path(out), Path(data_dir)
    runs = out / "runs"
    cli = run_lightning_cli(["--config", str(REPO / "experiments" / "base.yaml"), "--config", str(config),
                             f"--data.init_args.data_dir={data_dir / 'volumes'}",
                             f"--data.init_args.splits={data_dir / 'splits.json'}",
                             f"--trainer.default_root_dir={runs}",
                             f"--trainer.logger.init_args.save_dir={runs}"], run=False)
    trainer = cli.trainer
    check = getattr(cli.datamodule, "check_inputs", None)
    if check is not None:
        check("fit")
    trainer.fit(cli.model, datamodule=cli.datamodule)
    ckpt_cb = next(c for c in trainer.callbacks if isinstance(c, CheckpointWithMetrics))
    best = Path(ckpt_cb.best_model_path or ckpt_cb.last_model_path)
    try:
        results = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(best))[0]
    finally:
        finish_run()
    metrics = {k: float(v) for k, v in results.items()}
    eval_config = getattr(cli.model, "eval_config", None)
    baseline = BASELINE_NAMES.get(eval_config.baseline, "baseline") if eval_config is not None else "baseline"
    panels = next((c for c in trainer.callbacks if isinstance(c, SamplePanels)), None)
    return DemoRun(config=Path(config), table=metrics_table(metrics, baseline=baseline), metrics=metrics,
                   checkpoint=best, run_dir=run_dir(trainer), panel=panels.last_path if panels else None,
                   wandb_dir=runs / "wandb")


def _describe(run: DemoRun) -> str:
    model = run.config.stem.replace("_demo", "").replace("_", " ")
    return (f"Held-out test patients, {model}: metrics in the target's units inside the body mask, averaged over "
            f"patients ({run.config.name})\n\n{run.table}\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth demo``."""
    demo_data.add_arguments(parser)
    parser.add_argument("--config", type=Path, action="append", default=None,
                        help="demo training config (repeat for several; default: "
                             "experiments/cyclegan_ct2mri_demo.yaml)")
    parser.add_argument("--skip-training", action="store_true", help="only build the data and its previews")
    parser.add_argument("--skip-stylegan2", action="store_true",
                        help="leave out the StyleGAN2 part (tiny conditional model on the demo slides, its grids "
                             "and an audited synthetic rare-class tile set under OUT/stylegan2/)")


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth demo``."""
    from data.files import atomic_write_json, atomic_write_text
    from gan.commands import preview

    t0 = time.perf_counter()
    data_dir = demo_data.write(args, out=args.out / "data")
    preview.render(data_dir, args.out / "preview.png")
    if args.skip_training:
        print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs under {args.out}/")
        return 0
    configs = args.config or [REPO / "experiments" / "cyclegan_ct2mri_demo.yaml"]
    results = [train_demo(c, args.out, data_dir) for c in configs]
    style = None
    if not args.skip_stylegan2:
        from gan.commands.demo_style import style_demo

        style = style_demo(args.out, data_dir)
    text = "\n".join(_describe(r) for r in results) + (f"\n{style.describe()}" if style else "")
    atomic_write_text(args.out / "demo_results.md", text)
    atomic_write_json(args.out / "demo_results.json", {r.config.stem: r.metrics for r in results})
    for r in results:
        print(f"\n{_describe(r)}\nrun folder:     {r.run_dir}\nbest checkpoint: {r.checkpoint}"
              f"\nsample panel:   {r.panel}")
    if style is not None:
        print(f"\n{style.describe()}")
    print(f"W&B (offline):  {results[0].wandb_dir}  (upload: wandb sync {results[0].wandb_dir}/offline-run-*)"
          f"\ndemo finished in {time.perf_counter() - t0:.0f} s; outputs under {args.out}/")
    return 0
