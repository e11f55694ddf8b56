"""StyleGAN2 training throughput: the Lightning module ``gan.models.StyleGAN2`` vs a plain PyTorch loop, plus
generator inference tiles/s.

Both run in the same process on the same in-memory tiles (random tensors in [-1, 1], no file I/O) through the same
DataLoader, after the same warm-up iterations, alternating plain and Lightning runs ``--repeats`` times (which goes
first alternates too). Each run starts from the same initial weights (a fresh module built with the same seed).
Prints the median images/s of each, the median over the run pairs of the ratio Lightning / plain (target >= 0.95),
the same ratio from process CPU time, s/kimg, the EMA generator's inference tiles/s (no grad, const noise) and peak
memory.

What is identical per iteration (the plain loop is ``PlainStyleGAN2.step``, written from ``gan.nets.stylegan2`` and
``gan.losses.regularizers`` only; it calls nothing of the module):

* the networks (``Generator``/``Discriminator`` with the module's sizes, loaded with its initial weights), Adam
  with the lazy-regularisation rescaling (lr * c, betas ** c, c = interval / (interval + 1)) for G and D;
* the phases in the module's order: G main (style mixing, ADA on the fakes, ``g_nonsaturating``), G reg every
  ``pl_interval`` iterations (``path_length_penalty`` on batch // pl_batch_shrink fakes, x interval, then
  ``update_pl_mean``), D main (``d_logistic_fake`` + ``d_logistic_real`` on augmented fakes/reals, ADA observes
  D(real)), D reg every ``r1_interval`` iterations (``r1_penalty`` x interval); the other network's parameters
  frozen during each phase (what ``toggle_optimizer`` does); one optimiser step per phase;
* the random draws: one ``torch.Generator`` per (iteration, phase) seeded from (seed, iteration, phase, chunk) as
  the module does, so both draw the same latents, noise, mixing cut-offs and ADA parameters and do the same
  FLOPs (checked: the plain loop's trained G, EMA G, ``pl_mean`` and ADA p are compared with the module's);
* the bookkeeping after the steps: ADA's p update every ``d_augment.interval`` iterations (``AdaController``),
  the image counter, the mapping network's ``w_avg`` (``w_stats`` / ``update_w_avg``), the generator EMA with
  ``beta = 0.5 ** (batch / (ema_kimg * 1000))``, and running sums of the detached losses.

What only the Lightning side does (its overhead, which the ratio measures): the Trainer's loop and hooks, the
``LightningOptimizer``/precision-plugin step wrappers, ``toggle_optimizer``'s bookkeeping, the per-batch global
``seed_rng``, ``log_losses``/``self.log`` and the module's per-phase loss accumulation.

ADA starts at ``--ada-p`` (0.25; ADA's own start, p = 0, would augment nothing over a short run) and moves as in
training. Timed: iterations 4 to 19 (``--warmup 4 --steps 16``), one full period of the R1 interval (16) and four of
the path-length interval (4), so images/s include the lazy regularisation at its real frequency; keep ``--steps`` a
multiple of 16 for that.

Threads: one by default. On a 2-core host shared with other jobs, two torch threads made each iteration 4-8x
slower than one (OpenMP threads waiting on each other when the other jobs take a core); ``--threads 0`` uses torch's
default (all cores) on a dedicated machine. The wall-clock ratio is as noisy as the host: the CPU-time ratio and the
best-run ratio beside it tell a slower Lightning run from a descheduled one.

Durations, 1 thread on 2 shared CPU cores (torch 2.14, Lightning 2.6): defaults (64 px, channel_base 2048,
channel_max 256; about 0.8 s per iteration) about 2 min; ``--full --sizes 64`` (the paper's 64 px network, about 9 s
per iteration) 20-25 min; ``--full`` adds 256 px (about 26 s per iteration without regularisation): about 1 h more.

    python benchmarks/bench_stylegan2_training.py [--sizes 64] [--full] [--batch 4] [--steps 16] [--warmup 4] \
        [--repeats 3] [--channel-base 2048] [--channel-max 256] [--z-dim 512] [--mapping-layers 8] [--classes 0] \
        [--ada-p 0.25] [--device cpu] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import gc
import logging
import math
import statistics
import time
import warnings
from typing import Any, NamedTuple

import harness
import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from gan.augment import AdaController, AdaptiveAugment
from gan.losses.regularizers import (
    d_logistic_fake,
    d_logistic_real,
    g_nonsaturating,
    path_length_penalty,
    r1_penalty,
    update_pl_mean,
)
from gan.models import StyleGAN2
from gan.nets.stylegan2 import Discriminator, Generator

SEED = 0
QUICK = ["--repeats", "2"]  # run_all.py --quick: two pairs of runs
_G_MAIN, _G_REG, _D_MAIN, _D_REG = 1, 2, 3, 4  # the module's phase streams
_QUIET = (".*(does not have many workers|smaller than the logging interval|no `val_dataloader`|module\\(s\\) in eval "
          "mode|LeafSpec).*")


class Tiles(Dataset):
    """Fixed random tiles shaped like the tile datamodule's samples (``image`` in [-1, 1], ``label``)."""

    def __init__(self, n: int, size: int, classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = [{"image": torch.rand(3, size, size, generator=g) * 2 - 1,
                       "label": int(torch.randint(max(classes, 1), (), generator=g))} for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def build(args: argparse.Namespace, size: int) -> StyleGAN2:
    """A fresh module (seeded, so every build has the same initial weights)."""
    torch.manual_seed(SEED)
    return StyleGAN2(resolution=size, class_names=[f"c{k}" for k in range(args.classes)] or None,
                     network={"z_dim": args.z_dim, "w_dim": args.z_dim, "mapping_layers": args.mapping_layers,
                              "channel_base": args.channel_base, "channel_max": args.channel_max},
                     d_augment={"kind": "ada", "initial_p": args.ada_p}, evaluation={"lpips_pretrained": False},
                     seed=SEED)


def derived_seed(*keys: int) -> int:
    """A 63-bit seed from (SEED, keys): the same function of the keys as the module's phase generators."""
    state = np.random.SeedSequence([SEED, *[int(k) for k in keys]]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 ^ int(state[1])) % 2**63


def _freeze(params: list[nn.Parameter], frozen: bool) -> None:
    for p in params:
        p.requires_grad_(not frozen)


class PlainStyleGAN2:
    """The module's training iteration as a plain PyTorch loop (one chunk per batch, the module's default).

    Args:
        ref: a freshly built module: only its hyperparameters and initial weights are read.
        device: where to train.
    """

    def __init__(self, ref: StyleGAN2, device: torch.device) -> None:
        hp = ref.hparams
        net, self.reg, aug = hp["network"], hp["regularization"], hp["d_augment"]
        opt = hp["optim"]
        self.num_classes, self.ema_kimg, self.device = ref.num_classes, float(hp["ema_kimg"]), device
        self.G = Generator(resolution=hp["resolution"], img_channels=hp["img_channels"], z_dim=net["z_dim"],
                           w_dim=net["w_dim"], num_classes=self.num_classes, mapping_layers=net["mapping_layers"],
                           channel_base=net["channel_base"], channel_max=net["channel_max"],
                           fused_modconv=net["fused_modconv"])
        self.D = Discriminator(resolution=hp["resolution"], img_channels=hp["img_channels"],
                               num_classes=self.num_classes, channel_base=net["channel_base"],
                               channel_max=net["channel_max"], mbstd_group=net["mbstd_group"],
                               mapping_layers=net["mapping_layers"])
        self.G.load_state_dict(ref.generator.state_dict())
        self.D.load_state_dict(ref.discriminator.state_dict())
        self.G.to(device).train()
        self.D.to(device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.augment = AdaptiveAugment(p=aug["initial_p"]).to(device)
        self.ada = AdaController(target=aug["target"], interval=aug["interval"],
                                 speed_kimg=aug["speed_kimg"]).to(device)
        self.ada_interval = int(aug["interval"])
        self.pl_mean = torch.zeros((), device=device)
        self.nimg = 0
        self.g_params, self.d_params = list(self.G.parameters()), list(self.D.parameters())

        def adam(params: list[nn.Parameter], interval: int) -> torch.optim.Optimizer:
            c = interval / (interval + 1) if interval > 0 else 1.0
            b1, b2 = opt["betas"]
            return torch.optim.Adam(params, lr=opt["lr"] * c, betas=(b1 ** c, b2 ** c), eps=opt["eps"])

        self.opt_g = adam(self.g_params, self.reg["pl_interval"] if self.reg["pl_weight"] > 0 else 0)
        self.opt_d = adam(self.d_params, self.reg["r1_interval"] if self.reg["r1_gamma"] > 0 else 0)
        self.loss_sums: dict[str, Tensor] = {}

    def _gen(self, it: int, phase: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(derived_seed(it, phase, 0))

    def _labels(self, n: int, gen: torch.Generator) -> Tensor | None:
        return torch.randint(self.num_classes, (n,), generator=gen, device=self.device) if self.num_classes else None

    def _generate(self, n: int, c: Tensor | None, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        G = self.G
        ws = G.mapping(torch.randn(n, G.z_dim, generator=gen, device=self.device), c)
        if self.reg["style_mixing"] > 0:
            z2 = torch.randn(n, G.z_dim, generator=gen, device=self.device)
            draw = torch.rand((), generator=gen, device=self.device)
            cut = int(torch.randint(1, G.num_ws, (), generator=gen, device=self.device))
            if float(draw) < self.reg["style_mixing"]:
                ws = torch.cat([ws[:, :cut], G.mapping(z2, c)[:, cut:]], dim=1)
        return G.synthesis(ws, noise_mode="random", generator=gen), ws

    def _log(self, name: str, value: Tensor, n: int) -> None:
        v = value.detach() * n
        self.loss_sums[name] = self.loss_sums[name] + v if name in self.loss_sums else v

    def step(self, it: int, real: Tensor, label: Tensor) -> None:
        """One iteration: G main, [G reg], D main, [D reg], then ADA, image count, w_avg and EMA."""
        n, reg = real.shape[0], self.reg
        lab = label if self.num_classes else None
        _freeze(self.d_params, True)  # 1. G main
        gen = self._gen(it, _G_MAIN)
        c = self._labels(n, gen)
        fake, ws = self._generate(n, c, gen)
        loss = g_nonsaturating(self.D(self.augment(fake, generator=gen), c))
        loss.backward()
        self._log("loss_g", loss, n)
        w_sums = self.G.mapping.w_stats(ws, c)
        self.opt_g.step()
        self.opt_g.zero_grad(set_to_none=True)
        if reg["pl_weight"] > 0 and reg["pl_interval"] > 0 and it % reg["pl_interval"] == 0:  # 2. G reg
            gen = self._gen(it, _G_REG)
            m = max(1, n // reg["pl_batch_shrink"])
            fake, ws = self._generate(m, self._labels(m, gen), gen)
            pl = path_length_penalty(fake, ws, self.pl_mean, decay=reg["pl_decay"], weight=reg["pl_weight"],
                                     generator=gen)
            (pl.penalty * reg["pl_interval"]).backward()
            self.opt_g.step()
            self.opt_g.zero_grad(set_to_none=True)
            update_pl_mean(self.pl_mean, pl.mean_length, decay=reg["pl_decay"])
            self._log("pl_penalty", pl.penalty, n)
        _freeze(self.d_params, False)
        _freeze(self.g_params, True)  # 3. D main
        gen = self._gen(it, _D_MAIN)
        c = self._labels(n, gen)
        with torch.no_grad():
            fake, _ = self._generate(n, c, gen)
        logits_fake = self.D(self.augment(fake, generator=gen), c)
        logits_real = self.D(self.augment(real, generator=gen), lab)
        loss = d_logistic_fake(logits_fake) + d_logistic_real(logits_real)
        loss.backward()
        self._log("loss_d", loss, n)
        self.ada.observe(logits_real.detach())
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        if reg["r1_gamma"] > 0 and reg["r1_interval"] > 0 and it % reg["r1_interval"] == 0:  # 4. D reg
            gen = self._gen(it, _D_REG)
            real_in = real.detach().requires_grad_(True)
            pen = r1_penalty(real_in, self.D(self.augment(real_in, generator=gen), lab), gamma=reg["r1_gamma"])
            (pen * reg["r1_interval"]).backward()
            self.opt_d.step()
            self.opt_d.zero_grad(set_to_none=True)
            self._log("r1_penalty", pen, n)
        _freeze(self.g_params, False)
        if (it + 1) % self.ada_interval == 0:  # 5. bookkeeping
            self.ada.update(self.augment.p, batch_size=n)
        self.nimg += n
        self.G.mapping.update_w_avg(*w_sums)
        beta = 0.5 ** (n / max(self.ema_kimg * 1000, 1e-8))
        with torch.no_grad():
            for e, p in zip(self.G_ema.parameters(), self.G.parameters()):
                e.lerp_(p, 1.0 - beta)
            for e, b in zip(self.G_ema.buffers(), self.G.buffers()):
                e.copy_(b)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall and process CPU seconds since :meth:`start` (CPU time: less disturbed by other jobs on a shared host)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.t0, self.c0, self.wall, self.cpu = device, 0.0, 0.0, 0.0, 0.0

    def start(self) -> None:
        _sync(self.device)
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.c0


class Timer(L.Callback):
    """Clock from the start of batch ``warm`` to the end of training."""

    def __init__(self, warm: int, device: torch.device) -> None:
        self.warm, self.clock = warm, Clock(device)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == self.warm:
            self.clock.start()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock.stop()


class Result(NamedTuple):
    """Medians of one resolution (a NamedTuple: it works even when the file is loaded without registering it in
    sys.modules, where a dataclass would fail)."""

    size: int
    plain: float  # images/s (wall), median over the runs
    light: float  # images/s (wall)
    ratio: float  # median over the pairs of Lightning / plain images/s (wall)
    cpu_ratio: float  # the same from process CPU time
    best_ratio: float  # fastest Lightning run / fastest plain run (the runs least disturbed by other jobs)
    infer: float  # tiles/s
    max_diff: float  # max |plain - Lightning| over G, EMA G, pl_mean and ADA p after the first pair of runs
    g_params: int
    d_params: int
    wall: float
    plain_mib: float  # peak memory of the plain runs (the largest; CUDA max allocated or peak RSS)
    light_mib: float  # the same for the Lightning runs
    memory_kind: str
    plain_added_mib: float  # how far the peak rose above the memory in use when the run started (the largest)
    light_added_mib: float


def _state(G: nn.Module, G_ema: nn.Module, pl_mean: Tensor, p: Tensor) -> list[Tensor]:
    return [t.detach().cpu().clone() for t in (*G.state_dict().values(), *G_ema.state_dict().values(), pl_mean, p)]


def measure(args: argparse.Namespace, size: int, device: torch.device) -> Result:
    """Alternate plain and Lightning runs at one resolution; medians of images/s and the inference tiles/s."""
    t_start = time.perf_counter()
    warm, steps, batch = args.warmup, args.steps, args.batch
    loader = DataLoader(Tiles((warm + steps) * batch, size, args.classes), batch_size=batch, shuffle=False)

    def plain_run() -> tuple[Clock, list[Tensor]]:
        gc.collect()  # the previous run's garbage is not this run's cost
        loop = PlainStyleGAN2(build(args, size), device)
        clock = Clock(device)
        for it, b in enumerate(loader):
            if it == warm:
                clock.start()
            loop.step(it, b["image"].to(device, non_blocking=True), b["label"].to(device, non_blocking=True))
        clock.stop()
        return clock, _state(loop.G, loop.G_ema, loop.pl_mean, loop.augment.p)

    def lightning_run() -> tuple[Clock, list[Tensor], StyleGAN2]:
        gc.collect()
        m = build(args, size)
        timer = Timer(warm, device)
        trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0, callbacks=[timer])
        trainer.fit(m, train_dataloaders=loader)
        assert m.augment_pipe is not None and m.ema is not None
        return timer.clock, _state(m.generator, m.ema.module, m.pl_mean, m.augment_pipe.p), m

    mem_p: list[tuple[float, float]] = []  # (peak, rise over the start) MiB per run
    mem_l: list[tuple[float, float]] = []
    meter = harness.PeakMemory(device)

    def plain_measured() -> tuple[Clock, list[Tensor]]:
        meter.start()
        out = plain_run()
        mem_p.append((meter.stop(), meter.added_mib))
        return out

    def lightning_measured() -> tuple[Clock, list[Tensor], StyleGAN2]:
        meter.start()
        out = lightning_run()
        mem_l.append((meter.stop(), meter.added_mib))
        return out

    n_img = steps * batch
    plain, light, ratios, cpu_ratios, max_diff, m = [], [], [], [], 0.0, None
    for r in range(args.repeats):
        if r % 2 == 0:  # alternate which goes first, so a drift in machine load favours neither
            clock_p, state_p = plain_measured()
            clock_l, state_l, m = lightning_measured()
        else:
            clock_l, state_l, m = lightning_measured()
            clock_p, state_p = plain_measured()
        plain.append(n_img / clock_p.wall)
        light.append(n_img / clock_l.wall)
        ratios.append(clock_p.wall / clock_l.wall)
        cpu_ratios.append(clock_p.cpu / clock_l.cpu)
        if r == 0:
            max_diff = max(float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
                           for a, b in zip(state_p, state_l))
        print(f"  {size}px run {r + 1}/{args.repeats}: plain {plain[-1]:7.2f} img/s, Lightning {light[-1]:7.2f} img/s "
              f"(ratio {ratios[-1]:5.3f}; CPU-time ratio {cpu_ratios[-1]:5.3f})", flush=True)
    assert m is not None
    G = m.inference_generator.eval()
    z = torch.randn(args.batch, G.z_dim, generator=torch.Generator().manual_seed(1)).to(m.device)
    c = torch.arange(args.batch, device=m.device) % m.num_classes if m.num_classes else None
    times = []
    with torch.no_grad():
        G(z, c, noise_mode="const")
        for _ in range(max(5, args.repeats)):
            _sync(device)
            t0 = time.perf_counter()
            G(z, c, noise_mode="const")
            _sync(device)
            times.append(time.perf_counter() - t0)
    return Result(size=size, plain=statistics.median(plain), light=statistics.median(light),
                  ratio=statistics.median(ratios), cpu_ratio=statistics.median(cpu_ratios),
                  best_ratio=max(light) / max(plain),
                  infer=args.batch / statistics.median(times), max_diff=max_diff,
                  g_params=sum(p.numel() for p in m.generator.parameters()),
                  d_params=sum(p.numel() for p in m.discriminator.parameters()), wall=time.perf_counter() - t_start,
                  plain_mib=max(m[0] for m in mem_p), light_mib=max(m[0] for m in mem_l), memory_kind=meter.kind,
                  plain_added_mib=max(m[1] for m in mem_p), light_added_mib=max(m[1] for m in mem_l))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="tile sizes (default 64; --full: 64 256)")
    ap.add_argument("--full", action="store_true",
                    help="the paper networks (z = w = 512, 8 mapping layers, channel_base 16384, channel_max 512)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16, help="timed iterations (16: one R1 period)")
    ap.add_argument("--warmup", type=int, default=4, help="untimed iterations first")
    ap.add_argument("--repeats", type=int, default=3, help="alternating plain/Lightning runs; medians are reported")
    ap.add_argument("--channel-base", type=int, default=2048)
    ap.add_argument("--channel-max", type=int, default=256)
    ap.add_argument("--z-dim", type=int, default=512, help="z and w width")
    ap.add_argument("--mapping-layers", type=int, default=8)
    ap.add_argument("--classes", type=int, default=0, help="classes (0: unconditional)")
    ap.add_argument("--ada-p", type=float, default=0.25, help="ADA's initial p")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1, steady on a shared host; 0: torch's default, all cores)")
    return ap


def _args(argv: list[str] | None) -> tuple[argparse.Namespace, list[int]]:
    args = _parser().parse_args(argv)
    if args.full:
        args.channel_base, args.channel_max, args.z_dim, args.mapping_layers = 16384, 512, 512, 8
    return args, args.sizes or ([64, 256] if args.full else [64])


def _measure_all(args: argparse.Namespace, sizes: list[int]) -> list[Result]:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with warnings.catch_warnings():  # Lightning's notes about this setup (no val loader, few workers, ...)
            warnings.filterwarnings("ignore", message=_QUIET)
            logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
            device = torch.device(args.device)
            print(f"torch {torch.__version__}, lightning {L.__version__}, {device}, {torch.get_num_threads()} threads; "
                  f"batch {args.batch}, {args.steps} timed + {args.warmup} warm-up iterations, channel_base "
                  f"{args.channel_base}, channel_max {args.channel_max}, z/w {args.z_dim}, {args.mapping_layers} "
                  f"mapping layers, {args.classes or 'no'} classes, ADA p0 {args.ada_p}", flush=True)
            return [measure(args, s, device) for s in sizes]
    finally:
        torch.set_num_threads(threads)  # run_all.py runs the other benchmarks in this process


def rows(quick: bool = False, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Result rows for ``run_all.py``: Lightning / plain images/s per size, EMA inference, peak memory.

    Args:
        quick: two pairs of runs.
        argv: further command-line arguments.
    """
    args, sizes = _args((QUICK if quick else []) + list(argv or []))
    out = []
    for r in _measure_all(args, sizes):
        diverged = r.max_diff > 1e-4 or not math.isfinite(r.max_diff)
        out.append(harness.row(
            "stylegan2_training", f"StyleGAN2 module {r.size}px, channel_base {args.channel_base}",
            baseline_name="plain loop, same draws", baseline=r.plain, result=r.light, unit="img/s", ratio=r.ratio,
            target=0.95,
            detail=(f"batch {args.batch}, {args.steps} iterations incl. R1/path length, median of {args.repeats} "
                    f"pair(s); CPU-time ratio {r.cpu_ratio:.3f}, best-run ratio {r.best_ratio:.3f}; "
                    f"{1000 / r.light:.0f} s/kimg; EMA inference {r.infer:.1f} tiles/s; max |diff| {r.max_diff:.2g}"
                    f"{' (DIVERGED: not the same work)' if diverged else ''}; peak memory plain {r.plain_mib:.0f} "
                    f"MiB (+{r.plain_added_mib:.0f} during the run), Lightning {r.light_mib:.0f} MiB "
                    f"(+{r.light_added_mib:.0f}) ({r.memory_kind}); {args.device}, "
                    f"{args.threads or 'default'} thread(s)"),
            cpu_ratio=r.cpu_ratio, best_ratio=r.best_ratio, s_per_kimg=1000 / r.light, infer_tiles_per_s=r.infer,
            max_diff=r.max_diff, peak_mem_mib=r.light_mib, peak_mem_mib_baseline=r.plain_mib,
            peak_added_mib=r.light_added_mib, peak_added_mib_baseline=r.plain_added_mib,
            memory_kind=r.memory_kind))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the comparison at each size and print a table."""
    args, sizes = _args(argv)
    _print(args, _measure_all(args, sizes))
    return 0


def _print(args: argparse.Namespace, results: list[Result]) -> None:
    print(f"\n{'size':>5s} {'G/D params':>21s} {'plain img/s':>12s} {'Lightning img/s':>16s} {'ratio':>6s} "
          f"{'CPU ratio':>9s} {'best ratio':>10s} {'s/kimg (L)':>11s} {'infer tiles/s':>14s} "
          f"{'max |diff|':>10s} {'wall s':>7s}")
    for r in results:
        print(f"{r.size:5d} {r.g_params:>10,d}/{r.d_params:<10,d} {r.plain:12.2f} {r.light:16.2f} {r.ratio:6.3f} "
              f"{r.cpu_ratio:9.3f} {r.best_ratio:10.3f} {1000 / r.light:11.0f} {r.infer:14.2f} "
              f"{r.max_diff:10.2g} {r.wall:7.0f}")
        if r.max_diff > 1e-4 or not math.isfinite(r.max_diff):
            print(f"  warning: at {r.size}px the plain loop and the module diverge (max |diff| {r.max_diff:.3g}): "
                  "they may not be doing the same work")
    print("ratio: median over the run pairs of Lightning / plain images/s (target >= 0.95); CPU ratio: the same from "
          "process CPU time (steadier on a shared host, with --threads 1); best ratio: fastest Lightning run / fastest "
          "plain run; img/s: medians of wall-clock rates; "
          "max |diff|: plain vs Lightning G, EMA G, pl_mean and ADA p after the first pair of runs (0: the same "
          "computation)")
    for r in results:
        print(f"peak memory at {r.size}px: plain {r.plain_mib:.0f} MiB (+{r.plain_added_mib:.0f} during the run), "
              f"Lightning {r.light_mib:.0f} MiB (+{r.light_added_mib:.0f}) ({r.memory_kind})")


if __name__ == "__main__":
    raise SystemExit(main())
