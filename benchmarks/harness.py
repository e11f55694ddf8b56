"""The benchmarks' shared vocabulary: result rows, peak memory, machine load, the table and the JSON file.

Every ``bench_*.py`` beside this file exposes ``rows(quick: bool = False) -> list[dict]``: one dict per comparison,
made by :func:`row`, each a ratio of what this project does against a baseline measured in the same run (so numbers
from different machines stay comparable). ``run_all.py`` (``make bench``) collects them, prints
:func:`format_table` and writes :func:`report` as JSON. Each bench's own ``main()`` still prints its free-form
report when the file is run as a script.

Row keys (:data:`ROW_KEYS`): ``benchmark`` (the file's name without ``bench_``), ``case`` (what is measured),
``baseline_name``, ``baseline`` and ``result`` (rates in ``unit``, higher is better, None when not measured),
``ratio`` (``result / baseline``: above 1 this project is faster), ``unit``, ``target`` (the ratio asked for, or
None), ``detail`` (free text: settings, peak memory, machine load, why a row was skipped) and ``extra`` (numbers
beside the ratio, such as peak memory in MiB).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import gc
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

__all__ = ["ROW_KEYS", "MachineLoad", "PeakMemory", "format_table", "machine_info", "report", "row", "skipped_row"]

ROW_KEYS = ("benchmark", "case", "baseline_name", "baseline", "result", "ratio", "unit", "target", "detail", "extra")
_MIB = 2**20


def row(benchmark: str, case: str, *, baseline_name: str, baseline: float | None, result: float | None, unit: str,
        target: float | None = None, detail: str = "", ratio: float | None = None, **extra: Any) -> dict[str, Any]:
    """One result row: ``result`` against ``baseline`` (both rates in ``unit``, higher is better).

    Args:
        benchmark: short name of the benchmark (``tiles``, ``training``, ...).
        case: what this row measures.
        baseline_name: what the baseline is.
        baseline: the baseline's rate, measured in the same run.
        result: this project's rate.
        unit: unit of both rates (``tiles/s``, ``img/s``, ...).
        target: the ratio the project aims for, if any.
        detail: settings, memory, load or any note.
        ratio: the ratio when it is not ``result / baseline`` (e.g. a median of per-run ratios).
        extra: further numbers kept in the JSON (peak memory, CPU-time ratio, ...).
    """
    if ratio is None and baseline and result is not None and math.isfinite(baseline) and baseline > 0:
        ratio = result / baseline
    return {"benchmark": benchmark, "case": case, "baseline_name": baseline_name, "baseline": _num(baseline),
            "result": _num(result), "ratio": _num(ratio), "unit": unit, "target": _num(target), "detail": detail,
            "extra": {k: _num(v) if isinstance(v, float) else v for k, v in extra.items()}}


def skipped_row(benchmark: str, case: str, why: str, *, baseline_name: str = "", baseline: float | None = None,
                unit: str = "") -> dict[str, Any]:
    """A row that could not be measured, saying why (shown in the table, kept in the JSON).

    Args:
        benchmark: short name of the benchmark.
        case: what the row would have measured.
        why: the reason, e.g. ``"skipped: strategy 'ddp_gan' is not registered"``.
        baseline_name: the baseline's name, when it was measured.
        baseline: the baseline's rate, when it was measured.
        unit: unit of the rates.
    """
    return row(benchmark, case, baseline_name=baseline_name, baseline=baseline, result=None, unit=unit, detail=why)


def _num(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class PeakMemory:
    """Peak memory of a stretch of code: CUDA max allocated on a GPU, else the process's peak RSS.

    On Linux the RSS peak (``VmHWM``) is reset at :meth:`start` through ``/proc/self/clear_refs``, so the number
    belongs to the stretch measured and not to the whole process (``run_all.py`` runs every benchmark in one
    process); elsewhere it is ``ru_maxrss``, the process's lifetime peak, and :attr:`kind` says so.

    Args:
        device: the device trained on.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.kind = ""
        self.mib: float = float("nan")
        self.start_mib: float = float("nan")

    def start(self) -> PeakMemory:
        """Reset the peak (where the platform allows) and note the memory in use now (:attr:`start_mib`)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mib = torch.cuda.memory_allocated(self.device) / _MIB
            self.kind = "CUDA max allocated"
            return self
        gc.collect()
        _release_free_heap()  # so that RSS is memory in use, and the peak's rise is what the run allocates
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.kind = "peak RSS"
            self.start_mib = _status_kib("VmRSS") / 1024
        except OSError:
            self.kind = "process lifetime max RSS"
        return self

    @property
    def added_mib(self) -> float:
        """How far the peak rose above the memory in use at :meth:`start` (NaN when unknown)."""
        return self.mib - self.start_mib

    def stop(self) -> float:
        """The peak in MiB since :meth:`start`."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / _MIB
        elif self.kind == "peak RSS":
            self.mib = _status_kib("VmHWM") / 1024
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return self.mib

    def __str__(self) -> str:
        added = f", +{self.added_mib:.0f} over the start" if math.isfinite(self.added_mib) else ""
        return f"{self.mib:.0f} MiB ({self.kind}{added})"


def _release_free_heap() -> None:
    """Return the C heap's free memory to the system (glibc ``malloc_trim``), where there is such a call."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> float:
    """A ``/proc/self/status`` field in KiB (``VmHWM``: peak RSS, ``VmRSS``: RSS now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _cpu_busy_s() -> float | None:
    """Seconds all CPUs spent busy since boot (``/proc/stat``), None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # DataLoader workers and subprocesses, once reaped
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class MachineLoad:
    """How busy the machine was with OTHER work while a benchmark ran: ``os.getloadavg()`` and the CPU time of
    other processes (all CPUs' busy time from ``/proc/stat`` minus this process's and its reaped children's).

    The load average counts the benchmark itself; the other processes' share of the cores is the number that
    says whether a ratio was measured on a quiet machine (``quiet``: others used under 0.2 of a core).
    """

    QUIET_CORES = 0.2

    def __init__(self) -> None:
        self.loadavg_start: tuple[float, float, float] = os.getloadavg()
        self.loadavg_end = self.loadavg_start
        self._t0, self._busy0, self._own0 = time.perf_counter(), _cpu_busy_s(), _own_cpu_s()
        self.others_cores: float | None = None

    def stop(self) -> MachineLoad:
        """Read the load at the end of the stretch measured."""
        self.loadavg_end = os.getloadavg()
        busy, wall = _cpu_busy_s(), time.perf_counter() - self._t0
        if busy is not None and self._busy0 is not None and wall > 0:
            self.others_cores = max(0.0, (busy - self._busy0) - (_own_cpu_s() - self._own0)) / wall
        return self

    @property
    def quiet(self) -> bool | None:
        """Whether other processes used less than :attr:`QUIET_CORES` of a core (None when unknown)."""
        return None if self.others_cores is None else self.others_cores < self.QUIET_CORES

    def as_dict(self) -> dict[str, Any]:
        """The numbers, for a row's ``extra`` or the JSON."""
        return {"loadavg_start": list(self.loadavg_start), "loadavg_end": list(self.loadavg_end),
                "others_cores": _num(self.others_cores), "quiet": self.quiet}

    def __str__(self) -> str:
        others = "unknown" if self.others_cores is None else f"{self.others_cores:.2f}"
        state = {True: "quiet", False: "LOADED", None: "load unknown"}[self.quiet]
        return (f"machine {state}: other processes used {others} of {os.cpu_count()} cores; loadavg "
                f"{self.loadavg_start[0]:.2f} -> {self.loadavg_end[0]:.2f}")


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0 or abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if abs(v) >= 1 else f"{v:.3f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """One aligned table (benchmark | case | baseline | ours | ratio) and the rows' details as numbered notes.

    Args:
        rows: result rows (:func:`row`).
    """
    head = ("benchmark", "case", "baseline", "ours", "ratio", "target")
    body, notes = [], []
    for r in rows:
        unit = f" {r['unit']}" if r.get("unit") else ""
        base = f"{r.get('baseline_name') or ''}: {_fmt(r.get('baseline'))}{unit}".lstrip(": ")
        ours = "-" if r.get("result") is None else f"{_fmt(r['result'])}{unit}"
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        target = "" if r.get("target") is None else f">= {r['target']:g}"
        if r.get("ratio") is not None and r.get("target") is not None and r["ratio"] < r["target"]:
            target += " BELOW"
        case = r.get("case", "")
        if r.get("detail"):
            notes.append(str(r["detail"]))
            case = f"{case} [{len(notes)}]"
        body.append((str(r.get("benchmark", "")), case, base, ours, ratio, target))
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    right = {3, 4}

    def line(cells: Iterable[str]) -> str:
        return " | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "-+-".join("-" * w for w in widths), *(line(b) for b in body)]
    if notes:
        out.append("")
        out.extend(f"[{i}] {n}" for i, n in enumerate(notes, 1))
    return "\n".join(x.rstrip() for x in out)


def machine_info() -> dict[str, Any]:
    """Date, versions, device and CPUs of this run."""
    cuda = torch.cuda.is_available()
    try:
        import lightning

        lightning_version = lightning.__version__
    except ImportError:  # pragma: no cover - a dependency
        lightning_version = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": lightning_version,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg": list(os.getloadavg()),
    }


def report(rows: Sequence[dict[str, Any]], *, quick: bool, seconds: dict[str, float] | None = None,
           failed: Sequence[str] = (), info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document of a run: machine info, settings, per-benchmark seconds, failures and rows.

    Args:
        rows: result rows.
        quick: whether ``--quick`` sizes were used.
        seconds: wall seconds per benchmark.
        failed: benchmarks that raised.
        info: machine info (default: :func:`machine_info` now).
    """
    return {**(info if info is not None else machine_info()), "quick": bool(quick), "seconds": dict(seconds or {}),
            "failed": list(failed), "rows": [dict(r) for r in rows]}
