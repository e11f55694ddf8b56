"""The ``medsynth`` command.

* ``medsynth fit|validate|test|predict --config experiments/X.yaml [--ckpt_path last.ckpt]``: LightningCLI
  (any ``--model.*``/``--data.*``/``--trainer.*`` argument; ``--print_config`` shows the resolved config).
* ``medsynth evaluate --real DIR --fake DIR --metrics fid,kid,memorization|mae,psnr,ssim --out REPORT_DIR``.
* ``medsynth generate --ckpt C --input DIR --out NEW_DIR --train DIR --heldout DIR``: a synthetic data set,
  released only after a memorization audit (exit status 3 when it fails).
* ``medsynth translate --ckpt C --input CT.nii.gz|DICOM_DIR --output out.nii.gz [--dicom-out DIR]``.
* ``medsynth demo-data --out DIR``: the deterministic demo data set (patients, DICOM series, slides).
* ``medsynth preview --data DIR --out PNG``: CT | MR | PET slices and slide thumbnails with tissue mask and tile grid.
* ``medsynth demo --out DIR``: demo data, preview, a CycleGAN CT->MR training run and its evaluation table.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("medsynth")
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
REPO = Path(__file__).resolve().parent.parent


def run_lightning_cli(args: Sequence[str], run: bool = True) -> Any:
    """Run LightningCLI with the project's model/datamodule base classes (``class_path`` picks the family).

    Args:
        args: command-line arguments starting with the subcommand (when ``run``) or without it.
        run: False builds the objects without running (used by tests to validate configs and sweeps).
    """
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from gan.tracking import WandbSaveConfig

    return LightningCLI(
        model_class=L.LightningModule, subclass_mode_model=True,
        datamodule_class=L.LightningDataModule, subclass_mode_data=True,
        save_config_callback=WandbSaveConfig, save_config_kwargs={"overwrite": True},
        args=list(args), run=run, seed_everything_default=0,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsynth", description="Medical image synthesis with GANs.",
                                epilog="Training: medsynth fit --config experiments/cyclegan_ct2mri_demo.yaml "
                                       "(fit/validate/test/predict are LightningCLI; add --help after them).")
    sub = p.add_subparsers(dest="command", required=True)
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (see `medsynth {name} --help`)", add_help=False)

    sub.add_parser("evaluate", help="FID/KID/memorization on image sets or paired-volume metrics (see `medsynth evaluate --help`)",
                   add_help=False)

    sub.add_parser("generate", help="synthetic data set from a checkpoint, released after a memorization audit "
                   "(see `medsynth generate --help`)", add_help=False)

    t = sub.add_parser("translate", help="translate a volume with a trained checkpoint")
    t.add_argument("--ckpt", required=True, type=Path, help="checkpoint (.ckpt) of a CycleGAN or Pix2Pix run")
    t.add_argument("--input", required=True, type=Path, help="input volume: NIfTI file or DICOM series folder")
    t.add_argument("--output", required=True, type=Path, help="output NIfTI file (.nii.gz)")
    t.add_argument("--dicom-out", type=Path, default=None, help="also write a DICOM series (marked DERIVED/synthetic)")
    t.add_argument("--direction", choices=("forward", "reverse"), default="forward",
                   help="CycleGAN only: reverse uses the target->source generator")
    t.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")

    d = sub.add_parser("demo-data", help="write the synthetic demo data set (CT/MR/PET patients, DICOM, slides)")
    _data_args(d)

    v = sub.add_parser("preview", help="render a preview PNG of a demo data set")
    v.add_argument("--data", required=True, type=Path, help="folder written by `medsynth demo-data`")
    v.add_argument("--out", required=True, type=Path, help="PNG file to write")
    v.add_argument("--patients", type=int, default=3, help="patients to show")

    m = sub.add_parser("demo", help="demo data, preview, CycleGAN CT->MR training and evaluation (what `make demo` runs)")
    _data_args(m)
    m.add_argument("--config", type=Path, default=REPO / "experiments" / "cyclegan_ct2mri_demo.yaml",
                   help="training config of the demo run")
    m.add_argument("--skip-training", action="store_true", help="only build the data and its preview")
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


def cmd_translate(args: argparse.Namespace) -> Path:
    """Translate one volume with a checkpoint (see :func:`gan.translate.translate_file`)."""
    from gan.translate import translate_file

    out = translate_file(args.ckpt, args.input, args.output, dicom_out=args.dicom_out, direction=args.direction,
                         device=args.device)
    print(f"translated {args.input} -> {out}" + (f" and DICOM series {args.dicom_out}" if args.dicom_out else ""))
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    """Demo data + preview + CycleGAN CT->MR demo training + held-out evaluation table."""
    t0 = time.perf_counter()
    data_dir = cmd_demo_data(args, out=args.out / "data")
    cmd_preview(data_dir, args.out / "preview.png")
    if args.skip_training:
        print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs under {args.out}/")
        return 0
    from gan.demo import run_training_demo

    report = run_training_demo(config=args.config, out=args.out, data_dir=data_dir)
    print(report.table)
    print(f"\nsample panel:   {report.panel}\nmetrics JSON:   {report.metrics_json}\ncheckpoint:     {report.checkpoint}"
          f"\nW&B (offline):  {report.wandb_dir}  (upload: wandb sync {report.wandb_dir}/offline-run-*)"
          f"\ndemo finished in {time.perf_counter() - t0:.0f} s; outputs under {args.out}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsynth`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in LIGHTNING_COMMANDS:
        run_lightning_cli(argv)
        return 0
    if argv and argv[0] == "evaluate":
        from gan import evaluate

        parser = evaluate.build_parser(argparse.ArgumentParser(prog="medsynth evaluate", description=evaluate.__doc__))
        evaluate.run(parser.parse_args(argv[1:]))
        return 0
    if argv and argv[0] == "generate":
        from gan import generate

        parser = generate.build_parser(argparse.ArgumentParser(prog="medsynth generate", description=generate.__doc__,
                                                               formatter_class=argparse.RawDescriptionHelpFormatter))
        return generate.run(parser.parse_args(argv[1:]))
    args = _parser().parse_args(argv)
    if args.command == "demo-data":
        cmd_demo_data(args)
    elif args.command == "preview":
        cmd_preview(args.data, args.out, args.patients)
    elif args.command == "translate":
        cmd_translate(args)
    elif args.command == "demo":
        return cmd_demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
