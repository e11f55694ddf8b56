"""The project's DDP strategy on CUDA: ``ddp_gan`` over NCCL against plain single-device training, per family.

A host with one GPU cannot run two NCCL ranks, so this checks what one GPU can: the strategy's process group, its
weight broadcast and its flattened gradient all-reduce run on CUDA tensors over NCCL (world 1) and train to the
weights of the same run without the strategy. The CPU tests (``tests/gan/models/test_ddp_*.py``) prove the
2-rank equivalence itself. Run by benchmarks/gpu_check.sh; prints one JSON line per family.

    python benchmarks/gpu_ddp_check.py [--families cyclegan pix2pix stylegan2] [--epochs 2] [--batches 4]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from gan.models.strategy import GANDDPStrategy  # noqa: E402
from tests.gan.models.ddp_train_script import build  # noqa: E402  (the DDP tests' tiny modules)


def write_data(root: Path) -> dict[str, str]:
    """Phantom patients (volumes) and slides, as the tests' fixtures write them."""
    import nibabel as nib

    from data.phantoms import make_patient
    from data.slides.phantom import make_phantom_slide

    vol, slides = root / "volumes", root / "slides"
    vol.mkdir()
    slides.mkdir()
    for i in range(6):
        p = make_patient(100 + i, shape=(64, 56, 24), patient_id=f"p{i}")
        (vol / p.patient_id).mkdir()
        for key, v in (("ct", p.ct), ("mr", p.mr), ("pet", p.pet), ("lesion_mask", p.lesion_mask)):
            nib.save(nib.Nifti1Image(v.array, v.affine), vol / p.patient_id / f"{key}.nii.gz")
    for i in range(3):
        make_phantom_slide(slides / f"s{i}.svs", width=2048, height=1536, seed=i)
    return {"cyclegan": str(vol), "pix2pix": str(vol), "stylegan2": str(slides)}


def train(family: str, data: str, strategy: object, args: argparse.Namespace) -> tuple[dict, float]:
    """Weights after ``args.epochs`` epochs on ``args.device``, and the wall time."""
    L.seed_everything(0)
    model, dm = build(family, data, batch=4, batch_gpu=None)
    trainer = L.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1, strategy=strategy,
                        precision="32-true", max_epochs=args.epochs, limit_train_batches=args.batches,
                        limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, deterministic=True, use_distributed_sampler=False,
                        default_root_dir=str(args.out))
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return {k: v.detach().double().cpu() for k, v in model.state_dict().items() if v.is_floating_point()}, \
        time.perf_counter() - t0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=["cyclegan", "pix2pix", "stylegan2"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda (NCCL); cpu (gloo) only to try this script on a host without a GPU")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Train each family with and without ``ddp_gan`` and print the largest weight difference.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_ddp_check: no CUDA device (--device cpu tries the script on the CPU)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = False
    with tempfile.TemporaryDirectory(prefix="gpu_ddp_") as tmp:
        args.out = Path(tmp)
        data = write_data(Path(tmp))
        worst = 0.0
        for family in args.families:
            ref, t_ref = train(family, data[family], "auto", args)
            backend = "nccl" if args.device == "cuda" else "gloo"
            got, t_ddp = train(family, data[family], GANDDPStrategy(process_group_backend=backend), args)
            diff = max((ref[k] - got[k]).abs().max().item() for k in ref)
            worst = max(worst, diff)
            device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
            print(json.dumps({"family": family, "max_abs_diff": diff, "s_plain": round(t_ref, 2),
                              "s_ddp_gan": round(t_ddp, 2), "device": device}), flush=True)
    print(f"gpu_ddp_check: largest weight difference {worst:.3g} ({'ok' if worst <= 1e-5 else 'ABOVE 1e-5'})")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
