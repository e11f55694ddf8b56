"""FID feature extraction, images/s: medsynth's FIDInceptionV3 vs pytorch-fid's own loop, same run, same weights.

Both sides load ONE weights file: the real ``pt_inception-2015-12-05-6726825d.pth`` when ``--weights`` names it,
otherwise a seeded random FID Inception saved to a temporary file (no download is possible here; speed does
not depend on the values). The same images (seeded noise with some structure, ``--size`` pixels, uint8) feed:

* ``pytorch-fid get_activations``: its own loop over PNG files (PIL decode, ToTensor, DataLoader, model) - the
  way pytorch-fid is used, since it only reads images from disk;
* ``pytorch-fid model, in memory``: its ``InceptionV3`` on the same uint8 batches already in memory (model-only
  baseline: resize + network);
* ``medsynth extract_features``: our protocol pre-processing + extractor on the in-memory batches, the way the
  FID metric sees generator output.

The script prints images/s per row, the ratio of ours to each baseline (target >= 1.0), and the largest
feature difference between ours and pytorch-fid's (they should agree to ~1e-5).

    python benchmarks/bench_fid_features.py [--images 64] [--size 128] [--batch 32] [--repeats 1] [--device auto]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import harness
import numpy as np
import torch

from gan.metrics.features import FIDInceptionV3, FIDProtocol, extract_features

QUICK = ["--images", "32", "--batch", "16"]  # run_all.py --quick


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    """Seeded uint8 RGB images: smooth colour gradients plus noise, (n, 3, size, size).

    Args:
        n: number of images.
        size: edge in pixels.
        seed: RNG seed.
    """
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = (ramp[None, None, :, None] * torch.rand(n, 3, 1, 1, generator=gen)
            + ramp[None, None, None, :] * torch.rand(n, 3, 1, 1, generator=gen))  # fmt: skip
    noisy = base * 0.5 + 0.5 * torch.rand(n, 3, size, size, generator=gen)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def _timed(
    fn: Callable[[int], np.ndarray], n: int, warm: int, device: torch.device, repeats: int
) -> tuple[float, np.ndarray]:
    """Best wall time of ``repeats`` runs of ``fn(n)`` after a warm-up ``fn(warm)``, and the last output.

    Args:
        fn: the workload on the first k images; returns their features.
        n: number of images timed.
        warm: number of images of the warm-up run.
        device: synchronised before and after each run when CUDA.
        repeats: timed runs.
    """
    out = fn(warm)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn(n)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=128, help="edge of the generated images (resized to 299)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--weights", type=Path, default=None, help="pt_inception-2015-12-05-6726825d.pth, if present")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row (best is kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


OURS = "medsynth extract_features, in memory"
FILES = "pytorch-fid get_activations (PNG files)"
MEMORY = "pytorch-fid model, in memory"


def measure(args: argparse.Namespace) -> tuple[dict[str, float], float, str]:
    """(images/s per row, max |features ours - pytorch-fid|, device description).

    Args:
        args: the parsed command line.
    """
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return _measure(args)
    finally:
        torch.set_num_threads(threads)  # run_all.py runs the other benchmarks in this process


def _measure(args: argparse.Namespace) -> tuple[dict[str, float], float, str]:
    import pytorch_fid.fid_score as fid_score
    import pytorch_fid.inception as fid_inception
    from PIL import Image

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)  # fmt: skip
    images = _images(args.images, args.size, args.seed)
    batches = [images[i : i + args.batch].to(device) for i in range(0, args.images, args.batch)]

    with tempfile.TemporaryDirectory() as tmp:
        if args.weights is not None:
            weights = args.weights
            ours = FIDInceptionV3(weights)
        else:
            weights = Path(tmp) / "random_fid_inception.pth"
            torch.save(FIDInceptionV3(pretrained=False, seed=args.seed).state_dict(), weights)
            ours = FIDInceptionV3(weights, sha256_prefix=None)
        ours = ours.to(device)

        # pytorch-fid, unmodified, but reading the same local file instead of downloading
        def local_weights(*args: object, **kwargs: object) -> dict:
            return torch.load(weights, map_location="cpu", weights_only=True)

        saved = fid_inception.load_state_dict_from_url, fid_score.tqdm
        fid_inception.load_state_dict_from_url = local_weights
        fid_score.tqdm = lambda x: x  # keep the output to the table
        try:
            theirs = fid_inception.InceptionV3([3]).to(device).eval()
        finally:
            fid_inception.load_state_dict_from_url = saved[0]

        files = []
        for i, img in enumerate(images):
            files.append(Path(tmp) / f"{i:05d}.png")
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(files[-1])

        def pytorch_fid_files(k: int) -> np.ndarray:
            return fid_score.get_activations(
                files[:k], theirs, batch_size=args.batch, dims=2048, device=device, num_workers=0
            )

        def pytorch_fid_memory(k: int) -> np.ndarray:
            out = []
            with torch.no_grad():
                for b in batches[: -(-k // args.batch)]:
                    out.append(theirs(b.float() / 255)[0].flatten(1).cpu())
            return torch.cat(out).numpy()

        def medsynth_memory(k: int) -> np.ndarray:
            todo = batches[: -(-k // args.batch)]
            return torch.cat([extract_features(b, ours, FIDProtocol.PYTORCH_FID).cpu() for b in todo]).numpy()

        rates = {}
        feats = {}
        try:
            for name, fn in ((FILES, pytorch_fid_files), (MEMORY, pytorch_fid_memory), (OURS, medsynth_memory)):
                seconds, feats[name] = _timed(fn, args.images, min(args.batch, args.images), device, args.repeats)
                rates[name] = args.images / seconds
        finally:
            fid_score.tqdm = saved[1]

    diff = float(np.abs(feats[OURS] - feats[FILES]).max())
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    return rates, diff, f"{device} ({hardware})"


def rows(quick: bool = False, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Result rows for ``run_all.py``: ours against each pytorch-fid baseline.

    Args:
        quick: fewer images.
        argv: further command-line arguments.
    """
    args = _parser().parse_args((QUICK if quick else []) + list(argv or []))
    rates, diff, device = measure(args)
    detail = (f"{args.images} images {args.size}px -> 299, batch {args.batch}, {device}, weights "
              f"{'given file' if args.weights else 'random (seeded)'}; max |features ours - pytorch-fid| {diff:.1e}")
    return [harness.row("fid_features", "medsynth extract_features, in memory", baseline_name=base,
                        baseline=rates[base], result=rates[OURS], unit="img/s", target=1.0, detail=detail,
                        max_feature_diff=diff)
            for base in (FILES, MEMORY)]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print a table and return images/s per row.

    Args:
        argv: command-line arguments (``--images``, ``--size``, ``--batch``, ``--device``, ``--weights``,
            ``--repeats``, ``--threads``, ``--seed``); defaults to ``sys.argv[1:]``.
    """
    args = _parser().parse_args(argv)
    rates, diff, device = measure(args)
    print(f"device {device}, {args.images} images {args.size}x{args.size} -> 299, batch {args.batch}, "
          f"weights {'given file' if args.weights else 'random (seeded)'}")
    print(f"{'row':44s} {'images/s':>10s} {'ours / row':>11s}")
    for name, rate in rates.items():
        print(f"{name:44s} {rate:10.2f} {rates[OURS] / rate:11.2f}")
    print(f"max |features ours - pytorch-fid| = {diff:.2e}")
    return rates


if __name__ == "__main__":
    main()
