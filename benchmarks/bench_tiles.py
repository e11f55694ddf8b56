"""Tile loading throughput: TileDataset through a DataLoader vs raw OpenSlide ``read_region`` on the same tiles.

Both are measured in the same run on the same phantom slides (written to a temporary folder). The
baseline is a single-process loop of ``read_region`` plus conversion to an RGB array; the candidate is
``TileDataset`` (read, convert to a [-1, 1] float tensor, resize when the scale needs it) batched by a
``DataLoader`` with ``--workers`` worker processes, worker start-up included. Target: ratio >= 0.8.
The items fetched in-process (``dataset[i]``) and a DataLoader moving constant tiles of the same shape
are timed too, to separate the dataset's own per-tile cost from the DataLoader's (float32 batches passed
between processes in shared memory). The uint8 rows move raw tiles (``TileDataset(uint8=True)``, 4x fewer
bytes) and normalise them after the loader (:func:`data.slides.uint8_to_unit`), what
``TileDataModule(uint8_transfer=True)`` does on the device.

    python benchmarks/bench_tiles.py [--slides 3] [--tiles 1500] [--workers 2] [--mpp 0.25]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from data.slides import TileDataset, make_phantom_slide, uint8_to_unit


def raw_read(dataset: TileDataset, indices: list[int]) -> float:
    """Seconds to read the tiles with plain ``read_region`` + RGB conversion, one process, handles kept open.

    Args:
        dataset: the dataset whose tile specs are read.
        indices: tiles to read.
    """
    handles: dict[str, openslide.OpenSlide] = {}
    start = time.perf_counter()
    for i in indices:
        t = dataset.tiles[i]
        h = handles.get(t.slide)
        if h is None:
            h = handles[t.slide] = openslide.OpenSlide(t.slide)
        np.asarray(h.read_region((t.x, t.y), t.level, (t.read_size, t.read_size)).convert("RGB"))
    elapsed = time.perf_counter() - start
    for h in handles.values():
        h.close()
    return elapsed


def item_read(dataset: TileDataset, indices: list[int]) -> float:
    """Seconds to fetch the items in this process (``dataset[i]``, no DataLoader): the per-tile overhead.

    Args:
        dataset: the dataset.
        indices: tiles to read.
    """
    start = time.perf_counter()
    for i in indices:
        dataset[i]
    return time.perf_counter() - start


class _Constant(Dataset):
    """Items shaped like TileDataset's, with no reading: measures the DataLoader's transport alone."""

    def __init__(self, n: int, tile_size: int, dtype: torch.dtype = torch.float32) -> None:
        self.n = n
        self.image = torch.zeros(3, tile_size, tile_size, dtype=dtype)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"image": self.image.clone(), "label": 0}


def transport_only(n: int, tile_size: int, *, batch_size: int, workers: int,
                   dtype: torch.dtype = torch.float32) -> float:
    """Seconds for a DataLoader to move ``n`` tiles from workers to this process, nothing read.

    Args:
        n: number of tiles.
        tile_size: tile side.
        batch_size: tiles per batch.
        workers: DataLoader worker processes.
        dtype: tile dtype (float32 as normalised in workers, uint8 as moved raw).
    """
    start = time.perf_counter()
    for _ in DataLoader(_Constant(n, tile_size, dtype), batch_size=batch_size, num_workers=workers):
        pass
    return time.perf_counter() - start


def loader_read(dataset: TileDataset, indices: list[int], *, batch_size: int, workers: int) -> float:
    """Seconds to iterate the tiles through a DataLoader (worker start-up included).

    Args:
        dataset: the dataset.
        indices: tiles to read.
        batch_size: tiles per batch.
        workers: DataLoader worker processes.
    """
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    n = 0
    for batch in loader:
        image = uint8_to_unit(batch["image"]) if batch["image"].dtype == torch.uint8 else batch["image"]
        n += image.shape[0]
    elapsed = time.perf_counter() - start
    assert n == len(indices)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print tiles/s for both paths and their ratio.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=3, help="phantom slides to write")
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--height", type=int, default=3072)
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--mpp", type=float, default=0.25)
    ap.add_argument("--tiles", type=int, default=1500, help="tiles read by each path (fewer if the slides hold fewer)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="passes over the tiles; each path keeps its best")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_tiles_") as tmp:
        t0 = time.perf_counter()
        paths = [make_phantom_slide(Path(tmp) / f"bench{i}.svs", width=args.width, height=args.height, seed=i).path
                 for i in range(args.slides)]
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = TileDataset(paths, tile_size=args.tile_size, mpp=args.mpp, min_tissue=0.25)
        t_index = time.perf_counter() - t0
        raw_ds = TileDataset(paths, tile_size=args.tile_size, mpp=args.mpp, min_tissue=0.25, uint8=True)
        reps = -(-args.tiles // len(ds))
        indices = (list(range(len(ds))) * reps)[: args.tiles]
        raw_read(ds, indices[: min(64, len(indices))])  # warm the OS file cache
        raw = min(raw_read(ds, indices) for _ in range(args.repeats))
        items = min(item_read(ds, indices) for _ in range(args.repeats))
        ours = min(loader_read(ds, indices, batch_size=args.batch_size, workers=args.workers)
                   for _ in range(args.repeats))
        ours_u8 = min(loader_read(raw_ds, indices, batch_size=args.batch_size, workers=args.workers)
                      for _ in range(args.repeats))
        moved = min(transport_only(len(indices), args.tile_size, batch_size=args.batch_size, workers=args.workers)
                    for _ in range(args.repeats))
        moved_u8 = min(transport_only(len(indices), args.tile_size, batch_size=args.batch_size, workers=args.workers,
                                      dtype=torch.uint8) for _ in range(args.repeats))

    n = len(indices)
    spec = ds.tiles[0]
    print(f"slides: {args.slides} x {args.width}x{args.height} phantoms written in {t_write:.2f} s; "
          f"indexed {len(ds)} tiles in {t_index:.2f} s")
    print(f"tiles: {n} x {args.tile_size}px at {args.mpp} um/px (level {spec.level}, read {spec.read_size}px, "
          f"resize {spec.resize_filter})")
    print(f"raw read_region + RGB (1 process):        {n / raw:9.1f} tiles/s")
    print(f"TileDataset items, in process (no loader): {n / items:8.1f} tiles/s")
    print(f"TileDataset + DataLoader ({args.workers} workers):    {n / ours:9.1f} tiles/s")
    print(f"  (DataLoader transport alone, no reading: {n / moved:8.1f} tiles/s: the ceiling of the line above)")
    print(f"TileDataset(uint8) + DataLoader + to [-1, 1]: {n / ours_u8:6.1f} tiles/s")
    print(f"  (uint8 transport alone, no reading:      {n / moved_u8:8.1f} tiles/s)")
    ratio = raw / ours
    print(f"ratio TileDataset / raw: {ratio:.2f} (target >= 0.8){'' if ratio >= 0.8 else '  BELOW TARGET'}")
    print(f"ratio TileDataset(uint8) / raw: {raw / ours_u8:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
