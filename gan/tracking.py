"""Weights & Biases tracking: a WandbLogger that goes offline (saying so once) when there is no API key, and a
config saver that uploads the resolved LightningCLI config to the run."""
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
        **kwargs: Any,
    ) -> None:
        global _NOTICE_SHOWN
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled") or not wandb_credentials_available()
        if offline and not _NOTICE_SHOWN:
            log.warning("W&B: no API key (or WANDB_MODE=offline); logging offline to %s/wandb; upload later with `wandb sync`", save_dir)
            _NOTICE_SHOWN = True
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, name=name, save_dir=save_dir, offline=offline,
                         log_model=False if offline else log_model, tags=tags, **kwargs)


class WandbSaveConfig(SaveConfigCallback):
    """Saves the resolved config beside the run (Lightning's default) and adds it to the W&B run."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Log the full config as hyperparameters and attach the YAML file to W&B runs."""
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                config = self.parser.dump(self.config, skip_none=False)
                logger.experiment.config.update({"cli_config": config}, allow_val_change=True)
                path = Path(trainer.log_dir or ".") / self.config_filename
                if path.is_file():
                    logger.experiment.save(str(path), base_path=str(path.parent), policy="now")
