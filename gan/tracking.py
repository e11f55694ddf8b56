"""Weights & Biases tracking: a WandbLogger that goes offline (saying so once) when there is no API key and can
continue a run by id, and a config saver that writes the resolved LightningCLI config into the run's own folder and
uploads it to the run."""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger("medsynth")
_NOTICE_SHOWN = False


def wandb_credentials_available() -> bool:
    """True when W&B can log online: ``WANDB_API_KEY`` set or a login stored in ``~/.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC") or str(Path.home() / ".netrc"))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    host = (os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").split("://")[-1].split("/")[0]
    return rc.authenticators(host) is not None


class MedsynthWandbLogger(WandbLogger):
    """``WandbLogger`` that runs offline when no API key is available (or ``WANDB_MODE=offline``).

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with ``wandb sync``.

    Args:
        project: W&B project.
        name: run name (default: W&B's generated name).
        save_dir: folder for the run files and checkpoints.
        offline: force offline (True) or online (False); None decides from the environment.
        log_model: upload checkpoints as W&B artifacts (online runs only).
        tags: run tags.
        id: W&B run id to continue (the CLI sets it when resuming from a checkpoint of this run, so the resumed run
            keeps its id, folder, checkpoints and best-k tracking).
        kwargs: passed to :class:`lightning.pytorch.loggers.WandbLogger`.
    """

    def __init__(
        self,
        project: str = "medsynth",
        name: str | None = None,
        save_dir: str = "outputs",
        offline: bool | None = None,
        log_model: bool = False,
        tags: list[str] | None = None,
        id: str | None = None,
        **kwargs: Any,
    ) -> None:
        global _NOTICE_SHOWN
        if offline is None:
            mode = os.environ.get("WANDB_MODE", "").lower()
            offline = mode in ("offline", "dryrun", "disabled") or not wandb_credentials_available()
        if offline and not _NOTICE_SHOWN:
            log.warning("W&B: no API key (or WANDB_MODE=offline); logging offline to %s/wandb; upload later with "
                        "`wandb sync`", save_dir)
            _NOTICE_SHOWN = True
        if id is not None:
            kwargs.setdefault("resume", "allow")
        super().__init__(project=project, name=name, save_dir=save_dir, offline=offline,
                         log_model=False if offline else log_model, tags=tags, id=id, **kwargs)


    @property
    def experiment(self) -> Any:
        """The W&B run, created on first use (its folder too: nothing is written before the run starts)."""
        if self._experiment is None:
            Path(self.save_dir or ".").mkdir(parents=True, exist_ok=True)
        return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]


class WandbSaveConfig(SaveConfigCallback):
    """Writes the resolved config to ``<run folder>/config.yaml`` (see :func:`gan.callbacks.run_dir`: one folder per
    run, so runs of one config never overwrite each other's) and adds it to the W&B run. Global rank 0 only.

    A resumed run (same run folder) replaces its ``config.yaml`` with the resumed run's config, atomically.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False  # Lightning's log_dir is the logger's save_dir, shared by every run
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Write ``config.yaml`` into the run folder, log the config as hyperparameters and attach the file."""
        from data.files import atomic_write_text
        from gan.callbacks import run_dir

        path = run_dir(trainer) / self.config_filename
        atomic_write_text(path, self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                config = self.parser.dump(self.config, skip_none=False)
                logger.experiment.config.update({"cli_config": config}, allow_val_change=True)
                logger.experiment.save(str(path), base_path=str(path.parent), policy="now")


def finish_run() -> None:
    """Close the process's active W&B run (if any), so the next run in this process gets its own id and folder
    (W&B would otherwise hand the next logger the same run)."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
