"""``medsynth preview``: CT | MR | PET slices of a demo data set; slide thumbnails with tissue mask and tiles."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "render preview PNGs of a demo data set"
DESCRIPTION = """Render CT (soft tissue and bone windows) | MR | PET (inverted grey) axial slices and coronal views of
the first patients of a data set written by `medsynth demo-data`, and (beside it, *_slides.png) slide thumbnails
with labelled regions, the tissue mask and the 40x tile grid.

Example:
  medsynth preview --data demo_out/data --out demo_out/preview.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth preview``."""
    parser.add_argument("--data", required=True, type=Path, help="folder written by `medsynth demo-data`")
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    parser.add_argument("--patients", type=int, default=3, help="patients to show")
    parser.add_argument("--overwrite", action="store_true", help="replace existing PNGs (atomically)")


def render(data_dir: Path, out: Path, n_patients: int = 3) -> Path:
    """Render the preview PNG(s) of a demo data set; returns the volume preview path.

    Args:
        data_dir: folder written by ``medsynth demo-data``.
        out: PNG file of the volume preview (the slide preview goes beside it as ``<stem>_slides.png``).
        n_patients: patients to show.
    """
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


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth preview``."""
    from data.files import check_overwrite

    check_overwrite(args.out, overwrite=args.overwrite, what="preview PNG")
    render(args.data, args.out, args.patients)
    return 0
