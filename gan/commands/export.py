"""``medsynth export``: the EMA generator of a StyleGAN2 checkpoint as safetensors + JSON, for sharing.

The folder (:func:`gan.nets.stylegan2.save_exported`: ``generator.safetensors`` + ``config.json``) loads with
``gan.nets.stylegan2.load_exported(DIR)`` without Lightning and without unpickling anything, and
:func:`gan.models.checkpoint.load_generator` reads it like the checkpoint: ``config.json``'s ``metadata`` carries
``class_names``, ``mpp``, ``tile_size`` and ``checkpoint_sha256`` (of the source checkpoint), so tiles made from an
export record the same checkpoint as tiles made from the ``.ckpt``. The folder is built beside ``--out`` and
renamed into place once complete and checked (it must draw the same tiles as the loaded generator).

This module imports only the standard library at import time.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gan.nets.stylegan2 import Generator

HELP = "export the EMA generator of a StyleGAN2 checkpoint as safetensors + JSON (loads without Lightning)"
DESCRIPTION = """Write the EMA generator of a StyleGAN2 checkpoint of `medsynth fit` as a folder holding
generator.safetensors (every tensor, float32) and config.json (the constructor arguments, the weights' sha256 and
metadata: class names, training mpp, tile size, the checkpoint's sha256, medsynth version).

Load it in Python with gan.nets.stylegan2.load_exported(DIR) (no Lightning import, nothing unpickled); every
StyleGAN2 command (mix, project, generate) accepts the folder as --ckpt and draws the same tiles for the same seeds
as the checkpoint. The folder appears only when complete; an existing --out is refused unless --overwrite.

Example:
  medsynth export --ckpt runs/medsynth/<run>/checkpoints/last.ckpt --out stylegan2_export
"""

#: Seeds drawn from the written folder and from the loaded generator to check that they agree.
CHECK_SEEDS: tuple[int, ...] = (0, 1)


def export_metadata(info: dict[str, Any]) -> dict[str, Any]:
    """The ``metadata`` of ``config.json``: what :func:`gan.models.checkpoint.load_generator` reads back, plus the
    source and the software that wrote the folder.

    Args:
        info: what :func:`gan.commands.stylegan.open_generator` returned beside the generator.
    """
    from data.provenance import medsynth_version, utc_now

    return {"class_names": list(info.get("class_names") or []), "mpp": info.get("mpp"),
            "tile_size": info.get("tile_size"), "checkpoint_sha256": info.get("checkpoint_sha256"),
            "family": "StyleGAN2", "source": str(info.get("source", "")), "software": "medsynth",
            "version": medsynth_version(), "created": utc_now()}


def export(G: Generator, info: dict[str, Any], out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``G`` as an export folder ``out`` (built beside it, checked, then renamed into place).

    Args:
        G: the generator (the checkpoint's EMA generator).
        info: what :func:`gan.commands.stylegan.open_generator` returned beside it (the folder's metadata).
        out: the export folder.
        overwrite: replace an existing ``out`` (atomically: the old one stays until the new one is complete).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        RuntimeError: the written folder does not draw the same tiles as ``G`` (it is not put in place).
    """
    import torch

    from data.files import atomic_dir, check_overwrite
    from gan.nets.stylegan2 import load_exported, save_exported
    from gan.style import sample_images

    out = check_overwrite(out, overwrite=overwrite, what="export folder")
    label = 0 if G.num_classes else None
    with atomic_dir(out) as tmp:
        save_exported(G, tmp, metadata=export_metadata(info))
        reloaded = load_exported(tmp, device=next(G.parameters()).device)
        if not torch.equal(sample_images(reloaded, CHECK_SEEDS, label), sample_images(G, CHECK_SEEDS, label)):
            raise RuntimeError(f"{out}: the exported generator does not draw the checkpoint's tiles; nothing written")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth export``.

    Args:
        parser: the (sub)parser to fill.
    """
    parser.add_argument("--ckpt", required=True, type=Path,
                        help="StyleGAN2 checkpoint (.ckpt) of `medsynth fit` (its EMA generator is exported), or an "
                             "export folder (copied and checked)")
    parser.add_argument("--out", required=True, type=Path, help="new export folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (atomically)")


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth export``.

    Args:
        args: the parsed arguments.
    """
    from data.files import sha256_file
    from gan.commands.stylegan import open_generator
    from gan.nets.stylegan2 import WEIGHTS_FILE

    G, info = open_generator(args.ckpt)
    out = export(G, info, args.out, overwrite=args.overwrite)
    classes = ", ".join(info.get("class_names") or []) or "unconditional"
    size_mb = (out / WEIGHTS_FILE).stat().st_size / 1e6
    print(f"exported the EMA generator of {args.ckpt} ({G.resolution} px, {classes}; checkpoint sha256 "
          f"{str(info.get('checkpoint_sha256'))[:12]}...) to {out}/: {WEIGHTS_FILE} ({size_mb:.1f} MB, sha256 "
          f"{sha256_file(out / WEIGHTS_FILE)[:12]}...) and config.json")
    return 0


__all__ = ["CHECK_SEEDS", "add_arguments", "export", "export_metadata", "run"]
