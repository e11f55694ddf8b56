"""The StyleGAN2 side of ``medsynth generate``: synthetic tiles of one class, released through the memorization audit.

:class:`TileSource` (a :class:`gan.release.Producer`) plans one PNG per seed, ``<class>/seed<seed>.png``, at the
generator's training tile size; each records what regenerates it bit for bit (seed, label index and name,
truncation, noise mode, mpp) and ``manifest.csv`` adds the file's sha256, the checkpoint sha256 and the package
version. Tiles are synthesised in fixed blocks of ``batch`` consecutive seeds of the plan, so a resumed run computes
exactly what an uninterrupted one does. :class:`TileAudit` compares the staged tiles with real tiles of the same
class from ``--train`` (the generator's training data) and ``--heldout`` (real tiles it never saw: the calibration)
through :func:`gan.release.memorization_audit`. Real tiles come from slides (with their region CSVs, read at the
checkpoint's mpp and tile size) or tile folders (``<class>/*.png``).

Imports only the standard library at import time (the command table loads it for ``--help``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from gan.metrics.features import FeatureExtractor
    from gan.release import AuditOutcome, AuditSettings, ItemSpec, ReleasePolicy, ReleaseResult, StagedItem

#: What to change when the audit's sets are too small, in ``medsynth generate``'s terms.
TILE_HINT = "raise --n, give more --heldout tiles, or lower --min-cell"


def tile_key(label_name: str, seed: int) -> str:
    """The file of a tile in the data set: ``<class>/seed<seed, 6 digits>.png`` (``tiles/...`` unconditional).

    Args:
        label_name: the class name ("" for an unconditional generator).
        seed: the tile's seed.
    """
    folder = label_name or "tiles"
    return f"{folder}/seed{int(seed):06d}.png"


def _safe_folder(name: str) -> str:
    bad = set('/\\:*?"<>|') | {"\0"}
    return "".join("_" if c in bad else c for c in name).strip() or "class"


def write_tile_png(image: np.ndarray, path: Path, *, mpp: float | None, text: dict[str, str]) -> None:
    """Write a uint8 (H, W, 3) tile as PNG, atomically, with its resolution (``mpp``) and provenance as metadata.

    Args:
        image: the tile.
        path: destination file.
        mpp: microns per pixel, stored as the PNG's physical pixel size (pixels per metre), when known.
        text: text chunks (seed, label, checkpoint sha256, software).
    """
    import numpy as np
    from PIL import Image, PngImagePlugin

    from data.files import atomic_path

    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, str(v))
    kwargs: dict[str, Any] = {"pnginfo": info}
    if mpp:
        dpi = 25400.0 / float(mpp)
        kwargs["dpi"] = (dpi, dpi)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", **kwargs)


@dataclass
class TileSource:
    """The items of a tile release: one PNG per seed of one class.

    Args:
        generator: the (EMA) generator, in eval mode.
        info: what :func:`gan.models.checkpoint.load_generator` returned with it (class names, mpp, sha256).
        label: class index (None: unconditional).
        seeds: one tile per seed, in this order.
        truncation: psi towards the class's average w.
        noise_mode: ``"const"`` (reproducible), ``"none"``; ``"random"`` is refused (not reproducible).
        batch: tiles synthesised together (blocks of the plan: the same blocks on a resumed run).
    """

    generator: Any
    info: dict[str, Any]
    label: int | None
    seeds: list[int]
    truncation: float = 1.0
    noise_mode: str = "const"
    batch: int = 16
    _block: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.noise_mode not in ("const", "none"):
            raise ValueError(f"noise mode {self.noise_mode!r}: tiles must be reproducible from their seed; use "
                             "'const' or 'none'")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")

    @property
    def label_name(self) -> str:
        """The class's name ('' unconditional; ``class<k>`` when the checkpoint has no names)."""
        if self.label is None:
            return ""
        names = self.info.get("class_names") or []
        return str(names[self.label]) if self.label < len(names) else f"class{self.label}"

    def plan(self) -> list[ItemSpec]:
        """One item per seed, keyed by its file."""
        from gan.release import ItemSpec

        folder = _safe_folder(self.label_name) if self.label is not None else ""
        mpp = self.info.get("mpp")
        return [ItemSpec(key=tile_key(folder, s), record={
            "seed": int(s), "label": "" if self.label is None else int(self.label), "label_name": self.label_name,
            "truncation": float(self.truncation), "noise_mode": self.noise_mode,
            "mpp": "" if mpp is None else float(mpp), "index": i}) for i, s in enumerate(self.seeds)]

    def _tiles_of_block(self, block: int) -> np.ndarray:
        from gan.style import sample_images, to_uint8

        if self._block is None or self._block[0] != block:
            seeds = self.seeds[block * self.batch:(block + 1) * self.batch]
            images = sample_images(self.generator, seeds, self.label, self.truncation, noise_mode=self.noise_mode,
                                   batch_size=self.batch)
            self._block = (block, to_uint8(images))
        return self._block[1]

    def make(self, spec: ItemSpec, stage: Path) -> list[str]:
        """Synthesise (its block of) the tile and write the PNG into ``stage``.

        Args:
            spec: the item.
            stage: the staging folder.
        """
        import numpy as np

        from data.errors import DataError

        i = int(spec.record["index"])
        tile = self._tiles_of_block(i // self.batch)[i % self.batch]
        if not np.isfinite(tile.astype(np.float32)).all():
            raise DataError(stage / spec.key, "the generator produced NaN/Inf (diverged checkpoint?)")
        write_tile_png(tile, stage / spec.key, mpp=self.info.get("mpp"),
                       text={"seed": str(spec.record["seed"]), "label": self.label_name,
                             "truncation": str(self.truncation), "checkpoint_sha256": self.info["checkpoint_sha256"],
                             "Software": "medsynth generate"})
        return [spec.key]


def reference_tiles(paths: Sequence[str | Path], *, tile_size: int, mpp: float | None, class_name: str | None,
                    max_tiles: int, label: str) -> tuple[Tensor, list[str]]:
    """Real tiles for the audit, uint8 (N, 3, tile_size, tile_size), and a name for each.

    Each path is a slide file, a folder of slides (with ``<stem>.regions.csv`` beside them; read at ``mpp``), or a
    tile folder (``<class>/*.png`` or images directly). With ``class_name`` only tiles of that class are kept
    (when the source labels it; an unlabelled tile folder counts as that class). At most ``max_tiles``, evenly
    spaced over the source order.

    Args:
        paths: slides, slide folders or tile folders.
        tile_size: side of the tiles (the generator's).
        mpp: microns per pixel to read slides at (the generator's training mpp).
        class_name: class to keep, or None for all.
        max_tiles: most tiles returned.
        label: argument name for messages (``train``, ``heldout``).

    Raises:
        DataError: a missing path, or no tile of the class.
    """
    import torch

    from data.errors import DataError
    from data.slides.datamodule import SLIDE_SUFFIXES
    from data.slides.datasets import OTHER, TileDataset, TileFolderDataset
    from gan.metrics.features import quantize_uint8

    if not paths:
        raise ValueError(f"--{label}: no path given")
    tiles: list[Tensor] = []
    names: list[str] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(p, f"--{label}: no such file or folder")
        slides = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file()
                                                 and f.suffix.lower() in SLIDE_SUFFIXES)
        subdirs = p.is_dir() and any(d.is_dir() and not d.name.startswith(".") for d in p.iterdir())
        if slides and not subdirs:
            if mpp is None:
                raise DataError(p, f"--{label}: reading slides needs the generator's training mpp, which this "
                                   "checkpoint does not record; give a tile folder instead")
            ds: Any = TileDataset(slides, tile_size=tile_size, mpp=mpp, require_all_classes=False, uint8=True)
        else:
            ds = TileFolderDataset(p, tile_size=tile_size)
        classes = list(ds.class_names)
        keep = range(len(ds))
        if class_name is not None:
            if class_name in classes:
                k = classes.index(class_name)
                keep = [i for i in range(len(ds)) if int(ds.labels[i]) == k]
            elif classes != [OTHER]:
                keep = []
        for i in keep:
            item = ds[i]
            img = item["image"]
            tiles.append(img if img.dtype == torch.uint8 else quantize_uint8(img[None])[0])
            names.append(f"{item['slide']}@{tuple(int(v) for v in item['location'])}")
    if not tiles:
        what = f" of class {class_name!r}" if class_name is not None else ""
        raise DataError(Path(paths[0]), f"--{label}: no tile{what} found")
    if len(tiles) > max_tiles:
        pick = torch.linspace(0, len(tiles) - 1, max_tiles).round().long().tolist()
        tiles, names = [tiles[i] for i in pick], [names[i] for i in pick]
    stacked = torch.stack(tiles)
    if tuple(stacked.shape[1:]) != (3, tile_size, tile_size):
        raise DataError(Path(paths[0]), f"--{label}: tiles of shape {tuple(stacked.shape[1:])}, expected "
                                        f"(3, {tile_size}, {tile_size})")
    return stacked, names


@dataclass
class TileAudit:
    """The memorization audit of a tile release, against real tiles of the same class.

    Args:
        train: the generator's training tiles (uint8 (N, 3, H, W)) and their names.
        heldout: real tiles it never saw, and their names.
        extractor: feature network.
        settings: audit settings.
        protocol: feature pre-processing protocol.
        lpips: per-pair LPIPS for re-ranking, or None.
        class_name: the audited class (recorded).
    """

    train: tuple[Tensor, list[str]]
    heldout: tuple[Tensor, list[str]]
    extractor: FeatureExtractor
    settings: AuditSettings
    protocol: str = "pytorch-fid"
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None
    class_name: str | None = None

    def __call__(self, items: Sequence[StagedItem], stage: Path, report_dir: Path) -> AuditOutcome:
        """Audit the staged tiles.

        Args:
            items: the staged items.
            stage: the staging folder.
            report_dir: where the audit report goes.
        """
        import numpy as np
        import torch
        from PIL import Image

        from gan.release import memorization_audit

        generated = torch.stack([torch.from_numpy(np.array(Image.open(stage / item.key).convert("RGB"))).permute(
            2, 0, 1).contiguous() for item in items])
        report, outcome = memorization_audit(
            self.train[0], self.heldout[0], generated, names=[item.key for item in items], settings=self.settings,
            report_dir=report_dir, extractor=self.extractor, protocol=self.protocol, lpips=self.lpips,
            hint=TILE_HINT)
        summary = {**outcome.summary, "class": self.class_name,
                   "n_tiles": {"generated": len(items), "train": int(self.train[0].shape[0]),
                               "heldout": int(self.heldout[0].shape[0])}}
        return replace(outcome, summary=summary, details=report)


def parse_seeds(n: int | None, seed_start: int, seeds: str | None) -> list[int]:
    """The seeds of a run: ``--seeds 0-99,200`` or ``--n`` seeds from ``--seed-start``.

    Args:
        n: number of tiles (with ``seed_start``).
        seed_start: first seed.
        seeds: explicit list of seeds and ranges, or None.

    Raises:
        ValueError: neither or both given, or a malformed list.
    """
    if (n is None) == (seeds is None):
        raise ValueError("give --n (tiles, from --seed-start) or --seeds (e.g. 0-99,200), not both")
    if seeds is None:
        if n is None or n < 1 or seed_start < 0:
            raise ValueError(f"--n must be >= 1 and --seed-start >= 0, got {n}, {seed_start}")
        return list(range(seed_start, seed_start + n))
    out: list[int] = []
    for part in seeds.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"--seeds: {part!r} is not a seed or a range like 10-19") from None
    if any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ValueError("--seeds: seeds must be non-negative and distinct")
    return out


def generate_tiles(generator: Any, info: dict[str, Any], out: str | Path, *, label: str | int | None,
                   seeds: Sequence[int], truncation: float = 1.0, noise_mode: str = "const",
                   train: Sequence[str | Path] | None = None, heldout: Sequence[str | Path] | None = None,
                   extractor: FeatureExtractor | None = None, protocol: str = "pytorch-fid",
                   lpips: Callable[[Tensor, Tensor], Tensor] | None = None, audit: AuditSettings | None = None,
                   policy: ReleasePolicy | None = None, batch: int = 16, max_reference: int = 2000,
                   progress: bool = False) -> ReleaseResult:
    """Synthetic tiles of class ``label`` into a new data set ``out``, released only if the audit passes.

    Args:
        generator: a StyleGAN2 generator (:func:`gan.models.checkpoint.load_generator`).
        info: its ``info`` (class names, mpp, tile size, checkpoint sha256, source).
        out: the data set folder.
        label: class name or index (None for an unconditional generator).
        seeds: one tile per seed.
        truncation: psi.
        noise_mode: ``"const"`` or ``"none"``.
        train: the generator's training slides or tile folders.
        heldout: real slides or tile folders it never saw.
        extractor: audit feature network; None loads the FID Inception from the torch hub cache.
        protocol: feature pre-processing protocol.
        lpips: per-pair LPIPS re-ranking.
        audit: audit settings.
        policy: overwrite / allow-flagged / skip-audit.
        batch: tiles per synthesis call.
        max_reference: most real tiles per reference set in the audit.
        progress: a progress bar over the tiles.

    Raises:
        AuditFailed: the audit flagged the set (the report is kept in ``<out>.rejected``).
        FileExistsError: ``out`` exists and ``policy.overwrite`` is False.
    """
    from data.files import check_overwrite
    from gan.release import AuditSettings, ReleasePolicy, release
    from gan.style import resolve_label

    policy = policy or ReleasePolicy()
    check_overwrite(out, overwrite=policy.overwrite, what="data set")
    index = resolve_label(label, class_names=info.get("class_names") or [], num_classes=generator.num_classes)
    source = TileSource(generator, info, index, list(seeds), truncation=truncation, noise_mode=noise_mode,
                        batch=batch)
    auditor = None
    if not policy.skip_audit:
        if not train or not heldout:
            raise ValueError("the memorization audit needs --train (the generator's training slides or tiles) and "
                             "--heldout (real tiles it never saw); --skip-audit releases without it")
        overlap = {Path(p).resolve() for p in train} & {Path(p).resolve() for p in heldout}
        if overlap:
            raise ValueError(f"--train and --heldout share {sorted(map(str, overlap))[0]}; held-out tiles must be "
                             "unseen")
        size, mpp = int(info["tile_size"]), info.get("mpp")
        cls = source.label_name or None
        ref = {name: reference_tiles(paths, tile_size=size, mpp=mpp, class_name=cls, max_tiles=max_reference,
                                     label=name) for name, paths in (("train", train), ("heldout", heldout))}
        if extractor is None:
            from gan.metrics import FIDInceptionV3

            extractor = FIDInceptionV3()
        import torch

        device = next(generator.parameters()).device if any(True for _ in generator.parameters()) else torch.device(
            "cpu")
        auditor = TileAudit(ref["train"], ref["heldout"], extractor.to(device).eval(), audit or AuditSettings(),
                            protocol=protocol, lpips=lpips, class_name=cls)
    prov = {"checkpoint": str(info.get("source", "")), "checkpoint_sha256": info["checkpoint_sha256"],
            "model": "StyleGAN2", "kind": "tiles", "label": source.label_name, "label_index": index,
            "truncation": float(truncation), "noise_mode": noise_mode, "mpp": info.get("mpp"),
            "tile_size": info.get("tile_size"), "batch": int(batch)}
    identity = {k: prov[k] for k in ("checkpoint_sha256", "label_index", "truncation", "noise_mode", "batch")}
    return release(source, out=out, provenance=prov, identity=identity, auditor=auditor, policy=policy,
                   items_csv=True, progress=progress)


__all__ = ["TILE_HINT", "TileAudit", "TileSource", "generate_tiles", "parse_seeds", "reference_tiles", "tile_key",
           "write_tile_png"]
