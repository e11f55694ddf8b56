"""W&B offline fallback, checkpoint metrics JSON and sample panels."""
from __future__ import annotations

import json
import logging

import lightning as L
import numpy as np
from PIL import Image

from data.datamodules import VolumeTranslationDataModule
from gan.callbacks import CheckpointWithMetrics, SamplePanels, metrics_json_for
from gan.models import CycleGAN
from gan.tracking import MedsynthWandbLogger, wandb_credentials_available


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
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_credentials_available()


def test_checkpoint_metrics_json_and_sample_panel(phantom_dir, tmp_path):
    dm = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="mr", patch_size=(32, 32), batch_size=2,
                                     val_fraction=0.2, test_fraction=0.2, augment=False)
    model = CycleGAN(features=4, n_blocks=1, d_features=4, d_layers=2)
    ckpt = CheckpointWithMetrics(dirpath=str(tmp_path / "ckpt"), monitor="val/mae", mode="min", save_top_k=1,
                                 filename="epoch{epoch:03d}", auto_insert_metric_name=False)
    panels = SamplePanels()
    trainer = L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False, max_epochs=2,
                        limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[ckpt, panels],
                        enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    files = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert len(files) == 1, "save_top_k=1: the worse checkpoint and its JSON were removed"
    side = json.loads(metrics_json_for(files[0]).read_text())
    assert side["checkpoint"] == files[0].name
    assert side["metrics"]["val/mae"] == float(ckpt.best_model_score)
    assert set(p.name for p in (tmp_path / "ckpt").glob("*.metrics.json")) == {files[0].stem + ".metrics.json"}
    img = np.asarray(Image.open(panels.last_path))
    assert img.dtype == np.uint8 and img.ndim == 2
    assert img.shape[1] > 3 * img.shape[0], "input | output | target | error side by side"


def test_last_checkpoint_follows_the_latest_epoch_even_without_improvement(tmp_path):
    import torch

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
    cb = CheckpointWithMetrics(dirpath=str(tmp_path), monitor="val/mae", mode="min", save_last=True, filename="best")
    L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[cb]).fit(
        Worsening(), dl, dl)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 2
    assert json.loads((tmp_path / "last.metrics.json").read_text())["epoch"] == 2
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] == 0
