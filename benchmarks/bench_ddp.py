"""DDP scaling on CPU: a small 2D CycleGAN trained by 1 process vs 2 processes (gloo on 127.0.0.1), per strategy.

Every run is a SUBPROCESS of this script (``--worker``) with a timeout, never in-process: the 1-process baseline is a
plain single-device Trainer; a 2-process run starts both ranks itself, as torchrun does (``LOCAL_RANK``,
``NODE_RANK``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``; Lightning then joins them instead of launching its
own), each in its own process group so a hang is killed whole. All ranks run one torch thread (``OMP_NUM_THREADS=1``),
so 2 processes use 2 cores where the baseline uses one.

Data: phantom patients (:func:`data.phantoms.make_patient`, written with nibabel) through the project's
``VolumeTranslationDataModule`` (CT -> MR unpaired, 2D crops), ``num_workers=0``. Both runs see the same GLOBAL batch
(``--global-batch``): the 2-process run gives each rank half of it. The datamodules' ``batch_size`` is becoming the
global batch (per rank ``batch_size // world_size``); this bench asks a datamodule built with a stand-in 2-rank
trainer how many samples a rank gets, and passes the global batch (new meaning) or half of it (old meaning, per rank)
accordingly, so it measures the same work either way; the ranks report the batch they saw and the row says which
meaning was found.

Timing: a callback starts the clock at batch ``--warmup`` and stops it after ``--steps`` more (each rank; the slowest
rank counts), giving images/s of the global batch; each configuration runs ``--repeats`` times in rotating order and
its fastest run counts. Rows: per strategy in :data:`STRATEGIES`, 2-process images/s
against twice the 1-process rate (the ideal), so the ratio is the scaling efficiency
``(2-proc throughput) / (2 x 1-proc throughput)``; and ``ddp_gan`` against ``ddp_find_unused_parameters_true``.
A strategy that is not registered (``ddp_gan`` lives in ``gan.models.strategy``) gives a row saying so. On a 2-core
host shared with other jobs the efficiency is bounded by what the others take (the rows record the load).

    python benchmarks/bench_ddp.py [--global-batch 8] [--size 64] [--steps 40] [--warmup 5] [--repeats 3] \
        [--strategies ddp_find_unused_parameters_true ddp_gan] [--timeout 300]
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import harness

STRATEGIES = ["ddp_find_unused_parameters_true", "ddp_gan"]
QUICK = ["--steps", "20", "--warmup", "3", "--repeats", "2", "--timeout", "240"]  # run_all.py --quick
HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
SHAPE = (80, 80, 40)  # phantom volume (I, J, K): 40 axial slices per patient


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--global-batch", type=int, default=8, help="samples per optimiser step over all ranks")
    ap.add_argument("--size", type=int, default=64, help="2D crop side")
    ap.add_argument("--steps", type=int, default=40, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each configuration, in rotating order; the "
                    "fastest counts (the least disturbed by other jobs)")
    ap.add_argument("--patients", type=int, default=8, help="phantom patients written")
    ap.add_argument("--features", type=int, default=8, help="generator and discriminator base filters")
    ap.add_argument("--blocks", type=int, default=2, help="generator residual blocks")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per run before it is killed")
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES, help="2-process strategies to measure")
    # what a run (subprocess) is told; not for the command line
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--batch-arg", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return ap


def data_settings(size: int) -> dict[str, Any]:
    """The datamodule's settings apart from ``batch_size`` (shared by the probe and the runs).

    Args:
        size: 2D crop side.
    """
    return dict(source="ct", target="mr", paired=False, patch_size=(size, size), val_fraction=0.25, test_fraction=0.0,
                seed=0, augment=False, num_workers=0)


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The small 2D CycleGAN's settings.

    Args:
        args: the parsed command line.
    """
    return dict(generator={"features": args.features, "n_blocks": args.blocks},
                discriminator={"features": args.features, "layers": 2}, evaluation={"inference_batch": 8})


def strategy_available(name: str) -> str | None:
    """None when ``name`` is a registered Lightning strategy after importing ``gan.models``, else why not.

    Args:
        name: strategy name.
    """
    from lightning.pytorch.strategies import StrategyRegistry

    try:
        importlib.import_module("gan.models")  # registers the project's strategies
    except Exception as e:  # noqa: BLE001 - a half-written module must give a row, not a crash
        return f"importing gan.models failed: {type(e).__name__}: {e}"
    if name not in StrategyRegistry and name == "ddp_gan":
        if importlib.util.find_spec("gan.models.strategy") is None:
            return "gan/models/strategy.py does not exist yet"
        try:
            importlib.import_module("gan.models.strategy")
        except Exception as e:  # noqa: BLE001
            return f"importing gan.models.strategy failed: {type(e).__name__}: {e}"
    if name not in StrategyRegistry:
        return f"strategy {name!r} is not registered (importing gan.models does not register it)"
    return None


# -- the parent: data, batch meaning, runs, rows --------------------------------------------------------------------

def write_phantoms(root: Path, n: int) -> Path:
    """``n`` phantom patients as ``root/<id>/{ct,mr}.nii.gz`` (as the tests' fixture writes them).

    Args:
        root: folder to write into.
        n: number of patients.
    """
    import nibabel as nib

    from data.phantoms import make_patient

    for i in range(n):
        p = make_patient(100 + i, shape=SHAPE, patient_id=f"p{i}")
        d = root / p.patient_id
        d.mkdir(parents=True)
        for key, v in (("ct", p.ct), ("mr", p.mr)):
            nib.save(nib.Nifti1Image(v.array, v.affine), d / f"{key}.nii.gz")
    return root


def batch_argument(data: Path, global_batch: int, world: int, size: int) -> tuple[int, str]:
    """The ``batch_size`` to give the datamodule so that ``world`` ranks together take ``global_batch``, and which
    meaning of ``batch_size`` the datamodule has (``"global"`` or ``"per-rank"``).

    Asks a datamodule with a stand-in trainer of ``world`` ranks for rank 0's first training batch.

    Args:
        data: the patients' folder.
        global_batch: the global batch.
        world: number of ranks.
        size: 2D crop side.
    """
    if world == 1:
        return global_batch, "global"
    from data.volumes import VolumeTranslationDataModule

    dm = VolumeTranslationDataModule(str(data), batch_size=global_batch, **data_settings(size))
    dm.trainer = SimpleNamespace(global_rank=0, world_size=world, current_epoch=0, training=True,  # type: ignore
                                 _accelerator_connector=SimpleNamespace(use_distributed_sampler=False))
    dm.setup("fit")
    n = int(next(iter(dm.train_dataloader()))["ct"].shape[0])
    if n * world == global_batch:
        return global_batch, "global"
    if n == global_batch:
        return global_batch // world, "per-rank"
    raise RuntimeError(f"a rank of {world} got {n} samples from batch_size={global_batch}: neither meaning")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: argparse.Namespace, data: Path, out: Path, *, strategy: str, devices: int,
           batch_arg: int) -> dict[str, Any]:
    """Run one training (``devices`` rank processes of this script) and gather what the ranks report.

    Returns ``{"ok": True, "ranks": [...], "wall": s}`` or ``{"ok": False, "why": ..., "log": tail}``.

    Args:
        args: the parsed command line.
        data: the patients' folder.
        out: an empty folder for the ranks' reports.
        strategy: Lightning strategy (``"auto"`` for the 1-process baseline).
        devices: number of ranks.
        batch_arg: the datamodule's ``batch_size``.
    """
    out.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    if devices > 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), GLOO_SOCKET_IFNAME="lo", NODE_RANK="0",
                   WORLD_SIZE=str(devices))
    cmd = [sys.executable, str(HERE), "--worker", "--data", str(data), "--out", str(out), "--strategy", strategy,
           "--devices", str(devices), "--batch-arg", str(batch_arg), "--size", str(args.size), "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--features", str(args.features), "--blocks",
           str(args.blocks), "--global-batch", str(args.global_batch)]
    procs, logs = [], []
    t0 = time.perf_counter()
    for rank in range(devices):
        log = open(out / f"rank{rank}.log", "w+")  # noqa: SIM115 - closed below
        rank_env = {**env, "LOCAL_RANK": str(rank)} if devices > 1 else env
        procs.append(subprocess.Popen(cmd, cwd=str(out), env=rank_env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))  # own process group: a hang is killed whole
        logs.append(log)
    why = None
    try:
        for p in procs:
            left = args.timeout - (time.perf_counter() - t0)
            try:
                p.wait(timeout=max(left, 1.0))
            except subprocess.TimeoutExpired:
                why = f"timed out after {args.timeout:.0f} s (hang?)"
                break
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        tails = []
        for log in logs:
            log.seek(0)
            tails.append(log.read()[-3000:])
            log.close()
    wall = time.perf_counter() - t0
    if why is None and any(p.returncode for p in procs):
        why = f"exit status {[p.returncode for p in procs]}"
    reports = [out / f"rank{r}.json" for r in range(devices)]
    if why is None and not all(f.exists() for f in reports):
        why = "a rank wrote no report"
    if why is not None:
        return {"ok": False, "why": why, "log": "\n".join(tails), "wall": wall}
    return {"ok": True, "ranks": [json.loads(f.read_text()) for f in reports], "wall": wall}


def _rate(run: dict[str, Any], args: argparse.Namespace) -> tuple[float, int, float]:
    """(images/s of the global batch, global batch seen, largest peak RSS of a rank in MiB) of a finished run."""
    ranks = run["ranks"]
    seen = sum(r["batch"] for r in ranks)
    elapsed = max(r["elapsed"] for r in ranks)
    return seen * args.steps / elapsed, seen, max(r["maxrss_mib"] for r in ranks)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The 1-process baseline and the 2-process run of each strategy, with the machine load of each.

    Args:
        args: the parsed command line.
    """
    if args.global_batch % 2:
        raise ValueError(f"--global-batch must be even (2 ranks share it), got {args.global_batch}")
    res: dict[str, Any] = {"runs": {}, "notes": {}}
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        data = write_phantoms(Path(tmp) / "patients", args.patients)
        try:
            batch2, meaning = batch_argument(data, args.global_batch, 2, args.size)
        except Exception as e:  # noqa: BLE001 - assume the new meaning; the ranks report what they saw
            batch2, meaning = args.global_batch, f"global (assumed: the probe failed: {type(e).__name__}: {e})"
        res["meaning"] = meaning
        plan = [("1proc", "auto", 1, args.global_batch)]
        for s in args.strategies:
            why = strategy_available(s)
            if why is None:
                plan.append((s, s, 2, batch2))
            else:
                res["notes"][s] = f"skipped: {why}"
        for r in range(args.repeats):
            for key, strategy, devices, batch_arg in plan[r % len(plan):] + plan[: r % len(plan)]:
                if key in res["runs"] and not res["runs"][key]["ok"]:
                    continue  # failed once: do not wait for it again
                load = harness.MachineLoad()
                run = launch(args, data, Path(tmp) / f"{key}_{r}", strategy=strategy, devices=devices,
                             batch_arg=batch_arg)
                run["load"] = load.stop()
                state = f"{_rate(run, args)[0]:.2f} img/s" if run["ok"] else f"FAILED ({run['why']})"
                print(f"  {key} run {r + 1}/{args.repeats}: {state}, {run['wall']:.0f} s; {run['load']}", flush=True)
                if not run["ok"]:
                    print(run["log"], flush=True)
                best = res["runs"].get(key)
                if best is None or not run["ok"] or _rate(run, args)[0] > _rate(best, args)[0]:
                    res["runs"][key] = run
    return res


def to_rows(res: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The result rows of :func:`measure`.

    Args:
        res: what :func:`measure` returned.
        args: the parsed command line.
    """
    setting = (f"CycleGAN 2D {args.size}px (features {args.features}, {args.blocks} blocks), global batch "
               f"{args.global_batch}, {args.steps} steps after {args.warmup}, best of {args.repeats} run(s), CPU "
               f"gloo, 1 thread per rank; "
               f"datamodule batch_size meaning: {res['meaning']}")
    base_run = res["runs"]["1proc"]
    case = "{s}: 2 processes vs 1, scaling efficiency"
    if not base_run["ok"]:
        return [harness.skipped_row("ddp", case.format(s=s), f"1-process baseline FAILED: {base_run['why']}")
                for s in args.strategies]
    one, seen1, mem1 = _rate(base_run, args)
    ideal = dict(baseline_name="2 x 1-process rate (ideal)", baseline=2 * one, unit="img/s")
    out, rates = [], {}
    for s in args.strategies:
        if s in res["notes"]:
            out.append(harness.skipped_row("ddp", case.format(s=s), res["notes"][s], **ideal))
            continue
        run = res["runs"][s]
        if not run["ok"]:
            out.append(harness.skipped_row("ddp", case.format(s=s), f"FAILED: {run['why']}", **ideal))
            continue
        two, seen2, mem2 = _rate(run, args)
        rates[s] = two
        batch_note = "" if seen2 == args.global_batch else f" (ranks saw {seen2} per step, not {args.global_batch})"
        out.append(harness.row(
            "ddp", case.format(s=s), **ideal, result=two,
            detail=(f"{setting}; 1 process {one:.2f} img/s, 2 processes {two:.2f} img/s = {two / one:.2f}x"
                    f"{batch_note}; peak RSS per rank {mem2:.0f} MiB (1 process {mem1:.0f} MiB); during the "
                    f"2-process run: {run['load']}"),
            speedup=two / one, one_process=one, global_batch_seen=seen2, peak_mem_mib=mem2,
            peak_mem_mib_baseline=mem1, machine_run=run["load"].as_dict()))
    if len(rates) == 2 and "ddp_gan" in rates and "ddp_find_unused_parameters_true" in rates:
        out.append(harness.row(
            "ddp", "ddp_gan vs find_unused_parameters, 2 processes", baseline_name="ddp_find_unused_parameters_true",
            baseline=rates["ddp_find_unused_parameters_true"], result=rates["ddp_gan"], unit="img/s",
            detail="the same 2-process runs as the rows above"))
    return out


def rows(quick: bool = False, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Result rows for ``run_all.py`` (``quick``: fewer steps).

    Args:
        quick: fewer steps.
        argv: further command-line arguments.
    """
    args = _parser().parse_args((QUICK if quick else []) + list(argv or []))
    return to_rows(measure(args), args)


# -- a run (subprocess): one rank -----------------------------------------------------------------------------------

def worker(args: argparse.Namespace) -> int:
    """Train the CycleGAN for ``warmup + steps`` batches on this rank and write ``rank<r>.json``.

    Args:
        args: the parsed command line (``--worker`` mode).
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import lightning as L
    import torch

    import gan.models  # noqa: F401 - registers the project's strategies
    from data.volumes import VolumeTranslationDataModule
    from gan.models import CycleGAN

    if args.strategy == "ddp_gan":
        importlib.import_module("gan.models.strategy")
    torch.set_num_threads(1)
    total = args.warmup + args.steps

    class StepTimer(L.Callback):
        """Clock from the start of batch ``warmup`` to the end of batch ``warmup + steps - 1``, then stop."""

        def __init__(self) -> None:
            self.n, self.t0, self.elapsed, self.batches = 0, 0.0, 0.0, []

        def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                                 batch_idx: int) -> None:
            self.batches.append(int(batch["ct"].shape[0]))
            if self.n == args.warmup:
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            self.n += 1
            if self.n == total:
                self.elapsed = time.perf_counter() - self.t0
                trainer.should_stop = True

    L.seed_everything(0, verbose=False)
    dm = VolumeTranslationDataModule(str(args.data), batch_size=args.batch_arg, **data_settings(args.size))
    model = CycleGAN(**model_settings(args))
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=args.devices, strategy=args.strategy, max_epochs=10_000,
                        use_distributed_sampler=False, enable_checkpointing=False, logger=False,
                        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    if timer.n < total:
        raise RuntimeError(f"training stopped after {timer.n} of {total} batches")
    report = {"rank": trainer.global_rank, "world": trainer.world_size, "elapsed": timer.elapsed,
              "batch": timer.batches[-1], "batches": timer.batches,
              "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (args.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its rows (or, with ``--worker``, be one rank of a run).

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    if args.worker:
        return worker(args)
    print(harness.format_table(to_rows(measure(args), args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
