"""Lightning callbacks of every run: one folder per run, sample panels, checkpoints with a metrics JSON beside each
and ``best.ckpt`` beside ``last.ckpt``, and one console line per validation.

Everything a run writes goes to :func:`run_dir`: ``<save_dir>/<project>/<run id>/`` for the W&B logger
(``checkpoints/``, ``samples/``, ``config.yaml``, ``metrics.json``), so runs of one config never overwrite each other,
and a resumed run (same W&B run id) continues its own folder.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from data.files import atomic_path, atomic_write_json, atomic_write_text
from data.preview import CT_SOFT_TISSUE, axial, display_window, percentile_window, pet_inverted
from data.provenance import write_png

log = logging.getLogger("medsynth.train")


def run_dir(trainer: L.Trainer) -> Path:
    """The folder of this run: ``<save_dir>/<name>/<version>`` of the first logger (the W&B logger gives
    ``<save_dir>/<project>/<run id>``, where Lightning also puts ``checkpoints/``), else ``default_root_dir``.

    Args:
        trainer: the running trainer.
    """
    logger = trainer.logger
    if logger is not None and getattr(logger, "save_dir", None) is not None:
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        return Path(logger.save_dir) / str(logger.name) / version
    return Path(trainer.default_root_dir)


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


def panel_slice(target: str, tgt: np.ndarray, lesion: np.ndarray | None = None) -> int:
    """The axial slice a panel shows: the one with the most lesion voxels when there is a lesion, else for PET the
    slice with the most uptake contrast, else the middle slice.

    Args:
        target: output modality key.
        tgt: reference volume ``(I, J, K)``.
        lesion: lesion mask of the same shape, or None.
    """
    if lesion is not None and np.any(lesion):
        return int(np.argmax(np.asarray(lesion).reshape(-1, lesion.shape[2]).sum(axis=0)))
    if target == "pet":
        return int(np.argmax(np.asarray(tgt).reshape(-1, tgt.shape[2]).std(axis=0)))
    return tgt.shape[2] // 2


def _titled(tile: np.ndarray, title: str, height: int = 14) -> np.ndarray:
    """``tile`` (uint8 greyscale) with a white title strip above it."""
    from PIL import Image, ImageDraw

    strip = Image.new("L", (tile.shape[1], height), 255)
    ImageDraw.Draw(strip).text((2, 1), title[: max(1, tile.shape[1] // 6)], fill=0)
    return np.concatenate([np.asarray(strip, dtype=np.uint8), tile], axis=0)


def panel(source: str, target: str, inp: np.ndarray | None, pred: np.ndarray, tgt: np.ndarray, error_range: float,
          lesion: np.ndarray | None = None) -> np.ndarray:
    """One uint8 row with column titles: input | output | target | |output - target| (white = ``error_range``).

    Args:
        source: input modality key.
        target: output modality key.
        inp: input volume (physical units) or None.
        pred: translated volume.
        tgt: reference volume.
        error_range: absolute error shown white.
        lesion: lesion mask; the panel then shows the slice with the most lesion.
    """
    k = panel_slice(target, tgt, lesion)
    ref = axial(tgt, k)
    cols: list[tuple[str, np.ndarray]] = []
    if inp is not None:
        cols.append((f"input {source.upper()}", display(source, axial(inp, k))))
    cols += [(f"output {target.upper()}", display(target, axial(pred, k), ref)),
             (f"target {target.upper()}", display(target, ref, ref)),
             ("|error|", display_window(np.abs(axial(pred, k) - ref), error_range / 2, error_range))]
    tiles = [_titled(t, title) for title, t in cols]
    sep = np.full((tiles[0].shape[0], 2), 255, np.uint8)
    row: list[np.ndarray] = []
    for t in tiles:
        row += [t, sep]
    return np.concatenate(row[:-1], axis=1)


class SamplePanels(Callback):
    """After each validation, write the first held-out patient's panel as ``<run>/samples/epoch_NNN.png`` (with the
    epoch's metrics in its sidecar) and log it to W&B, on global rank 0 only.

    The panel's volumes come from the module's ``validation_step`` output for batch 0 (``{"panel": {...}}``).

    Args:
        every_n_epochs: how often to write a panel.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs
        self.last_path: Path | None = None
        self._panel: dict[str, Any] | None = None

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        """Keep the panel volumes the module returned for batch 0."""
        if isinstance(outputs, dict) and "panel" in outputs:
            self._panel = outputs["panel"]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Render the kept panel with this epoch's metrics."""
        p, self._panel = self._panel, None
        skip = trainer.sanity_checking or not trainer.is_global_zero or trainer.current_epoch % self.every_n_epochs
        if p is None or skip:
            return
        window = getattr(pl_module, "eval_window", None)
        err = (window[1] - window[0]) / 10 if window else float(np.percentile(p["target"], 99.5)
                                                                 - np.percentile(p["target"], 0.5)) / 5
        src, tgt = pl_module.source, pl_module.target
        img = panel(src, tgt, p.get("input"), p["pred"], p["target"], err, lesion=p.get("lesion"))
        path = run_dir(trainer) / "samples" / f"epoch_{trainer.current_epoch:03d}.png"
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        write_png(img, path, provenance={"patient": str(p.get("patient")), "epoch": trainer.current_epoch,
                                         "columns": f"{src} | output | {tgt} | abs error", "metrics": metrics})
        self.last_path = path
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/panel", images=[img],
                                 caption=[f"{p.get('patient')}: {src} | output | {tgt} | |error|"])


class SampleGrids(Callback):
    """After each validation, write the module's sample grid (``pl_module.sample_grid()``: uint8 (H, W, 3), e.g.
    StyleGAN2's one row per class of fixed seeds) as ``<run>/samples/epoch_NNN.png`` and log it to W&B, on global
    rank 0 only.

    Args:
        every_n_epochs: how often to write a grid.
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = every_n_epochs
        self.last_path: Path | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Render and write the grid."""
        skip = trainer.sanity_checking or not trainer.is_global_zero or trainer.current_epoch % self.every_n_epochs
        if skip or not hasattr(pl_module, "sample_grid"):
            return
        img = np.asarray(pl_module.sample_grid())
        rows = list(getattr(pl_module, "class_names", []) or []) or ["all"]
        cfg = getattr(pl_module, "eval_config", None)
        path = run_dir(trainer) / "samples" / f"epoch_{trainer.current_epoch:03d}.png"
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        write_png(img, path, provenance={"epoch": trainer.current_epoch, "rows": rows, "metrics": metrics,
                                         "seeds": list(range(getattr(cfg, "grid_seeds", 0))),
                                         "truncation": getattr(cfg, "truncation", None)})
        self.last_path = path
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/grid", images=[img], caption=[f"rows: {', '.join(rows)}"])


class EpochSummary(Callback):
    """One console line per validation on global rank 0: the model's metrics with the baseline's beside them,
    e.g. ``epoch 3 | val mae 90.24 (baseline 208.3) | psnr 17.29 (10.96) | ssim 0.7289 (0.3785)``.

    Args:
        names: metrics to show, in order (those logged as ``val/<name>``; ``prefix*`` shows every metric starting
            with ``prefix``, e.g. ``diversity_*`` for StyleGAN2's per-class diversity).
    """

    def __init__(self, names: tuple[str, ...] = ("mae", "psnr", "ssim", "ms_ssim", "fid_2p5d", "kid_2p5d")) -> None:
        self.names = tuple(names)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Print the line."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        line = format_epoch_line(trainer.current_epoch, {k: float(v) for k, v in trainer.callback_metrics.items()},
                                 self.names)
        if line:
            log.info(line)


def format_epoch_line(epoch: int, metrics: dict[str, float], names: tuple[str, ...], stage: str = "val") -> str:
    """``epoch E | val m1 v (baseline b) | m2 ...`` for the names that were logged, or "" when none was.

    Args:
        epoch: epoch number.
        metrics: logged metrics (``<stage>/<name>`` and ``<stage>/baseline_<name>``).
        names: metric names in display order.
        stage: ``val`` or ``test``.
    """
    parts = []
    expanded: list[str] = []
    for n in names:  # "prefix*" stands for every logged metric starting with prefix, in name order
        if n.endswith("*"):
            expanded += sorted(k[len(stage) + 1:] for k in metrics if k.startswith(f"{stage}/{n[:-1]}"))
        else:
            expanded.append(n)
    for n in expanded:
        v = metrics.get(f"{stage}/{n}")
        if v is None:
            continue
        b = metrics.get(f"{stage}/baseline_{n}")
        parts.append(f"{n} {v:.4g}" + (f" (baseline {b:.4g})" if b is not None and not parts else
                                        f" ({b:.4g})" if b is not None else ""))
    return f"epoch {epoch} | {stage} " + " | ".join(parts) if parts else ""


def metrics_table(metrics: dict[str, float], names: tuple[str, ...] = ("mae", "psnr", "ssim"), stage: str = "test",
                  baseline: str = "input copied") -> str:
    """Markdown table: metric | model | baseline | model better? (lower MAE/FID/KID is better, higher otherwise).

    Args:
        metrics: logged metrics (``<stage>/<name>`` and ``<stage>/baseline_<name>``).
        names: metrics shown, in order (those without both values are skipped).
        stage: ``test`` or ``val``.
        baseline: what the baseline is, for the column title.
    """
    rows = [f"| metric | model | baseline ({baseline}) | model better |", "|---|---|---|---|"]
    for n in names:
        m, b = metrics.get(f"{stage}/{n}"), metrics.get(f"{stage}/baseline_{n}")
        if m is None or b is None:
            continue
        better = m < b if n in ("mae", "fid_2p5d", "kid_2p5d") else m > b
        rows.append(f"| {n.upper()} | {m:.4g} | {b:.4g} | {'yes' if better else 'no'} |")
    return "\n".join(rows)


#: What the translation baselines are, for report titles.
BASELINE_NAMES = {"copy": "input copied", "mean": "mean training target"}


class TestReport(Callback):
    """After ``medsynth test`` (``trainer.test``), write ``<run>/test_report.json`` (every test metric, the
    checkpoint, the epoch) and ``<run>/test_report.md`` (model beside baseline), on global rank 0."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the report."""
        if not trainer.is_global_zero:
            return
        metrics = _finite({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        if not metrics:
            return
        folder = run_dir(trainer)
        ckpt = getattr(trainer, "ckpt_path", None)
        eval_config = getattr(pl_module, "eval_config", None)
        baseline = BASELINE_NAMES.get(eval_config.baseline, "baseline") if eval_config is not None else "baseline"
        names = ("mae", "psnr", "ssim", "ms_ssim", "fid_2p5d", "kid_2p5d", "lesion_suvmax_abs_error")
        table = metrics_table({k: v for k, v in metrics.items() if v is not None}, names, baseline=baseline)
        atomic_write_json(folder / "test_report.json", {"checkpoint": str(ckpt) if ckpt else None,
                                                        "epoch": trainer.current_epoch, "metrics": metrics})
        atomic_write_text(folder / "test_report.md", f"# Test report\n\ncheckpoint: {ckpt}\n\n{table}\n")
        log.info("test report: %s", folder / "test_report.md")


class CheckpointWithMetrics(ModelCheckpoint):
    """``ModelCheckpoint`` that also writes, on global rank 0:

    * ``<checkpoint>.metrics.json`` beside each file (logged metrics, epoch, step; for people without W&B);
    * ``best.ckpt`` beside ``last.ckpt``: the best checkpoint by ``monitor`` so far (a hard link, or a copy);
    * ``<run>/metrics.json``: the monitored metric, its mode, the best checkpoint and score, and every validation's
      metrics in order.

    With ``save_last=True`` it refreshes ``last.ckpt`` after every validation, not only when a new best is saved, so
    ``--ckpt_path last.ckpt`` always resumes from the latest epoch.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save top-k as usual (Lightning saves here when validation runs every epoch), then refresh ``last``."""
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)
            self._record_validation(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save top-k as usual (when validation runs less often than every epoch), then refresh ``last``."""
        super().on_validation_end(trainer, pl_module)
        self._validated = not trainer.sanity_checking
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)
            self._record_validation(trainer)

    def _record_validation(self, trainer: L.Trainer) -> None:
        """After this validation's checkpoints are saved (so the best is known), update ``<run>/metrics.json``."""
        if getattr(self, "_validated", False):
            self._validated = False
            self._write_run_metrics(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if not trainer.is_global_zero:
            return
        doc = {"checkpoint": Path(filepath).name, "epoch": trainer.current_epoch, "global_step": trainer.global_step,
               "monitor": self.monitor, "mode": self.mode, "metrics": _finite(trainer.callback_metrics)}
        atomic_write_text(metrics_json_for(filepath), json.dumps(doc, indent=2, sort_keys=True))
        if self.monitor and self.best_model_path and Path(self.best_model_path) == Path(filepath):
            self._link_best(Path(filepath))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        side = metrics_json_for(filepath)
        if trainer.is_global_zero and side.exists():
            side.unlink()

    def _link_best(self, source: Path) -> None:
        """Point ``best.ckpt`` (and its metrics JSON) at ``source``, atomically."""
        for src, dest in ((source, source.with_name("best.ckpt")),
                          (metrics_json_for(source), metrics_json_for(source.with_name("best.ckpt")))):
            if not src.exists():
                continue
            with atomic_path(dest) as tmp:
                tmp.unlink()
                try:
                    os.link(src, tmp)
                except OSError:
                    shutil.copy2(src, tmp)

    def _write_run_metrics(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        path = run_dir(trainer) / "metrics.json"
        doc: dict[str, Any] = {"monitor": self.monitor, "mode": self.mode, "validations": []}
        if path.is_file():
            try:
                doc["validations"] = json.loads(path.read_text()).get("validations", [])
            except (OSError, ValueError):
                pass
        doc["validations"] = [v for v in doc["validations"] if v.get("global_step") != trainer.global_step]
        doc["validations"].append({"epoch": trainer.current_epoch, "global_step": trainer.global_step,
                                   "metrics": _finite({k: v for k, v in trainer.callback_metrics.items()
                                                       if not k.startswith("train/")})})
        best = float(self.best_model_score) if self.best_model_score is not None else None
        doc["best"] = {"checkpoint": Path(self.best_model_path).name if self.best_model_path else None,
                       "score": best if best is None or math.isfinite(best) else None}
        atomic_write_json(path, doc)


def _finite(metrics: Any) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, v in dict(metrics).items():
        f = float(v)
        out[k] = f if math.isfinite(f) else None
    return out


def metrics_json_for(checkpoint: str | Path) -> Path:
    """Path of the metrics JSON written beside ``checkpoint``.

    Args:
        checkpoint: a ``.ckpt`` file.
    """
    c = str(checkpoint)
    return Path(c[: -len(".ckpt")] + ".metrics.json" if c.endswith(".ckpt") else c + ".metrics.json")


__all__ = ["BASELINE_NAMES", "CheckpointWithMetrics", "CompileNets", "EpochSummary", "SampleGrids", "SamplePanels",
           "TestReport", "display",
           "format_epoch_line", "metrics_json_for", "metrics_table", "panel", "panel_slice", "run_dir"]


class CompileNets(Callback):
    """``torch.compile`` the module's training networks (generators and discriminators) in place before fitting.

    ``nn.Module.compile`` keeps parameter names, so checkpoints, EMA and resume are unchanged; inference copies (the
    EMA) stay eager. StyleGAN2 with R1 or path length is refused (double backward is not supported by compile).
    Add it under ``trainer.callbacks`` (see the README, precision and speed).

    Args:
        backend: the torch.compile backend (``inductor``; ``aot_eager`` compiles the graph without generating code).
        mode: the inductor mode (None, ``reduce-overhead``, ``max-autotune``).
        dynamic: allow dynamic shapes (False: recompile per new shape, faster steps).
    """

    NETWORKS = ("generator", "generator_ba", "discriminator", "discriminator_a", "discriminator_b")

    def __init__(self, backend: str = "inductor", mode: str | None = None, dynamic: bool = False) -> None:
        self.backend, self.mode, self.dynamic = backend, mode, dynamic
        self.compiled: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Compile each training network the module has (once)."""
        if stage != "fit" or self.compiled:
            return
        reg = getattr(pl_module, "reg", None)
        if reg is not None and (reg.r1_gamma > 0 or reg.pl_weight > 0):
            raise ValueError("CompileNets: StyleGAN2's R1 and path-length penalties need double backward, which "
                             "torch.compile (aot_autograd) does not support; drop the callback or set "
                             "regularization.r1_gamma and pl_weight to 0")
        for name in self.NETWORKS:
            net = getattr(pl_module, name, None)
            if net is None:
                continue
            # StyleGAN2's module calls the generator's mapping and synthesis networks one by one
            parts = [(f"{name}.{p}", getattr(net, p)) for p in ("mapping", "synthesis") if hasattr(net, p)]
            for label, part in parts or [(name, net)]:
                part.compile(backend=self.backend, mode=self.mode, dynamic=self.dynamic)
                self.compiled.append(label)
