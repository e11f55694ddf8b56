"""``medsynth fit|validate|test|predict``: LightningCLI over the project's model families and datamodules.

``class_path`` picks the family (``gan.models.CycleGAN``, ``gan.models.Pix2Pix``) and the datamodule; configs
extend ``experiments/base.yaml`` (trainer, logger, callbacks) with ``--config base.yaml --config X.yaml``. The
settings both sides need are given once, under ``data``, and linked into the model: ``source``, ``target``,
``mode`` and ``slices`` (volume datamodules).
"""
from __future__ import annotations

from typing import Any, Sequence

HELP = "LightningCLI training and evaluation"

#: Datamodule settings copied into the model by the CLI (set them under ``data.init_args``).
LINKED_ARGUMENTS: tuple[str, ...] = ("source", "target", "mode", "slices")


def _cli_class() -> type:
    from lightning.pytorch.cli import LightningCLI

    class MedsynthCLI(LightningCLI):
        """LightningCLI with the data -> model links of :data:`LINKED_ARGUMENTS`."""

        def add_arguments_to_parser(self, parser: Any) -> None:
            """Link the settings the model takes from the datamodule (given once, under ``data``)."""
            for key in LINKED_ARGUMENTS:
                parser.link_arguments(f"data.init_args.{key}", f"model.init_args.{key}")
            # tiles (StyleGAN2): the tile size is the resolution (the classes and mpp: before_instantiate_classes)
            parser.link_arguments("data.init_args.tile_size", "model.init_args.resolution")

        def before_instantiate_classes(self) -> None:
            """With ``--ckpt_path``, continue the checkpoint's run: ``fit`` resumes it (same W&B id, folder, best-k);
            ``validate``/``test`` write their reports into that run's folder."""
            cfg = self.config.get(self.subcommand) if self.subcommand else self.config
            tile_model_args(cfg)
            default_strategy(cfg)
            if self.subcommand in ("fit", "validate", "test") and cfg.get("ckpt_path"):
                continue_run(cfg, cfg["ckpt_path"])

        def _check_inputs(self) -> None:
            check = getattr(self.datamodule, "check_inputs", None)
            if check is not None:  # bad paths fail here, before any run folder or W&B run exists
                check(self.subcommand)

        def before_fit(self) -> None:
            """Check the datamodule's inputs before anything is written."""
            self._check_inputs()

        def before_validate(self) -> None:
            """Check the datamodule's inputs before anything is written."""
            self._check_inputs()

        def before_test(self) -> None:
            """Check the datamodule's inputs before anything is written."""
            self._check_inputs()

    return MedsynthCLI


def tile_model_args(cfg: Any) -> None:
    """A tile model (StyleGAN2) on a :class:`data.slides.TileDataModule` takes the datamodule's classes and mpp
    (given once, under ``data``): fill ``model.init_args.class_names`` / ``mpp`` where they are unset. Only models
    that take these arguments are touched (a link would hand them to every model).

    Args:
        cfg: the subcommand's parsed config (jsonargparse Namespace).
    """
    model, data = cfg.get("model"), cfg.get("data")
    if model is None or data is None or not str(getattr(data, "class_path", "")).endswith("TileDataModule"):
        return
    if "class_names" not in model.init_args or "mpp" not in model.init_args:
        return
    from data.slides.datamodule import tile_classes
    from data.slides.slide import mpp_from_magnification

    d = data.init_args
    if model.init_args.get("class_names") is None:
        model.init_args.class_names = tile_classes(d.slides, d.get("class_names"), d.get("regions"))
    if model.init_args.get("mpp") is None:
        mpp = d.get("mpp")
        model.init_args.mpp = float(mpp) if mpp is not None else mpp_from_magnification(d.magnification)


def default_strategy(cfg: Any) -> None:
    """Several devices or nodes with ``strategy: auto`` train with the project's ``ddp_gan`` (Lightning's ``auto``
    would pick plain ``ddp``, which fails for GANs; see :mod:`gan.models.strategy`).

    Args:
        cfg: the subcommand's parsed config (jsonargparse Namespace).
    """
    trainer = cfg.get("trainer") if hasattr(cfg, "get") else None
    if trainer is None or str(trainer.get("strategy", "auto")) != "auto":
        return
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1) or 1)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    many = (isinstance(devices, int) and devices > 1) or (isinstance(devices, (list, tuple)) and len(devices) > 1)
    if many or nodes > 1:
        trainer["strategy"] = "ddp_gan"


def continue_run(cfg: Any, ckpt_path: str) -> None:
    """Point the config's W&B logger at the run a checkpoint was written by (its id and save_dir), unless the user
    named a run id: the resumed run then writes into the same run folder and W&B run.

    Args:
        cfg: the subcommand's parsed config (jsonargparse Namespace).
        ckpt_path: the checkpoint being resumed.
    """
    import torch

    logger = cfg.get("trainer", {}).get("logger") if hasattr(cfg, "get") else None
    if logger is None or not str(getattr(logger, "class_path", "")).endswith("MedsynthWandbLogger"):
        return
    try:
        meta = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("medsynth") or {}
    except (OSError, RuntimeError, ValueError):
        return  # Lightning reports an unreadable checkpoint itself
    run = meta.get("run")
    if not run or logger.init_args.get("id"):
        return
    logger.init_args["id"] = run["id"]
    logger.init_args["save_dir"] = run["save_dir"]
    logger.init_args["project"] = run["name"]


def run_lightning_cli(args: Sequence[str], run: bool = True) -> Any:
    """Run LightningCLI with the project's model/datamodule base classes (``class_path`` picks the family).

    Args:
        args: command-line arguments starting with the subcommand (when ``run``) or without it.
        run: False builds the objects without running (used by the demo and the tests).
    """
    import lightning as L

    from gan.tracking import WandbSaveConfig

    return _cli_class()(
        model_class=L.LightningModule, subclass_mode_model=True,
        datamodule_class=L.LightningDataModule, subclass_mode_data=True,
        save_config_callback=WandbSaveConfig, save_config_kwargs={"overwrite": True},
        trainer_defaults={"use_distributed_sampler": False},
        args=list(args), run=run, seed_everything_default=0,
    )


def main(argv: Sequence[str], quiet: bool = False) -> int:
    """Run a LightningCLI subcommand; returns the exit status.

    Args:
        argv: ``[subcommand, ...arguments]``.
        quiet: no progress bar (logs and CI).
    """
    import sys

    args = list(argv)
    explicit = any(a.startswith("--trainer.enable_progress_bar") for a in args)
    if (quiet or not sys.stderr.isatty()) and not explicit and "--help" not in args and "-h" not in args:
        args.append("--trainer.enable_progress_bar=false")  # logs and CI: one line per validation instead
    from gan.tracking import finish_run

    try:
        run_lightning_cli(args)
    finally:
        finish_run()
    return 0
