"""Load a checkpoint written by ``medsynth fit`` back into its module, without executing pickled code.

One allow-list maps the family name a checkpoint records (``checkpoint["medsynth"]["family"]``) to its class;
a new family is one line in :data:`FAMILIES`. Checkpoints are read with ``torch.load(weights_only=True)``: only
tensors and builtins, never code. Checkpoints of the flat-hyperparameter layout (format 1, before the config
groups) are converted on load (:func:`upgrade_format1`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data.files import sha256_file
from gan.models.base import CHECKPOINT_FORMAT, GANModule
from gan.models.cyclegan import CycleGAN
from gan.models.pix2pix import Pix2Pix
from gan.models.stylegan2 import StyleGAN2

#: Family name recorded in checkpoints -> module class. A new family adds one line.
FAMILIES: dict[str, type[GANModule]] = {"CycleGAN": CycleGAN, "Pix2Pix": Pix2Pix, "StyleGAN2": StyleGAN2}

# format 1 (flat hyperparameters) -> (group, field) of format 2
_FLAT_TO_GROUP: dict[str, tuple[str, str]] = {
    "generator_arch": ("generator", "arch"), "features": ("generator", "features"),
    "n_blocks": ("generator", "n_blocks"), "num_downs": ("generator", "num_downs"), "norm": ("generator", "norm"),
    "dropout": ("generator", "dropout"), "upsample": ("generator", "upsample"),
    "d_features": ("discriminator", "features"), "d_layers": ("discriminator", "layers"),
    "d_norm": ("discriminator", "norm"), "d_scales": ("discriminator", "scales"),
    "spectral_norm": ("discriminator", "spectral_norm"),
    "lr": ("optim", "lr"), "epochs_constant": ("optim", "epochs_constant"),
    "epochs_decay": ("optim", "epochs_decay"), "ema_decay": ("optim", "ema_decay"),
    "eval_protocol": ("evaluation", "protocol"), "eval_window": ("evaluation", "window"),
    "baseline": ("evaluation", "baseline"), "inference_batch": ("evaluation", "inference_batch"),
    "roi_size": ("evaluation", "roi_size"), "fid_weights": ("evaluation", "fid_weights"),
    "fid_max_slices": ("evaluation", "fid_max_slices"),
}


@dataclass
class LoadedCheckpoint:
    """A module rebuilt from a checkpoint, with what commands need to know about it.

    Args:
        module: the module in eval mode, on the requested device.
        path: the checkpoint file.
        sha256: hex digest of the file (recorded in every output made with it).
        family: the family name.
        data_hparams: the datamodule's settings at training time (windows, tile size, mpp, classes), or {}.
        data_state: what the datamodule's ``state_dict()`` recorded (e.g. the mean training MR window), or {}.
    """

    module: GANModule
    path: Path
    sha256: str
    family: str
    data_hparams: dict[str, Any] = field(default_factory=dict)
    data_state: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True``, upgraded to the current layout.

    Args:
        path: checkpoint file.
        map_location: device for the tensors.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a loadable checkpoint, or not one written by ``medsynth fit`` for a known family.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/format failure gets the same clear message
        raise ValueError(f"{p}: not a loadable checkpoint ({type(e).__name__}: {e})") from e
    meta = state.get("medsynth") if isinstance(state, dict) else None
    if not meta or meta.get("family") not in FAMILIES:
        raise ValueError(f"{p}: not a medsynth checkpoint of a known family ({', '.join(FAMILIES)}); use a "
                         "checkpoint written by `medsynth fit`")
    fmt = int(meta.get("format", 1))
    if fmt == 1:
        state = upgrade_format1(state)
    elif fmt != CHECKPOINT_FORMAT:
        raise ValueError(f"{p}: checkpoint layout {fmt} is newer than this medsynth understands "
                         f"({CHECKPOINT_FORMAT}); update medsynth")
    return state


def upgrade_format1(state: dict[str, Any]) -> dict[str, Any]:
    """Convert a format-1 checkpoint (flat hyperparameters, windows learned into a ``window_sums`` buffer) to the
    current layout: hyperparameters in config groups, the training windows as datamodule settings.

    Args:
        state: the format-1 checkpoint dict (not modified).
    """
    state = dict(state)
    flat = {k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")}
    hp: dict[str, Any] = {"generator": {}, "discriminator": {}, "optim": {}, "evaluation": {}}
    for key, value in flat.items():
        if key in _FLAT_TO_GROUP:
            group, name = _FLAT_TO_GROUP[key]
            hp[group][name] = value
        elif key in ("beta1", "beta2"):
            continue
        elif key == "pool_seed":
            hp["seed"] = value
        else:
            hp[key] = value
    hp["optim"]["betas"] = [flat.get("beta1", 0.5), flat.get("beta2", 0.999)]
    state["hyper_parameters"] = hp
    weights = dict(state["state_dict"])
    sums = weights.pop("window_sums", None)
    state["state_dict"] = weights
    data = dict(state.get("datamodule_hyper_parameters") or {})
    learned: dict[str, tuple[float, float, bool]] = {}
    for row, key in enumerate((flat.get("source"), flat.get("target"))):
        if sums is not None:
            low, high, log, n = (float(v) for v in sums[row].tolist())
            if n > 0:
                learned[key] = (low / n, high / n, log / n > 0.5)
    if not data:  # trained without a datamodule: the learned mean windows are all there is
        for key in ("ct", "pet"):
            if key in learned:
                data[f"{key}_window"] = learned[key][:2]
        if "pet" in learned:
            data["pet_log"] = learned["pet"][2]
    state["datamodule_hyper_parameters"] = data
    if "mr" in learned:  # the mean training MR window: what a synthetic MR is mapped back with
        state.setdefault("VolumeTranslationDataModule", {})["mr_window"] = list(learned["mr"][:2])
    meta = dict(state["medsynth"])
    meta.update(format=CHECKPOINT_FORMAT, extra={"image_pools": state.get("image_pools", {})})
    state["medsynth"] = meta
    return state


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the module a checkpoint holds, load its weights and put it in eval mode.

    Args:
        path: checkpoint written by ``medsynth fit`` (any family of :data:`FAMILIES`).
        map_location: device to load onto.
    """
    state = read_checkpoint(path, map_location)
    family = state["medsynth"]["family"]
    # LightningCLI adds bookkeeping keys such as "_class_path" to the hyperparameters
    hparams = {k: v for k, v in state["hyper_parameters"].items() if not k.startswith("_")}
    try:
        module = FAMILIES[family](**hparams)
    except TypeError as e:
        raise ValueError(f"{path}: its hyperparameters do not fit {family} ({e})") from e
    module.load_state_dict(state["state_dict"])
    module.load_extra_state(state["medsynth"].get("extra") or {})
    apply = getattr(module, "apply_memory_format", None)
    if apply is not None:
        apply()
    module.eval()
    data_state = next((v for k, v in state.items() if k.endswith("DataModule") and isinstance(v, dict)), {})
    return LoadedCheckpoint(module=module, path=Path(path), sha256=sha256_file(path), family=family,
                            data_hparams=dict(state.get("datamodule_hyper_parameters") or {}),
                            data_state=dict(data_state))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """A StyleGAN2 generator in eval mode and what outputs made with it record, from a checkpoint of
    ``medsynth fit`` (the EMA generator) or a folder written by ``medsynth export``.

    Args:
        path: a ``.ckpt`` of the StyleGAN2 family, or an export folder.
        device: device of the generator.

    Returns:
        ``(generator, info)`` with ``info`` holding ``class_names`` ([] when unconditional), ``mpp``, ``tile_size``,
        ``checkpoint_sha256`` (the export's weights sha256 for an export folder) and ``source``.
    """
    from gan.nets.stylegan2 import load_exported, read_export_config

    p = Path(path)
    if p.is_dir():
        config = read_export_config(p)
        meta = dict(config.get("metadata") or {})
        G = load_exported(p, device=device)
        return G, {"class_names": list(meta.get("class_names") or []), "mpp": meta.get("mpp"),
                   "tile_size": meta.get("tile_size", G.config.get("resolution")),
                   "checkpoint_sha256": meta.get("checkpoint_sha256") or config.get("weights_sha256"),
                   "source": str(p), "family": "StyleGAN2"}
    loaded = load_module(p, map_location="cpu")
    if loaded.family != "StyleGAN2":
        raise ValueError(f"{p}: a {loaded.family} checkpoint; this needs a StyleGAN2 checkpoint or export folder")
    module = loaded.module
    G = module.inference_generator.to(device).eval()
    return G, {"class_names": list(module.class_names), "mpp": module.mpp, "tile_size": int(module.hparams.resolution),
               "checkpoint_sha256": loaded.sha256, "source": str(p), "family": "StyleGAN2"}


__all__ = ["FAMILIES", "LoadedCheckpoint", "load_generator", "load_module", "read_checkpoint", "upgrade_format1"]
