"""Random 2D slice / 3D patch sampling: memory-mapped VolumeCache vs decoding the ``.nii.gz`` per sample.

Both are measured in the same run on the same CT-like volume (default 256 x 256 x 120, float32). The
baseline is what a naive dataset does: ``load_volume(path)`` (nibabel gzip decode + checks) for every
sample, then index. The cache rows open the entry with ``VolumeCache.get`` (content key from the stat fast
path, JSON, ``np.load(mmap_mode="r")``) and copy the sample out of the memmap, either once per sample
("get per sample") or once for the run ("memmap held", what a DataLoader worker does).

    python benchmarks/bench_volume_cache.py [--shape 256 256 120] [--samples 200] [--baseline-samples 8]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import harness
import numpy as np

from data.volumes import VolumeCache, load_volume

QUICK = ["--samples", "100", "--baseline-samples", "4"]  # run_all.py --quick


def ct_like_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """An integer-valued HU phantom (air, soft-tissue ellipsoid, bone ring, noise) so gzip sees realistic data.

    Args:
        shape: (I, J, K) voxels.
        seed: noise seed.
    """
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij", sparse=True)
    r = np.sqrt((i / 0.85) ** 2 + (j / 0.65) ** 2 + (k / 1.2) ** 2)
    vol = np.full(shape, -1000.0, np.float32)
    vol[r < 1.0] = 40.0
    vol[(r > 0.8) & (r < 0.88)] = 900.0
    vol += rng.normal(0.0, 15.0, size=shape).astype(np.float32)
    return np.round(vol)


def _rate(fn: Callable[[int], np.ndarray], n: int) -> float:
    start = time.perf_counter()
    for s in range(n):
        fn(s)
    return n / (time.perf_counter() - start)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 120))
    parser.add_argument("--samples", type=int, default=200, help="samples per cached row")
    parser.add_argument("--baseline-samples", type=int, default=8, help="samples for the decode-per-sample baseline")
    parser.add_argument("--patch", type=int, default=64, help="edge of the cubic 3D patch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the volume and cache")
    return parser


def measure(args: argparse.Namespace) -> tuple[list[tuple[str, str, int, float]], float, float]:
    """((mode, reader, samples, samples/s) per row, .nii.gz size in MB, cache build seconds).

    Args:
        args: the parsed command line.
    """
    import nibabel as nib

    shape = tuple(args.shape)
    p = min(args.patch, *shape)
    rng = np.random.default_rng(args.seed)
    slices = rng.integers(0, shape[2], size=max(args.samples, args.baseline_samples))
    corners = np.stack([rng.integers(0, n - p + 1, size=len(slices)) for n in shape], axis=1)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "ct.nii.gz"
        affine = np.diag([0.8, 0.8, 2.5, 1.0])
        nib.save(nib.Nifti1Image(ct_like_volume(shape, args.seed), affine), path)
        size_mb = path.stat().st_size / 1e6
        # The file is not modified during the run, so index it at once (racy window 0).
        cache = VolumeCache(Path(tmp) / "cache", racy_window_s=0.0)
        t0 = time.perf_counter()
        cache.get(path)
        build_s = time.perf_counter() - t0

        def slice_of(array: np.ndarray, s: int) -> np.ndarray:
            return np.array(array[:, :, slices[s]])

        def patch_of(array: np.ndarray, s: int) -> np.ndarray:
            i, j, k = corners[s]
            return np.array(array[i : i + p, j : j + p, k : k + p])

        held = cache.get(path).array
        rows: list[tuple[str, str, int, float]] = []
        for mode, take in (("2d slice", slice_of), (f"3d patch {p}^3", patch_of)):
            base = _rate(lambda s, take=take: take(load_volume(path).array, s), args.baseline_samples)
            rows.append((mode, "nii.gz decode per sample", args.baseline_samples, base))
            cached = _rate(lambda s, take=take: take(cache.get(path).array, s), args.samples)
            rows.append((mode, "cache get per sample", args.samples, cached))
            held_rate = _rate(lambda s, take=take: take(held, s), args.samples)
            rows.append((mode, "cache memmap held", args.samples, held_rate))
    return rows, size_mb, build_s


def rows(quick: bool = False, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Result rows for ``run_all.py``: each cached reader against decoding the ``.nii.gz`` per sample.

    Args:
        quick: fewer samples.
        argv: further command-line arguments.
    """
    args = _parser().parse_args((QUICK if quick else []) + list(argv or []))
    measured, size_mb, build_s = measure(args)
    shape = "x".join(str(n) for n in args.shape)
    base = {m: r for m, rd, _, r in measured if rd.startswith("nii.gz")}
    return [harness.row("volume_cache", f"{mode}, {reader}", baseline_name="nii.gz decode per sample",
                        baseline=base[mode], result=rate, unit="samples/s",
                        target=100.0 if reader == "cache get per sample" else None,
                        detail=f"{shape} float32, .nii.gz {size_mb:.1f} MB, cache build {build_s:.2f} s; {n} samples "
                               f"(baseline {args.baseline_samples})")
            for mode, reader, n, rate in measured if not reader.startswith("nii.gz")]


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print a table and return images/s per row.

    Args:
        argv: command-line arguments (``--shape``, ``--samples``, ``--baseline-samples``, ``--patch``,
            ``--seed``, ``--workdir``); defaults to ``sys.argv[1:]``.
    """
    args = _parser().parse_args(argv)
    measured, size_mb, build_s = measure(args)
    shape = tuple(args.shape)
    print(f"volume {shape[0]}x{shape[1]}x{shape[2]} float32, .nii.gz {size_mb:.1f} MB, cache build {build_s:.2f} s")
    print(f"{'mode':<16} {'reader':<26} {'samples':>7} {'images/s':>12} {'ratio':>9}")
    results: dict[str, float] = {}
    baseline = 1.0
    for mode, reader, n, rate in measured:
        if reader.startswith("nii.gz"):
            baseline = rate
        print(f"{mode:<16} {reader:<26} {n:>7d} {rate:>12.1f} {rate / baseline:>8.0f}x")
        results[f"{mode} | {reader}"] = rate
    ratio = min(r for (m, rd, _, r) in measured if rd == "cache get per sample") / max(
        r for (m, rd, _, r) in measured if rd.startswith("nii.gz")
    )
    print(f"worst cache/decode ratio {ratio:.0f}x (target >= 100x)")
    results["worst_ratio"] = ratio
    return results


if __name__ == "__main__":
    main()
