"""Shared machinery of the translation GANs (CycleGAN, pix2pix): whole-volume inference, evaluation in physical
units against a trivial baseline, optimisers with the constant-then-linear-decay schedule, and exact resume state.

Batches are the dicts of :mod:`data.volume_datasets` (keys named by modality: ``ct``, ``mr``, ``pet``; windows in
``batch["window"]``); validation/test batches hold one whole volume (``(1, 1, I, J, K)``) plus ``<key>_phys`` in
physical units and ``body_mask``.
"""
from __future__ import annotations

import random
import warnings
from typing import Any, Literal, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan.metrics import LesionSUVMetrics, VolumeMetrics
from gan.models.builders import required_multiple
from gan.models.ema import EMA
from gan.models.units import to_physical, window_of

Mode = Literal["2d", "2.5d", "3d"]
Protocol = Literal["default", "synthrad2023", "synthrad2025"]
#: Default evaluation windows per target key; MR (arbitrary units) uses each patient's own normalisation window.
DEFAULT_EVAL_WINDOWS: dict[str, tuple[float, float] | None] = {"ct": (-1024.0, 3000.0), "pet": (0.0, 20.0), "mr": None}


def linear_decay(epochs_constant: int, epochs_decay: int):
    """LR factor per epoch: 1 for ``epochs_constant`` epochs, then linearly to 0 over ``epochs_decay`` (pix2pix)."""
    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - epochs_constant) / float(epochs_decay + 1)
    return factor


class TranslationModule(L.LightningModule):
    """Base class: subclasses build ``self.generator`` (source -> target) and implement ``training_step``.

    Args:
        source: batch key of the input modality (``ct``, ``mr``, ``pet``).
        target: batch key of the output modality.
        mode: ``"2d"``, ``"2.5d"`` (``slices`` neighbouring slices as channels) or ``"3d"`` (patches).
        slices: input slices in 2.5D mode.
        roi_size: 3D sliding-window inference size (usually the training patch size).(sliding window); ignored in 2D.
        lr: Adam learning rate (2e-4 in both papers).
        beta1: Adam beta1 (0.5).
        beta2: Adam beta2 (0.999).
        epochs_constant: epochs at the initial learning rate.
        epochs_decay: epochs of linear decay to zero after that.
        ema_decay: EMA of the generator used for evaluation and export (0 disables).
        eval_protocol: ``"default"`` (Gaussian SSIM, sigma 1.5), ``"synthrad2023"`` or ``"synthrad2025"`` (CT targets).
        eval_window: evaluation window (low, high) in physical units = metrics' data range; None uses the
            modality default (CT [-1024, 3000] HU, PET [0, 20] SUV, MR: each patient's normalisation window).
        baseline: trivial reference reported beside the model: ``"copy"`` (input copied through the windows) or
            ``"mean"`` (mean training target value inside the body, e.g. the mean SUV image for PET).
        inference_batch: slices per forward pass when translating a volume.
        pool_seed: seed of the image pools.
        fid_weights: enables 2.5D FID and KID (axial/coronal/sagittal slices of the windowed output vs target
            volumes, one feature pass for both; ``<stage>/fid_2p5d``, ``<stage>/kid_2p5d`` and per axis) at
            validation and test: the pytorch-fid Inception weights file (or its folder, or ``"hub"`` for the torch hub
            cache), or ``"random"`` for a seeded random Inception (smoke tests only: such scores compare with nothing).
        fid_max_slices: evenly spaced slices per axis and volume fed to the FID extractor.
        channels_last: keep networks and inputs in channels-last memory format (NHWC / NDHWC), faster for convolutions
            on recent GPUs, especially with bf16; results differ by round-off only.
    """

    def __init__(
        self,
        *,
        source: str,
        target: str,
        mode: Mode,
        slices: int,
        roi_size: Sequence[int] | None,
        lr: float,
        beta1: float,
        beta2: float,
        epochs_constant: int,
        epochs_decay: int,
        ema_decay: float,
        eval_protocol: Protocol,
        eval_window: tuple[float, float] | None,
        baseline: Literal["copy", "mean"],
        inference_batch: int,
        pool_seed: int,
        fid_weights: str | None = None,
        fid_max_slices: int = 32,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if source == target:
            raise ValueError(f"source and target are both {source!r}")
        if mode not in ("2d", "2.5d", "3d"):
            raise ValueError(f"mode must be '2d', '2.5d' or '3d', got {mode!r}")
        if mode == "2.5d" and (slices < 1 or slices % 2 == 0):
            raise ValueError(f"2.5D needs an odd number of slices, got {slices}")
        if mode == "3d" and (roi_size is None or len(roi_size) != 3):
            raise ValueError(f"3D mode needs roi_size (sliding-window size) with 3 sizes, got {roi_size}")
        if eval_protocol != "default" and target != "ct":
            raise ValueError(f"eval_protocol {eval_protocol!r} is defined for CT targets only, target is {target!r}")
        self.automatic_optimization = False
        self.source, self.target, self.mode = source, target, mode
        self.in_slices = slices if mode == "2.5d" else 1
        self.spatial_dims = 3 if mode == "3d" else 2
        self.channels_last = bool(channels_last)
        self.eval_window = tuple(eval_window) if eval_window is not None else DEFAULT_EVAL_WINDOWS.get(target)
        metric_range = self.eval_window if self.eval_window is not None else None
        if eval_protocol == "default" and metric_range is None:
            metric_range = (0.0, 1.0)  # replaced per patient by the MR normalisation window in update()
        kw = dict(protocol=eval_protocol, data_range=metric_range)
        self.val_metrics = VolumeMetrics(**kw)
        self.val_baseline = VolumeMetrics(**kw)
        self.test_metrics = VolumeMetrics(**kw)
        self.test_baseline = VolumeMetrics(**kw)
        self.val_lesion = LesionSUVMetrics()
        self.test_lesion = LesionSUVMetrics()
        self.register_buffer("target_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_count", torch.zeros((), dtype=torch.float64))
        # Running sums of the training windows (low, high, log, count) of source and target, so a checkpoint
        # can translate a new volume with the windows it was trained with (MR: mean of per-volume windows).
        self.register_buffer("window_sums", torch.zeros(2, 4, dtype=torch.float64))
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_count = 0
        self._train_calls = 0
        extractor = self._fid_extractor(fid_weights)
        self.val_fid = self._make_fid(extractor, fid_max_slices)
        self.test_fid = self._make_fid(extractor, fid_max_slices)
        self.last_panel: dict[str, np.ndarray] | None = None
        self.ema: EMA | None = None

    @property
    def memory_format(self) -> torch.memory_format:
        """Memory format of networks and inputs: channels-last (2D) / channels-last-3d (3D) when enabled."""
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the module's memory format (a no-op unless ``channels_last``)."""
        if self.channels_last and x.dim() == self.spatial_dims + 2:
            return x.contiguous(memory_format=self.memory_format)
        return x

    def apply_memory_format(self) -> None:
        """Convert the convolution weights to :attr:`memory_format` (called by :meth:`setup` and after loading)."""
        if self.channels_last:
            self.to(memory_format=self.memory_format)

    def setup(self, stage: str) -> None:
        """Lightning hook: put the networks in the configured memory format."""
        self.apply_memory_format()

    @staticmethod
    def _fid_extractor(weights: str | None) -> Any:
        if weights is None:
            return None
        from gan.metrics import FIDInceptionV3

        if weights == "random":
            return FIDInceptionV3(pretrained=False, seed=0)
        return FIDInceptionV3(weights_path=None if weights == "hub" else weights)

    @staticmethod
    def _make_fid(extractor: Any, max_slices: int) -> Any:
        if extractor is None:
            return None
        from gan.metrics import Volume25DFID

        # KID (subsets of up to 100 slices per axis) on the same features: unbiased at validation-set sizes
        return Volume25DFID(extractor=extractor, max_slices_per_axis=max_slices, batch_size=16, min_images_for_fid=2,
                            kid=True, kid_subsets=50, kid_subset_size=100)

    # -- networks ----------------------------------------------------------------------------------
    def _init_ema(self) -> None:
        if self.hparams.ema_decay > 0:
            self.ema = EMA(self.generator, decay=self.hparams.ema_decay)

    @property
    def inference_generator(self) -> nn.Module:
        """The network used for evaluation and translation: the EMA when enabled, else the generator."""
        return self.ema.module if self.ema is not None else self.generator

    def _multiple(self) -> int:
        return required_multiple(self.hparams.generator_arch, self.hparams.num_downs)

    def _check_channels(self, x: torch.Tensor, key: str) -> None:
        if x.shape[1] != self.in_slices:
            raise ValueError(f"batch[{key!r}] has {x.shape[1]} channels but the model was built for mode "
                             f"{self.mode!r} with {self.in_slices} input slice(s); use the same mode/slices for data and model")

    def _centre(self, x: torch.Tensor) -> torch.Tensor:
        """Centre slice of a 2.5D stack (the slice the stack is about)."""
        c = x.shape[1] // 2
        return x[:, c:c + 1]

    # -- inference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def translate_volume(self, volume: torch.Tensor, generator: nn.Module | None = None) -> torch.Tensor:
        """Translate a whole volume in network range, ``(1, 1, I, J, K)`` -> ``(1, 1, I, J, K)``.

        2D/2.5D: axial slices (with their neighbours in 2.5D, edges repeated) in batches, padded with -1 to the
        generator's size multiple and cropped back. 3D: MONAI sliding-window inference with Gaussian blending.

        Args:
            volume: input volume in [-1, 1].
            generator: network to use (default :attr:`inference_generator`).
        """
        g = generator or self.inference_generator
        was_training = g.training
        g.eval()
        try:
            if self.mode == "3d":
                from monai.inferers import sliding_window_inference

                return sliding_window_inference(volume, roi_size=tuple(self.hparams.roi_size), sw_batch_size=2,
                                                predictor=lambda p: g(self._fmt(p)), overlap=0.25, mode="gaussian",
                                                padding_mode="constant", cval=-1.0)
            vol = volume[0, 0]  # (I, J, K)
            n_i, n_j, n_k = vol.shape
            m = self._multiple()
            pi, pj = (-n_i) % m, (-n_j) % m
            half = self.in_slices // 2
            out = torch.empty_like(vol)
            for k0 in range(0, n_k, self.hparams.inference_batch):
                ks = range(k0, min(k0 + self.hparams.inference_batch, n_k))
                idx = torch.tensor([[min(max(k + d, 0), n_k - 1) for d in range(-half, half + 1)] for k in ks], device=vol.device)
                stack = vol[:, :, idx].permute(2, 3, 0, 1)  # (B, slices, I, J)
                stack = F.pad(stack, (0, pj, 0, pi), value=-1.0)
                y = g(self._fmt(stack))
                y = y[:, y.shape[1] // 2] if y.shape[1] > 1 else y[:, 0]
                out[:, :, k0:k0 + len(ks)] = y[:, :n_i, :n_j].permute(1, 2, 0)
            return out[None, None]
        finally:
            g.train(was_training)

    # -- evaluation --------------------------------------------------------------------------------
    def _eval_range(self, batch: dict[str, Any]) -> tuple[float, float]:
        if self.eval_window is not None:
            return self.eval_window
        low, high, _ = window_of(batch["window"][self.target])
        return (low, high)

    def _baseline(self, batch: dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        if self.hparams.baseline == "copy":
            return to_physical(batch[self.source], window_of(batch["window"][self.target]))[0, 0]
        mean = (self.target_sum / self.target_count.clamp(min=1)).item() if self.target_count > 0 else 0.0
        low = window_of(batch["window"][self.target])[0]
        return torch.where(mask, torch.full_like(mask, mean, dtype=torch.float64), torch.full_like(mask, low, dtype=torch.float64))

    def _evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, Any]:
        src, tgt = self.source, self.target
        if f"{tgt}_phys" not in batch:
            raise ValueError(f"evaluation batches need {tgt!r}_phys (whole volumes in physical units) from the datamodule")
        x = batch[src]
        if x.dim() != 5 or x.shape[0] != 1:
            raise ValueError(f"evaluation expects one whole volume (1, 1, I, J, K) per batch, got {tuple(x.shape)}")
        pred_unit = self.translate_volume(x)
        pred = to_physical(pred_unit, window_of(batch["window"][tgt]))[0, 0]
        fid = self.val_fid if stage == "val" else self.test_fid
        if fid is not None:  # windowed target vs windowed output, both in [-1, 1]
            fid.update(batch[tgt][0].clamp(-1, 1), real=True)
            fid.update(pred_unit[0].clamp(-1, 1), real=False)
        target = batch[f"{tgt}_phys"][0, 0].double()
        mask = batch["body_mask"][0, 0] > 0.5
        rng = self._eval_range(batch)
        metrics, base = (self.val_metrics, self.val_baseline) if stage == "val" else (self.test_metrics, self.test_baseline)
        baseline = self._baseline(batch, mask)
        metrics.update(pred, target, mask, data_range=rng)
        base.update(baseline, target, mask, data_range=rng)
        if tgt == "pet" and "lesion_mask" in batch and batch["lesion_mask"].sum() > 0:
            (self.val_lesion if stage == "val" else self.test_lesion).update(pred, target, batch["lesion_mask"][0, 0] > 0.5)
        return {"pred": pred, "target": target, "input": batch[f"{src}_phys"][0, 0] if f"{src}_phys" in batch else None,
                "mask": mask}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Translate one held-out volume and score it (and the baseline) in physical units."""
        out = self._evaluate(batch, "val")
        if batch_idx == 0:
            self.last_panel = {k: (v.detach().cpu().numpy() if v is not None else None) for k, v in out.items()}
            self.last_panel["patient"] = batch.get("patient", ["?"])[0]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Translate one test volume and score it (and the baseline) in physical units."""
        self._evaluate(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        metrics, base, lesion = ((self.val_metrics, self.val_baseline, self.val_lesion) if stage == "val"
                                 else (self.test_metrics, self.test_baseline, self.test_lesion))
        if metrics.num_patients == 0:
            return
        values = {f"{stage}/{k}": v for k, v in metrics.compute().items() if k != "num_patients"}
        values.update({f"{stage}/baseline_{k}": v for k, v in base.compute().items() if k != "num_patients"})
        if lesion.num_patients > 0:
            values.update({f"{stage}/lesion_{k}": v for k, v in lesion.compute().items() if not k.startswith("num_")})
        values[f"{stage}/num_patients"] = metrics.compute()["num_patients"]
        fid = self.val_fid if stage == "val" else self.test_fid
        if fid is not None:
            with warnings.catch_warnings():  # small validation sets: KID subsets shrink to the set size, as intended
                warnings.filterwarnings("ignore", message="KID: subset_size")
                res = fid.compute()
            values[f"{stage}/fid_2p5d"] = torch.tensor(float(res.mean))
            values.update({f"{stage}/fid_axis{a}": torch.tensor(float(r.value)) for a, r in res.per_axis.items()})
            if res.kid_per_axis:
                values[f"{stage}/kid_2p5d"] = torch.tensor(float(res.kid_mean))
                values.update({f"{stage}/kid_axis{a}": torch.tensor(float(r.mean)) for a, r in res.kid_per_axis.items()})
            fid.reset()
        self.log_dict({k: v.float() if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()},
                      prog_bar=False, sync_dist=False)
        for m in (metrics, base, lesion):
            m.reset()

    def on_validation_epoch_end(self) -> None:
        """Log patient-averaged metrics with the baseline beside them."""
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log patient-averaged test metrics with the baseline beside them."""
        self._log_epoch("test")

    @staticmethod
    def _window_columns(window: dict[str, Any], n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample (low, high, log) of a collated window dict as float64 tensors of length ``n`` on ``device``."""
        def col(name: str) -> torch.Tensor:
            v = window.get(name, 0.0)
            t = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
            return t.to(device=device, dtype=torch.float64).reshape(-1).expand(n)
        return col("low"), col("high"), col("log")

    def _track_target(self, target_unit: torch.Tensor, body: torch.Tensor | None, window: dict[str, Any]) -> None:
        """Running mean of the training target inside the body, in physical units (the ``mean`` baseline).

        Vectorised over the batch, with no host synchronisation (each sample may have its own window).
        """
        y = target_unit.detach()
        n = y.shape[0]
        m = (body > 0.5) if body is not None else torch.ones_like(y, dtype=torch.bool)
        if m.shape != y.shape:
            m = m.expand_as(y)
        low, high, log = self._window_columns(window, n, y.device)
        phys = to_physical(y.reshape(n, -1), (low[:, None], high[:, None], log[:, None] > 0.5))
        mf = m.reshape(n, -1).to(torch.float64)
        self.target_sum += (phys * mf).sum()
        self.target_count += mf.sum()

    def _record_windows(self, batch: dict[str, Any]) -> None:
        """Accumulate the source/target windows of a training batch (see :meth:`training_windows`)."""
        for row, key in enumerate((self.source, self.target)):
            w = batch.get("window", {}).get(key)
            if w is None:
                continue
            n = batch[key].shape[0]
            low, high, log = self._window_columns(w, n, self.window_sums.device)
            self.window_sums[row] += torch.stack([low.sum(), high.sum(), log.sum(), low.new_tensor(float(n))])

    def training_windows(self) -> dict[str, tuple[float, float, bool]]:
        """Mean (low, high, log) window of the source and target keys seen in training."""
        out = {}
        for row, key in enumerate((self.source, self.target)):
            low, high, log, n = self.window_sums[row].tolist()
            if n > 0:
                out[key] = (low / n, high / n, log / n > 0.5)
        return out

    # -- optimisation ------------------------------------------------------------------------------
    def _adam(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.hparams.lr, betas=(self.hparams.beta1, self.hparams.beta2))

    def _schedulers(self, *opts: torch.optim.Optimizer) -> list[dict[str, Any]]:
        f = linear_decay(self.hparams.epochs_constant, self.hparams.epochs_decay)
        return [{"scheduler": torch.optim.lr_scheduler.LambdaLR(o, f), "interval": "epoch"} for o in opts]

    def _log_train(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        """Log training losses as ``<name>_step`` every ``log_every_n_steps`` batches and ``<name>_epoch`` means.

        What ``self.log(on_step=True, on_epoch=True)`` gives, but the per-step work is one detached tensor sum per
        loss, with no host synchronisation: ``self.log`` costs about 1 ms per call, over 10% of a small CPU step
        and far more of a GPU step. ``loss_g`` goes to the progress bar at the same interval.

        Args:
            values: scalar losses of this batch (``train/...`` names).
            batch_size: samples in the batch (weights the epoch mean).
        """
        for k, v in values.items():
            v = v.detach() * batch_size
            self._loss_sums[k] = self._loss_sums[k] + v if k in self._loss_sums else v
        self._loss_count += batch_size
        self._train_calls += 1
        trainer = self._trainer
        every = max(int(getattr(trainer, "log_every_n_steps", 1) or 1), 1) if trainer is not None else 1
        if trainer is None or trainer.fast_dev_run or self._train_calls % every == 0:
            step = {f"{k}_step": v.detach().float() for k, v in values.items()}
            self.log_dict(step, on_step=True, on_epoch=False, batch_size=batch_size)
            if "train/loss_g" in values:
                self.log("loss_g", values["train/loss_g"].detach().float(), prog_bar=True, logger=False,
                         on_step=True, on_epoch=False, batch_size=batch_size)

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training losses and step the learning-rate schedules (manual optimisation
        steps them itself)."""
        if self._loss_count > 0:
            self.log_dict({f"{k}_epoch": (v / self._loss_count).float() for k, v in self._loss_sums.items()},
                          on_step=False, on_epoch=True)
        self._loss_sums, self._loss_count = {}, 0
        for s in self.lr_schedulers() if isinstance(self.lr_schedulers(), list) else [self.lr_schedulers()]:
            s.step()

    def _step(self, opt: Any, loss: torch.Tensor) -> None:
        self.manual_backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)

    # -- resume ------------------------------------------------------------------------------------
    def _pools(self) -> dict[str, Any]:
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store image pools and RNG states (torch CPU/CUDA, numpy, python) for an exact resume."""
        checkpoint["image_pools"] = {k: p.state_dict() for k, p in self._pools().items()}
        checkpoint["medsynth"] = {"family": type(self).__name__, "source": self.source, "target": self.target,
                                  "mode": self.mode, "format": 1}
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state_to_tensors(np.random.get_state()),
            "python": _python_state_to_tensors(random.getstate()),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what :meth:`on_save_checkpoint` stored."""
        for k, p in self._pools().items():
            if k in checkpoint.get("image_pools", {}):
                p.load_state_dict(checkpoint["image_pools"][k])
        self._rng_to_restore = checkpoint.get("rng_states")

    def on_train_start(self) -> None:
        """Apply restored RNG states once training (re)starts, after Lightning's own seeding."""
        states = getattr(self, "_rng_to_restore", None)
        if states:
            torch.set_rng_state(states["torch"])
            if states["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])
            np.random.set_state(_tensors_to_numpy_state(states["numpy"]))
            random.setstate(_tensors_to_python_state(states["python"]))
            self._rng_to_restore = None


# RNG states as tensors/primitives so checkpoints load with torch.load(weights_only=True).
def _numpy_state_to_tensors(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _tensors_to_numpy_state(d: dict[str, Any]) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def _python_state_to_tensors(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _tensors_to_python_state(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])


__all__ = ["TranslationModule", "linear_decay", "DEFAULT_EVAL_WINDOWS"]
