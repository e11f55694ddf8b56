"""Training throughput of the Lightning modules vs a plain PyTorch loop with the same nets, losses and optimisers.

Both run in the same process on the same in-memory samples (random tensors in [-1, 1], so no file I/O) through the
same DataLoader, after a warm-up, alternating plain and Lightning runs ``--repeats`` times (medians reported).
Prints images/s of each, the ratio Lightning / plain (target: Lightning's overhead <= 10%, i.e. ratio >= 0.9) and
the peak memory of each side (CUDA: max allocated; CPU: peak RSS of the process during that run, reset before it).

    python benchmarks/bench_training.py [--model cyclegan|pix2pix|both] [--size 64] [--batch 4] [--steps 30] \
        [--repeats 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, NamedTuple

import harness
import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from gan.losses import cycle_loss, l1_loss
from gan.models import CycleGAN, Pix2Pix


class Batches(Dataset):
    """Fixed random samples shaped like the datamodule's (keys by modality, window dicts)."""

    def __init__(self, n: int, size: int, keys: tuple[str, str]) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = [{k: torch.rand(1, size, size, generator=g) * 2 - 1 for k in keys} for _ in range(n)]
        for it in self.items:
            it["body_mask"] = torch.ones(1, size, size)
            it["window"] = {k: {"low": -1024.0, "high": 3000.0, "log": False} for k in keys}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _pool(m: CycleGAN, name: str) -> Any:
    """The module's image pool ``name`` of its (only) chunk."""
    return m.pool(name, 0)


def plain_cyclegan_step(m: CycleGAN, opt_g, opt_d, a: torch.Tensor, b: torch.Tensor) -> None:
    """The CycleGAN update written as a plain loop (same nets, losses, pools, order)."""
    hp = m.hparams
    for p in list(m.discriminator_a.parameters()) + list(m.discriminator_b.parameters()):
        p.requires_grad_(False)
    fake_b, fake_a = m.generator(a), m.generator_ba(b)
    rec_a, rec_b = m.generator_ba(fake_b), m.generator(fake_a)
    adv = m.adversarial.generator_loss
    loss_g = (adv(m.discriminator_b(fake_b)) + adv(m.discriminator_a(fake_a))
              + hp.lambda_cycle * (cycle_loss(rec_a, a) + cycle_loss(rec_b, b)))
    if hp.lambda_identity > 0:
        idt = cycle_loss(m.generator(b), b) + cycle_loss(m.generator_ba(a), a)
        loss_g = loss_g + hp.lambda_identity * hp.lambda_cycle * idt
    loss_g.backward()
    opt_g.step()
    opt_g.zero_grad(set_to_none=True)
    for p in list(m.discriminator_a.parameters()) + list(m.discriminator_b.parameters()):
        p.requires_grad_(True)
    pool_a, pool_b = _pool(m, "a"), _pool(m, "b")
    pooled_b, pooled_a = pool_b.query(fake_b.detach()), pool_a.query(fake_a.detach())
    loss_d = (m.adversarial.discriminator_loss(m.discriminator_b(b), m.discriminator_b(pooled_b))
              + m.adversarial.discriminator_loss(m.discriminator_a(a), m.discriminator_a(pooled_a)))
    loss_d.backward()
    opt_d.step()
    opt_d.zero_grad(set_to_none=True)


def plain_pix2pix_step(m: Pix2Pix, opt_g, opt_d, x: torch.Tensor, y: torch.Tensor) -> None:
    """The pix2pix update written as a plain loop."""
    fake = m.generator(x)
    loss_d = m.adversarial.discriminator_loss(m.discriminator(torch.cat([x, y], 1)),
                                              m.discriminator(torch.cat([x, fake.detach()], 1)))
    loss_d.backward()
    opt_d.step()
    opt_d.zero_grad(set_to_none=True)
    for p in m.discriminator.parameters():
        p.requires_grad_(False)
    loss_g = (m.adversarial.generator_loss(m.discriminator(torch.cat([x, fake], 1)))
              + m.hparams.lambda_l1 * l1_loss(fake, y))
    loss_g.backward()
    opt_g.step()
    opt_g.zero_grad(set_to_none=True)
    for p in m.discriminator.parameters():
        p.requires_grad_(True)


def build(kind: str):
    """The module, its batch keys and the equivalent plain step."""
    if kind == "cyclegan":
        return (CycleGAN(generator={"features": 16, "n_blocks": 6}, discriminator={"features": 16}), ("ct", "mr"),
                plain_cyclegan_step)
    return (Pix2Pix(generator={"num_downs": 6, "features": 16}, discriminator={"features": 16}), ("ct", "pet"),
            plain_pix2pix_step)


QUICK = ["--steps", "20", "--repeats", "1"]  # run_all.py --quick


class Measured(NamedTuple):
    """Medians of one model family (a NamedTuple, so the file also works when loaded outside ``sys.modules``)."""

    plain: float  # images/s
    light: float  # images/s
    plain_mib: float  # peak memory of the plain runs (the largest)
    light_mib: float
    memory_kind: str
    plain_added_mib: float  # how far the peak rose above the memory in use when the run started (the largest)
    light_added_mib: float


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(kind: str, size: int, batch: int, steps: int, device: str, repeats: int = 3) -> Measured:
    """Plain and Lightning images/s for one model family (medians over ``repeats`` alternating runs) and peak memory.

    Both iterate the same DataLoader (collation and the host-to-device copy are part of any training loop) and
    start timing after the same number of warm-up steps.
    """
    warm = 3
    data = Batches((steps + warm) * batch, size, ("ct", "mr") if kind == "cyclegan" else ("ct", "pet"))
    loader = DataLoader(data, batch_size=batch, shuffle=False)
    torch.manual_seed(0)
    m, keys, step = build(kind)
    m = m.to(device).train()
    (opt_g, opt_d), _ = m.configure_optimizers()

    def plain_run() -> float:
        t0 = 0.0
        for i, b in enumerate(loader):
            if i == warm:
                _sync(device)
                t0 = time.perf_counter()
            step(m, opt_g, opt_d, b[keys[0]].to(device, non_blocking=True), b[keys[1]].to(device, non_blocking=True))
        _sync(device)
        return steps * batch / (time.perf_counter() - t0)

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warm:
                _sync(device)
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            _sync(device)
            self.elapsed = time.perf_counter() - self.t0

    def lightning_run() -> float:
        torch.manual_seed(0)
        lm, _, _ = build(kind)
        timer = Timer()
        trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, max_epochs=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, callbacks=[timer])
        trainer.fit(lm, train_dataloaders=loader)
        return steps * batch / timer.elapsed

    plain, light, mem_p, mem_l = [], [], [], []
    kind_of_memory = ""
    for _ in range(repeats):
        meter = harness.PeakMemory(device).start()
        plain.append(plain_run())
        meter.stop()
        mem_p.append(meter)
        meter = harness.PeakMemory(device).start()
        light.append(lightning_run())
        meter.stop()
        mem_l.append(meter)
        kind_of_memory = meter.kind
    return Measured(statistics.median(plain), statistics.median(light), max(m.mib for m in mem_p),
                    max(m.mib for m in mem_l), kind_of_memory, max(m.added_mib for m in mem_p),
                    max(m.added_mib for m in mem_l))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("cyclegan", "pix2pix", "both"), default="both")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="alternating plain/Lightning runs; medians are reported")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def _kinds(args: argparse.Namespace) -> tuple[str, ...]:
    return ("cyclegan", "pix2pix") if args.model == "both" else (args.model,)


def rows(quick: bool = False, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Result rows for ``run_all.py``: Lightning / plain images/s per model family, with peak memory.

    Args:
        quick: fewer steps, one repeat.
        argv: further command-line arguments.
    """
    args = _parser().parse_args((QUICK if quick else []) + list(argv or []))
    out = []
    for k in _kinds(args):
        m = measure(k, args.size, args.batch, args.steps, args.device, args.repeats)
        out.append(harness.row(
            "training", f"{k} Lightning module, {args.size}px batch {args.batch}", baseline_name="plain PyTorch loop",
            baseline=m.plain, result=m.light, unit="img/s", target=0.9,
            detail=f"{args.steps} steps after 3 warm-up, median of {args.repeats} alternating runs, {args.device}; "
                   f"peak memory plain {m.plain_mib:.0f} MiB (+{m.plain_added_mib:.0f} during the run), Lightning "
                   f"{m.light_mib:.0f} MiB (+{m.light_added_mib:.0f}) ({m.memory_kind})",
            peak_mem_mib=m.light_mib, peak_mem_mib_baseline=m.plain_mib, peak_added_mib=m.light_added_mib,
            peak_added_mib_baseline=m.plain_added_mib, memory_kind=m.memory_kind))
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the comparison and print a table; returns the ratios."""
    args = _parser().parse_args(argv)
    ratios = {}
    print(f"{'model':9s} {'plain img/s':>12s} {'Lightning img/s':>16s} {'ratio':>7s} {'peak MiB plain/L':>17s}   "
          f"({args.size}px, batch {args.batch}, {args.device})")
    kind_of_memory = ""
    for k in _kinds(args):
        m = measure(k, args.size, args.batch, args.steps, args.device, args.repeats)
        ratios[k] = m.light / m.plain
        kind_of_memory = m.memory_kind
        print(f"{k:9s} {m.plain:12.1f} {m.light:16.1f} {m.light / m.plain:7.3f} "
              f"{m.plain_mib:8.0f}/{m.light_mib:<8.0f} (+{m.plain_added_mib:.0f}/+{m.light_added_mib:.0f} in the run)")
    print(f"peak memory: {kind_of_memory} during each run (+: above the memory in use when it started)")
    return ratios


if __name__ == "__main__":
    main()
