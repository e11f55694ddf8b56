"""Lightning callbacks: sample panels (input | output | target | |error|), checkpoints with a metrics JSON beside
each file, and W&B config logging."""
from __future__ import annotations

import json
import math
from pathlib import Path


import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from data.atomic import atomic_write_text
from data.preview import CT_SOFT_TISSUE, axial, display_window, percentile_window, pet_inverted
from data.writers import write_png


def display(key: str, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """uint8 display of a physical-unit slice with the modality's reading window.

    Args:
        key: modality key (``ct`` soft-tissue window, ``mr`` percentiles of ``reference``, ``pet`` inverted grey).
        image: 2D slice in physical units.
        reference: slice whose percentiles fix the MR window (so output and target share one window).
    """
    if key == "ct":
        return display_window(image, *CT_SOFT_TISSUE)
    if key == "pet":
        return pet_inverted(image)
    return percentile_window(image, reference=reference)


def panel(source: str, target: str, inp: np.ndarray | None, pred: np.ndarray, tgt: np.ndarray,
          error_range: float) -> np.ndarray:
    """One uint8 row: input | output | target | |output - target| (white = ``error_range`` or more).

    Args:
        source: input modality key.
        target: output modality key.
        inp: input volume (physical units) or None.
        pred: translated volume.
        tgt: reference volume.
        error_range: absolute error shown white.
    """
    k = int(np.argmax(np.asarray(tgt).reshape(-1, tgt.shape[2]).std(axis=0))) if target == "pet" else tgt.shape[2] // 2
    tiles = []
    if inp is not None:
        tiles.append(display(source, axial(inp, k)))
    ref = axial(tgt, k)
    tiles += [display(target, axial(pred, k), ref), display(target, ref, ref),
              display_window(np.abs(axial(pred, k) - ref), error_range / 2, error_range)]
    sep = np.full((tiles[0].shape[0], 2), 255, np.uint8)
    row = []
    for t in tiles:
        row += [t, sep]
    return np.concatenate(row[:-1], axis=1)


class SamplePanels(Callback):
    """After each validation, write the first held-out patient's panel as PNG and log it to W&B.

    Args:
        every_n_epochs: how often to write a panel.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs
        self.last_path: Path | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Render ``pl_module.last_panel`` (set by the module's validation step) with this epoch's metrics."""
        p = getattr(pl_module, "last_panel", None)
        if p is None or trainer.sanity_checking or not trainer.is_global_zero or trainer.current_epoch % self.every_n_epochs:
            return
        hi_lo = getattr(pl_module, "eval_window", None)
        err = (hi_lo[1] - hi_lo[0]) / 10 if hi_lo else float(np.percentile(p["target"], 99.5) - np.percentile(p["target"], 0.5)) / 5
        img = panel(pl_module.source, pl_module.target, p.get("input"), p["pred"], p["target"], err)
        out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "samples"
        path = out_dir / f"epoch_{trainer.current_epoch:03d}.png"
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        write_png(img, path, provenance={"patient": str(p.get("patient")), "epoch": trainer.current_epoch,
                                         "columns": f"{pl_module.source} | output | {pl_module.target} | abs error",
                                         "metrics": metrics})
        self.last_path = path
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/panel", images=[img],
                                 caption=[f"{p.get('patient')}: {pl_module.source} | output | {pl_module.target} | |error|"])


class CheckpointWithMetrics(ModelCheckpoint):
    """``ModelCheckpoint`` that writes ``<checkpoint>.metrics.json`` (logged metrics, epoch, step) beside each file,
    for people without W&B, and (with ``save_last=True``) refreshes ``last.ckpt`` after every validation, not only
    when a new best is saved, so ``--ckpt_path last.ckpt`` always resumes from the latest epoch."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save top-k as usual (Lightning saves here when validation runs every epoch), then refresh ``last``."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save top-k as usual (when validation runs less often than every epoch), then refresh ``last``."""
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if not trainer.is_global_zero:
            return
        metrics = {}
        for k, v in trainer.callback_metrics.items():
            f = float(v)
            metrics[k] = f if math.isfinite(f) else None
        doc = {"checkpoint": Path(filepath).name, "epoch": trainer.current_epoch, "global_step": trainer.global_step,
               "metrics": metrics}
        atomic_write_text(str(filepath)[: -len(".ckpt")] + ".metrics.json" if str(filepath).endswith(".ckpt")
                          else f"{filepath}.metrics.json", json.dumps(doc, indent=2, sort_keys=True))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        side = Path(str(filepath)[: -len(".ckpt")] + ".metrics.json")
        if trainer.is_global_zero and side.exists():
            side.unlink()


def metrics_json_for(checkpoint: str | Path) -> Path:
    """Path of the metrics JSON written beside ``checkpoint``."""
    c = str(checkpoint)
    return Path(c[: -len(".ckpt")] + ".metrics.json" if c.endswith(".ckpt") else c + ".metrics.json")


__all__ = ["SamplePanels", "CheckpointWithMetrics", "metrics_json_for", "panel", "display"]
