"""The StyleGAN2 part of ``medsynth demo``: a tiny conditional StyleGAN2 on the demo slides, then its pictures and an
audited synthetic rare-class tile set, all under ``<out>/stylegan2/``.

1. ``medsynth fit`` of ``experiments/stylegan2_pathology_demo.yaml`` on ``<data>/slides`` (split by slide).
2. ``export/``: the EMA generator as safetensors + JSON (what the notebook opens by default).
3. ``class_grid.png``: one row per class of fixed seeds; ``style_mix.png``: coarse layers of the row seeds over
   the column seeds, for the rare class.
4. ``synthetic_<rare>/``: ``medsynth generate`` of the rare class, released through the memorization audit against
   the training slides' tiles of that class and the held-out slide's (``--weights random``: a smoke run).
5. ``fidelity.md``: per class, the sliced Wasserstein distance of generated tiles to the training slides' tiles of
   that class beside the held-out slide's (the floor: what real tiles of the class score); and the utility verdict
   for the rare class (a tiny classifier trained on real only / rare oversampled / real + synthetic, 3 seeds).

Imports only the standard library at import time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "stylegan2_pathology_demo.yaml"
#: The demo slides' rare class (the smallest regions of the phantom slides).
RARE_CLASS = "necrosis"


@dataclass
class StyleDemo:
    """What the StyleGAN2 demo wrote.

    Args:
        checkpoint: the last checkpoint of the run.
        run_dir: the run's folder.
        export: the exported generator folder.
        class_grid: per-class sample grid PNG.
        style_mix: style-mixing grid PNG.
        tiles: the released synthetic rare-class tile set.
        audit: the audit's summary (passed, near-copy fraction, ...).
        seconds: wall time of each step.
    """

    checkpoint: Path
    run_dir: Path
    export: Path
    class_grid: Path
    style_mix: Path
    tiles: Path
    audit: dict[str, Any]
    fidelity: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """The demo's summary lines."""
        a = self.audit
        verdict = "passed" if a.get("passed") else "FAILED"
        times = ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
        return (f"StyleGAN2 (tiny, conditional) on the demo slides ({CONFIG.name}): {times}\n"
                f"per-class sample grid: {self.class_grid}\nstyle-mixing grid:     {self.style_mix}\n"
                f"exported generator:    {self.export}\n"
                f"synthetic {RARE_CLASS} tiles: {self.tiles}/ (memorization audit {verdict}, near-copy fraction "
                f"{a.get('near_copy_fraction', float('nan')):.3f}; random-weights Inception: a smoke run)\n\n"
                f"{self.fidelity}")


def style_demo(out: str | Path, data_dir: str | Path, *, n_tiles: int = 64) -> StyleDemo:
    """Train the tiny StyleGAN2 on the demo slides and write its pictures and rare-class tile set.

    Args:
        out: demo output folder (``out/runs`` for the run, ``out/stylegan2`` for the rest).
        data_dir: demo data folder (with ``slides/``).
        n_tiles: synthetic rare-class tiles.
    """
    import shutil

    from gan.callbacks import CheckpointWithMetrics, SampleGrids, run_dir
    from gan.commands.evaluate import RANDOM_WEIGHTS, build_extractor
    from gan.commands.export import export as export_generator
    from gan.commands.generate_tiles import generate_tiles
    from gan.commands.train import run_lightning_cli
    from gan.models.checkpoint import load_generator
    from gan.release import AuditSettings, ReleasePolicy
    from gan.style import save_grid, style_mix
    from gan.tracking import finish_run

    out, data_dir = Path(out), Path(data_dir)
    folder = out / "stylegan2"
    shutil.rmtree(folder, ignore_errors=True)  # `medsynth demo --overwrite` owns this folder
    folder.mkdir(parents=True)
    runs = out / "runs"
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    cli = run_lightning_cli(["--config", str(REPO / "experiments" / "base.yaml"), "--config", str(CONFIG),
                             f"--data.init_args.slides={data_dir / 'slides'}", f"--trainer.default_root_dir={runs}",
                             f"--trainer.logger.init_args.save_dir={runs}"], run=False)
    trainer, dm = cli.trainer, cli.datamodule
    dm.check_inputs("fit")
    try:
        trainer.fit(cli.model, datamodule=dm)
    finally:
        finish_run()
    seconds["training"] = time.perf_counter() - t0
    ckpt = Path(next(c for c in trainer.callbacks if isinstance(c, CheckpointWithMetrics)).last_model_path)
    grids = next((c for c in trainer.callbacks if isinstance(c, SampleGrids)), None)

    t1 = time.perf_counter()
    G, info = load_generator(ckpt)
    export = export_generator(G, info, folder / "export")
    class_grid = folder / "class_grid.png"
    if grids is not None and grids.last_path is not None:
        shutil.copyfile(grids.last_path, class_grid)
    else:
        from data.provenance import write_png

        write_png(cli.model.sample_grid().numpy(), class_grid, provenance={"checkpoint": str(ckpt)})
    rare = info["class_names"].index(RARE_CLASS)
    rows, cols = [1, 2, 3], [4, 5, 6, 7]
    mix = style_mix(G, rows, cols, "coarse", label=rare)
    style_png = save_grid(mix, folder / "style_mix.png", row_labels=[f"seed {s}" for s in rows],
                          col_labels=[f"seed {s}" for s in cols],
                          title=f"{RARE_CLASS}: coarse layers from the rows",
                          provenance={"checkpoint_sha256": info["checkpoint_sha256"], "rows": rows, "cols": cols,
                                      "layers": "coarse", "label": RARE_CLASS})
    seconds["pictures"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    extractor = build_extractor("fid-inception", RANDOM_WEIGHTS, "cpu")
    result = generate_tiles(G, info, folder / f"synthetic_{RARE_CLASS}", label=RARE_CLASS, seeds=range(n_tiles),
                            truncation=0.7, train=dm.splits["train"], heldout=dm.splits["val"], extractor=extractor,
                            audit=AuditSettings(quantile=0.05, cells=4, min_cell=10, batch_size=32),
                            policy=ReleasePolicy(overwrite=True, allow_flagged=True), batch=16)
    seconds["generate + audit"] = time.perf_counter() - t2
    audit = {"passed": bool(result.audit.passed) if result.audit else None,
             **({k: v for k, v in result.audit.summary.items() if k in ("near_copy_fraction", "excess_p_value")}
                if result.audit else {})}
    t3 = time.perf_counter()
    fidelity = fidelity_table(G, info, dm.splits["train"], dm.splits["val"], result.out)
    from data.files import atomic_write_text

    atomic_write_text(folder / "fidelity.md", fidelity)
    seconds["SWD + utility"] = time.perf_counter() - t3
    return StyleDemo(checkpoint=ckpt, run_dir=run_dir(trainer), export=export, class_grid=class_grid,
                     style_mix=style_png, tiles=result.out, audit=audit, fidelity=fidelity, seconds=seconds)


def _labelled_tiles(slides: list[Path], tile_size: int, mpp: float, classes: list[str]) -> tuple[Any, Any]:
    """uint8 tiles (N, 3, S, S) of ``slides`` and their class indices."""
    import torch

    from data.slides.datasets import TileDataset

    ds = TileDataset(slides, tile_size=tile_size, mpp=mpp, class_names=classes, require_all_classes=False,
                     uint8=True)
    return torch.stack([ds[i]["image"] for i in range(len(ds))]), torch.as_tensor(ds.labels, dtype=torch.long)


def fidelity_table(G: Any, info: dict[str, Any], train: list[Path], heldout: list[Path], tiles: Path, *,
                   n: int = 128, max_real: int = 512) -> str:
    """Markdown: per-class SWD of generated tiles (``n`` seeds) against the training slides' tiles of the class,
    beside the held-out slide's tiles of the class against the same (the floor); then the utility verdict of the
    released rare-class ``tiles`` with a tiny classifier (3 seeds).

    Args:
        G: the generator.
        info: its checkpoint info.
        train: training slides.
        heldout: held-out slides.
        tiles: the released synthetic rare-class set.
        n: generated tiles per class.
        max_real: most real tiles per class and set (evenly spaced).
    """
    import numpy as np
    import torch
    from PIL import Image

    from gan.metrics import sliced_wasserstein_distance
    from gan.style import sample_images, to_uint8
    from gan.utility import TrainSettings, utility_test

    classes = list(info["class_names"])
    size, mpp = int(info["tile_size"]), float(info["mpp"])
    tr_x, tr_y = _labelled_tiles(train, size, mpp, classes)
    ho_x, ho_y = _labelled_tiles(heldout, size, mpp, classes)

    def some(x: Any, y: Any, k: int) -> Any:
        idx = torch.nonzero(y == k).flatten()
        return x[idx[torch.linspace(0, len(idx) - 1, min(max_real, len(idx))).round().long()]] if len(idx) else None

    rows = ["| class | generated vs training tiles | held-out vs training tiles (floor) | tiles (train / held-out) |",
            "|---|---|---|---|"]
    for k, name in enumerate(classes):
        real, floor = some(tr_x, tr_y, k), some(ho_x, ho_y, k)
        if real is None or floor is None or len(real) < 2 or len(floor) < 2:
            rows.append(f"| {name} | - | - | too few tiles |")
            continue
        fake = torch.from_numpy(to_uint8(sample_images(G, list(range(n)), k, 1.0))).permute(0, 3, 1, 2)
        r = sliced_wasserstein_distance(real, fake.contiguous(), patches_per_image=64, projections=256,
                                        floor_images=floor)
        rows.append(f"| {name} | {r['swd']:.1f} | {r['floor']['swd']:.1f} | {len(real)} / {len(floor)} |")
    rare = info.get("rare_class") or RARE_CLASS
    syn = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                       for p in sorted((tiles / rare).glob("*.png"))])
    util = utility_test(tr_x, tr_y, ho_x, ho_y, syn, classes=classes, rare_class=rare, seeds=(0, 1, 2),
                        train=TrainSettings(classifier="tiny", steps=400, lr=3e-3, threads=1))
    recall = {name: util["regimes"][name]["rare_recall"] for name in util["regimes"]}
    shown = ", ".join(f"{name} {v['mean']:.3f} +- {v['std']:.3f}" for name, v in recall.items())
    return ("Sliced Wasserstein distance (x 1e3, 32 and 16 px levels, 64 patches per tile, 256 directions; lower is "
            "closer; read each row against its floor):\n\n" + "\n".join(rows) + "\n\n"
            f"Utility for {rare} (tiny CNN, 400 steps x 32 tiles, 3 seeds; held-out slide): rare-class recall "
            f"{shown}. {util['verdict']}\n")


__all__ = ["CONFIG", "RARE_CLASS", "StyleDemo", "style_demo"]
