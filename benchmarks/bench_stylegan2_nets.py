"""StyleGAN2 networks and augmentation on the CPU (or --device cuda): throughput, with ratios against baselines
measured in the same run.

1. Modulated convolution, forward + backward: the grouped ("fused") and the scale-convolve-scale ("unfused")
   implementations against the naive per-sample loop of ``F.conv2d`` calls (the tests' reference).
2. Training images/s of G and D at each ``--sizes`` (reference architecture at ``--channel-base``): one G pass
   (z -> G -> D -> non-saturating loss, backward) plus one D pass (reals and fakes, backward), for both modconv
   implementations; ratio fused / unfused.
3. Generator inference tiles/s (no grad, const noise), both implementations.
4. Augmentation, forward + backward: this project's resampling (``affine_resample``) and colour matrix against
   kornia's ``warp_affine`` and ``kornia.enhance`` (only when kornia is installed, ``pip install kornia==0.9.0``:
   it is not a dependency), and the whole ADA (p = 1) and DiffAugment pipelines as a fraction of the D pass.

The defaults (the paper's 64 and 256 px networks, batch 4) take several minutes on 2 CPU cores; use
``--channel-base 4096`` or ``--sizes 64`` for a quick look.

    python benchmarks/bench_stylegan2_nets.py [--sizes 64 256] [--batch 4] [--repeats 2] [--channel-base 16384]
        [--device cpu] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import harness
import torch
import torch.nn.functional as F

from gan.augment import AdaptiveAugment, DiffAugment, affine_resample
from gan.losses.regularizers import d_logistic_fake, d_logistic_real, g_nonsaturating
from gan.nets.stylegan2 import Discriminator, Generator, modulated_conv2d

QUICK = ["--sizes", "64", "--channel-base", "4096", "--repeats", "2"]  # run_all.py --quick


def timed(fn: Callable[[], object], *, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call.

    Args:
        fn: the work to time.
        repeats: timed calls.
        device: synchronised before reading the clock when it is a CUDA device.
    """
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def loop_modconv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Baseline: one convolution per sample with its own modulated, demodulated kernel."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].view(1, -1, 1, 1)
        w = w * torch.rsqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        outs.append(F.conv2d(x[n : n + 1], w, padding=1))
    return torch.cat(outs)


def _fwd_bwd(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """``fn`` followed by a backward pass of the sum of its output."""
    return lambda: fn().sum().backward()


def _modconv_row(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, repeats: int,
                 device: torch.device) -> tuple[float, float, float]:
    """Seconds of the loop baseline, the fused and the unfused modulated convolution (forward + backward)."""
    base = timed(_fwd_bwd(lambda: loop_modconv(x, weight, styles)), repeats=repeats, device=device)
    fused = timed(_fwd_bwd(lambda: modulated_conv2d(x, weight, styles, fused=True)), repeats=repeats, device=device)
    unfused = timed(_fwd_bwd(lambda: modulated_conv2d(x, weight, styles, fused=False)), repeats=repeats,
                    device=device)
    return base, fused, unfused


def bench_modconv(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Section 1; returns its rows."""
    print("\n-- modulated convolution, forward + backward (ms per call; ratio = loop time / time)")
    out = []
    for channels, size in ((512, 16), (128, 64)):
        x = torch.randn(args.batch, channels, size, size, device=device, requires_grad=True)
        weight = torch.randn(channels, channels, 3, 3, device=device, requires_grad=True)
        styles = torch.randn(args.batch, channels, device=device, requires_grad=True)
        base, fused, unfused = _modconv_row(x, weight, styles, repeats=args.repeats, device=device)
        print(f"  {channels:4d} ch {size:3d}^2 batch {args.batch}: loop {base * 1e3:8.1f}  fused {fused * 1e3:8.1f} "
              f"({base / fused:4.2f}x)  unfused {unfused * 1e3:8.1f} ({base / unfused:4.2f}x)")
        for name, t in (("scale-conv-scale (default)", unfused), ("grouped conv", fused)):
            out.append(harness.row(
                "stylegan2_nets", f"modconv fwd+bwd {name}, {channels} ch {size}^2",
                baseline_name="per-sample F.conv2d loop", baseline=args.batch / base, result=args.batch / t,
                unit="img/s", detail=f"batch {args.batch}, median of {args.repeats}, {device}"))
    return out


def bench_training(args: argparse.Namespace, device: torch.device, size: int) -> tuple[float, list[dict[str, Any]]]:
    """Section 2 and 3 at one resolution; returns the seconds of one D pass (for section 4) and the rows."""
    torch.manual_seed(0)
    G = Generator(resolution=size, channel_base=args.channel_base).to(device)
    D = Discriminator(resolution=size, channel_base=args.channel_base).to(device)
    reals = torch.rand(args.batch, 3, size, size, device=device) * 2 - 1
    gen = torch.Generator(device=device).manual_seed(0)

    def g_pass(fused: bool) -> None:
        z = torch.randn(args.batch, G.z_dim, device=device, generator=gen)
        g_nonsaturating(D(G(z, noise_mode="random", generator=gen, fused=fused))).backward()

    def d_pass(fused: bool) -> None:
        z = torch.randn(args.batch, G.z_dim, device=device, generator=gen)
        with torch.no_grad():
            fakes = G(z, noise_mode="random", generator=gen, fused=fused)
        (d_logistic_fake(D(fakes)) + d_logistic_real(D(reals))).backward()

    results = {}
    for fused in (False, True):
        t_g = timed(lambda f=fused: g_pass(f), repeats=args.repeats, device=device)
        t_d = timed(lambda f=fused: d_pass(f), repeats=args.repeats, device=device)
        results[fused] = (t_g, t_d)
    n_params = sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())
    print(f"\n-- {size}^2, channel_base {args.channel_base} (G {n_params[0]:,} / D {n_params[1]:,} parameters), "
          f"batch {args.batch}")
    for fused, (t_g, t_d) in results.items():
        name = "fused  " if fused else "unfused"
        print(f"  train {name}: G pass {t_g:6.2f} s, D pass {t_d:6.2f} s -> {args.batch / (t_g + t_d):7.2f} img/s")
    ratio = sum(results[False]) / sum(results[True])
    print(f"  training ratio fused / unfused (speed): {ratio:4.2f}x")
    G.eval()
    z = torch.randn(args.batch, G.z_dim, device=device, generator=gen)
    infer = {}
    for fused in (False, True):
        with torch.no_grad():
            infer[fused] = timed(lambda f=fused: G(z, fused=f), repeats=args.repeats, device=device)
        print(f"  inference {'fused  ' if fused else 'unfused'}: {args.batch / infer[fused]:7.2f} tiles/s")
    setting = (f"{size}px, channel_base {args.channel_base} (G {n_params[0]:,} / D {n_params[1]:,} parameters), "
               f"batch {args.batch}, median of {args.repeats}, {device}")
    rows = [
        harness.row("stylegan2_nets", f"G+D training pass {size}px, scale-conv-scale (default)",
                    baseline_name="grouped conv", baseline=args.batch / sum(results[True]),
                    result=args.batch / sum(results[False]), unit="img/s", detail=setting),
        harness.row("stylegan2_nets", f"G inference {size}px, scale-conv-scale (default)",
                    baseline_name="grouped conv", baseline=args.batch / infer[True], result=args.batch / infer[False],
                    unit="tiles/s", detail=setting),
    ]
    return results[False][1], rows


def bench_augment(args: argparse.Namespace, device: torch.device, size: int,
                  d_pass_s: float) -> list[dict[str, Any]]:
    """Section 4 at one resolution; returns its rows."""
    x = (torch.rand(args.batch, 3, size, size, device=device) * 2 - 1).requires_grad_(True)
    ada = AdaptiveAugment(p=1.0).to(device)
    params = ada.sample_params(args.batch, height=size, width=size, generator=torch.Generator().manual_seed(0))
    inv = params.geometric

    rows: list[dict[str, Any]] = []
    print(f"\n-- augmentation at {size}^2, batch {args.batch}, forward + backward (ms)")
    own_geo = timed(_fwd_bwd(lambda: affine_resample(x, inv)), repeats=args.repeats, device=device)
    colour_only = AdaptiveAugment(p=1.0, xflip=0.0, rotate90=0.0, xint=0.0, scale=0.0, rotate=0.0, aniso=0.0,
                                  xfrac=0.0).to(device)
    colour_params = colour_only.sample_params(args.batch, height=size, width=size,
                                              generator=torch.Generator().manual_seed(0))
    own_col = timed(_fwd_bwd(lambda: colour_only.apply(x, colour_params)), repeats=args.repeats, device=device)
    try:
        import kornia
    except ImportError:
        kornia = None
    if kornia is not None:
        # kornia's warp_affine takes source -> destination pixel matrices: the forward transform, 2x3
        fwd = torch.linalg.inv(inv.double()).float()
        shift = torch.tensor([[1.0, 0.0, size / 2 - 0.5], [0.0, 1.0, size / 2 - 0.5], [0.0, 0.0, 1.0]])
        m = (shift @ fwd @ torch.linalg.inv(shift))[:, :2].to(device)
        k_geo = timed(_fwd_bwd(lambda: kornia.geometry.transform.warp_affine(
            x, m, (size, size), mode="bilinear", padding_mode="reflection")), repeats=args.repeats, device=device)
        b, c = torch.rand(args.batch, device=device) * 0.2, torch.rand(args.batch, device=device) + 0.5
        h, s = torch.rand(args.batch, device=device) * 2 - 1, torch.rand(args.batch, device=device) + 0.5

        def k_colour() -> torch.Tensor:
            y = (x + 1) / 2  # kornia's colour ops work on [0, 1]
            y = kornia.enhance.adjust_brightness(y, b)
            y = kornia.enhance.adjust_contrast(y, c)
            y = kornia.enhance.adjust_hue(y, h * 3.14159)
            return kornia.enhance.adjust_saturation(y, s) * 2 - 1

        k_col = timed(_fwd_bwd(k_colour), repeats=args.repeats, device=device)
        setting = f"{size}^2, batch {args.batch}, forward + backward, median of {args.repeats}, {device}"
        rows += [harness.row("stylegan2_nets", f"augment resampling {size}px (affine_resample)",
                             baseline_name="kornia warp_affine", baseline=args.batch / k_geo,
                             result=args.batch / own_geo, unit="img/s", detail=setting),
                 harness.row("stylegan2_nets", f"augment colour {size}px (ADA colour matrix)",
                             baseline_name="kornia.enhance", baseline=args.batch / k_col,
                             result=args.batch / own_col, unit="img/s", detail=setting)]
        print(f"  resampling: own {own_geo * 1e3:7.1f}  kornia warp_affine {k_geo * 1e3:7.1f}  "
              f"(own is {k_geo / own_geo:4.2f}x kornia's speed)")
        print(f"  colour:     own {own_col * 1e3:7.1f}  kornia.enhance     {k_col * 1e3:7.1f}  "
              f"(own is {k_col / own_col:4.2f}x kornia's speed)")
    else:
        print(f"  resampling: own {own_geo * 1e3:7.1f}  colour: own {own_col * 1e3:7.1f}  (kornia not installed)")
    gen = torch.Generator().manual_seed(1)
    t_ada = timed(_fwd_bwd(lambda: ada(x, generator=gen)), repeats=args.repeats, device=device)
    t_diff = timed(_fwd_bwd(lambda: DiffAugment()(x, generator=gen)), repeats=args.repeats, device=device)
    print(f"  ADA p=1 pipeline {t_ada * 1e3:7.1f} ms ({t_ada / d_pass_s:5.1%} of a D pass), "
          f"DiffAugment {t_diff * 1e3:7.1f} ms ({t_diff / d_pass_s:5.1%})")
    for name, t in (("ADA p=1", t_ada), ("DiffAugment", t_diff)):
        rows.append(harness.row(
            "stylegan2_nets", f"D pass + {name} augmentation {size}px", baseline_name="D pass, no augmentation",
            baseline=args.batch / d_pass_s, result=args.batch / (d_pass_s + t), unit="img/s",
            detail=f"the pipeline costs {t / d_pass_s:.1%} of a D pass (fwd + bwd, batch {args.batch})"))
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--channel-base", type=int, default=16384)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser


def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads")
        out = bench_modconv(args, device)
        for size in args.sizes:
            d_pass_s, got = bench_training(args, device, size)
            out += got + bench_augment(args, device, size, d_pass_s)
        return out
    finally:
        torch.set_num_threads(threads)  # run_all.py runs the other benchmarks in this process


def rows(quick: bool = False, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Result rows for ``run_all.py`` (``quick``: 64 px at channel_base 4096, two repeats).

    Args:
        quick: small networks.
        argv: further command-line arguments.
    """
    return _run(_parser().parse_args((QUICK if quick else []) + list(argv or [])))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print each section."""
    _run(_parser().parse_args(argv))


if __name__ == "__main__":
    main()
