"""The release gate of synthetic data sets: stage -> audit -> publish, or reject. Model-neutral.

A generator plugs in with two objects (``medsynth generate`` has one pair for translation checkpoints; StyleGAN2's
tile generation brings its own):

* a :class:`Producer`: ``plan()`` lists the items as :class:`ItemSpec` (a unique ``key`` and the ``record`` that
  reproduces the item: input file, seed, label, truncation, ...); ``make(spec, stage)`` writes one item's files
  into the staging folder, each atomically (``data.volumes.write_nifti`` / ``data.provenance.write_png`` do), and
  returns their
  paths relative to it;
* an :class:`Auditor` (none with ``skip_audit``): called once every item is staged, with the staged items, the
  staging folder and an empty report folder; it returns an :class:`AuditOutcome`. :func:`memorization_audit` is the
  audit both generators run (the memorization audit of ``gan.metrics`` with the data-copying cells adapted to the
  set sizes, see :func:`copying_cells`).

:func:`release` then does, in order:

1. The one overwrite policy: an existing ``out`` is refused unless ``ReleasePolicy.overwrite``
   (:func:`data.files.check_overwrite`); an allowed overwrite replaces it in one rename at publication, and until
   then the old data set is untouched.
2. Stage: items are written into ``.<out name>.partial/`` beside ``out``. The name is fixed, so re-running the same
   command RESUMES: an item whose key and record are already recorded there is skipped. An item is recorded (one
   small JSON, written atomically) only after all its files exist, with their sha256, so an interruption never
   counts half an item. The staged run's ``identity`` (e.g. checkpoint sha256 and direction; by default the whole
   provenance) must equal the new one; a partial run of other settings is refused, naming the folder to delete.
3. Audit: ``auditor(items, stage, report_dir)``; its report files end up in ``audit/``.
4. Publish when the audit passed, or with ``allow_flagged`` (released anyway) or ``skip_audit`` (no audit), both
   recorded: ``manifest.json`` (``software``, package ``version``, ``created``, the provenance, every item's key,
   files, sha256 and record, the audit summary; with ``items_csv`` also ``manifest.csv``, one row per item, as tile
   sets want) is written, files that belong to no planned item are removed, and the folder is renamed onto ``out``
   in one step.
   Reject otherwise: the synthetic files are deleted, the manifest (``rejected: true``, no items, the flagged
   ones) and the audit report are kept in ``<out>.rejected/`` (``<out>.rejected-<time>`` when that exists), and
   :class:`AuditFailed` is raised; the commands print it and exit with status 3 (``EXIT_AUDIT_FAILED``).

An exception in the producer leaves ``out`` as it was and the staging folder holding only complete, recorded items
(the folder is removed when it holds none), ready to resume. One run at a time stages a data set: a second run on
the same ``out`` meanwhile is refused (an advisory lock, released when the process ends).

Example (a producer of PNG tiles; the translation source in :mod:`gan.commands.generate` is another)::

    class Tiles:
        def plan(self):
            return [ItemSpec(key=f"tile_{s:06d}.png", record={"seed": s, "label": "rare"}) for s in range(100)]

        def make(self, spec, stage):
            write_png(sample(spec.record["seed"]), stage / spec.key)
            return [spec.key, sidecar_path(spec.key)]

    release(Tiles(), out=Path("synthetic/rare"), provenance={"checkpoint_sha256": sha}, auditor=my_audit,
            policy=ReleasePolicy(overwrite=False), items_csv=True, progress=True)
"""
from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch

from data.files import atomic_dir, atomic_write_json, atomic_write_text, check_overwrite, sha256_file, to_jsonable
from data.provenance import medsynth_version, write_manifest
from gan.metrics import FIDProtocol, MemorizationReport, audit
from gan.metrics.features import FeatureExtractor, protocol_record
from gan.reports import progress as progress_bar

log = logging.getLogger("medsynth.release")

__all__ = [
    "AuditFailed",
    "AuditOutcome",
    "AuditSettings",
    "Auditor",
    "ItemSpec",
    "Producer",
    "ReleasePolicy",
    "ReleaseResult",
    "StagedItem",
    "copying_cells",
    "memorization_audit",
    "rejected_path",
    "release",
    "staging_path",
]

#: Names inside a staged or released folder that belong to the gate, never to an item.
MANIFEST = "manifest.json"
MANIFEST_CSV = "manifest.csv"
AUDIT_DIR = "audit"
_JOURNAL = ".release"
_RESERVED = (MANIFEST, MANIFEST_CSV, AUDIT_DIR, _JOURNAL)


# ------------------------------------------------------------------------------------------------- the typed API


@dataclass(frozen=True)
class ItemSpec:
    """One planned item of a synthetic data set.

    Args:
        key: unique name of the item (e.g. its main file, ``"p4/mr.nii.gz"`` or ``"tile_000017.png"``).
        record: what reproduces it (input file, seed, label, truncation, ...), JSON-able; copied into the manifest.
    """

    key: str
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StagedItem:
    """An item whose files are all in the staging folder (or, after publication, in the data set).

    Args:
        key: the item's key.
        record: its record (see :class:`ItemSpec`).
        files: its files, relative to the folder.
        sha256: hex digest of each file.
    """

    key: str
    record: Mapping[str, Any]
    files: tuple[str, ...]
    sha256: Mapping[str, str]

    def manifest_entry(self) -> dict[str, Any]:
        """The item as one entry of ``manifest.json``: key, files, sha256, then the record's fields."""
        return {"key": self.key, "files": list(self.files), "sha256": dict(self.sha256), **dict(self.record)}


@dataclass(frozen=True)
class AuditOutcome:
    """What an auditor found.

    Args:
        passed: the data set may be released.
        summary: JSON-able summary for the manifest (numbers, thresholds, set sizes, protocol).
        flagged: the flagged items (or their parts, e.g. ``"p4/mr.nii.gz[slice 7]"``), worst first.
        reasons: why it failed (empty when it passed).
        files: report files the auditor wrote, by kind, relative to its report folder.
        comparable: False when the audit's features come from random weights (a smoke run; its numbers compare
            with nothing); stamped in the manifest.
        details: the auditor's own result (e.g. the :class:`gan.metrics.MemorizationReport`) for Python callers;
            not written anywhere.
    """

    passed: bool
    summary: Mapping[str, Any] = field(default_factory=dict)
    flagged: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)
    comparable: bool = True
    details: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ReleasePolicy:
    """How the gate treats an existing output and a failed audit.

    Args:
        overwrite: replace an existing ``out`` (atomically, at publication); otherwise it is refused.
        allow_flagged: release even when the audit fails (recorded in the manifest).
        skip_audit: release without an audit (recorded in the manifest; not for patient data).
    """

    overwrite: bool = False
    allow_flagged: bool = False
    skip_audit: bool = False


@dataclass(frozen=True)
class ReleaseResult:
    """A released data set.

    Args:
        out: the data set folder.
        items: the released items (files relative to ``out``).
        manifest: its ``manifest.json``.
        audit: the audit outcome, or None with ``skip_audit``.
        resumed: items found already staged by an earlier, interrupted run (not made again).
    """

    out: Path
    items: tuple[StagedItem, ...]
    manifest: Path
    audit: AuditOutcome | None
    resumed: int = 0

    def paths(self) -> list[Path]:
        """Absolute path of every released file, item by item."""
        return [self.out / f for item in self.items for f in item.files]


class Producer(Protocol):
    """The generator side of a release: what to make, and how to make one item."""

    def plan(self) -> Sequence[ItemSpec]:
        """All items of the data set, in manifest order (keys unique)."""

    def make(self, spec: ItemSpec, stage: Path) -> Sequence[str | Path]:
        """Write the files of one item into ``stage`` (each atomically) and return them, relative to ``stage``.

        Args:
            spec: the item.
            stage: the staging folder.
        """


class Auditor(Protocol):
    """The audit side of a release (e.g. a memorization audit of the staged items)."""

    def __call__(self, items: Sequence[StagedItem], stage: Path, report_dir: Path) -> AuditOutcome:
        """Audit the staged items; write the report files into ``report_dir`` (created by the auditor).

        Args:
            items: every staged item, in plan order.
            stage: the staging folder the items' files are in.
            report_dir: where the report goes (published as ``audit/``).
        """


class AuditFailed(RuntimeError):
    """The audit flagged the synthetic set; nothing was released.

    Args:
        message: what failed and where the report is.
        report_dir: the ``<out>.rejected`` folder holding the report and the manifest.
        flagged: the flagged items, worst first.
    """

    def __init__(self, message: str, report_dir: Path, flagged: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.report_dir = report_dir
        self.flagged = tuple(flagged)


# ------------------------------------------------------------------------------------------------------ the gate


def staging_path(out: str | Path) -> Path:
    """The staging folder of ``out``: ``.<out name>.partial`` beside it (fixed, so a re-run resumes).

    Args:
        out: the data set folder.
    """
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def rejected_path(out: str | Path) -> Path:
    """Where a rejected data set's report goes: ``<out>.rejected``, or ``<out>.rejected-<time>`` when that exists.

    Args:
        out: the data set folder.
    """
    out = Path(out)
    path = out.with_name(f"{out.name}.rejected")
    if not path.exists():
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, i = path.with_name(f"{path.name}-{stamp}"), 1
    while candidate.exists():
        candidate, i = path.with_name(f"{path.name}-{stamp}-{i}"), i + 1
    return candidate


class _Stage:
    """The staging folder and its journal: the recorded items and the identity of the run that staged them.

    Args:
        root: the staging folder.
        identity: what a resumed run must share with the staged one (JSON form).
    """

    def __init__(self, root: Path, identity: dict[str, Any]) -> None:
        self.root = root
        self.journal = root / _JOURNAL
        self.journal.mkdir(parents=True, exist_ok=True)
        self._lock = _exclusive_lock(self.journal / "lock", root)
        try:
            path = self.journal / "identity.json"
            if path.is_file():
                staged = json.loads(path.read_text(encoding="utf-8"))
                if staged != identity:
                    keys = sorted(k for k in set(staged) | set(identity) if staged.get(k) != identity.get(k))
                    raise ValueError(f"{root}: holds a partial release made with other settings ({', '.join(keys)} "
                                     f"differ); delete it (rm -r '{root}') to start afresh, or re-run the command "
                                     "it was started with to resume it")
            else:
                atomic_write_json(path, identity, sort_keys=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the staging folder's lock."""
        self._lock.close()

    def _record_path(self, key: str) -> Path:
        return self.journal / "items" / (hashlib.sha1(key.encode("utf-8")).hexdigest() + ".json")

    def staged(self, spec: ItemSpec) -> StagedItem | None:
        """The recorded item of ``spec`` when its record matches and its files are still there, else None.

        Args:
            spec: the planned item.
        """
        path = self._record_path(spec.key)
        if not path.is_file():
            return None
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry.get("key") != spec.key or entry.get("record") != to_jsonable(dict(spec.record)):
            return None
        files = tuple(entry["files"])
        if not all((self.root / f).is_file() for f in files):
            return None
        return StagedItem(key=spec.key, record=dict(spec.record), files=files, sha256=dict(entry["sha256"]))

    def record(self, spec: ItemSpec, written: Sequence[str | Path]) -> StagedItem:
        """Check and hash an item's files, then record it (atomically).

        Args:
            spec: the item.
            written: its files, relative to the staging folder (or absolute inside it).
        """
        files: list[str] = []
        for f in written:
            p = Path(f)
            rel = p.relative_to(self.root) if p.is_absolute() else p
            if rel.is_absolute() or ".." in rel.parts or rel.parts[0] in _RESERVED:
                raise ValueError(f"item {spec.key!r}: file {f} lies outside the staging folder or uses a reserved "
                                 f"name ({', '.join(_RESERVED)})")
            if not (self.root / rel).is_file():
                raise FileNotFoundError(f"item {spec.key!r}: the producer returned {rel}, which it did not write "
                                        f"into {self.root}")
            files.append(rel.as_posix())
        if not files:
            raise ValueError(f"item {spec.key!r}: the producer wrote no file")
        item = StagedItem(key=spec.key, record=dict(spec.record), files=tuple(dict.fromkeys(files)),
                          sha256={f: sha256_file(self.root / f) for f in files})
        atomic_write_json(self._record_path(spec.key), {"key": item.key, "record": item.record,
                                                        "files": list(item.files), "sha256": item.sha256})
        return item

    def has_records(self) -> bool:
        """True when at least one item is recorded."""
        items = self.journal / "items"
        return items.is_dir() and any(items.iterdir())


def _exclusive_lock(path: Path, root: Path) -> IO[str]:
    """An advisory lock (``flock``; released by the OS when the process ends, so never stale) on ``path``.

    Raises:
        RuntimeError: another process holds it (another run is staging into ``root``).
    """
    fh = open(path, "w")  # noqa: SIM115 - held open for the whole release
    try:
        import fcntl
    except ImportError:  # no flock on this platform: one run per --out at a time is then up to the user
        return fh
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        raise RuntimeError(f"{root}: another run is staging this data set right now; wait for it to end") from exc
    return fh


def _check_plan(plan: Sequence[ItemSpec]) -> None:
    if not plan:
        raise ValueError("nothing to release: the producer planned no item")
    keys = [s.key for s in plan]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"the producer planned item {dupes[0]!r} more than once; keys must be unique")


def _prune(root: Path, keep: set[str]) -> None:
    """Delete every file under ``root`` outside ``keep`` (relative paths) and the gate's names, then empty folders."""
    for f in sorted(root.rglob("*"), reverse=True):
        rel = f.relative_to(root)
        if rel.parts[0] in _RESERVED:
            continue
        if f.is_dir():
            if not any(f.iterdir()):
                f.rmdir()
        elif rel.as_posix() not in keep:
            f.unlink()


def release(
    producer: Producer,
    *,
    out: str | Path,
    provenance: Mapping[str, Any],
    auditor: Auditor | None,
    policy: ReleasePolicy = ReleasePolicy(),
    identity: Mapping[str, Any] | None = None,
    items_csv: bool = False,
    progress: bool = False,
) -> ReleaseResult:
    """Stage every item, audit them, and publish the data set at ``out``, or reject it (see the module docstring).

    Args:
        producer: plans and makes the items.
        out: the data set folder.
        provenance: what made the items (checkpoint path and sha256, model, direction, ...); recorded in the
            manifest.
        auditor: the audit; None only with ``policy.skip_audit``.
        policy: overwrite / allow-flagged / skip-audit.
        identity: what a re-run must share with the staged run to resume it (e.g. the checkpoint sha256, not its
            path); default: the whole provenance.
        items_csv: also write ``manifest.csv``, one row per item (key, record fields, sha256 of the key's file,
            checkpoint sha256, package version), e.g. for tiles.
        progress: show a progress bar over the items (on a terminal).

    Raises:
        FileExistsError: ``out`` exists and ``policy.overwrite`` is False.
        AuditFailed: the audit flagged the set (the report is in ``<out>.rejected``).
    """
    out = Path(out)
    check_overwrite(out, overwrite=policy.overwrite, what="data set")
    if auditor is None and not policy.skip_audit:
        raise ValueError("a release needs an auditor, or skip_audit=True (recorded in the manifest)")
    plan = list(producer.plan())
    _check_plan(plan)
    prov = to_jsonable(dict(provenance))
    root = staging_path(out)
    fresh = not (root / _JOURNAL).exists()
    try:
        stage = _Stage(root, prov if identity is None else to_jsonable(dict(identity)))
    except BaseException:
        if fresh:
            shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        return _stage_audit_publish(producer, stage, plan, out, prov, auditor, policy, items_csv, progress)
    finally:
        stage.close()


def _stage_audit_publish(producer: Producer, stage: _Stage, plan: list[ItemSpec], out: Path, prov: dict[str, Any],
                         auditor: Auditor | None, policy: ReleasePolicy, items_csv: bool,
                         progress: bool) -> ReleaseResult:
    """Steps 2-4 of :func:`release` under the staging folder's lock."""
    root = stage.root
    items: list[StagedItem] = []
    resumed = 0
    try:
        for spec in progress_bar(plan, total=len(plan), desc=f"staging {out.name}", quiet=not progress):
            item = stage.staged(spec)
            if item is not None:
                resumed += 1
            else:
                item = stage.record(spec, producer.make(spec, root))
            items.append(item)
    except BaseException:
        if not stage.has_records():
            shutil.rmtree(root, ignore_errors=True)
        else:
            log.warning("stopped with %d of %d items staged in %s; run the same command again to resume",
                        len(items), len(plan), root)
        raise
    if resumed:
        log.info("resumed %s: %d of %d items were already staged", root, resumed, len(plan))
    outcome = None if policy.skip_audit else _run_audit(auditor, items, root)  # type: ignore[arg-type]
    return _publish_or_reject(out, root, items, prov, outcome, policy, resumed, items_csv)


def _run_audit(auditor: Auditor, items: list[StagedItem], root: Path) -> AuditOutcome:
    """Run the auditor into a fresh ``audit/`` folder of the stage (atomically: a failed audit leaves none)."""
    with atomic_dir(root / AUDIT_DIR) as tmp:  # replaces the report of an earlier, interrupted run
        outcome = auditor(items, root, tmp)
    return outcome


def _manifest(prov: dict[str, Any], items: Sequence[StagedItem], outcome: AuditOutcome | None,
              policy: ReleasePolicy) -> dict[str, Any]:
    audit_entry: dict[str, Any] = {"run": False}
    warnings: list[str] = []
    if outcome is not None:
        audit_entry = {"run": True, "passed": bool(outcome.passed), "reasons": list(outcome.reasons),
                       **dict(outcome.summary), "flagged": list(outcome.flagged), "comparable": outcome.comparable,
                       "files": {k: f"{AUDIT_DIR}/{v}" for k, v in outcome.files.items()}}
        if not outcome.comparable:
            warnings.append("the audit's features come from randomly initialised weights (--weights random): a "
                            "smoke run; its numbers compare with nothing, and it is no evidence of privacy")
    if policy.skip_audit:
        warnings.append("released WITHOUT a memorization audit (--skip-audit)")
    elif outcome is not None and not outcome.passed and policy.allow_flagged:
        warnings.append("released although the memorization audit FAILED (--allow-flagged)")
    return {
        "kind": "medsynth synthetic data set",
        "synthetic": True,
        **prov,
        "items": [item.manifest_entry() for item in items],
        "audit": audit_entry,
        "released_despite_failed_audit": bool(outcome is not None and not outcome.passed and policy.allow_flagged),
        "released_without_audit": bool(policy.skip_audit),
        "warnings": warnings,
    }


def _items_csv(items: Sequence[StagedItem], prov: Mapping[str, Any]) -> str:
    """One CSV row per item: key, the record's fields, the key file's sha256, checkpoint sha256, package version."""
    fields = list(dict.fromkeys(k for item in items for k in item.record))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", *fields, "sha256", "checkpoint_sha256", "version"])
    version = medsynth_version()
    for item in items:
        digest = item.sha256.get(item.key, item.sha256[item.files[0]])
        writer.writerow([item.key, *(to_jsonable(item.record.get(k, "")) for k in fields), digest,
                         prov.get("checkpoint_sha256", ""), version])
    return buf.getvalue()


def _publish_or_reject(out: Path, root: Path, items: list[StagedItem], prov: dict[str, Any],
                       outcome: AuditOutcome | None, policy: ReleasePolicy, resumed: int,
                       items_csv: bool = False) -> ReleaseResult:
    manifest = _manifest(prov, items, outcome, policy)
    if outcome is not None and not outcome.passed and not policy.allow_flagged:
        _prune(root, keep=set())  # the synthetic files go; the report stays
        shutil.rmtree(root / _JOURNAL, ignore_errors=True)
        write_manifest(root / MANIFEST, {**manifest, "items": [], "rejected": True,
                                         "rejected_items": [item.key for item in items]})
        rejected = rejected_path(out)
        os.replace(root, rejected)
        shown = ", ".join(outcome.flagged[:5]) + (" ..." if len(outcome.flagged) > 5 else "")
        raise AuditFailed(f"memorization audit FAILED, nothing released: {'; '.join(outcome.reasons)}. Report: "
                          f"{rejected}/{AUDIT_DIR}/ (flagged: {shown or 'see the data-copying test'})", rejected,
                          outcome.flagged)
    check_overwrite(out, overwrite=policy.overwrite, what="data set")  # it may have appeared meanwhile
    _prune(root, keep={f for item in items for f in item.files})
    write_manifest(root / MANIFEST, manifest)
    if items_csv:
        atomic_write_text(root / MANIFEST_CSV, _items_csv(items, prov))
    shutil.rmtree(root / _JOURNAL)
    with atomic_dir(out) as tmp:
        os.replace(root, tmp)  # the staged folder becomes the (empty) temporary one, then replaces out at once
    return ReleaseResult(out=out, items=tuple(items), manifest=out / MANIFEST, audit=outcome, resumed=resumed)


# ---------------------------------------------------------------------------------- the memorization audit side


@dataclass(frozen=True)
class AuditSettings:
    """Settings of the memorization audit (``gan.metrics.audit``) that a release or an evaluation runs.

    Args:
        quantile: held-out quantile that sets the near-copy threshold.
        cells: most k-means cells of the data-copying test (fewer when the sets are small, see
            :func:`copying_cells`).
        min_cell: fewest held-out and generated samples for a cell to count in C_T.
        alpha: significance level of the near-copy excess test.
        seed: k-means seed.
        batch_size: images per feature / LPIPS batch.
    """

    quantile: float = 0.01
    cells: int = 10
    min_cell: int = 20
    alpha: float = 0.01
    seed: int = 0
    batch_size: int = 32


#: The rule of :func:`copying_cells`, as recorded in reports and manifests.
CELLS_RULE = ("min(cells, n // min_cell, n_train) with n the smaller of the held-out and generated counts, "
              "halved until k-means leaves a cell with min_cell of both (1 cell = the global test)")


def copying_cells(settings: AuditSettings, *, n_train: int, n_heldout: int, n_generated: int, hint: str = "") -> int:
    """Cells of the data-copying test for these set sizes: ``min(cells, n // min_cell, n_train)``, at least 1.

    ``n`` is the smaller of the held-out and generated counts; with that many cells each can hold ``min_cell`` of
    both sets on average (the paper's tau = 20 / m), so small sets get a coarser partition instead of no test at
    all; one cell is the global, unpartitioned test. :func:`memorization_audit` halves the cells again when k-means
    still leaves no cell with ``min_cell`` of both.

    Args:
        settings: the audit settings (``cells``, ``min_cell``).
        n_train: training samples.
        n_heldout: held-out samples.
        n_generated: generated samples.
        hint: what to change when the sets are too small, in the caller's terms (e.g. its CLI flags).

    Raises:
        ValueError: fewer than ``min_cell`` held-out or generated samples (even one cell cannot be used).
    """
    n = min(n_heldout, n_generated)
    if n < settings.min_cell:
        raise ValueError(f"the data-copying test needs at least min_cell={settings.min_cell} held-out and generated "
                         f"samples, got {n_heldout} held-out and {n_generated} generated"
                         + (f"; {hint}" if hint else ""))
    return max(1, min(settings.cells, n // settings.min_cell, n_train))


def memorization_audit(
    train: torch.Tensor,
    heldout: torch.Tensor,
    generated: torch.Tensor,
    *,
    names: Sequence[str],
    settings: AuditSettings,
    report_dir: Path,
    extractor: FeatureExtractor | None = None,
    protocol: FIDProtocol | str = FIDProtocol.PYTORCH_FID,
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    pair_images: Callable[[MemorizationReport], np.ndarray | None] | None = None,
    hint: str = "",
) -> tuple[MemorizationReport, AuditOutcome]:
    """Run the memorization audit with the data-copying cells adapted to the set sizes and save its report.

    Args:
        train: training features (N, D) or images (N, C, H, W).
        heldout: held-out real features or images (never seen by the generator).
        generated: generated features or images.
        names: a name for each generated row (shown for the flagged ones).
        settings: audit settings.
        report_dir: folder for ``memorization.json`` and the PNGs.
        extractor: the features' extractor (its protocol record, with the weights stamp, goes into the report).
        protocol: feature pre-processing protocol.
        lpips: per-pair LPIPS to re-rank neighbours (needs images).
        pair_images: returns the (p, 2, C, H, W) uint8 images of the report's closest pairs when they were not
            kept (features given); None leaves the pairs PNG out.
        hint: what to change when the sets are too small, in the caller's terms.
    """
    n_train, n_heldout, n_gen = (int(x.shape[0]) for x in (train, heldout, generated))
    if len(names) != n_gen:
        raise ValueError(f"memorization_audit: {len(names)} names for {n_gen} generated samples")
    cells = copying_cells(settings, n_train=n_train, n_heldout=n_heldout, n_generated=n_gen, hint=hint)
    while True:
        try:
            report = audit(train, heldout, generated, extractor=extractor, protocol=protocol, lpips=lpips,
                           batch_size=settings.batch_size, quantile=settings.quantile, n_cells=cells,
                           min_cell=settings.min_cell, alpha=settings.alpha, seed=settings.seed)
            break
        except ValueError:
            if cells == 1:
                raise
            cells //= 2  # k-means left no cell with min_cell of both sets: a coarser partition
    if report.protocol is None and extractor is not None:
        report.protocol = protocol_record(protocol, extractor)
    if report.pair_images is None and pair_images is not None:
        report.pair_images = pair_images(report)
    written = report.save(report_dir)
    d = report.to_dict()
    record = dict(report.protocol or {})
    flagged = tuple(names[i] for i in report.flagged)
    summary = {
        "near_copy_fraction": d["near_copy_fraction"], "n_near_copies": d["n_near_copies"],
        "heldout_flag_rate": d["heldout_flag_rate"], "excess_p_value": d["excess_p_value"],
        "feature_threshold": d["feature_threshold"], "lpips_threshold": d["lpips_threshold"],
        "data_copying_test": d["data_copying_test"],
        "cells": {"requested": settings.cells, "used": cells, "min_cell": settings.min_cell, "rule": CELLS_RULE},
        "feature_protocol": record or None,
    }
    outcome = AuditOutcome(passed=bool(report.passed), summary=summary, flagged=flagged, reasons=tuple(report.reasons),
                           files={k: v.relative_to(report_dir).as_posix() for k, v in written.items()},
                           comparable=bool(record.get("comparable", True)))
    return report, outcome
