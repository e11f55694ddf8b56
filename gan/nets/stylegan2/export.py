"""Export a :class:`~gan.nets.stylegan2.generator.Generator` as safetensors + JSON, and load it back.

An export folder holds two files:

``generator.safetensors``
    every tensor of ``G.state_dict()`` (parameters and persistent buffers: ``mapping.w_avg``,
    ``mapping.class_w_avg`` for a conditional model, each layer's ``noise_const``) in float32, under its
    ``state_dict`` key; the safetensors header metadata names the format and version (``format/version``, one key).
``config.json``
    ``{"format": "medsynth.stylegan2.generator", "format_version": 1, "generator": G.config,
    "weights": "generator.safetensors", "weights_sha256": ..., "metadata": {...}}``; ``metadata`` is free-form
    JSON from the caller (class names, training mpp, the checkpoint's sha256, ...).

Loading reads JSON and safetensors only: nothing is unpickled and Lightning is never imported. Both files are
written atomically (weights first, then the config that names their hash), through :mod:`data.files`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from data.files import atomic_path, atomic_write_json, check_overwrite, sha256_file
from gan.nets.stylegan2.generator import Generator

EXPORT_FORMAT = "medsynth.stylegan2.generator"
EXPORT_VERSION = 1
WEIGHTS_FILE = "generator.safetensors"
CONFIG_FILE = "config.json"


def save_exported(
    generator: Generator,
    directory: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``generator`` to ``directory`` (created if needed) as ``generator.safetensors`` + ``config.json``.

    Args:
        generator: the generator (usually the EMA copy).
        directory: the export folder.
        metadata: JSON-able information stored under ``"metadata"`` in ``config.json``.
        overwrite: replace an existing export in ``directory`` (otherwise an existing file is refused).

    Returns:
        the export folder.

    Raises:
        FileExistsError: an export file exists and ``overwrite`` is False.
    """
    folder = Path(directory)
    weights_path, config_path = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    for path in (weights_path, config_path):
        check_overwrite(path, overwrite=overwrite, what="exported generator file")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in generator.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        # one header key: safetensors writes several in an arbitrary order, which would change the file's sha256
        save_file(tensors, str(tmp), metadata={"format": f"{EXPORT_FORMAT}/{EXPORT_VERSION}"})
    config = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "generator": dict(generator.config),
        "weights": WEIGHTS_FILE,
        "weights_sha256": sha256_file(weights_path),
        "metadata": dict(metadata or {}),
    }
    atomic_write_json(config_path, config)
    return folder


def read_export_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of an export folder, checked for its format and version.

    Args:
        directory: the export folder.

    Raises:
        FileNotFoundError: the folder has no ``config.json``.
        ValueError: the file is not a StyleGAN2 generator export of a supported version.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no exported generator here (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a StyleGAN2 generator export (format {EXPORT_FORMAT!r} expected)")
    version = config.get("format_version")
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise ValueError(f"{path}: export format_version {version!r} is newer than this code supports")
    return config


def load_exported(directory: str | Path, *, device: str | torch.device = "cpu", verify: bool = True) -> Generator:
    """Rebuild the exported :class:`Generator` (in eval mode) from ``config.json`` and ``generator.safetensors``.

    Args:
        directory: the export folder written by :func:`save_exported`.
        device: where to put the generator.
        verify: check the weights file against the sha256 recorded in ``config.json``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: wrong format, a hash mismatch, or tensors that do not match the configuration.
    """
    folder = Path(directory)
    config = read_export_config(folder)
    weights_path = folder / config.get("weights", WEIGHTS_FILE)
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: the exported weights are missing")
    if verify and config.get("weights_sha256") and sha256_file(weights_path) != config["weights_sha256"]:
        raise ValueError(f"{weights_path}: sha256 differs from the one in {CONFIG_FILE} (file changed or damaged)")
    generator = Generator(**config["generator"])
    tensors = load_file(str(weights_path), device="cpu")
    missing, unexpected = generator.state_dict().keys() - tensors.keys(), tensors.keys() - generator.state_dict().keys()
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: tensors do not match the configuration (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    generator.load_state_dict(tensors, strict=True)
    return generator.to(device).eval()
