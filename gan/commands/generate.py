"""``medsynth generate``: a synthetic data set from a checkpoint, released through the memorization audit
(:mod:`gan.release`).

The checkpoint's family picks the source of the items. StyleGAN2 checkpoints (or ``medsynth export`` folders) make
PNG tiles of one class, one per seed (:mod:`gan.commands.generate_tiles`). Translation checkpoints (CycleGAN,
Pix2Pix): every input volume is translated with :class:`gan.commands.translate.Translator` into the staging folder
(:class:`VolumeSource`). :class:`SliceAudit` then windows axial slices of the synthetic volumes, of the training
volumes of the output modality (``--train``) and of held-out real ones (``--heldout``) with the checkpoint's
training windows (CT/PET fixed, MR per volume), picks them with the metrics' slice rule
(:func:`gan.metrics.slice_indices`: evenly spaced slices with anatomy) and runs
:func:`gan.release.memorization_audit`. The release gate publishes the folder or rejects it (exit status 3).
Re-running an interrupted command resumes it; an existing ``--out`` is refused unless ``--overwrite``.
This module imports only the standard library at import time.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from data.intensity import WindowParams
    from data.volumes import Volume
    from gan.commands.translate import Direction, Translator
    from gan.metrics import MemorizationReport
    from gan.metrics.features import FeatureExtractor
    from gan.release import AuditOutcome, AuditSettings, ItemSpec, ReleasePolicy, ReleaseResult, StagedItem

HELP = "synthetic data set from a checkpoint, released only after a memorization audit"
DESCRIPTION = """A new synthetic data set from a checkpoint, released only after a memorization audit against the
generator's training data: CycleGAN / pix2pix checkpoints translate --input volumes; StyleGAN2 checkpoints (or
export folders) draw --n tiles of class --label (PNG at the training mpp, manifest.csv with every tile's seed).

Items are staged in .<out>.partial beside --out (re-running an interrupted command resumes it; every file appears
atomically). Axial slices of the synthetic volumes, of --train (training volumes of the output modality) and of
--heldout (real volumes of that modality the generator never saw) are windowed as in training and audited:
near-copy threshold calibrated on the held-out slices, and the data-copying test, whose cells adapt to the set
sizes (at most --cells: min(--cells, n // --min-cell), n the smaller of the held-out and generated slice counts).
If the audit passes, the folder becomes --out with manifest.json (checkpoint sha256, version, every item) and
audit/. If it fails, the synthetic volumes are deleted, the report is kept in <out>.rejected, the flagged slices
are printed and the exit status is 3. --allow-flagged releases anyway, --skip-audit releases without an audit
(both recorded). --weights random audits with a seeded random Inception (smoke runs; stamped as not comparable).

Example:
  medsynth generate --ckpt runs/medsynth/<run>/checkpoints/last.ckpt --input data/volumes/patient_008
      --out synthetic_mr --train data/volumes/patient_001/mr.nii.gz --heldout data/volumes/patient_007/mr.nii.gz
      --weights random
  medsynth generate --ckpt runs/medsynth/<run>/checkpoints/last.ckpt --label necrosis --n 1000 --truncation 0.7
      --seed-start 0 --out synthetic_necrosis --train data/slides --heldout data/heldout_slides --weights random
"""

#: Slice selection of the audit: the share of a slice above the window's bottom 5% for it to show anatomy.
MIN_FOREGROUND = 0.05
FOREGROUND_THRESHOLD = -0.9
_HINT = ("lower --min-cell, raise --slices-per-volume, or give more --input and --heldout volumes (the cells adapt "
         "to the set sizes; --cells is the most used)")


def find_volumes(paths: Sequence[str | Path], key: str, *, label: str) -> list[tuple[Path, Path]]:
    """Resolve volume arguments into ``(volume path, name relative to its argument)`` pairs, in a fixed order.

    A NIfTI file is itself (named by its file name); a folder with NIfTI files anywhere below gives those named
    ``<key>.nii[.gz]`` (``patient_007/mr.nii.gz`` in the demo layout) or, when none has that name, all of them,
    named by their path from the folder's parent; a folder without NIfTI files is one DICOM series.

    Args:
        paths: files and folders.
        key: modality key preferred in folders (``ct``, ``mr``, ``pet``).
        label: argument name for messages (``input``, ``train``, ``heldout``).
    """
    from data.errors import DataError
    from data.image_sets import files_under
    from data.volumes import nifti_stem

    if not paths:
        raise ValueError(f"--{label}: no path given")
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(p, f"--{label}: no such file or folder")
        nifti = [] if p.is_file() else [f for f in files_under(p) if nifti_stem(f) is not None]
        if not nifti:  # a file, or a DICOM series folder (load_volume says if it is not one)
            found.append((p, Path(p.name)))
            continue
        keyed = [f for f in nifti if nifti_stem(f) == key]
        found.extend((f, Path(p.name) / f.relative_to(p)) for f in (keyed or nifti))
    seen: set[Path] = set()
    for f, _ in found:
        if f.resolve() in seen:
            raise DataError(f, f"--{label}: given twice")
        seen.add(f.resolve())
    return found


def output_name(rel: Path, source: str, target: str) -> Path:
    """Where the translation of input ``rel`` goes: ``p4/ct.nii.gz`` -> ``p4/mr.nii.gz``, ``a.nii.gz`` ->
    ``a_mr.nii.gz``, DICOM folder ``s1`` -> ``s1_mr.nii.gz``.

    Args:
        rel: the input's name relative to its argument (:func:`find_volumes`).
        source: input modality key.
        target: output modality key.
    """
    from data.volumes import nifti_stem

    stem = nifti_stem(rel)
    if stem is None:
        return rel.parent / f"{rel.name}_{target}.nii.gz"
    return rel.parent / (f"{target}.nii.gz" if stem == source else f"{stem}_{target}.nii.gz")


def _axial_images(unit: np.ndarray, slices: Sequence[int]) -> Tensor:
    """Axial slices of a [-1, 1] volume as ``(N, 3, J, I)`` uint8, J flipped (anterior up, as viewers show)."""
    import numpy as np
    import torch

    from gan.metrics.features import quantize_uint8

    grey = torch.from_numpy(np.ascontiguousarray(unit[:, ::-1, np.asarray(slices)].transpose(2, 1, 0)))[:, None]
    return quantize_uint8(grey.clamp(-1, 1).expand(-1, 3, -1, -1).contiguous())


def _windowed(volume: Volume, window: WindowParams) -> np.ndarray:
    import numpy as np

    from data.errors import DataError
    from data.intensity import to_unit

    unit = np.asarray(to_unit(np.asarray(volume.array, dtype=np.float32), window), dtype=np.float32)
    if unit.ndim != 3:
        raise DataError(volume.source, f"expected a 3D volume, got shape {unit.shape}")
    return unit


def _audit_slices(volume: Volume, window: WindowParams, n: int) -> tuple[Tensor, list[int]]:
    """Up to ``n`` axial slices with anatomy (:func:`gan.metrics.slice_indices`), windowed, as uint8 images."""
    import torch

    from data.errors import DataError
    from gan.metrics import slice_indices

    unit = _windowed(volume, window)
    pick = slice_indices(torch.from_numpy(unit), 2, max_slices=n, min_foreground=MIN_FOREGROUND,
                         foreground_threshold=FOREGROUND_THRESHOLD)
    if pick.size == 0:
        raise DataError(volume.source, "no slice with anatomy inside the training window (empty or mis-windowed?)")
    return _axial_images(unit, pick), [int(k) for k in pick]


@dataclass
class _Slices:
    """Audit rows of a set of volumes: features (or, for LPIPS, images), and where each row came from."""

    keep_images: bool
    parts: list[Tensor] = field(default_factory=list)
    rows: list[tuple[Path, int]] = field(default_factory=list)  # (volume file, slice)
    names: list[str] = field(default_factory=list)

    def add(self, path: Path, name: str, images: Tensor, slices: list[int], embed: Callable[[Tensor], Tensor]) -> None:
        self.parts.append(images if self.keep_images else embed(images))
        self.rows.extend((path, k) for k in slices)
        self.names.extend(f"{name}[slice {k}]" for k in slices)

    def matrix(self, label: str) -> Tensor:
        import torch

        if not self.parts:
            raise ValueError(f"--{label}: no slices to audit")
        if self.keep_images and len({tuple(p.shape[1:]) for p in self.parts}) > 1:
            sizes = sorted({tuple(p.shape[2:]) for p in self.parts})
            raise ValueError(f"--{label}: LPIPS re-ranking needs slices of one size, got in-plane sizes {sizes}; "
                             "resample the volumes or drop --lpips")
        return torch.cat(self.parts)


@dataclass
class VolumeSource:
    """The items of a translation release: one synthetic volume (and its provenance sidecar) per input volume.

    Args:
        translator: the loaded checkpoint.
        inputs: ``(input file, output name)`` pairs.
        direction: ``"forward"`` or ``"reverse"`` (CycleGAN).
    """

    translator: Translator
    inputs: list[tuple[Path, Path]]
    direction: Direction = "forward"

    def plan(self) -> list[ItemSpec]:
        """One item per input, keyed by its output name."""
        from gan.release import ItemSpec

        return [ItemSpec(key=name.as_posix(), record={"input": str(path), "output": name.as_posix()})
                for path, name in self.inputs]

    def make(self, spec: ItemSpec, stage: Path) -> list[str]:
        """Translate one input and write it (NIfTI + sidecar, atomically) into ``stage``.

        Args:
            spec: the item.
            stage: the staging folder.
        """
        import numpy as np

        from data.errors import DataError
        from data.volumes import load_volume, sidecar_path, write_nifti

        path = Path(spec.record["input"])
        syn = self.translator.translate(load_volume(path), self.direction)
        if not np.isfinite(syn.array).all():
            raise DataError(path, "the translation contains NaN/Inf (diverged checkpoint?)")
        prov = {**self.translator.provenance(self.direction), "input": str(path)}
        write_nifti(syn, stage / spec.key, provenance=prov)
        return [spec.key, sidecar_path(spec.key).as_posix()]


@dataclass
class SliceAudit:
    """The memorization audit of a translation release, on axial slices windowed as in training.

    Args:
        translator: the checkpoint (its training windows).
        key: output modality key.
        train: training volumes of the output modality.
        heldout: real volumes of that modality the generator never saw.
        extractor: feature network.
        settings: audit settings.
        protocol: feature pre-processing protocol.
        lpips: per-pair LPIPS for re-ranking (keeps the slices in memory), or None.
        slices_per_volume: slices per volume.
    """

    translator: Translator
    key: str
    train: list[Path]
    heldout: list[Path]
    extractor: FeatureExtractor
    settings: AuditSettings
    protocol: str = "pytorch-fid"
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None
    slices_per_volume: int = 16

    def _slices(self, volumes: Sequence[tuple[Path, str]]) -> _Slices:
        from data.volumes import load_volume
        from gan.metrics.features import extract_features

        step = self.settings.batch_size

        def embed(images: Tensor) -> Tensor:
            import torch

            return torch.cat([extract_features(images[s:s + step], self.extractor, self.protocol).detach().float().cpu()
                              for s in range(0, images.shape[0], step)])

        out = _Slices(keep_images=self.lpips is not None)
        for path, name in volumes:
            vol = load_volume(path)
            images, ks = _audit_slices(vol, self.translator.windows[self.key].fit(vol.array), self.slices_per_volume)
            out.add(path, name, images, ks, embed)
        return out

    def _pairs(self, report: MemorizationReport, generated: _Slices, train: _Slices) -> np.ndarray | None:
        """Images of the closest (generated, training) pairs, read again from disk (each volume once)."""
        import torch

        from data.volumes import load_volume

        units: dict[Path, np.ndarray] = {}

        def image(path: Path, k: int) -> Tensor:
            if path not in units:
                vol = load_volume(path)
                units[path] = _windowed(vol, self.translator.windows[self.key].fit(vol.array))
            return _axial_images(units[path], [k])[0]

        pairs = [[image(*generated.rows[int(g)]), image(*train.rows[int(t)])]
                 for g, t in zip(report.pair_generated, report.pair_train)]
        if not pairs or len({tuple(x.shape) for p in pairs for x in p}) != 1:
            return None
        return torch.stack([torch.stack(p) for p in pairs]).numpy()

    def __call__(self, items: Sequence[StagedItem], stage: Path, report_dir: Path) -> AuditOutcome:
        """Audit the staged synthetic volumes against the training and held-out volumes.

        Args:
            items: the staged items.
            stage: the staging folder.
            report_dir: where the audit report goes.
        """
        from gan.release import memorization_audit

        generated = self._slices([(stage / item.key, item.key) for item in items])
        train = self._slices([(p, str(p)) for p in self.train])
        heldout = self._slices([(p, str(p)) for p in self.heldout])
        report, outcome = memorization_audit(
            train.matrix("train"), heldout.matrix("heldout"), generated.matrix("input"), names=generated.names,
            settings=self.settings, report_dir=report_dir, extractor=self.extractor, protocol=self.protocol,
            lpips=self.lpips, pair_images=lambda r: self._pairs(r, generated, train), hint=_HINT)
        counts = {"generated": len(generated.rows), "train": len(train.rows), "heldout": len(heldout.rows)}
        summary = {**outcome.summary, "slices_per_volume": self.slices_per_volume, "n_slices": counts,
                   "train": [str(p) for p in self.train], "heldout": [str(p) for p in self.heldout]}
        return replace(outcome, summary=summary, details=report)


def _reference_volumes(translator: Translator, paths: Sequence[str | Path], key: str, label: str) -> list[Path]:
    """Reference volumes of the output modality, each checked to be of it (declared modality and intensities)."""
    from data.errors import DataError
    from data.volumes import load_volume
    from gan.commands.translate import modality_mismatch

    files = [p for p, _ in find_volumes(paths, key, label=label)]
    for f in files:
        why = modality_mismatch(load_volume(f), key)
        if why is not None:
            raise DataError(f, f"--{label}: {why}, but the audit compares {key.upper()} volumes (the output of "
                               f"{translator.family})")
    return files


def generate(translator: Translator, inputs: Sequence[str | Path], out: str | Path, *,
             train: Sequence[str | Path] | None, heldout: Sequence[str | Path] | None,
             extractor: FeatureExtractor | None = None, protocol: str = "pytorch-fid",
             lpips: Callable[[Tensor, Tensor], Tensor] | None = None, direction: Direction = "forward",
             slices_per_volume: int = 16, audit: AuditSettings | None = None, policy: ReleasePolicy | None = None,
             progress: bool = False) -> ReleaseResult:
    """Translate ``inputs`` into a new data set ``out``, released only if the memorization audit passes.

    Args:
        translator: the translation checkpoint (:meth:`gan.commands.translate.Translator.load`).
        inputs: input volumes of the direction's source modality (files or folders, see :func:`find_volumes`).
        out: the data set folder (refused when it exists, unless ``policy.overwrite``).
        train: the generator's training volumes of the output modality.
        heldout: real volumes of the output modality it never saw (threshold calibration).
        extractor: audit feature network; None loads the FID Inception from the torch hub cache.
        protocol: feature pre-processing protocol.
        lpips: per-pair LPIPS re-ranking (slices of one in-plane size; all sets are then held in memory).
        direction: ``"forward"`` or ``"reverse"`` (CycleGAN).
        slices_per_volume: axial slices per volume in the audit.
        audit: audit settings (default :class:`gan.release.AuditSettings`).
        policy: overwrite / allow-flagged / skip-audit (default :class:`gan.release.ReleasePolicy`).
        progress: a progress bar over the volumes (on a terminal).

    Raises:
        AuditFailed: the audit flagged the set (the report is kept in ``<out>.rejected``).
        FileExistsError: ``out`` exists and ``policy.overwrite`` is False.
    """
    from data.files import check_overwrite
    from gan.release import AuditSettings, ReleasePolicy, release

    policy = policy or ReleasePolicy()
    check_overwrite(out, overwrite=policy.overwrite, what="data set")
    src, tgt = translator.keys(direction)
    items = find_volumes(inputs, src, label="input")
    names = [output_name(rel, src, tgt) for _, rel in items]
    dupes = sorted({str(n) for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"--input: several inputs would be written to {dupes[0]}; give their parent folder instead")
    auditor = None
    if not policy.skip_audit:
        if not train or not heldout:
            raise ValueError("the memorization audit needs --train (the generator's training volumes of the output "
                             "modality) and --heldout (real volumes of that modality it never saw); --skip-audit "
                             "releases without it")
        train_files = _reference_volumes(translator, train, tgt, "train")
        heldout_files = _reference_volumes(translator, heldout, tgt, "heldout")
        overlap = {p.resolve() for p in train_files} & {p.resolve() for p in heldout_files}
        if overlap:
            raise ValueError(f"--train and --heldout share {sorted(map(str, overlap))[0]}; held-out volumes must be "
                             "unseen")
        if extractor is None:
            from gan.metrics import FIDInceptionV3

            extractor = FIDInceptionV3()
        auditor = SliceAudit(translator, tgt, train_files, heldout_files, extractor.to(translator.device).eval(),
                             audit or AuditSettings(), protocol=protocol, lpips=lpips,
                             slices_per_volume=slices_per_volume)
    prov = translator.provenance(direction)
    identity = {k: prov[k] for k in ("checkpoint_sha256", "model", "direction")}
    return release(VolumeSource(translator, list(zip((p for p, _ in items), names)), direction), out=out,
                   provenance=prov, identity=identity, auditor=auditor, policy=policy, progress=progress)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth generate``.

    Args:
        parser: the (sub)parser to fill.
    """
    from gan.commands.evaluate import EXTRACTORS, weights_arg

    p = parser
    p.add_argument("--ckpt", required=True, type=Path,
                   help="checkpoint (.ckpt) of a CycleGAN, Pix2Pix or StyleGAN2 run, or a `medsynth export` folder")
    p.add_argument("--input", nargs="+", type=Path, default=None,
                   help="translation: source volumes: NIfTI files, folders of them (<patient>/<source>.nii.gz), "
                        "DICOM series folders")
    p.add_argument("--out", required=True, type=Path, help="new folder for the synthetic data set")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (atomically, when released)")
    p.add_argument("--train", nargs="+", type=Path, default=None,
                   help="the generator's training data: volumes of the OUTPUT modality, or (StyleGAN2) slides / "
                        "slide folders with region CSVs / tile folders")
    p.add_argument("--heldout", nargs="+", type=Path, default=None,
                   help="real data of the output modality / class the generator never saw (calibrates the audit)")
    p.add_argument("--direction", choices=("forward", "reverse"), default="forward", help="CycleGAN direction")
    t = p.add_argument_group("StyleGAN2 tiles")
    t.add_argument("--label", default=None, help="class name or index of the tiles (conditional generators)")
    t.add_argument("--n", type=int, default=None, help="number of tiles (seeds --seed-start, --seed-start + 1, ...)")
    t.add_argument("--seed-start", type=int, default=0, help="first seed")
    t.add_argument("--seeds", default=None, help="explicit seeds instead of --n, e.g. 0-99,200")
    t.add_argument("--truncation", type=float, default=1.0, help="psi, towards the class's average w")
    t.add_argument("--noise-mode", choices=("const", "none"), default="const", help="synthesis noise")
    t.add_argument("--gen-batch", type=int, default=16, help="tiles per synthesis call (part of what reproduces them)")
    t.add_argument("--max-reference", type=int, default=2000, help="most real tiles per reference set in the audit")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    g = p.add_argument_group("memorization audit")
    g.add_argument("--extractor", choices=EXTRACTORS, default="fid-inception", help="audit feature network")
    g.add_argument("--weights", type=weights_arg, default=None,
                   help="extractor weights file or folder, or 'random' (seeded random network: smoke runs, stamped as "
                        "not comparable); unset: the torch hub cache (never downloaded)")
    g.add_argument("--protocol", choices=("pytorch-fid", "clean"), default="pytorch-fid",
                   help="feature pre-processing protocol")
    g.add_argument("--lpips", action="store_true",
                   help="re-rank nearest neighbours with LPIPS and flag LPIPS near-copies too (slices of one size)")
    g.add_argument("--lpips-weights", type=weights_arg, default=None,
                   help="LPIPS AlexNet backbone weights, or 'random'; unset: the torch hub cache")
    g.add_argument("--slices-per-volume", type=int, default=16, help="axial slices per volume in the audit")
    g.add_argument("--batch-size", type=int, default=32, help="slices per feature batch")
    g.add_argument("--quantile", type=float, default=0.01, help="near-copy threshold quantile of held-out distances")
    g.add_argument("--cells", type=int, default=10,
                   help="most cells of the data-copying test (fewer for small sets: min(cells, n // min-cell))")
    g.add_argument("--min-cell", type=int, default=20, help="fewest slices of both sets for a cell to count in C_T")
    g.add_argument("--alpha", type=float, default=0.01, help="significance level of the near-copy excess test")
    g.add_argument("--seed", type=int, default=0, help="k-means seed")
    g.add_argument("--allow-flagged", action="store_true", help="release even if the audit fails (recorded)")
    g.add_argument("--skip-audit", action="store_true",
                   help="release without an audit (recorded; not for patient data)")


def _print_result(result: ReleaseResult, what: str = "volumes") -> None:
    audit = result.audit
    verdict = "skipped" if audit is None else ("passed" if audit.passed else "FAILED (released with --allow-flagged)")
    resumed = f", {result.resumed} resumed from an interrupted run" if result.resumed else ""
    print(f"released {len(result.items)} synthetic {what} to {result.out}/ (memorization audit {verdict}{resumed}); "
          f"manifest {result.manifest}")
    if audit is not None and not audit.comparable:
        print("warning: the audit used a random-weights Inception (--weights random): a smoke run, not evidence")


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth generate``; returns 0, or 3 (``EXIT_AUDIT_FAILED``) when the audit refused the release.

    Args:
        args: the parsed arguments.
    """
    from gan.commands.translate import Translator
    from gan.models import TranslationModule
    from gan.models.checkpoint import load_module, read_checkpoint
    from gan.release import AuditFailed, AuditSettings, ReleasePolicy

    if Path(args.ckpt).is_dir() or read_checkpoint(args.ckpt)["medsynth"]["family"] == "StyleGAN2":
        return _run_tiles(args)
    if args.input is None:
        raise ValueError("--input: translation checkpoints translate input volumes; give --input")
    loaded = load_module(args.ckpt, map_location="cpu")
    if not isinstance(loaded.module, TranslationModule):
        raise ValueError(f"{args.ckpt}: generate has no source for {loaded.family} checkpoints")
    translator = Translator(loaded, device=args.device)
    extractor, lpips = _audit_tools(args)
    audit = AuditSettings(quantile=args.quantile, cells=args.cells, min_cell=args.min_cell, alpha=args.alpha,
                          seed=args.seed, batch_size=args.batch_size)
    policy = ReleasePolicy(overwrite=args.overwrite, allow_flagged=args.allow_flagged, skip_audit=args.skip_audit)
    quiet = bool(getattr(args, "quiet", False))
    try:
        result = generate(translator, args.input, args.out, train=args.train, heldout=args.heldout,
                          extractor=extractor, protocol=args.protocol, lpips=lpips, direction=args.direction,
                          slices_per_volume=args.slices_per_volume, audit=audit, policy=policy, progress=not quiet)
    except AuditFailed as exc:
        return _print_failure(exc)
    _print_result(result)
    return 0


def _print_failure(exc: Exception) -> int:
    from gan.commands import EXIT_AUDIT_FAILED

    print(str(exc))
    flagged = list(getattr(exc, "flagged", ()))
    for name in flagged[:50]:
        print(f"  flagged: {name}")
    if len(flagged) > 50:
        print(f"  ... {len(flagged) - 50} more in {getattr(exc, 'report_dir', '')}/audit/memorization.json")
    return EXIT_AUDIT_FAILED


def _audit_tools(args: argparse.Namespace) -> tuple[FeatureExtractor | None, Callable[[Tensor, Tensor], Tensor] | None]:
    """The audit's extractor and optional LPIPS from the command line (None, None with --skip-audit)."""
    from gan.commands.evaluate import RANDOM_WEIGHTS, build_extractor

    if args.skip_audit:
        return None, None
    extractor = build_extractor(args.extractor, args.weights, args.device)
    lpips = None
    if args.lpips:
        from gan.losses import LPIPSLoss

        random = args.lpips_weights == RANDOM_WEIGHTS
        lpips = LPIPSLoss(pretrained=not random, backbone_weights=None if random else args.lpips_weights,
                          reduction="none").to(args.device)
    return extractor, lpips


def _run_tiles(args: argparse.Namespace) -> int:
    """``medsynth generate`` for a StyleGAN2 checkpoint or export folder."""
    from gan.commands.generate_tiles import generate_tiles, parse_seeds
    from gan.commands.stylegan import open_generator
    from gan.release import AuditFailed, AuditSettings, ReleasePolicy

    if args.input is not None:
        raise ValueError("--input is for translation checkpoints; a StyleGAN2 generator draws --n tiles of --label")
    seeds = parse_seeds(args.n, args.seed_start, args.seeds)
    G, info = open_generator(args.ckpt, device=args.device)
    extractor, lpips = _audit_tools(args)
    audit = AuditSettings(quantile=args.quantile, cells=args.cells, min_cell=args.min_cell, alpha=args.alpha,
                          seed=args.seed, batch_size=args.batch_size)
    policy = ReleasePolicy(overwrite=args.overwrite, allow_flagged=args.allow_flagged, skip_audit=args.skip_audit)
    try:
        result = generate_tiles(G, info, args.out, label=args.label, seeds=seeds, truncation=args.truncation,
                                noise_mode=args.noise_mode, train=args.train, heldout=args.heldout,
                                extractor=extractor, protocol=args.protocol, lpips=lpips, audit=audit, policy=policy,
                                batch=args.gen_batch, max_reference=args.max_reference,
                                progress=not bool(getattr(args, "quiet", False)))
    except AuditFailed as exc:
        return _print_failure(exc)
    _print_result(result, what="tiles")
    return 0


__all__ = ["SliceAudit", "VolumeSource", "add_arguments", "find_volumes", "generate", "output_name", "run"]
