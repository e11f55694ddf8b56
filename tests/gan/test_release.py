"""The release gate (gan.release) with a toy producer of text files and a toy auditor: publish, reject (report kept
in <out>.rejected), resume after an interruption, the overwrite policy, nothing half-written, and the data-copying
cells rule of the memorization audit."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from data.files import atomic_path, atomic_write_text
from gan.release import (
    AuditFailed,
    AuditOutcome,
    AuditSettings,
    ItemSpec,
    ReleasePolicy,
    copying_cells,
    memorization_audit,
    release,
    staging_path,
)

PROV = {"checkpoint": "model.ckpt", "checkpoint_sha256": "ab" * 32, "model": "Toy"}


class Texts:
    """Items ``item_<i>.txt`` (+ a sidecar) whose content is a function of the seed; can fail at one item."""

    def __init__(self, n: int, fail_at: int | None = None, mid_file: bool = False) -> None:
        self.n, self.fail_at, self.mid_file = n, fail_at, mid_file
        self.made: list[str] = []

    def plan(self) -> list[ItemSpec]:
        return [ItemSpec(key=f"sub/item_{i}.txt", record={"seed": i}) for i in range(self.n)]

    def make(self, spec: ItemSpec, stage: Path) -> list[str]:
        seed = spec.record["seed"]
        if seed == self.fail_at:
            if self.mid_file:  # the crash happens while the item's file is being written
                with atomic_path(stage / spec.key) as tmp:
                    tmp.write_text("half")
                    raise RuntimeError("killed mid-file")
            atomic_write_text(stage / spec.key, "complete but unrecorded")
            raise RuntimeError("killed between files")
        self.made.append(spec.key)
        atomic_write_text(stage / spec.key, f"content {seed}")
        atomic_write_text(stage / spec.key.replace(".txt", ".json"), json.dumps({"seed": seed}))
        return [spec.key, spec.key.replace(".txt", ".json")]


class Verdict:
    """An auditor that passes or fails and writes one report file."""

    def __init__(self, passed: bool, comparable: bool = True) -> None:
        self.passed, self.comparable, self.seen = passed, comparable, 0

    def __call__(self, items, stage: Path, report_dir: Path) -> AuditOutcome:
        self.seen = len(items)
        assert all((stage / f).is_file() for item in items for f in item.files)
        atomic_write_text(report_dir / "report.json", json.dumps({"n": len(items)}))
        flagged = () if self.passed else (items[1].key, items[0].key)
        return AuditOutcome(passed=self.passed, summary={"n": len(items)}, flagged=flagged,
                            reasons=() if self.passed else ("too close",), files={"json": "report.json"},
                            comparable=self.comparable)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_publish_writes_items_manifest_and_audit_then_one_rename(tmp_path):
    out = tmp_path / "set"
    res = release(Texts(3), out=out, provenance=PROV, auditor=Verdict(True))
    assert res.out == out and res.resumed == 0 and not staging_path(out).exists()
    assert _files(out) == ["audit/report.json", "manifest.json"] + sorted(
        f"sub/item_{i}.{ext}" for i in range(3) for ext in ("json", "txt"))
    m = json.loads((out / "manifest.json").read_text())
    assert m["checkpoint_sha256"] == PROV["checkpoint_sha256"] and m["synthetic"] is True and m["version"]
    assert [it["key"] for it in m["items"]] == [f"sub/item_{i}.txt" for i in range(3)]
    first = m["items"][0]
    assert first["seed"] == 0 and first["files"] == ["sub/item_0.txt", "sub/item_0.json"]
    assert first["sha256"]["sub/item_0.txt"] == hashlib.sha256(b"content 0").hexdigest()
    assert m["audit"]["run"] is True and m["audit"]["passed"] is True and m["audit"]["n"] == 3
    assert m["audit"]["files"] == {"json": "audit/report.json"} and (out / m["audit"]["files"]["json"]).is_file()
    assert m["released_without_audit"] is False and m["released_despite_failed_audit"] is False
    assert m["warnings"] == [] and m["audit"]["comparable"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_items_csv_lists_every_item_for_tile_sets(tmp_path):
    import csv

    res = release(Texts(3), out=tmp_path / "tiles", provenance=PROV, auditor=Verdict(True), items_csv=True)
    rows = list(csv.DictReader((res.out / "manifest.csv").open()))
    assert [r["key"] for r in rows] == [f"sub/item_{i}.txt" for i in range(3)]
    assert rows[2]["seed"] == "2" and rows[0]["checkpoint_sha256"] == PROV["checkpoint_sha256"] and rows[0]["version"]
    assert rows[1]["sha256"] == hashlib.sha256(b"content 1").hexdigest()


def test_reject_keeps_only_the_report_in_out_rejected_and_raises(tmp_path):
    out = tmp_path / "set"
    with pytest.raises(AuditFailed, match="FAILED, nothing released: too close") as info:
        release(Texts(3), out=out, provenance=PROV, auditor=Verdict(False))
    rejected = info.value.report_dir
    assert rejected == tmp_path / "set.rejected" and not out.exists() and not staging_path(out).exists()
    assert info.value.flagged == ("sub/item_1.txt", "sub/item_0.txt")
    assert "sub/item_1.txt" in str(info.value)
    assert _files(rejected) == ["audit/report.json", "manifest.json"]
    m = json.loads((rejected / "manifest.json").read_text())
    assert m["rejected"] is True and m["items"] == [] and m["audit"]["passed"] is False
    assert m["audit"]["flagged"] == ["sub/item_1.txt", "sub/item_0.txt"] and len(m["rejected_items"]) == 3
    with pytest.raises(AuditFailed) as again:  # a second rejection gets a fresh folder
        release(Texts(3), out=out, provenance=PROV, auditor=Verdict(False))
    assert again.value.report_dir.name.startswith("set.rejected-") and rejected.is_dir()


def test_allow_flagged_and_skip_audit_are_recorded(tmp_path):
    res = release(Texts(2), out=tmp_path / "a", provenance=PROV, auditor=Verdict(False, comparable=False),
                  policy=ReleasePolicy(allow_flagged=True))
    m = json.loads(res.manifest.read_text())
    assert m["released_despite_failed_audit"] is True and m["audit"]["passed"] is False
    assert m["audit"]["comparable"] is False and any("random" in w for w in m["warnings"])
    res = release(Texts(2), out=tmp_path / "b", provenance=PROV, auditor=None, policy=ReleasePolicy(skip_audit=True))
    m = json.loads(res.manifest.read_text())
    assert m["released_without_audit"] is True and m["audit"] == {"run": False} and res.audit is None
    with pytest.raises(ValueError, match="needs an auditor"):
        release(Texts(2), out=tmp_path / "c", provenance=PROV, auditor=None)


def test_resume_skips_the_items_already_staged(tmp_path):
    out = tmp_path / "set"
    first = Texts(5, fail_at=3)
    with pytest.raises(RuntimeError, match="between files"):
        release(first, out=out, provenance=PROV, auditor=Verdict(True))
    stage = staging_path(out)
    assert not out.exists() and stage.is_dir() and first.made == [f"sub/item_{i}.txt" for i in range(3)]
    second, auditor = Texts(5), Verdict(True)
    res = release(second, out=out, provenance=PROV, auditor=auditor)
    assert second.made == ["sub/item_3.txt", "sub/item_4.txt"] and res.resumed == 3 and auditor.seen == 5
    assert (out / "sub/item_3.txt").read_text() == "content 3"  # the unrecorded file of item 3 was made again
    assert len(json.loads(res.manifest.read_text())["items"]) == 5 and not stage.exists()
    assert not (out / ".release").exists()


def test_resume_refuses_a_partial_run_of_other_settings(tmp_path):
    out = tmp_path / "set"
    identity = {"checkpoint_sha256": PROV["checkpoint_sha256"], "model": "Toy"}
    with pytest.raises(RuntimeError):
        release(Texts(4, fail_at=2), out=out, provenance=PROV, identity=identity, auditor=Verdict(True))
    with pytest.raises(ValueError, match=r"other settings \(checkpoint_sha256 differ\).*rm -r"):
        release(Texts(4), out=out, provenance=PROV, identity={**identity, "checkpoint_sha256": "cd" * 32},
                auditor=Verdict(True))
    # the checkpoint path is not part of this identity: a resumed run may name the file differently
    again = Texts(4)
    res = release(again, out=out, provenance={**PROV, "checkpoint": "/abs/model.ckpt"}, identity=identity,
                  auditor=Verdict(True))
    assert again.made == ["sub/item_2.txt", "sub/item_3.txt"] and res.resumed == 2
    assert json.loads(res.manifest.read_text())["checkpoint"] == "/abs/model.ckpt"


def test_nothing_half_written_after_an_exception_in_the_producer(tmp_path):
    out = tmp_path / "set"
    with pytest.raises(RuntimeError, match="mid-file"):  # the very first item fails: nothing to resume, no folder
        release(Texts(3, fail_at=0, mid_file=True), out=out, provenance=PROV, auditor=Verdict(True))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="mid-file"):
        release(Texts(3, fail_at=2, mid_file=True), out=out, provenance=PROV, auditor=Verdict(True))
    stage = staging_path(out)
    staged = [f for f in _files(stage) if not f.startswith(".release/")]
    assert staged == sorted(f"sub/item_{i}.{ext}" for i in range(2) for ext in ("json", "txt"))  # no temp, no half
    assert not out.exists()
    # a stray file in the staging folder (no item's) is not published
    atomic_write_text(stage / "sub" / "stray.txt", "x")
    res = release(Texts(3), out=out, provenance=PROV, auditor=Verdict(True))
    assert "sub/stray.txt" not in _files(out) and res.resumed == 2


def test_a_second_run_on_the_same_out_is_refused_while_the_first_stages(tmp_path):
    out = tmp_path / "set"

    class Nested(Texts):
        def make(self, spec, stage):
            if spec.record["seed"] == 1:  # meanwhile, another run on the same --out
                with pytest.raises(RuntimeError, match="another run is staging this data set"):
                    release(Texts(2), out=out, provenance=PROV, auditor=Verdict(True))
            return super().make(spec, stage)

    res = release(Nested(3), out=out, provenance=PROV, auditor=Verdict(True))
    assert len(res.items) == 3 and res.resumed == 0


def test_overwrite_is_refused_then_replaces_atomically(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "old.txt").write_text("old data set")
    with pytest.raises(FileExistsError, match="data set exists; pass --overwrite"):
        release(Texts(2), out=out, provenance=PROV, auditor=Verdict(True))
    assert _files(out) == ["old.txt"] and not staging_path(out).exists()
    with pytest.raises(AuditFailed):  # a rejected run leaves the old data set untouched
        release(Texts(2), out=out, provenance=PROV, auditor=Verdict(False), policy=ReleasePolicy(overwrite=True))
    assert _files(out) == ["old.txt"]
    release(Texts(2), out=out, provenance=PROV, auditor=Verdict(True), policy=ReleasePolicy(overwrite=True))
    assert "old.txt" not in _files(out) and "manifest.json" in _files(out)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("set.rejected")) == ["set"]


def test_a_plan_with_duplicate_keys_or_files_outside_the_stage_is_refused(tmp_path):
    class Dupes(Texts):
        def plan(self):
            return super().plan() + super().plan()[:1]

    with pytest.raises(ValueError, match="more than once"):
        release(Dupes(2), out=tmp_path / "a", provenance=PROV, auditor=Verdict(True))

    class Outside(Texts):
        def make(self, spec, stage):
            super().make(spec, stage)
            return ["../escape.txt"]

    with pytest.raises(ValueError, match="outside the staging folder"):
        release(Outside(2), out=tmp_path / "b", provenance=PROV, auditor=Verdict(True))


def test_copying_cells_adapt_to_the_set_sizes():
    s = AuditSettings(cells=10, min_cell=20)
    assert copying_cells(s, n_train=100, n_heldout=1000, n_generated=1000) == 10
    assert copying_cells(s, n_train=100, n_heldout=48, n_generated=32) == 1  # the README demo: 32 generated slices
    assert copying_cells(s, n_train=100, n_heldout=80, n_generated=65) == 3
    assert copying_cells(s, n_train=2, n_heldout=1000, n_generated=1000) == 2
    with pytest.raises(ValueError, match=r"min_cell=20 .* got 48 held-out and 12 generated; lower --min-cell"):
        copying_cells(s, n_train=100, n_heldout=48, n_generated=12, hint="lower --min-cell")


@pytest.mark.filterwarnings("ignore:held-out set has")
def test_memorization_audit_runs_on_small_sets_and_records_the_cells(tmp_path):
    g = torch.Generator().manual_seed(0)
    train, heldout, gen = (torch.randn(n, 8, generator=g) for n in (60, 48, 32))
    report, outcome = memorization_audit(train, heldout, gen, names=[f"g{i}" for i in range(32)],
                                         settings=AuditSettings(cells=10, min_cell=20), report_dir=tmp_path / "a")
    assert outcome.summary["cells"]["used"] == 1 and outcome.summary["cells"]["requested"] == 10
    assert report.copying.n_cells == 1 and outcome.passed == report.passed
    assert outcome.files["json"] == "memorization.json" and (tmp_path / "a" / "memorization.json").is_file()
    copies = torch.cat([train[:20], gen[20:]])  # 20 exact copies of training rows
    _, flagged = memorization_audit(train, heldout, copies, names=[f"g{i}" for i in range(32)],
                                    settings=AuditSettings(cells=10, min_cell=20), report_dir=tmp_path / "b")
    assert not flagged.passed and set(flagged.flagged) >= {f"g{i}" for i in range(20)}
