"""``medsynth project``: fit a real tile into a StyleGAN2 generator's W or W+ space (:func:`gan.style.project`).

The output folder (built beside ``--out``, renamed into place when complete; an existing one is refused unless
``--overwrite``) holds:

* ``target.png`` and ``reconstruction.png`` (each with a provenance sidecar): the tile as fitted and the
  generator's image of the fitted latent and noise maps;
* ``latent.safetensors``: the fitted ws ``w`` (1, num_ws, w_dim) and noise maps ``noise.<i>``
  (:func:`gan.style.save_latent`; read back with :func:`gan.style.load_latent`);
* ``projection.json``: the settings, the per-step losses, the final LPIPS and MSE, the checkpoint's and the tile's
  sha256, and the time taken;
* with ``--mix-seeds``, ``restyle.png``: the projected tile (row) mixed with those seeds (columns), its
  ``--mix-layers`` ws kept, every cell with the fitted noise maps.

This module imports only the standard library at import time.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan.commands.mix import seed_list

if TYPE_CHECKING:
    import numpy as np

    from gan.nets.stylegan2 import Generator

HELP = "fit a real tile into a StyleGAN2 generator's W / W+ space (LPIPS + noise regularisation)"
DESCRIPTION = """Project a real tile into the latent space of a StyleGAN2 checkpoint or export (Karras et al. 2020):
optimise a w (--space w: one for all layers; w+: one per layer) and the per-layer noise maps so that the generated
tile matches it under the LPIPS VGG distance, with the paper's noise regularisation and learning-rate schedule.

The tile must have the generator's size and channels, at the training mpp (crop or rescale it first). LPIPS needs
torchvision's VGG16 ImageNet weights from a local file (--lpips-weights FILE_OR_FOLDER, default the torch hub cache;
nothing is downloaded); --lpips-weights random uses a seeded random network (smoke runs only). Writes target.png,
reconstruction.png, latent.safetensors and projection.json to --out; --mix-seeds also writes restyle.png, the
projected tile's --mix-layers styles mixed with those seeds' other styles.

Example:
  medsynth project --ckpt demo_out/stylegan2/export --image tile.png --steps 500 --out projected
"""

#: ``--lpips-weights random``: a seeded random LPIPS (smoke runs; the distance compares with nothing published).
RANDOM_WEIGHTS = "random"
#: Latent spaces of ``--space``.
SPACES: tuple[str, ...] = ("w", "w+")


def read_tile(path: str | Path, *, channels: int, size: int) -> np.ndarray:
    """A tile file as uint8 (H, W, channels), checked against the generator's tile size.

    Args:
        path: an image file Pillow reads (PNG, JPEG, TIFF).
        channels: the generator's image channels (3: RGB, 1: grey); RGBA/palette/grey files are converted.
        size: the generator's tile size in pixels.

    Raises:
        UsageError: no such file, not an image, or another size (the message names the file).
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from gan.commands import UsageError

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--image {p}: no such file")
    try:
        with Image.open(p) as im:
            im.load()
            mode = "RGB" if channels == 3 else "L"
            array = np.asarray(im.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"--image {p}: not an image file Pillow can read ({exc})") from exc
    array = array[:, :, None] if array.ndim == 2 else array
    if array.shape[:2] != (size, size):
        raise UsageError(f"--image {p}: the tile is {array.shape[1]} x {array.shape[0]} px but the generator makes "
                         f"{size} x {size} tiles; crop or rescale it to {size} px at the training mpp")
    return array


def build_lpips(weights: str | Path | None, device: str) -> tuple[Any, str]:
    """The projector's LPIPS (VGG) and how it was built (for the record).

    Args:
        weights: ``"random"``, a VGG16 weights file or folder, or None (the torch hub cache).
        device: torch device.

    Raises:
        UsageError: the VGG16 weights are not there (the message says which file to place where).
    """
    from gan.commands import UsageError
    from gan.losses import LPIPSLoss
    from gan.style import random_lpips

    if weights == RANDOM_WEIGHTS:
        return random_lpips("vgg", seed=0).to(device), "vgg, random weights (seed 0): not comparable"
    try:
        loss = LPIPSLoss(net="vgg", pretrained=True, backbone_weights=weights)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--lpips-weights: {exc}") from exc
    return loss.to(device), f"vgg, ImageNet weights ({weights or 'torch hub cache'})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth project``.

    Args:
        parser: the (sub)parser to fill.
    """
    p = parser
    p.add_argument("--ckpt", required=True, type=Path, help="StyleGAN2 checkpoint (.ckpt) or export folder")
    p.add_argument("--image", required=True, type=Path, help="the real tile (PNG/JPEG/TIFF) of the generator's size")
    p.add_argument("--steps", type=int, default=500, help="optimisation steps")
    p.add_argument("--out", required=True, type=Path, help="new output folder")
    p.add_argument("--space", choices=SPACES, default="w", help="one w for all layers (w) or one per layer (w+)")
    p.add_argument("--label", default=None, help="class name or index of a conditional generator (default: class 0)")
    p.add_argument("--lpips-weights", default=None, type=lambda t: t if t == RANDOM_WEIGHTS else Path(t),
                   help="torchvision VGG16 weights file or folder, or 'random' (smoke runs); unset: torch hub cache")
    p.add_argument("--seed", type=int, default=0, help="seed of the projection's random draws")
    p.add_argument("--noise-regularize", type=float, default=1e5, help="weight of the noise regularisation")
    p.add_argument("--mse-weight", type=float, default=0.0, help="weight of the pixel MSE (0 as in the paper)")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    p.add_argument("--mix-seeds", type=seed_list, default=None,
                   help="also write restyle.png: the projected tile mixed with these seeds, e.g. 0-5")
    p.add_argument("--mix-layers", default="coarse",
                   help="ws of the projected tile kept in restyle.png (ranges or coarse / middle / fine)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (atomically)")


def _write_outputs(folder: Path, G: Generator, proj: Any, record: dict[str, Any], *,
                   mix: tuple[list[int], list[int]] | None, label: int | None) -> None:
    """The files of the output folder (see the module docstring), into ``folder``."""
    from data.provenance import write_manifest, write_png
    from gan.style import format_layers, sample_w, save_grid, save_latent, style_mix_ws, to_uint8

    prov = {k: record[k] for k in ("source", "checkpoint_sha256", "image", "image_sha256", "space", "steps")}
    for name, image in (("target.png", proj.target[0]), ("reconstruction.png", proj.image[0])):
        pixels = to_uint8(image)
        write_png(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels, folder / name, provenance=prov)
    save_latent(folder / "latent.safetensors", proj,
                metadata={k: str(v) for k, v in prov.items()} | {"label_index": str(label)})
    if mix is not None:
        seeds, layers = mix
        w_cols = sample_w(G, seeds, label)
        grid = style_mix_ws(G, proj.w, w_cols, layers, noise=proj.noise)
        save_grid(grid, folder / "restyle.png", row_labels=["tile"], col_labels=[str(s) for s in seeds],
                  title=f"ws {format_layers(layers) or 'none'} from the projected tile, the rest from the seeds",
                  provenance={**prov, "mix_seeds": seeds, "mix_layers": layers, "label_index": label,
                              "noise": "the projection's fitted maps in every cell"})
    write_manifest(folder / "projection.json", {**record, "losses": proj.losses, "final": proj.final})


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth project``.

    Args:
        args: the parsed arguments.
    """
    import logging
    import time

    from data.files import atomic_dir, check_overwrite, sha256_file
    from gan.commands import UsageError
    from gan.commands.stylegan import open_generator, resolve_class
    from gan.reports import progress
    from gan.style import project, style_layers

    if args.steps < 1:
        raise UsageError(f"--steps {args.steps}: need at least 1 step")
    out = check_overwrite(args.out, overwrite=args.overwrite, what="projection folder")
    G, info = open_generator(args.ckpt, args.device)
    tile = read_tile(args.image, channels=G.img_channels, size=G.resolution)
    label, name = resolve_class(args.label, G, info)
    mix = None
    if args.mix_seeds is not None:
        try:
            mix = (list(args.mix_seeds), style_layers(args.mix_layers, num_ws=G.num_ws))
        except ValueError as exc:
            raise UsageError(f"--mix-layers {args.mix_layers!r}: {exc}") from exc
    lpips, lpips_kind = build_lpips(args.lpips_weights, args.device)
    quiet = bool(getattr(args, "quiet", False))
    bar = progress(None, total=args.steps, desc=f"projecting {Path(args.image).name}", quiet=quiet)

    def on_step(step: int, values: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(lpips=f"{values['lpips']:.4f}", refresh=False)

    t0 = time.perf_counter()
    try:
        proj = project(G, tile, args.steps, w_plus=args.space == "w+", lpips=lpips, label=label, seed=args.seed,
                       noise_regularize=args.noise_regularize, mse_weight=args.mse_weight, lr=args.lr,
                       callback=on_step)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    record = {"source": str(args.ckpt), "checkpoint_sha256": info.get("checkpoint_sha256"),
              "image": str(args.image), "image_sha256": sha256_file(args.image), "space": args.space,
              "steps": args.steps, "seed": args.seed, "label_index": label, "label_name": name, "lpips": lpips_kind,
              "noise_regularize": args.noise_regularize, "mse_weight": args.mse_weight, "lr": args.lr,
              "seconds": seconds, "seconds_per_step": seconds / args.steps, "mpp": info.get("mpp"),
              "tile_size": info.get("tile_size")}
    with atomic_dir(out) as tmp:
        _write_outputs(tmp, G, proj, record, mix=mix, label=label)
    logging.getLogger("medsynth.project").info("%d steps in %.1f s (%.3f s/step)", args.steps, seconds,
                                               seconds / args.steps)
    print(f"projected {args.image} into {args.space.upper()} ({args.steps} steps): LPIPS {proj.final['lpips']:.4f}, "
          f"MSE {proj.final['mse']:.4g} -> {out}/ (reconstruction.png, latent.safetensors, projection.json"
          f"{', restyle.png' if mix else ''})")
    return 0


__all__ = ["RANDOM_WEIGHTS", "SPACES", "add_arguments", "build_lpips", "read_tile", "run"]
