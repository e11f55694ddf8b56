"""``medsynth mix``: a labelled style-mixing grid (:func:`gan.style.style_mix`) of a StyleGAN2 checkpoint or export.

Cell ``(i + 1, j + 1)`` of the grid takes the ``--layers`` ws from row seed i and every other w from column seed j;
the first row holds the column seeds' own tiles, the first column the row seeds' (the top-left cell is blank). The
PNG and its provenance sidecar (``<stem>.json``: checkpoint sha256, seeds, layers, class, truncation, noise mode)
are written atomically; an existing output is refused unless ``--overwrite``. This module imports only the
standard library at import time.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "style-mixing grid of a StyleGAN2 checkpoint or export: some layers from row seeds, the rest from columns"
DESCRIPTION = """Draw a style-mixing grid: every cell is the tile whose --layers styles come from its row's seed and
all other styles from its column's seed; the first row and column show the seeds' own tiles.

Layers are indices of the generator's ws (two per resolution: 0-1 at 4 px, 2-3 at 8 px, 4-5 at 16 px, ...), given as
ranges (0-3, 4-7,10) or a preset: coarse (4-8 px: layout, shapes), middle (16-32 px: texture), fine (64 px and up,
or the last resolution of a small generator: colour and stain). --ckpt is a StyleGAN2 .ckpt (its EMA generator) or
an export folder; --label picks the class of a conditional generator (default: its first class). The grid PNG gets a
provenance sidecar (<stem>.json) so the grid can be redrawn exactly.

Example:
  medsynth mix --ckpt demo_out/stylegan2/export --rows 1,2,3 --cols 4,5,6 --layers 0-3 --out grid.png
"""


def seed_list(text: str) -> list[int]:
    """The argparse type of a seed list: comma-separated seeds and inclusive ranges, ``1,2,3`` or ``0-7,10``.

    Args:
        text: the option value.

    Raises:
        argparse.ArgumentTypeError: an empty list, a negative or non-integer seed, or a reversed range.
    """
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, sep, high = part.partition("-")
        if not low.strip().isdigit() or (sep and not high.strip().isdigit()):
            raise argparse.ArgumentTypeError(f"{text!r}: expected non-negative seeds and ranges like 1,2,3 or 0-7")
        a, b = int(low), int(high) if sep else int(low)
        if b < a:
            raise argparse.ArgumentTypeError(f"{text!r}: range {part!r} is reversed")
        seeds.extend(range(a, b + 1))
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth mix``.

    Args:
        parser: the (sub)parser to fill.
    """
    p = parser
    p.add_argument("--ckpt", required=True, type=Path, help="StyleGAN2 checkpoint (.ckpt) or export folder")
    p.add_argument("--rows", required=True, type=seed_list, help="row seeds (give the --layers styles), e.g. 1,2,3")
    p.add_argument("--cols", required=True, type=seed_list, help="column seeds (give all other styles), e.g. 4-6")
    p.add_argument("--layers", default="coarse",
                   help="ws taken from the row seeds: ranges such as 0-3 or 4-7,10, or coarse / middle / fine")
    p.add_argument("--out", required=True, type=Path, help="the grid PNG (a <stem>.json sidecar goes beside it)")
    p.add_argument("--label", default=None, help="class name or index of a conditional generator (default: class 0)")
    p.add_argument("--truncation", type=float, default=1.0,
                   help="psi: pull every w towards the class's average w (1: none, 0: the class's mean tile)")
    p.add_argument("--noise-mode", choices=("const", "none"), default="const",
                   help="per-layer noise: the generator's fixed maps (reproducible) or none")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out and its sidecar")


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth mix``.

    Args:
        args: the parsed arguments.
    """
    import math

    from data.files import check_overwrite, sidecar_path
    from data.provenance import medsynth_version
    from gan.commands import UsageError
    from gan.commands.stylegan import open_generator, resolve_class
    from gan.style import format_layers, save_grid, style_layers, style_mix

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: the grid is written as PNG; give a file name ending in .png")
    if not math.isfinite(args.truncation):
        raise UsageError(f"--truncation {args.truncation}: must be a finite number (1: no truncation)")
    for path, what in ((out, "grid image"), (sidecar_path(out), "grid sidecar")):
        check_overwrite(path, overwrite=args.overwrite, what=what)
    G, info = open_generator(args.ckpt, args.device)
    try:
        layers = style_layers(args.layers, num_ws=G.num_ws)
    except ValueError as exc:
        raise UsageError(f"--layers {args.layers!r}: {exc}") from exc
    label, name = resolve_class(args.label, G, info)
    grid = style_mix(G, args.rows, args.cols, layers, label, args.truncation, args.noise_mode)
    text = format_layers(layers) or "none"
    cls = "" if label is None else f", class {name or label}"
    title = f"ws {text} of {G.num_ws} from the row seeds{cls}, psi {args.truncation:g}"
    provenance = {"source": str(args.ckpt), "checkpoint_sha256": info.get("checkpoint_sha256"),
                  "medsynth_version": medsynth_version(), "row_seeds": list(args.rows), "col_seeds": list(args.cols),
                  "layers": layers, "num_ws": G.num_ws, "label_index": label, "label_name": name,
                  "truncation": args.truncation, "noise_mode": args.noise_mode, "mpp": info.get("mpp"),
                  "tile_size": info.get("tile_size"),
                  "layout": "[0, j+1]: column seed j; [i+1, 0]: row seed i; [i+1, j+1]: the layers from row seed i, "
                            "all other ws from column seed j; [0, 0] blank"}
    save_grid(grid, out, row_labels=[str(s) for s in args.rows], col_labels=[str(s) for s in args.cols], title=title,
              provenance=provenance)
    print(f"wrote {out} ({len(args.rows)} x {len(args.cols)} mixes, ws {text} from the rows{cls}) and "
          f"{sidecar_path(out)}")
    return 0


__all__ = ["add_arguments", "run", "seed_list"]
