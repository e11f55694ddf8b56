"""``medsynth fit`` of every experiment config on 2 CPU ranks, one launch (run by tests/gan/commands/test_ddp_cli.py).

    python tests/gan/commands/cli_ddp_script.py --volumes DIR --slides DIR --out DIR

Lightning's launcher re-runs this script for rank 1, so both ranks run the same sequence of CLI runs: first the
StyleGAN2 demo config for one short epoch with its logger and checkpoints (what each rank writes is checked), then
every config with ``fast_dev_run``. The strategy is not named: several devices pick ``ddp_gan``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from gan.commands.train import run_lightning_cli  # noqa: E402

EXPERIMENTS = REPO / "experiments"


#: Smaller crops where the config's own cost most of the test's time: a CycleGAN step on 256 px ResNet-9 crops takes
#: 25 s per rank here. Nothing of the DDP path depends on the crop; tests/gan/commands/test_train.py runs these
#: configs at their own sizes in one process. (pix2pix's U-Net-256 needs its 256 px crops.)
CROPS = {
    "cyclegan_ct2mri.yaml": ["--data.init_args.patch_size=[64, 64]"],
    "cyclegan_ct2mri_3d.yaml": ["--data.init_args.patch_size=[32, 32, 24]",
                                "--model.init_args.evaluation.roi_size=[32, 32, 24]"],
}


def overrides(config: Path, volumes: str, slides: str) -> list[str]:
    """Data paths of the test fixtures, a global batch the 2 ranks can share, and smaller crops (:data:`CROPS`)."""
    if config.name.startswith("stylegan2"):
        return [f"--data.init_args.slides={slides}", "--data.init_args.num_workers=0",
                "--data.init_args.val_fraction=0.34", "--data.init_args.batch_size=4"]
    return [*CROPS.get(config.name, []), f"--data.init_args.data_dir={volumes}", "--data.init_args.splits=null",
            "--data.init_args.num_workers=0",
            "--data.init_args.cache_dir=null", "--data.init_args.val_fraction=0.2",
            "--data.init_args.test_fraction=0.2", "--data.init_args.batch_size=2"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--volumes", required=True)
    ap.add_argument("--slides", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    base = ["--config", str(EXPERIMENTS / "base.yaml")]
    common = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.enable_progress_bar=false",
              f"--trainer.default_root_dir={args.out}"]
    demo = EXPERIMENTS / "stylegan2_pathology_demo.yaml"
    cli = run_lightning_cli([*base, "--config", str(demo), *overrides(demo, args.volumes, args.slides), *common,
                             "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                             f"--trainer.logger.init_args.save_dir={args.out / 'runs'}"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    result = {"strategy": type(cli.trainer.strategy).__name__, "world": cli.trainer.world_size, "finished": {}}
    # the paper's 256 px StyleGAN2 (24M + 24M parameters) is too slow for a CPU test step; its 32 px demo twin runs
    for config in sorted(p for p in EXPERIMENTS.glob("*.yaml") if p.name not in ("base.yaml",
                                                                                    "stylegan2_pathology.yaml")):
        cli = run_lightning_cli([*base, "--config", str(config), *overrides(config, args.volumes, args.slides),
                                 *common, "--trainer.fast_dev_run=1",
                                 f"--trainer.logger.init_args.save_dir={args.out / 'fast'}"], run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        result["finished"][config.stem] = bool(cli.trainer.state.finished)
    if cli.trainer.is_global_zero:
        (args.out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
