"""Report output of the commands: JSON, markdown, plots and W&B, each file written atomically.

A report is a plain dict (numbers, protocol records, inputs, counts, versions). :func:`write_report` writes it as
``report.json`` (through :func:`data.files.to_jsonable`: NaN/Inf become ``null``) and ``report.md``
(:func:`report_markdown`), plus ``paired_metrics.png`` for paired-volume reports (:func:`paired_plot`),
``fidelity.png`` for precision-recall / sliced Wasserstein (:func:`fidelity_plot`) and ``utility.png`` for the
downstream-utility test (:func:`utility_plot`);
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
    "fidelity_plot",
    "fmt",
    "log_wandb",
    "paired_plot",
    "report_header",
    "report_markdown",
    "software",
    "utility_plot",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PAIRED_PLOT = "paired_metrics.png"
FIDELITY_PLOT = "fidelity.png"
UTILITY_PLOT = "utility.png"


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
    rec = report.get("feature_protocol")
    lines = []
    if rec:
        lines.append(f"Features: `{rec['extractor']}` (weights `{str(rec['weights_sha256'])[:16]}`), protocol "
                     f"`{rec['protocol']}`.")
    if report.get("counts"):
        lines.append(f"Counts {report['counts']}.")
    if report.get("classes"):
        lines.append(f"Classes: {', '.join(report['classes'])}.")
    lines.append("")
    rows = []
    if "fid" in report:
        rows.append(f"| FID | {fmt(report['fid']['value'])} |")
    if "kid" in report:
        rows.append(f"| KID | {fmt(report['kid']['mean'])} ± {fmt(report['kid']['std'])} |")
    if "memorization" in report:
        m = report["memorization"]
        ct = m["data_copying_test"]
        rows.append(f"| memorization audit | {'passed' if m['passed'] else 'FAILED'} |")
        rate = fmt(m["heldout_flag_rate"])
        rows.append(f"| near-copy fraction | {fmt(m['near_copy_fraction'])} (held-out {rate}) |")
        rows.append(f"| data-copying C_T | {fmt(ct.get('c_t'))} ({ct.get('verdict')}, {m['cells']['used']} cells) |")
    if rows:
        lines += ["| metric | value |", "|---|---|", *rows]
        if "memorization" in report:
            lines += [""] + [f"- {r}" for r in report["memorization"]["reasons"]]
    if "prdc" in report:
        lines += [""] + _prdc_markdown(report["prdc"])
    if "swd" in report:
        lines += [""] + _swd_markdown(report["swd"])
    if "utility" in report:
        lines += [""] + _utility_markdown(report["utility"])
    return lines


_PRDC = ("precision", "recall", "density", "coverage")


def _prdc_markdown(sec: Mapping[str, Any]) -> list[str]:
    floor = sec.get("floor")
    lines = [f"## Precision, recall, density, coverage (k = {sec['k_precision_recall']} / {sec['k_density_coverage']})",
             "", "Higher is better; density is about 1 for matching sets."
             + (" The held-out row scores held-out real images against the same reals: the floor." if floor else ""),
             "", "| set | " + " | ".join(_PRDC) + " |", "|---" * (len(_PRDC) + 1) + "|",
             "| synthetic | " + " | ".join(fmt(sec["overall"][k]) for k in _PRDC) + " |"]
    if floor:
        lines.append("| held-out real (floor) | " + " | ".join(fmt(floor["overall"][k]) for k in _PRDC) + " |")
    lines += _missing_note(sec.get("per_class", {}))
    if sec.get("per_class"):
        lines += ["", "| class | " + " | ".join(_PRDC) + " |", "|---" * (len(_PRDC) + 1) + "|"]
        for name, scores in sec["per_class"].items():
            fl = (floor or {}).get("per_class", {}).get(name)
            cells = []
            for k in _PRDC:
                cell = fmt(scores[k]) if scores else "n/a"
                cells.append(cell + (f" (floor {fmt(fl[k])})" if fl else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _missing_note(per_class: Mapping[str, Any]) -> list[str]:
    """A warning when some classes have no score (e.g. a synthetic set of the rare class only)."""
    missing = [name for name, value in per_class.items() if value is None]
    if not missing:
        return []
    return ["", f"No score for {', '.join(missing)} (too few real or synthetic images): the overall row then compares "
                "different class mixes; read the per-class rows."]


def _swd_markdown(sec: Mapping[str, Any]) -> list[str]:
    st, floor = sec["settings"], sec.get("floor")
    levels = list(sec["per_level"])
    lines = ["## Sliced Wasserstein distance (x 1e3, lower is better)", "",
             f"Laplacian pyramid {', '.join(f'{r}px' for r in levels)} of {st['size']}px images; "
             f"{st['patches_per_image']} patches of {st['patch_size']}x{st['patch_size']} per image and level, "
             f"{st['projections']} projections, normalisation `{st['normalisation']}`, seed {st['seed']}."
             + ("" if floor else " No --heldout: no floor to read the number against."), "",
             "| set | mean | " + " | ".join(f"{r}px" for r in levels) + " |", "|---" * (len(levels) + 2) + "|",
             f"| synthetic vs real | {fmt(sec['value'])} | " + " | ".join(fmt(sec["per_level"][r]) for r in levels)
             + " |"]
    if floor:
        lines.append(f"| held-out real vs real (floor) | {fmt(floor['value'])} | "
                     + " | ".join(fmt(floor["per_level"][r]) for r in levels) + " |")
    lines += _missing_note(sec.get("per_class", {}))
    if sec.get("per_class"):
        lines += ["", "| class | synthetic | floor |", "|---|---|---|"]
        for name, value in sec["per_class"].items():
            fl = (floor or {}).get("per_class", {}).get(name)
            lines.append(f"| {name} | {fmt(value)} | {fmt(fl)} |")
    return lines


def _ms(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    return f"{fmt(entry['mean'])} ± {fmt(entry['std'])}"


_UTILITY_COLUMNS = (("rare_recall", "rare recall"), ("rare_precision", "rare precision"), ("rare_f1", "rare F1"),
                    ("balanced_accuracy", "balanced accuracy"), ("rare_auroc", "rare AUROC"))


def _utility_markdown(sec: Mapping[str, Any]) -> list[str]:
    st, counts = sec["settings"], sec.get("counts", {})
    lines = ["## Downstream utility", "", f"**{sec['verdict']}.**", "",
             f"Rare class `{sec['rare_class']}`; classifier `{st['classifier']}`, {st['budget']}, lr {fmt(st['lr'])}, "
             f"{st['tile_size']}px tiles, seeds {sec['seeds']} (mean ± std over seeds). Split: {sec.get('split')}."]
    if counts:
        lines.append(f"Tiles: train {counts['train']} on {counts['train_slides']} slides, held-out {counts['heldout']} "
                     f"on {counts['heldout_slides']} slides, synthetic used {counts['synthetic_used']} of "
                     f"{counts['synthetic_total']}.")
    man = sec.get("synthetic_manifest")
    if man:
        lines.append(f"Synthetic set manifest `{man['file']}` (sha256 `{man['sha256'][:16]}`): {man['items']} items, "
                     f"checkpoint sha256 {', '.join(f'`{c[:16]}`' for c in man['checkpoint_sha256']) or 'n/a'}, "
                     f"seeds {man['seeds']['min']}..{man['seeds']['max']} ({man['seeds']['count']}).")
    else:
        lines.append("Synthetic set: no manifest.csv / manifest.json (checkpoint and seeds unknown).")
    lines += ["", "| regime | " + " | ".join(c for _, c in _UTILITY_COLUMNS) + " |",
              "|---" * (len(_UTILITY_COLUMNS) + 1) + "|"]
    for name, reg in sec["regimes"].items():
        lines.append(f"| {name} ({reg['train_size']} tiles) | " + " | ".join(_ms(reg[k]) for k, _ in _UTILITY_COLUMNS)
                     + " |")
    regimes = list(sec["regimes"])
    lines += ["", "| class | " + " | ".join(f"recall {r}" for r in regimes) + " | "
              + " | ".join(f"F1 {r}" for r in regimes) + " |", "|---" * (2 * len(regimes) + 1) + "|"]
    for c in sec["classes"]:
        lines.append(f"| {c} | " + " | ".join(_ms(sec["regimes"][r]["per_class"][c]["recall"]) for r in regimes)
                     + " | " + " | ".join(_ms(sec["regimes"][r]["per_class"][c]["f1"]) for r in regimes) + " |")
    lines += ["", "| paired difference | " + " | ".join(c for _, c in _UTILITY_COLUMNS) + " |",
              "|---" * (len(_UTILITY_COLUMNS) + 1) + "|"]
    for name, diff in sec["differences"].items():
        lines.append(f"| {name.replace('_minus_', ' − ')} | " + " | ".join(_ms(diff[k]) for k, _ in _UTILITY_COLUMNS)
                     + " |")
    lines += ["", f"Verdict rule: {sec['verdict_rule']}."]
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


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _finite(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else float("nan")


def fidelity_plot(report: Mapping[str, Any], path: str | Path) -> Path:
    """Per-class SWD bars (synthetic beside the held-out floor) and a precision-recall scatter (per class and overall,
    synthetic and floor), for a report with ``swd`` and/or ``prdc``.

    Args:
        report: a distribution report.
        path: the PNG to write.
    """
    panels = [k for k in ("swd", "prdc") if k in report]
    fig = _figure(5.0 * len(panels), 3.6)
    for j, key in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), j)
        sec = report[key]
        floor = sec.get("floor") or {}
        if key == "swd":
            names = ["overall"] + list(sec.get("per_class", {}))
            fake = [sec["value"]] + [sec["per_class"][n] for n in names[1:]]
            low = [floor.get("value")] + [floor.get("per_class", {}).get(n) for n in names[1:]]
            x = np.arange(len(names))
            ax.bar(x - 0.2, [_finite(v) for v in fake], 0.4, label="synthetic vs real")
            if floor:
                ax.bar(x + 0.2, [_finite(v) for v in low], 0.4, label="held-out vs real (floor)")
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
            ax.set_ylabel("SWD x 1e3 (lower is better)")
        else:
            for label, part, marker in (("synthetic", sec, "o"), ("held-out (floor)", floor, "s")):
                if not part:
                    continue
                pts = {"overall": part["overall"], **{n: v for n, v in part.get("per_class", {}).items() if v}}
                ax.scatter([p["recall"] for p in pts.values()], [p["precision"] for p in pts.values()],
                           marker=marker, label=label)
                for n, p in pts.items():
                    ax.annotate(n, (p["recall"], p["precision"]), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("recall (diversity)")
            ax.set_ylabel("precision (fidelity)")
        ax.legend(fontsize=7)
    return _save_png(fig, path)


def utility_plot(section: Mapping[str, Any], path: str | Path) -> Path:
    """Per-class recall and F1 of the three regimes (bars with mean ± std error bars over seeds).

    Args:
        section: a report's ``utility`` section.
        path: the PNG to write.
    """
    classes, regimes = list(section["classes"]), list(section["regimes"])
    fig = _figure(max(5.0, 1.4 * len(classes) + 2.0), 6.0)
    x = np.arange(len(classes))
    width = 0.8 / len(regimes)
    for j, metric in enumerate(("recall", "f1"), start=1):
        ax = fig.add_subplot(2, 1, j)
        for i, name in enumerate(regimes):
            stats = [section["regimes"][name]["per_class"][c][metric] for c in classes]
            ax.bar(x + (i - (len(regimes) - 1) / 2) * width, [_finite(s["mean"]) for s in stats], width,
                   yerr=[_finite(s["std"]) for s in stats], capsize=3, label=name)
        ax.set_xticks(x)
        ax.set_xticklabels(classes if j == 2 else [], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    return _save_png(fig, path)


def write_report(folder: str | Path, report: Mapping[str, Any], *, title: str = "medsynth evaluate") -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and the plots into ``folder``: ``paired_metrics.png`` for paired reports,
    ``fidelity.png`` with precision-recall or SWD, ``utility.png`` with the utility test.

    Args:
        folder: the report folder (created).
        report: the report; a ``files`` entry naming the written files is added.
        title: the markdown heading.

    Returns:
        The report as written to ``report.json`` (plain JSON values).
    """
    folder = Path(folder)
    files = {"json": REPORT_JSON, "markdown": REPORT_MD}
    plain = to_jsonable(dict(report))
    if plain["mode"] == "paired":
        paired_plot(plain, folder / PAIRED_PLOT)
        files["plot"] = PAIRED_PLOT
    if "swd" in plain or "prdc" in plain:
        fidelity_plot(plain, folder / FIDELITY_PLOT)
        files["fidelity_plot"] = FIDELITY_PLOT
    if "utility" in plain:
        utility_plot(plain["utility"], folder / UTILITY_PLOT)
        files["utility_plot"] = UTILITY_PLOT
    plain = {**plain, "files": files}
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
