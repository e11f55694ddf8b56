"""Report output of the commands: JSON, markdown, plots and W&B, each file written atomically.

A report is a plain dict (numbers, protocol records, inputs, counts, versions). :func:`write_report` writes it as
``report.json`` (through :func:`data.files.to_jsonable`: NaN/Inf become ``null``) and ``report.md``
(:func:`report_markdown`), plus ``paired_metrics.png`` for paired-volume reports (:func:`paired_plot`);
:func:`log_wandb` logs its scalars (and the per-patient table) to an active W&B run. A report whose features come
from randomly initialised weights says so in every file (:func:`comparability_note`).
"""
from __future__ import annotations

import datetime as _dt
import io
import math
import platform
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from data.files import atomic_write_bytes, atomic_write_json, atomic_write_text, to_jsonable
from data.provenance import medsynth_version

__all__ = [
    "comparability_note",
    "fmt",
    "log_wandb",
    "paired_plot",
    "report_header",
    "report_markdown",
    "software",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PAIRED_PLOT = "paired_metrics.png"


def software() -> dict[str, str]:
    """Versions that produced a report: medsynth, torch, numpy, python."""
    import torch

    return {"medsynth": medsynth_version(), "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def report_header() -> dict[str, Any]:
    """The fields every report starts with: ``created`` (UTC, ISO 8601) and ``software``."""
    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "software": software()}


def comparability_note(record: Mapping[str, Any] | None) -> str | None:
    """The warning for a feature protocol record whose weights are random (``"comparable": false``), else None.

    Args:
        record: a protocol record of ``gan.metrics.features.protocol_record`` (or None).
    """
    if not record or record.get("comparable", True):
        return None
    return (f"NOT COMPARABLE: features from a randomly initialised {record.get('extractor', 'extractor')} "
            f"({record.get('weights', 'random')}, --weights random). A smoke run: these numbers compare with "
            "nothing, not even another run with other weights.")


def fmt(x: Any) -> str:
    """A number for a table: 6 significant digits, scientific below 1e-3, ``n/a`` for None/NaN/Inf.

    Args:
        x: a number (or anything printable).
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.6g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.4e}"
    return str(x)


def _inputs_markdown(inputs: Mapping[str, Any]) -> list[str]:
    lines = []
    for k, v in inputs.items():
        if v not in (None, [], ""):
            lines.append(f"- {k}: " + (", ".join(f"`{x}`" for x in v) if isinstance(v, list) else f"`{v}`"))
    return lines


def _paired_markdown(report: Mapping[str, Any]) -> list[str]:
    proto = report["volume_protocol"]
    window = proto["window"] if proto["window"] is not None else proto["window_rule"]
    lines = [f"Protocol `{proto['name']}`, modality {proto['modality']}, window {window}, {proto['mask']}, "
             f"{report['counts']['patients']} patients."]
    if proto.get("baseline"):
        lines.append(f"Baseline: {proto['baseline']}.")
    lines.append("")
    summ = report["summary"]
    base = any(k.startswith("baseline_") for k in summ)
    lines += ["| metric | mean ± std (synthetic) |" + (" mean ± std (baseline) |" if base else "") + " patients |",
              "|---|---|" + ("---|" if base else "") + "---|"]
    for k, v in summ.items():
        if k.startswith("baseline_"):
            continue
        cell = f"| {k} | {fmt(v['mean'])} ± {fmt(v['std'])} |"
        if base:
            b = summ[f"baseline_{k}"]
            cell += f" {fmt(b['mean'])} ± {fmt(b['std'])} |"
        lines.append(f"{cell} {v['n']} |")
    cols = report["metric_columns"]
    per_patient_window = proto["window"] is None
    head = ["patient"] + (["window"] if per_patient_window else []) + cols
    lines += ["", "## Per patient", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in report["patients"]:
        window_cell = [f"[{fmt(row['window'][0])}, {fmt(row['window'][1])}]"] if per_patient_window else []
        lines.append("| " + " | ".join([str(row["patient"])] + window_cell + [fmt(row[c]) for c in cols]) + " |")
    return lines


def _distribution_markdown(report: Mapping[str, Any]) -> list[str]:
    rec = report["feature_protocol"]
    lines = [f"Features: `{rec['extractor']}` (weights `{str(rec['weights_sha256'])[:16]}`), protocol "
             f"`{rec['protocol']}`; counts {report['counts']}.", ""]
    lines += ["| metric | value |", "|---|---|"]
    if "fid" in report:
        lines.append(f"| FID | {fmt(report['fid']['value'])} |")
    if "kid" in report:
        lines.append(f"| KID | {fmt(report['kid']['mean'])} ± {fmt(report['kid']['std'])} |")
    if "memorization" in report:
        m = report["memorization"]
        ct = m["data_copying_test"]
        lines.append(f"| memorization audit | {'passed' if m['passed'] else 'FAILED'} |")
        rate = fmt(m["heldout_flag_rate"])
        lines.append(f"| near-copy fraction | {fmt(m['near_copy_fraction'])} (held-out {rate}) |")
        lines.append(f"| data-copying C_T | {fmt(ct.get('c_t'))} ({ct.get('verdict')}, {m['cells']['used']} cells) |")
        lines += [""] + [f"- {r}" for r in m["reasons"]]
    return lines


def report_markdown(report: Mapping[str, Any], *, title: str = "medsynth evaluate") -> str:
    """A report as markdown: inputs, then the paired-volume or distribution tables.

    Args:
        report: a paired (``mode == "paired"``) or distribution (``mode == "distribution"``) report.
        title: the heading.
    """
    lines = [f"# {title} ({report['created']})", ""]
    note = comparability_note(report.get("feature_protocol"))
    if note:
        lines += [f"**{note}**", ""]
    lines += _inputs_markdown(report["inputs"]) + [""]
    lines += _paired_markdown(report) if report["mode"] == "paired" else _distribution_markdown(report)
    lines += ["", f"medsynth {report['software']['medsynth']}, torch {report['software']['torch']}", ""]
    return "\n".join(lines)


def paired_plot(report: Mapping[str, Any], path: str | Path) -> Path:
    """Per-patient bar charts of each paired metric (baseline beside the model), with the patient mean as a line.

    Args:
        report: a paired report.
        path: the PNG to write.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = [c for c in report["metric_columns"] if not c.startswith("baseline_")]
    patients = [r["patient"] for r in report["patients"]]
    fig = Figure(figsize=(max(4.0, 0.35 * len(patients) + 2.0), 2.6 * len(cols)), dpi=100)
    FigureCanvasAgg(fig)
    x = np.arange(len(patients))
    has_base = f"baseline_{cols[0]}" in report["summary"]
    width = 0.4 if has_base else 0.8
    for j, c in enumerate(cols, start=1):
        ax = fig.add_subplot(len(cols), 1, j)
        ax.bar(x - (width / 2 if has_base else 0), [r[c] for r in report["patients"]], width, label="synthetic")
        if has_base:
            ax.bar(x + width / 2, [r[f"baseline_{c}"] for r in report["patients"]], width, label="baseline")
        ax.axhline(report["summary"][c]["mean"], color="k", linestyle="--", linewidth=1,
                   label=f"mean {report['summary'][c]['mean']:.4g}")
        ax.set_ylabel(c)
        ax.set_xticks(x)
        ax.set_xticklabels(patients if j == len(cols) else [], rotation=90, fontsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def write_report(folder: str | Path, report: Mapping[str, Any], *, title: str = "medsynth evaluate") -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` (and for paired reports ``paired_metrics.png``) into ``folder``.

    Args:
        folder: the report folder (created).
        report: the report; a ``files`` entry naming the written files is added.
        title: the markdown heading.

    Returns:
        The report as written to ``report.json`` (plain JSON values).
    """
    folder = Path(folder)
    files = {"json": REPORT_JSON, "markdown": REPORT_MD}
    if report["mode"] == "paired":
        paired_plot(report, folder / PAIRED_PLOT)
        files["plot"] = PAIRED_PLOT
    plain = to_jsonable({**report, "files": files})
    atomic_write_text(folder / REPORT_MD, report_markdown(plain, title=title))
    atomic_write_json(folder / REPORT_JSON, plain, indent=2, sort_keys=False)
    return plain


def log_wandb(report: Mapping[str, Any], *, prefix: str = "evaluate") -> bool:
    """Log a report's scalars (and a paired report's per-patient table) to the active W&B run; True when logged.

    Args:
        report: the report (its ``values`` are the scalars).
        prefix: key prefix (``evaluate/fid``).
    """
    wandb = sys.modules.get("wandb")  # a run can only be active if wandb was imported
    if wandb is None or getattr(wandb, "run", None) is None:
        return False
    payload: dict[str, Any] = {f"{prefix}/{k}": v for k, v in report["values"].items() if v is not None}
    if report["mode"] == "paired":
        cols = ["patient"] + list(report["metric_columns"])
        payload[f"{prefix}/patients"] = wandb.Table(columns=cols,
                                                    data=[[r[c] for c in cols] for r in report["patients"]])
    wandb.log(payload)
    return True


def progress(iterable: Any, *, total: int, desc: str, quiet: bool = False) -> Any:
    """A tqdm bar on stderr around ``iterable``, off when ``quiet`` or when stderr is not a terminal (logs, CI).

    Args:
        iterable: the items.
        total: their number.
        desc: the bar's label.
        quiet: no bar.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=quiet or not sys.stderr.isatty(), leave=False)
