"""Run every benchmark in this folder (what `make bench` does). Each prints ratios against a baseline
measured in the same run, so numbers from different machines stay comparable."""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Import each ``bench_*.py`` beside this file and call its ``main()``."""
    failed = []
    for path in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {path.name} ===", flush=True)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        t0 = time.perf_counter()
        try:
            spec.loader.exec_module(mod)
            mod.main()
        except Exception as e:  # keep going: one broken benchmark should not hide the others
            failed.append(path.name)
            print(f"{path.name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        print(f"({path.name}: {time.perf_counter() - t0:.1f} s)")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
