"""What a training run writes: W&B offline fallback, one folder per run (checkpoints with metrics JSON, best.ckpt
beside last.ckpt, sample panels with titles, config.yaml, metrics.json), the per-epoch console line, and a resumed
run that continues its own folder and W&B run."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from gan.callbacks import CheckpointWithMetrics, EpochSummary, SamplePanels, format_epoch_line, metrics_json_for, panel
from gan.cli import main
from gan.models import CycleGAN
from gan.tracking import MedsynthWandbLogger, wandb_credentials_available
from tests.helpers import TINY_CYCLEGAN, volume_dm

EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments"


def test_wandb_goes_offline_without_a_key_and_says_so_once(tmp_path, monkeypatch, caplog):
    import gan.tracking as tracking

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(tracking, "_NOTICE_SHOWN", False)
    assert not wandb_credentials_available()
    with caplog.at_level(logging.WARNING, logger="medsynth"):
        a = MedsynthWandbLogger(save_dir=str(tmp_path / "runs"))
        b = MedsynthWandbLogger(save_dir=str(tmp_path / "runs"))
    assert a._offline and b._offline
    assert sum("logging offline" in r.getMessage() for r in caplog.records) == 1
    assert not (tmp_path / "runs").exists(), "nothing is written before the run starts"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_credentials_available()


def test_checkpoint_metrics_json_best_link_and_sample_panel(phantom_dir, tmp_path):
    dm = volume_dm(phantom_dir)
    model = CycleGAN(**TINY_CYCLEGAN)
    ckpt = CheckpointWithMetrics(dirpath=str(tmp_path / "ckpt"), monitor="val/mae", mode="min", save_top_k=1,
                                 save_last=True, filename="epoch{epoch:03d}", auto_insert_metric_name=False)
    panels = SamplePanels()
    trainer = L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False, max_epochs=2,
                        limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[ckpt, panels],
                        enable_model_summary=False, use_distributed_sampler=False)
    trainer.fit(model, datamodule=dm)
    files = sorted(p for p in (tmp_path / "ckpt").glob("epoch*.ckpt"))
    assert len(files) == 1, "save_top_k=1: the worse checkpoint and its JSON were removed"
    side = json.loads(metrics_json_for(files[0]).read_text())
    assert side["checkpoint"] == files[0].name and side["monitor"] == "val/mae" and side["mode"] == "min"
    assert side["metrics"]["val/mae"] == float(ckpt.best_model_score)
    best = tmp_path / "ckpt" / "best.ckpt"
    assert best.is_file() and best.read_bytes() == files[0].read_bytes()
    assert {p.name for p in (tmp_path / "ckpt").glob("epoch*.metrics.json")} == {files[0].stem + ".metrics.json"}
    run_metrics = json.loads((tmp_path / "metrics.json").read_text())  # no logger: the run folder is the root
    assert run_metrics["monitor"] == "val/mae" and run_metrics["best"]["checkpoint"] == files[0].name
    assert [v["epoch"] for v in run_metrics["validations"]] == [0, 1]
    img = np.asarray(Image.open(panels.last_path))
    assert img.dtype == np.uint8 and img.ndim == 2
    assert img.shape[1] > 3 * (img.shape[0] - 14), "input | output | target | error side by side, titles above"
    assert (img[:14] < 128).any(), "column titles are drawn"


def test_last_checkpoint_follows_the_latest_epoch_even_without_improvement(tmp_path):
    class Worsening(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            return self.lin(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            self.log("val/mae", float(self.current_epoch))  # gets worse every epoch

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    cb = CheckpointWithMetrics(dirpath=str(tmp_path), monitor="val/mae", mode="min", save_last=True,
                               filename="e{epoch}")
    L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[cb],
              default_root_dir=str(tmp_path)).fit(Worsening(), dl, dl)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 2
    assert json.loads((tmp_path / "last.metrics.json").read_text())["epoch"] == 2
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] == 0
    assert json.loads((tmp_path / "best.metrics.json").read_text())["epoch"] == 0


def test_panel_shows_the_lesion_slice():
    tgt = np.zeros((16, 16, 6))
    lesion = np.zeros((16, 16, 6), bool)
    lesion[4:8, 4:8, 4] = True
    tgt[lesion] = 10.0
    img = panel("ct", "pet", None, tgt.copy(), tgt, 2.0, lesion=lesion)
    # the target column (second tile) shows the hot lesion in inverted grey: dark pixels
    tile = img[14:, 18:34]
    assert tile.min() < 50


def test_epoch_line_shows_model_and_baseline():
    line = format_epoch_line(3, {"val/mae": 90.24, "val/baseline_mae": 208.3, "val/psnr": 17.29,
                                 "val/baseline_psnr": 10.96}, ("mae", "psnr", "ssim"))
    assert line == "epoch 3 | val mae 90.24 (baseline 208.3) | psnr 17.29 (10.96)"
    assert format_epoch_line(0, {}, ("mae",)) == ""
    assert isinstance(EpochSummary().names, tuple)


def _fit_args(config: Path, data: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(EXPERIMENTS / "base.yaml"), "--config", str(config),
            f"--data.init_args.data_dir={data}", "--data.init_args.splits=null", "--data.init_args.val_fraction=0.2",
            "--data.init_args.test_fraction=0.2", "--data.init_args.patch_size=[32,32]",
            "--model.init_args.generator.features=4", "--model.init_args.generator.n_blocks=1",
            "--model.init_args.discriminator.features=4", "--model.init_args.discriminator.layers=2",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu",
            f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.default_root_dir={runs}", *extra]


@pytest.mark.slow
def test_runs_get_their_own_folders_and_a_resume_continues_its_run(phantom_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = EXPERIMENTS / "cyclegan_ct2mri_demo.yaml"
    runs = tmp_path / "runs"
    assert main(_fit_args(config, phantom_dir, runs, "--trainer.max_epochs=1")) == 0
    assert main(_fit_args(config, phantom_dir, runs, "--trainer.max_epochs=1")) == 0
    err = capsys.readouterr().err
    folders = sorted(p for p in (runs / "medsynth-demo").iterdir() if p.is_dir())
    assert len(folders) == 2, "two runs of one config, two folders"
    for f in folders:
        assert (f / "config.yaml").is_file() and (f / "metrics.json").is_file()
        assert (f / "checkpoints" / "last.ckpt").is_file() and (f / "checkpoints" / "best.ckpt").is_file()
        assert (f / "samples" / "epoch_000.png").is_file()
    lines = [ln for ln in err.splitlines() if "epoch 0 | val mae" in ln]
    assert len(lines) == 2 and lines[0].startswith("medsynth.train: epoch 0 | val mae"), "one line per validation"
    assert err.count("GPU available") <= 2, "Lightning's lines are printed once per run, not twice"
    first = folders[0]
    last = first / "checkpoints" / "last.ckpt"
    assert main(_fit_args(config, phantom_dir, runs, "--trainer.max_epochs=2", f"--ckpt_path={last}")) == 0
    assert sorted(p for p in (runs / "medsynth-demo").iterdir() if p.is_dir()) == folders, "no third folder"
    history = json.loads((first / "metrics.json").read_text())["validations"]
    assert [v["epoch"] for v in history] == [0, 1], "the resumed run continued the first run's record"
    assert (first / "samples" / "epoch_001.png").is_file()
    offline = sorted((runs / "wandb").glob(f"offline-run-*-{first.name}*"))
    assert len(offline) == 2, "the resumed run logs to the same W&B run id"
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_bad_data_path_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    args = _fit_args(EXPERIMENTS / "cyclegan_ct2mri_demo.yaml", tmp_path / "no_such_dir", runs)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no_such_dir" in err and "Traceback" not in err
    assert not runs.exists(), "nothing is created before the inputs are checked"
