"""The ``medsynth`` command.

Subcommands available now:

* ``medsynth demo-data --out DIR``: build the deterministic demo data set (patients, DICOM series, slides).
* ``medsynth preview --data DIR --out PNG``: render CT | MR | PET slices and slide thumbnails with tissue mask and tile grid.
* ``medsynth demo --out DIR``: both of the above (what ``make demo`` runs).

Training (``fit``/``validate``/``test`` through LightningCLI), ``translate``, ``generate``, ``mix`` and ``evaluate``
are added by the model and evaluation modules.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger("medsynth")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsynth", description="Medical image synthesis with GANs.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo-data", help="write the synthetic demo data set (CT/MR/PET patients, DICOM, slides)")
    _data_args(d)

    v = sub.add_parser("preview", help="render a preview PNG of a demo data set")
    v.add_argument("--data", required=True, type=Path, help="folder written by `medsynth demo-data`")
    v.add_argument("--out", required=True, type=Path, help="PNG file to write")
    v.add_argument("--patients", type=int, default=3, help="patients to show")

    m = sub.add_parser("demo", help="build the demo data set and its preview (what `make demo` runs)")
    _data_args(m)
    return p


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="destination folder")
    p.add_argument("--patients", type=int, default=10, help="synthetic patients (>= 4)")
    p.add_argument("--slides", type=int, default=3, help="whole-slide images")
    p.add_argument("--seed", type=int, default=0, help="master seed (the data set is a pure function of it)")
    p.add_argument("--shape", type=int, nargs=3, default=(128, 112, 48), metavar=("I", "J", "K"), help="volume shape")
    p.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 2.5), metavar=("SX", "SY", "SZ"), help="voxel size in mm")
    p.add_argument("--slide-size", type=int, nargs=2, default=(4096, 3072), metavar=("W", "H"), help="level-0 slide size in pixels")


def cmd_demo_data(args: argparse.Namespace, out: Path | None = None) -> Path:
    """Write the demo data set; returns its folder."""
    from data.phantoms import write_demo_dataset

    out = out or args.out
    t0 = time.perf_counter()
    m = write_demo_dataset(out, n_patients=args.patients, n_slides=args.slides, seed=args.seed, shape=tuple(args.shape),
                           spacing=tuple(args.spacing), slide_size=tuple(args.slide_size))
    print(f"demo data: {len(m.patients)} patients, {len(m.dicom)} DICOM series, {len(m.slides)} slides "
          f"in {time.perf_counter() - t0:.1f} s -> {out}")
    return out


def cmd_preview(data_dir: Path, out: Path, n_patients: int = 3) -> Path:
    """Render the preview PNG(s) of a demo data set; returns the volume preview path."""
    from data.phantoms import DemoManifest
    from data.preview import render_slides, render_volumes
    from data.volumes import load_volume

    m = DemoManifest.load(data_dir)
    shown = []
    for pid in list(m.patients)[:n_patients]:
        f = m.patients[pid]
        shown.append((pid, *(load_volume(m.root / f[k]) for k in ("ct", "mr", "pet"))))
    out = Path(out)
    render_volumes(shown, out)
    slides_png = out.with_name(out.stem + "_slides.png")
    if m.slides:
        render_slides([m.root / s for s in m.slides], slides_png)
    print(f"preview: {out}" + (f" and {slides_png}" if m.slides else ""))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsynth`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if args.command == "demo-data":
        cmd_demo_data(args)
    elif args.command == "preview":
        cmd_preview(args.data, args.out, args.patients)
    elif args.command == "demo":
        t0 = time.perf_counter()
        data_dir = cmd_demo_data(args, out=args.out / "data")
        cmd_preview(data_dir, args.out / "preview.png")
        print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs under {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
