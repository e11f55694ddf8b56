"""``TranslationModule``: the part CycleGAN and pix2pix share on top of :class:`~gan.models.base.GANModule`.

Batches are the dicts of the volume data layer (keys named by modality: ``ct``, ``mr``, ``pet``; per-sample
windows in ``batch["window"]``). Validation and test batches hold one whole volume (``(1, 1, I, J, K)``) plus
``<key>_phys`` in physical units and ``body_mask``: each is translated with :func:`gan.inference.translate_volume`,
mapped back with :func:`data.intensity.from_unit` and scored by the stage's
:class:`~gan.metrics.volume_evaluation.VolumeEvaluation` beside the trivial baseline.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from data.batches import is_padding
from data.intensity import WindowParams, from_unit
from gan.inference import Mode, translate_volume
from gan.metrics.ragged import agree_on
from gan.metrics.volume_evaluation import VolumeEvaluation, copy_baseline, fid_extractor, mean_baseline
from gan.models.base import GANModule
from gan.models.config import VolumeEvalConfig
from gan.models.image_pool import ImagePool

#: Default evaluation windows per target key; MR (arbitrary units) uses each patient's own normalisation window.
DEFAULT_EVAL_WINDOWS: dict[str, tuple[float, float] | None] = {"ct": (-1024.0, 3000.0), "pet": (0.0, 20.0), "mr": None}


def window_of(batch_window: dict[str, Any], index: int = 0) -> WindowParams:
    """The window of sample ``index`` of a collated ``batch["window"][key]`` dict.

    Args:
        batch_window: ``{"low": ..., "high": ..., "log": ...}`` with scalars or batched tensors.
        index: sample in the batch.
    """
    def pick(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.reshape(-1)[index].item() if v.numel() > 1 else v.item()
        return v[index] if isinstance(v, (list, tuple)) else v
    return WindowParams(float(pick(batch_window["low"])), float(pick(batch_window["high"])),
                        bool(pick(batch_window.get("log", False))))


def window_columns(window: dict[str, Any], n: int, device: torch.device) -> WindowParams:
    """Per-sample windows of a collated ``batch["window"][key]`` as float64 ``(n, 1)`` tensors (``log`` bool), for
    vectorised :func:`data.intensity.from_unit` over a batch without host synchronisation.

    Args:
        window: the collated window dict.
        n: batch size.
        device: device of the batch.
    """
    def col(name: str) -> torch.Tensor:
        v = window.get(name, 0.0)
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
        return t.to(device=device, dtype=torch.float64).reshape(-1).expand(n)[:, None]
    return WindowParams(col("low"), col("high"), col("log") > 0.5)  # type: ignore[arg-type]


class TranslationModule(GANModule):
    """Base of the translation families: subclasses build ``self.generator`` (source -> target) and write
    ``training_step``; this class evaluates, translates and records the mean-target baseline.

    Args:
        source: batch key of the input modality (``ct``, ``mr``, ``pet``); linked from the datamodule by the CLI.
        target: batch key of the output modality.
        mode: ``"2d"``, ``"2.5d"`` (``slices`` neighbouring slices as channels) or ``"3d"`` (patches).
        slices: input slices in 2.5D mode.
        evaluation: whole-volume inference and evaluation settings.
        channels_last: keep networks and inputs in channels-last memory format (NHWC / NDHWC), faster for
            convolutions on recent GPUs, especially with bf16; results differ by round-off only.
        batch_gpu: samples per chunk of a device's batch (see :class:`~gan.models.base.GANModule`; None: one chunk).
        seed: seed of every random draw of training (see :class:`~gan.models.base.GANModule`).
    """

    def __init__(self, *, source: str, target: str, mode: Mode, slices: int, evaluation: VolumeEvalConfig | dict,
                 channels_last: bool, seed: int, batch_gpu: int | None = None) -> None:
        super().__init__(seed=seed, batch_gpu=batch_gpu)
        self.save_hyperparameters()  # the subclass's arguments too (Lightning collects every __init__ frame)
        evaluation = self.group("evaluation", evaluation)
        if source == target:
            raise ValueError(f"source and target are both {source!r}")
        if mode not in ("2d", "2.5d", "3d"):
            raise ValueError(f"mode must be '2d', '2.5d' or '3d', got {mode!r}")
        if mode == "2.5d" and (slices < 1 or slices % 2 == 0):
            raise ValueError(f"2.5D needs an odd number of slices, got {slices}")
        if mode == "3d" and (evaluation.roi_size is None or len(evaluation.roi_size) != 3):
            raise ValueError(f"3D mode needs evaluation.roi_size (sliding-window size) with 3 sizes, "
                             f"got {evaluation.roi_size}")
        if evaluation.protocol != "default" and target != "ct":
            raise ValueError(f"evaluation.protocol {evaluation.protocol!r} is defined for CT targets only, "
                             f"target is {target!r}")
        self.source, self.target, self.mode = source, target, mode
        self.eval_config = evaluation
        self.in_slices = slices if mode == "2.5d" else 1
        self.spatial_dims = 3 if mode == "3d" else 2
        self.channels_last = bool(channels_last)
        window = evaluation.window if evaluation.window is not None else DEFAULT_EVAL_WINDOWS.get(target)
        self.eval_window = tuple(window) if window is not None else None
        extractor = fid_extractor(evaluation.fid_weights)  # one extractor shared by both stages
        self.evaluation = nn.ModuleDict({
            stage: VolumeEvaluation(protocol=evaluation.protocol, data_range=self.eval_window,
                                    fid_max_slices=evaluation.fid_max_slices, extractor=extractor)
            for stage in ("val", "test")})
        self.pool_sizes: dict[str, int] = {}  # the family's image pools, by name (see add_pool)
        self.pools: dict[str, dict[int, ImagePool]] = {}  # name -> global chunk (slot) -> pool
        self._stored_pools: dict[str, dict[int, Any]] = {}  # pools from a checkpoint, taken up when first used
        # running sum and count of the training target inside the body (physical units): the "mean" baseline,
        # the same on every rank (each rank's new sums wait in _target_pending until the next sync point)
        self.register_buffer("target_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("target_count", torch.zeros((), dtype=torch.float64))
        self._target_pending = torch.zeros(2, dtype=torch.float64)

    # -- memory format ------------------------------------------------------------------------------
    @property
    def memory_format(self) -> torch.memory_format:
        """Memory format of networks and inputs: channels-last (2D) / channels-last-3d (3D) when enabled."""
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    def fmt(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the module's memory format (a no-op unless ``channels_last``).

        Args:
            x: a batch of images or volumes.
        """
        if self.channels_last and x.dim() == self.spatial_dims + 2:
            return x.contiguous(memory_format=self.memory_format)
        return x

    def apply_memory_format(self) -> None:
        """Convert the convolution weights to :attr:`memory_format` (called by :meth:`setup` and after loading)."""
        if self.channels_last:
            self.to(memory_format=self.memory_format)

    def setup(self, stage: str) -> None:
        """Lightning hook: check the strategy, put the networks in the memory format."""
        super().setup(stage)
        self.apply_memory_format()

    # -- image pools --------------------------------------------------------------------------------
    def add_pool(self, name: str, size: int) -> None:
        """Declare a history of past fakes for the discriminator (see :meth:`pool`).

        Args:
            name: the pool's name in checkpoints.
            size: capacity per global chunk (0: fakes pass through).
        """
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.pool_sizes[name] = int(size)
        self.pools[name] = {}

    def pool(self, name: str, chunk: int = 0) -> ImagePool:
        """The image pool ``name`` of this rank's chunk ``chunk``: one pool per global chunk (slot ``s``), seeded
        with ``seed + i + 1000 s`` for the ``i``-th pool declared, so N ranks hold exactly the pools one process
        accumulating the same chunks holds; all slots travel in checkpoints.

        Args:
            name: the pool's name.
            chunk: the chunk within this device's batch.
        """
        slot = self.slot(chunk)
        pools = self.pools[name]
        if slot not in pools:
            index = list(self.pool_sizes).index(name)
            pools[slot] = ImagePool(self.pool_sizes[name], seed=self.seed + index + 1000 * slot)
            stored = self._stored_pools.get(name, {}).get(slot)
            if stored is not None:
                pools[slot].load_state_dict(stored)
        return pools[slot]

    def extra_state(self) -> dict[str, Any]:
        """The image pools of every global chunk (contents and generators), gathered from all ranks."""
        mine = {name: {slot: p.state_dict() for slot, p in pools.items()} for name, pools in self.pools.items()}
        merged: dict[str, dict[int, Any]] = {name: dict(self._stored_pools.get(name, {})) for name in self.pools}
        for rank_pools in agree_on(mine):
            for name, slots in rank_pools.items():
                merged.setdefault(name, {}).update(slots)
        return {"image_pools": merged}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the image pools (each rank takes up its slots when it first uses them)."""
        stored = state.get("image_pools", {})
        self._stored_pools = {}
        for name, value in stored.items():
            if isinstance(value, dict) and "images" in value:  # before per-chunk pools: one pool, slot 0
                value = {0: value}
            self._stored_pools[name] = {int(k): v for k, v in value.items()}
        self.pools = {name: {} for name in self.pool_sizes}

    # -- synchronised sums --------------------------------------------------------------------------
    def flush_target_sums(self) -> None:
        """Add every rank's pending target sums into ``target_sum``/``target_count`` (all-reduced: the same on every
        rank). Called at the sync points, on every rank: before evaluation and checkpoints."""
        pending = self._target_pending.to(self.target_sum.device)
        total = self.all_sum(pending)
        self.target_sum += total[0]
        self.target_count += total[1]
        self._target_pending = torch.zeros_like(pending)

    def on_validation_epoch_start(self) -> None:
        """Lightning hook (every rank): sync normalisation statistics and the baseline's target sums."""
        super().on_validation_epoch_start()
        self.flush_target_sums()

    def on_test_epoch_start(self) -> None:
        """Lightning hook (every rank): the baseline's target sums are complete before testing."""
        self.flush_target_sums()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Flush the target sums (every rank) before the base class stores the rest."""
        self.flush_target_sums()
        super().on_save_checkpoint(checkpoint)

    # -- batches ------------------------------------------------------------------------------------
    def check_channels(self, x: torch.Tensor, key: str) -> None:
        """Refuse a batch whose channel count does not match the model's mode/slices.

        Args:
            x: the batch tensor.
            key: its batch key (for the message).
        """
        if x.shape[1] != self.in_slices:
            raise ValueError(f"batch[{key!r}] has {x.shape[1]} channels but the model was built for mode "
                             f"{self.mode!r} with {self.in_slices} input slice(s); use the same mode/slices for data "
                             "and model")

    @staticmethod
    def centre(x: torch.Tensor) -> torch.Tensor:
        """Centre slice of a 2.5D stack (the slice the stack is about).

        Args:
            x: ``(N, slices, ...)`` stack.
        """
        c = x.shape[1] // 2
        return x[:, c:c + 1]

    def track_target(self, target_unit: torch.Tensor, body: torch.Tensor | None, window: dict[str, Any]) -> None:
        """Add a training batch's target (inside the body, physical units) to the ``mean`` baseline's running sums.

        Vectorised over the batch, with no host synchronisation (each sample may have its own window).

        Args:
            target_unit: target batch in [-1, 1].
            body: body masks of the batch, or None (whole image).
            window: the target's collated window dict.
        """
        y = target_unit.detach()
        n = y.shape[0]
        m = (body > 0.5) if body is not None else torch.ones_like(y, dtype=torch.bool)
        if m.shape != y.shape:
            m = m.expand_as(y)
        phys = from_unit(y.reshape(n, -1).double(), window_columns(window, n, y.device))
        mf = m.reshape(n, -1).to(torch.float64)
        if self._target_pending.device != y.device:
            self._target_pending = self._target_pending.to(y.device)
        self._target_pending += torch.stack([(phys * mf).sum(), mf.sum()])

    # -- inference ----------------------------------------------------------------------------------
    @property
    def inference_generator(self) -> nn.Module:
        """The network used for evaluation and translation: the EMA when enabled, else the generator."""
        return self.ema.module if self.ema is not None else self.generator

    def translate(self, volume: torch.Tensor, generator: nn.Module | None = None) -> torch.Tensor:
        """Translate a whole volume in network range, ``(1, 1, I, J, K)`` -> ``(1, 1, I, J, K)``.

        Args:
            volume: input volume in [-1, 1].
            generator: network to use (default :attr:`inference_generator`; CycleGAN's reverse generator for the
                other direction).
        """
        c = self.eval_config
        return translate_volume(generator or self.inference_generator, volume, mode=self.mode, slices=self.in_slices,
                                roi_size=c.roi_size, batch=c.inference_batch, memory_format=self.memory_format)

    # -- evaluation ---------------------------------------------------------------------------------
    def baseline(self, batch: dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        """The trivial baseline's volume in physical units: the input copied through the windows, or the mean
        training target inside the body (the window's low value outside)."""
        target_window = window_of(batch["window"][self.target])
        if self.eval_config.baseline == "copy":
            return copy_baseline(batch[self.source][0, 0], target_window)
        mean = (self.target_sum / self.target_count.clamp(min=1)).item() if self.target_count > 0 else 0.0
        return mean_baseline(mask, mean, target_window.low)

    def evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, Any]:
        """Translate one held-out volume and score it (and the baseline) in physical units.

        Args:
            batch: one whole volume with ``<target>_phys`` and ``body_mask``.
            stage: ``"val"`` or ``"test"``.

        Returns:
            The sample panel's volumes (numpy, physical units): ``input``, ``pred``, ``target``, ``mask``,
            ``lesion`` (or None) and the ``patient`` id.
        """
        src, tgt = self.source, self.target
        if f"{tgt}_phys" not in batch:
            raise ValueError(f"evaluation batches need {tgt!r}_phys (whole volumes in physical units) from the "
                             "datamodule")
        x = batch[src]
        if x.dim() != 5 or x.shape[0] != 1:
            raise ValueError(f"evaluation expects one whole volume (1, 1, I, J, K) per batch, got {tuple(x.shape)}")
        pred_unit = self.translate(x)
        pred = from_unit(pred_unit[0, 0].double(), window_of(batch["window"][tgt]))
        target = batch[f"{tgt}_phys"][0, 0].double()
        mask = batch["body_mask"][0, 0] > 0.5
        lesion = batch["lesion_mask"][0, 0] > 0.5 if tgt == "pet" and "lesion_mask" in batch else None
        data_range = None
        if self.eval_window is None:  # MR: each patient's own normalisation window
            w = window_of(batch["window"][tgt])
            data_range = (w.low, w.high)
        self.evaluation[stage].update(pred=pred, target=target, mask=mask, baseline=self.baseline(batch, mask),
                                      data_range=data_range, lesion_mask=lesion, pred_unit=pred_unit[0],
                                      target_unit=batch[tgt][0])
        return {"input": batch[f"{src}_phys"][0, 0] if f"{src}_phys" in batch else None, "pred": pred,
                "target": target, "mask": mask, "lesion": lesion, "patient": batch.get("patient", ["?"])[0]}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        """Score one held-out volume; the first batch returns its panel volumes (for the sample-panel callback).
        A rank's padding batch (fewer held-out patients than ranks) is skipped."""
        if is_padding(batch):
            return None
        out = self.evaluate(batch, "val")
        if batch_idx != 0:
            return None
        return {"panel": {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Score one test volume (a padding batch is skipped)."""
        if is_padding(batch):
            return
        self.evaluate(batch, "test")

    def log_evaluation(self, stage: str) -> None:
        """Log the stage's patient-averaged metrics (``<stage>/<metric>``, baseline beside them) and reset them.

        Args:
            stage: ``"val"`` or ``"test"``.
        """
        evaluation = self.evaluation[stage]
        values = evaluation.compute()  # on every rank: torchmetrics syncs the sums
        evaluation.reset()
        if float(values["num_patients"]) == 0:
            return
        self.log_dict({f"{stage}/{k}": v.float() for k, v in values.items()}, prog_bar=False, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics with the baseline beside them."""
        self.log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics with the baseline beside them."""
        self.log_evaluation("test")

    def checkpoint_meta(self) -> dict[str, Any]:
        """Family and layout, plus the direction the checkpoint translates."""
        return {**super().checkpoint_meta(), "source": self.source, "target": self.target, "mode": self.mode}


__all__ = ["DEFAULT_EVAL_WINDOWS", "TranslationModule", "window_columns", "window_of"]
