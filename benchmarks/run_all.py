"""Run every benchmark in this folder (what `make bench` does): one table of ratios against baselines measured in
the same run, also written as JSON (atomically) with the date, versions, device and CPU count.

Each ``bench_*.py`` exposes ``rows(quick)`` (see ``harness.py``); ``--quick`` uses small sizes and one repeat so
the whole run takes a few minutes on 2 CPU cores (`make bench` passes it by default: ``make bench BENCH_ARGS=``
for the full sizes). A benchmark that raises becomes a row saying so, and the exit status is 1.

    python benchmarks/run_all.py [--quick] [--only tiles ddp ...] [--json benchmarks/results/bench.json]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import sys
import time
import traceback
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import harness

from data.files import atomic_write_json

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "bench.json"


def bench_files(only: list[str] | None = None) -> list[Path]:
    """The ``bench_*.py`` files beside this one, sorted, optionally only those named (with or without ``bench_``).

    Args:
        only: names to keep, e.g. ``["tiles", "bench_ddp"]``.
    """
    files = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = {n.removeprefix("bench_").removesuffix(".py") for n in only}
        unknown = wanted - {p.stem.removeprefix("bench_") for p in files}
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; have "
                             f"{[p.stem.removeprefix('bench_') for p in files]}")
        files = [p for p in files if p.stem.removeprefix("bench_") in wanted]
    return files


def load(path: Path) -> ModuleType:
    """Import a benchmark file as a module (registered in ``sys.modules`` under its stem).

    Args:
        path: the ``bench_*.py`` file.
    """
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod


def collect(path: Path, *, quick: bool, log: TextIO | None = None) -> tuple[list[dict[str, Any]], float, bool]:
    """Rows of one benchmark file, its wall seconds and whether it failed (then one row says why).

    Every row gets the machine load measured around the whole benchmark in ``extra["machine"]``.

    Args:
        path: the ``bench_*.py`` file.
        quick: small sizes.
        log: where the benchmark's own output (progress, free-form reports, tracebacks) goes; None: the console.
    """
    name = path.stem.removeprefix("bench_")
    t0 = time.perf_counter()
    load_meter = harness.MachineLoad()
    with contextlib.ExitStack() as stack:
        if log is not None:
            stack.enter_context(contextlib.redirect_stdout(log))
            stack.enter_context(contextlib.redirect_stderr(log))
        try:
            rows = list(load(path).rows(quick=quick))
            failed = False
        except Exception as e:  # keep going: one broken benchmark should not hide the others
            traceback.print_exc()
            rows = [harness.skipped_row(name, "(all)", f"FAILED: {type(e).__name__}: {e}")]
            failed = True
    load_meter.stop()
    for r in rows:
        r.setdefault("benchmark", name)
        r.setdefault("extra", {}).setdefault("machine", load_meter.as_dict())
    return rows, time.perf_counter() - t0, failed


def write_json(path: Path, doc: dict[str, Any]) -> Path:
    """Write the run's JSON atomically (temporary sibling, then rename).

    Args:
        path: destination.
        doc: the document (:func:`harness.report`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, doc, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print one table and write the JSON; 1 when a benchmark failed.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes and repeats (a few minutes on 2 CPU cores)")
    ap.add_argument("--only", nargs="+", default=None, help="benchmarks to run (tiles, ddp, training, ...)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the results ({DEFAULT_JSON})")
    ap.add_argument("--no-json", action="store_true", help="print the table only")
    ap.add_argument("--verbose", action="store_true",
                    help="show each benchmark's own output (default: written to the .log beside the JSON)")
    args = ap.parse_args(argv)
    files = bench_files(args.only)
    info = harness.machine_info()
    rows: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    failed: list[str] = []
    log_path = args.json.with_suffix(".log")
    with contextlib.ExitStack() as stack:
        log = None
        if not args.verbose:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(log_path, "w"))
            print(f"each benchmark's own output: {log_path}")
        for logger in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(logger).setLevel(logging.WARNING)
        for path in files:
            print(f"{path.name}{' (quick)' if args.quick else ''} ...", end=" ", flush=True)
            if log is not None:
                print(f"=== {path.name} ===", file=log, flush=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # Lightning's advice about this setup, per benchmark
                got, secs, bad = collect(path, quick=args.quick, log=log)
            rows.extend(got)
            seconds[path.stem] = round(secs, 1)
            if bad:
                failed.append(path.name)
            print(f"{'FAILED' if bad else 'done'} in {secs:.1f} s", flush=True)
    print()
    print(harness.format_table(rows))
    print(f"\n{info['date']}, torch {info['torch']}, device {info['device']}, {info['cpu_count']} CPUs; "
          f"total {sum(seconds.values()):.0f} s")
    if not args.no_json:
        out = write_json(args.json, harness.report(rows, quick=args.quick, seconds=seconds, failed=failed, info=info))
        print(f"wrote {out}")
    if failed:
        print(f"failed: {', '.join(failed)}{'' if args.verbose else f' (tracebacks in {log_path})'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
