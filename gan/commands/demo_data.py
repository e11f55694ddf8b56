"""``medsynth demo-data``: the deterministic demo data set (CT/MR/PET patients, a DICOM series, slides)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "write the synthetic demo data set (CT/MR/PET patients, DICOM series, whole-slide images)"
DESCRIPTION = """Write the demo data set: synthetic patients (CT in HU, registered T1 MR, PET in SUV, lesion and body
masks) as NIfTI, one CT also as a DICOM series with shuffled file names, Aperio-style pyramidal slides with region
CSVs, manifest.json and splits.json. The data set is a pure function of --seed; it is built in a temporary folder and
moved into place only when complete.

Example:
  medsynth demo-data --out demo_out/data
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth demo-data`` (also used by ``medsynth demo``)."""
    parser.add_argument("--out", required=True, type=Path, help="destination folder")
    parser.add_argument("--patients", type=int, default=10, help="synthetic patients (>= 4)")
    parser.add_argument("--slides", type=int, default=3, help="whole-slide images")
    parser.add_argument("--seed", type=int, default=0, help="master seed (the data set is a pure function of it)")
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 112, 48), metavar=("I", "J", "K"),
                        help="volume shape")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 2.5), metavar=("SX", "SY", "SZ"),
                        help="voxel size in mm")
    parser.add_argument("--slide-size", type=int, nargs=2, default=(4096, 3072), metavar=("W", "H"),
                        help="level-0 slide size in pixels")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing data set (atomically: the old one stays until the new one is "
                             "complete)")


def write(args: argparse.Namespace, out: Path | None = None) -> Path:
    """Write the demo data set described by ``args`` to ``out`` (default ``args.out``); returns its folder.

    Args:
        args: parsed ``demo-data`` arguments.
        out: destination folder overriding ``args.out``.
    """
    from data.files import check_overwrite
    from data.phantoms import write_demo_dataset

    out = Path(out or args.out)
    check_overwrite(out, overwrite=args.overwrite, what="demo data folder")
    t0 = time.perf_counter()
    m = write_demo_dataset(out, n_patients=args.patients, n_slides=args.slides, seed=args.seed, shape=tuple(args.shape),
                           spacing=tuple(args.spacing), slide_size=tuple(args.slide_size))
    print(f"demo data: {len(m.patients)} patients, {len(m.dicom)} DICOM series, {len(m.slides)} slides "
          f"in {time.perf_counter() - t0:.1f} s -> {out}")
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth demo-data``."""
    write(args)
    return 0
