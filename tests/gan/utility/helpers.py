"""Tiny labelled tile sets where the utility test's answer is known, written as PNG folders.

Three classes told apart by colour: ``a`` (red), ``b`` (blue) and the rare class ``rare``, which has two looks: green
and purple. The real training set has 60 ``a`` and 60 ``b`` tiles but only 4 green ``rare`` tiles (no purple one), so
neither the real tiles nor their oversampled repeats teach the purple look; the held-out set (other slides) has both
looks. A synthetic set of fresh held-out-like tiles (green and purple) must therefore raise rare-class recall; a set
of blank tiles must not.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16
COLOURS = {"a": (200, 60, 60), "b": (60, 60, 200), "green": (60, 200, 60), "purple": (180, 60, 200)}
CHECKPOINT_SHA = "c" * 64


def tile(rng: np.random.Generator, look: str) -> np.ndarray:
    """One (SIZE, SIZE, 3) uint8 tile of a look, with pixel noise."""
    base = np.array(COLOURS[look], dtype=np.float64)
    return np.clip(base + rng.normal(0, 40, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def write_labelled(root: Path, spec: dict[str, dict[str, list[tuple[str, int]]]], seed: int) -> Path:
    """``root/<class>/<slide>/<i>.png`` from ``{slide: {class: [(look, count), ...]}}``."""
    rng = np.random.default_rng(seed)
    for slide, classes in spec.items():
        for cls, looks in classes.items():
            folder = root / cls / slide
            folder.mkdir(parents=True, exist_ok=True)
            i = 0
            for look, count in looks:
                for _ in range(count):
                    Image.fromarray(tile(rng, look)).save(folder / f"{look}_{i:03d}.png")
                    i += 1
    return root


def write_training(root: Path) -> Path:
    """Real training tiles on slides s1..s3; the rare class only green, only 4 tiles, on s1."""
    return write_labelled(root, {
        "s1": {"a": [("a", 20)], "b": [("b", 20)], "rare": [("green", 4)]},
        "s2": {"a": [("a", 20)], "b": [("b", 20)]},
        "s3": {"a": [("a", 20)], "b": [("b", 20)]},
    }, seed=1)


def write_heldout(root: Path) -> Path:
    """Held-out real tiles on slides h1, h2: both looks of the rare class."""
    return write_labelled(root, {
        "h1": {"a": [("a", 10)], "b": [("b", 10)], "rare": [("green", 5), ("purple", 5)]},
        "h2": {"a": [("a", 10)], "b": [("b", 10)], "rare": [("green", 5), ("purple", 5)]},
    }, seed=2)


def write_synthetic(root: Path, *, blank: bool, n: int = 40, label: str = "rare") -> Path:
    """A released synthetic set: tiles at the root, manifest.json + manifest.csv (seed, label, checkpoint sha256)
    and an ``audit/`` picture that is not a tile."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        img = np.full((SIZE, SIZE, 3), 255, np.uint8) if blank else tile(rng, "green" if i % 2 else "purple")
        key = f"tile_{i:06d}.png"
        Image.fromarray(img).save(root / key)
        rows.append({"key": key, "seed": 100 + i, "label": 2, "label_name": label, "truncation": 1.0})
    (root / "audit").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "audit" / "closest_pairs.png")
    manifest = {"kind": "medsynth synthetic data set", "checkpoint_sha256": CHECKPOINT_SHA, "version": "0.1.0",
                "items": [{**r, "files": [r["key"]]} for r in rows], "audit": {"run": True, "passed": True}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "checkpoint_sha256"])
        writer.writeheader()
        writer.writerows({**r, "checkpoint_sha256": CHECKPOINT_SHA} for r in rows)
    return root
