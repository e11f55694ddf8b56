"""run_all.py's table and JSON on fake rows and fake benchmark files (no timing is measured or asserted)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def mods():
    sys.path.insert(0, str(BENCH))
    try:
        import harness
        import run_all

        yield harness, run_all
    finally:
        sys.path.remove(str(BENCH))


def _rows(harness):
    return [
        harness.row("tiles", "uint8, 2 workers", baseline_name="raw read_region", baseline=800.0, result=1300.0,
                    unit="tiles/s", target=1.5, detail="machine quiet", cpu_ms=1.2),
        harness.row("training", "cyclegan", baseline_name="plain loop", baseline=10.0, result=8.0, unit="img/s",
                    target=0.9),
        harness.skipped_row("ddp", "ddp_gan: 2 processes vs 1", "skipped: strategy 'ddp_gan' is not registered",
                            baseline_name="2 x 1-process rate (ideal)", baseline=50.0, unit="img/s"),
    ]


def test_row_ratio_and_json_safe_numbers(mods):
    harness, _ = mods
    r = harness.row("x", "c", baseline_name="b", baseline=4.0, result=6.0, unit="img/s")
    assert r["ratio"] == 1.5 and set(r) == set(harness.ROW_KEYS)
    assert harness.row("x", "c", baseline_name="b", baseline=4.0, result=6.0, unit="u", ratio=0.7)["ratio"] == 0.7
    nan = harness.row("x", "c", baseline_name="b", baseline=0.0, result=float("nan"), unit="u")
    assert nan["ratio"] is None and nan["result"] is None


def test_table_is_aligned_with_numbered_notes(mods):
    harness, _ = mods
    text = harness.format_table(_rows(harness))
    lines = text.splitlines()
    head, rule, *body = lines[:5]
    assert [c.strip() for c in head.split(" | ")] == ["benchmark", "case", "baseline", "ours", "ratio", "target"]
    bars = [i for i, ch in enumerate(head) if ch == "|"]
    assert all([i for i, ch in enumerate(b) if ch == "|"][: len(bars)] == bars for b in body)  # columns line up
    assert set(rule) <= {"-", "+"}
    assert "1.62x" in body[0] and ">= 1.5" in body[0] and "BELOW" not in body[0]
    assert "0.80x" in body[1] and "BELOW" in body[1]
    assert "[2]" in body[2] and " - " in body[2]  # skipped: no result, no ratio
    assert "[1] machine quiet" in lines and "[2] skipped: strategy 'ddp_gan' is not registered" in lines


def test_collect_and_json(mods, tmp_path):
    harness, run_all = mods
    good = tmp_path / "bench_good.py"
    good.write_text("import harness\n\ndef rows(quick=False):\n    print('free-form output')\n"
                    "    return [harness.row('good', f'quick={quick}', baseline_name='b', baseline=1.0, result=2.0, "
                    "unit='img/s')]\n")
    bad = tmp_path / "bench_bad.py"
    bad.write_text("def rows(quick=False):\n    raise RuntimeError('boom')\n")
    log = (tmp_path / "log.txt").open("w")
    rows, _, failed = run_all.collect(good, quick=True, log=log)
    assert not failed and rows[0]["case"] == "quick=True" and rows[0]["ratio"] == 2.0
    assert "machine" in rows[0]["extra"]
    rows_bad, _, failed = run_all.collect(bad, quick=True, log=log)
    log.close()
    assert failed and rows_bad[0]["benchmark"] == "bad" and "RuntimeError: boom" in rows_bad[0]["detail"]
    assert "free-form output" in (tmp_path / "log.txt").read_text()

    out = tmp_path / "results" / "bench.json"
    info = {"date": "2026-12-02T00:00:00+00:00", "torch": "x", "device": "cpu", "cpu_count": 2}
    run_all.write_json(out, harness.report(rows + rows_bad + _rows(harness), quick=True, seconds={"bench_good": 0.1},
                                           failed=["bench_bad.py"], info=info))
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["failed"] == ["bench_bad.py"] and doc["cpu_count"] == 2
    assert [r["benchmark"] for r in doc["rows"]] == ["good", "bad", "tiles", "training", "ddp"]
    assert doc["rows"][2]["extra"]["cpu_ms"] == 1.2
    assert not [p for p in out.parent.iterdir() if p.name != "bench.json"]  # no temporary file left behind


def test_machine_info_and_load(mods):
    harness, _ = mods
    info = harness.machine_info()
    assert {"date", "torch", "device", "cpu_count"} <= set(info)
    load = harness.MachineLoad().stop()
    assert set(load.as_dict()) == {"loadavg_start", "loadavg_end", "others_cores", "quiet"}
    assert "cores" in str(load)


def test_the_gpu_check_commands_parse(mods):
    """Every benchmark that benchmarks/gpu_check.sh runs accepts that line's arguments (a device session has one
    try: an unknown or silently ignored flag there costs the whole check)."""
    import importlib
    import shlex

    lines = [ln.split() for ln in (BENCH / "gpu_check.sh").read_text().splitlines() if ln.startswith("run ")]
    assert len(lines) >= 6
    assert sum(int(ln[2]) for ln in lines) <= 480, "the steps' limits must fit one device call with room to spare"
    assert len(lines) + 2 <= 8, "the device tool brings back 8 files: one per step, env.txt and status.txt"
    for _, name, _limit, script, *args in lines:
        mod = importlib.import_module(Path(script).stem)
        parsed = vars(mod._parser().parse_args(args))
        for flag, value in zip(args, args[1:]):
            if flag.startswith("--") and not value.startswith("--"):
                key = flag[2:].replace("-", "_")
                got = parsed[key]
                got = got[0] if isinstance(got, list) else got
                assert str(got) == value, (name, shlex.join(args), key, got)
        assert parsed["device"] == "cuda", name
