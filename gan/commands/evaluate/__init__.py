"""``medsynth evaluate``: the command line (its options, the checks between them, the call of one evaluation).

The two evaluations it runs live in their own modules, and their names are exported from here:

* :mod:`gan.commands.evaluate.images`: FID / KID / the memorization audit of image sets (``--metrics fid,kid``),
  with :mod:`gan.commands.evaluate.fidelity` (``--metrics prdc,swd``: precision/recall/density/coverage, sliced
  Wasserstein, each beside its held-out floor) and :mod:`gan.commands.evaluate.utility` (``--utility``: the
  downstream-utility test of a synthetic rare-class set against plain oversampling);
* :mod:`gan.commands.evaluate.volumes`: paired whole-volume metrics, model and trivial baseline, in the window of
  each volume's modality (``--metrics mae,psnr,ssim``);
* :mod:`gan.commands.evaluate.common`: what both share (metric names, option vocabularies, the report folder).

Both write the report (``report.json``, ``report.md``, plots; :mod:`gan.reports`) into a new folder, atomically (an
existing one is refused unless ``--overwrite``), and log it to an active W&B run. This module imports only the
standard library at import time, so ``medsynth evaluate --help`` needs no torch: the evaluations' names are
exported lazily (PEP 562) and the command imports them when it runs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gan.commands import UsageError
from gan.commands.evaluate.common import (
    CHECKPOINT_SUFFIXES,
    DISTRIBUTION_METRICS,
    EXTRACTORS,
    MODALITY_KEYS,
    PAIRED_METRICS,
    RANDOM_WEIGHTS,
    extractor_arg,
    parse_metrics,
    weights_arg,
)

if TYPE_CHECKING:
    from gan.commands.evaluate.fidelity import FidelitySettings
    from gan.commands.evaluate.images import (
        FeatureSettings,
        ImageSetInputs,
        KIDSettings,
        build_extractor,
        distribution_report,
        evaluate_images,
    )
    from gan.commands.evaluate.utility import UtilityRequest
    from gan.commands.evaluate.volumes import (
        LPIPSSettings,
        TrainingWindows,
        VolumeSettings,
        evaluate_volumes,
        paired_report,
    )

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DESCRIPTION",
    "DISTRIBUTION_METRICS",
    "EXTRACTORS",
    "FidelitySettings",
    "HELP",
    "MODALITY_KEYS",
    "PAIRED_METRICS",
    "RANDOM_WEIGHTS",
    "FeatureSettings",
    "ImageSetInputs",
    "KIDSettings",
    "LPIPSSettings",
    "TrainingWindows",
    "UtilityRequest",
    "VolumeSettings",
    "add_arguments",
    "build_extractor",
    "distribution_report",
    "evaluate_args",
    "evaluate_images",
    "evaluate_volumes",
    "paired_report",
    "parse_metrics",
    "run",
    "training_windows_from",
    "weights_arg",
]

#: Names exported from :mod:`gan.commands.evaluate.images` and :mod:`gan.commands.evaluate.volumes` on first use.
_IMAGE_NAMES: tuple[str, ...] = ("FeatureSettings", "ImageSetInputs", "KIDSettings", "build_extractor",
                                 "distribution_report", "evaluate_images")
_VOLUME_NAMES: tuple[str, ...] = ("LPIPSSettings", "TrainingWindows", "VolumeSettings", "evaluate_volumes",
                                  "paired_report")
#: Names exported from :mod:`gan.commands.evaluate.fidelity` and :mod:`gan.commands.evaluate.utility`.
_FIDELITY_NAMES: tuple[str, ...] = ("FidelitySettings",)
_UTILITY_NAMES: tuple[str, ...] = ("UtilityRequest",)
#: The training-window settings (volume datamodule arguments of the same names).
_WINDOW_FIELDS: tuple[str, ...] = ("ct_window", "pet_window", "pet_log", "mr_percentiles")


def __getattr__(name: str) -> Any:
    """Import the torch-backed evaluation names on first use (PEP 562).

    Args:
        name: the attribute asked for.
    """
    if name in _IMAGE_NAMES:
        from gan.commands.evaluate import images

        return getattr(images, name)
    if name in _VOLUME_NAMES:
        from gan.commands.evaluate import volumes

        return getattr(volumes, name)
    if name in _FIDELITY_NAMES:
        from gan.commands.evaluate import fidelity

        return getattr(fidelity, name)
    if name in _UTILITY_NAMES:
        from gan.commands.evaluate import utility

        return getattr(utility, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


HELP = ("FID/KID/precision-recall/SWD/memorization of image sets, the downstream-utility test, or paired-volume "
        "metrics (MAE, PSNR, SSIM), as a report")
DESCRIPTION = """Evaluate synthetic images or volumes against real ones and write a report folder (report.json,
report.md, plots); an existing --out is refused unless --overwrite.

Image sets (--metrics fid,kid,memorization): --real/--fake are image folders (PNG/JPEG/TIFF, searched
recursively), whole-slide images (tiled at --mpp or --magnification) or, for the real side of FID, a statistics
.npz. The memorization audit also needs --train and --heldout images. --weights random uses a seeded random
Inception for smoke runs: every report then says its numbers compare with nothing.

Fidelity and diversity (--metrics prdc,swd): precision and recall (k-NN manifolds, k = 3) and density and coverage
(k = 5) on the --extractor's features (fid-inception, torchvision-inception, or a domain encoder timm:<model> /
torchvision:<model> with --weights FILE), and the multi-scale sliced Wasserstein distance on Laplacian-pyramid
patches, which needs no weights at all (the offline score). Per class where the sets carry classes (class
sub-folders, a synthetic set's manifest, slide region labels). With --heldout, held-out real images are scored
against --real the same way: the floor to read each number against.

Downstream utility (--utility): trains the same classifier (--classifier resnet18 from scratch, tiny, or
timm:<model> with --classifier-weights) on real --train tiles only, on real tiles with the rare class oversampled
(augmented repeats), and on real tiles plus the synthetic rare tiles of --fake, with identical budget and seeds
(--utility-seeds, at least 3); reports per-class recall/precision/F1, balanced accuracy and the rare class's AUROC
on --heldout tiles (other slides; without --heldout, --train is split by slide) as mean +- std, and a verdict line.
Labelled tiles: <root>/<class>/<slide>/<tile>.png, a CSV with columns path,label,slide, or slides with region CSVs.

Paired volumes (--metrics mae,psnr,ssim[,lpips]): per patient, in physical units, inside the body mask, averaged
over patients. Give either two folders matched by relative path (--real DIR --fake DIR [--mask-dir DIR]
[--baseline DIR]) or one split of a data folder (--data DIR --splits splits.json --split test --target mr
[--mask body_mask] --fake DIR, synthetic volumes matched by patient id as <fake>/<patient>/<target>.nii.gz or
<fake>/<patient>.nii.gz). The window follows the modality of the volumes (sidecar, DICOM tag, --target or
--modality): CT the protocol's HU window, PET SUV [0, 20], MR each patient's percentile window as in training;
--window fixes one for all. --baseline copy (the --source volume mapped through the training windows) or mean (the
mean training target inside the body) scores the trivial baseline beside the model; --ckpt takes the training
windows from the model's checkpoint (or give --ct-window, --pet-window, --mr-percentiles).

Examples:
  medsynth evaluate --data demo_out/data/volumes --splits demo_out/data/splits.json --split test --target mr
      --mask body_mask --fake demo_out/synthetic_mr --baseline copy --source ct --ckpt last.ckpt
      --metrics mae,psnr,ssim --out rep/
  medsynth evaluate --real tiles/real --fake tiles/synthetic --train tiles/train --heldout tiles/heldout
      --metrics fid,kid,memorization --weights random --out rep_fid/
  medsynth evaluate --real tiles/train --heldout tiles/heldout --fake synthetic/necrosis --metrics swd --out rep_swd/
  medsynth evaluate --train tiles/train --heldout tiles/heldout --fake synthetic/necrosis --utility
      --rare-class necrosis --out rep_utility/
"""


def _metrics_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_metrics(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _extractor_arg(text: str) -> str:
    try:
        return extractor_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``medsynth evaluate``.

    Args:
        parser: the (sub)parser to fill.
    """
    p = parser
    p.add_argument("--metrics", default=None, type=_metrics_arg,
                   help=f"comma-separated: {', '.join(DISTRIBUTION_METRICS)} (image sets) or "
                        f"{', '.join(PAIRED_METRICS)} (paired volumes); may be left out with --utility")
    p.add_argument("--out", required=True, type=Path, help="report folder (report.json, report.md, plots)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder (atomically)")
    p.add_argument("--real", nargs="+", type=Path, default=None,
                   help="real images: image folder(s), slide folder(s)/files or FID statistics .npz; paired "
                        "metrics: ONE folder of reference volumes (or use --data)")
    p.add_argument("--fake", required=True, nargs="+", type=Path,
                   help="synthetic images (folder(s)/slides) or, for paired metrics, a folder of synthetic volumes")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0")
    g = p.add_argument_group("image sets (fid, kid, memorization, prdc, swd)")
    g.add_argument("--train", nargs="+", type=Path, default=None,
                   help="training images (memorization audit); --utility: the real labelled training tiles")
    g.add_argument("--heldout", nargs="+", type=Path, default=None,
                   help="held-out real images (memorization audit; the floor of prdc and swd); --utility: the labelled "
                        "tiles it scores on")
    g.add_argument("--extractor", type=_extractor_arg, default="fid-inception",
                   help=f"feature network: {', '.join(EXTRACTORS)}, timm:<model> or torchvision:<model> (a domain "
                        "encoder; its weights from --weights)")
    g.add_argument("--weights", type=weights_arg, default=None,
                   help="extractor weights file or folder, or 'random' (seeded random network: smoke runs, not "
                        "comparable); unset: the torch hub cache (never downloaded)")
    g.add_argument("--fid-protocol", choices=("pytorch-fid", "clean"), default="pytorch-fid",
                   help="pre-processing protocol of FID/KID features")
    g.add_argument("--batch-size", type=int, default=32, help="images per step (bounds memory)")
    g.add_argument("--tile-size", type=int, default=256, help="tile side for whole-slide inputs")
    scale = g.add_mutually_exclusive_group()
    scale.add_argument("--mpp", type=float, default=None, help="tile scale for slides, microns per pixel")
    scale.add_argument("--magnification", type=float, default=None, help="tile scale for slides (10 / mpp)")
    g.add_argument("--mpp-override", type=float, default=None, help="um/px of slides without MPP metadata")
    g.add_argument("--kid-subsets", type=int, default=100, help="KID subsets")
    g.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size")
    g.add_argument("--seed", type=int, default=0, help="seed of KID subsets and the audit's k-means")
    g.add_argument("--audit-quantile", type=float, default=0.01,
                   help="memorization: held-out quantile setting the near-copy threshold")
    g.add_argument("--audit-cells", type=int, default=10,
                   help="memorization: most k-means cells of the data-copying test (fewer for small sets: "
                        "min(cells, n // min-cell))")
    g.add_argument("--audit-min-cell", type=int, default=20,
                   help="memorization: fewest held-out and generated samples for a cell to count")
    f = p.add_argument_group("fidelity (prdc, swd)")
    f.add_argument("--prdc-k", type=int, nargs=2, default=(3, 5), metavar=("K_PR", "K_DC"),
                   help="neighbourhood sizes: k for precision/recall, k for density/coverage")
    f.add_argument("--swd-patches", type=int, default=128, help="SWD: 7x7 patches per image and pyramid level")
    f.add_argument("--swd-projections", type=int, default=512, help="SWD: random directions per level")
    f.add_argument("--swd-normalisation", choices=("karras", "real"), default="karras",
                   help="SWD: each set normalised by its own channel statistics (karras, the paper; blind to a "
                        "global colour shift) or both by the real set's (real: a stain shift counts)")
    f.add_argument("--swd-min-resolution", type=int, default=16, help="SWD: smallest pyramid level")
    f.add_argument("--swd-size", type=int, default=None,
                   help="SWD: image side every set is resized to; unset: the first synthetic image's")
    f.add_argument("--swd-max-descriptors", type=int, default=2**17,
                   help="SWD: most patches per set and level (a seeded subsample beyond it bounds the time)")
    u = p.add_argument_group("downstream utility (--utility)")
    u.add_argument("--utility", action="store_true",
                   help="train a classifier on real / real + oversampled rare / real + synthetic rare tiles and "
                        "compare them on --heldout tiles")
    u.add_argument("--rare-class", default=None,
                   help="the rare class (its synthetic tiles are added); unset: the class with fewest --train tiles")
    u.add_argument("--classifier", default="resnet18",
                   help="resnet18 (torchvision, from scratch), tiny (a small CNN: smoke runs) or timm:<model>")
    u.add_argument("--classifier-weights", type=Path, default=None,
                   help="timm:<model> only: local backbone weights file (never downloaded); unset: from scratch")
    u.add_argument("--utility-seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="training seeds, at least 3 (the same for every regime)")
    u.add_argument("--utility-steps", type=int, default=300, help="optimiser steps per run (the budget)")
    u.add_argument("--utility-batch-size", type=int, default=32, help="tiles per step")
    u.add_argument("--utility-lr", type=float, default=1e-3, help="AdamW learning rate (cosine decay)")
    u.add_argument("--utility-size", type=int, default=None,
                   help="tile side the classifier sees; unset: the smallest of the sets' tiles")
    u.add_argument("--utility-threads", type=int, default=None,
                   help="CPU threads while training (1 suits small nets on busy machines); unset: torch's default")
    u.add_argument("--utility-max-synthetic", type=int, default=None, help="use at most this many synthetic tiles")
    u.add_argument("--heldout-fraction", type=float, default=0.3,
                   help="without --heldout: fraction of --train tiles held out, whole slides at a time")
    v = p.add_argument_group("paired volumes (mae, psnr, ssim, ms_ssim, lpips)")
    v.add_argument("--data", type=Path, default=None, help="data folder of patient folders (<patient>/<key>.nii.gz)")
    v.add_argument("--splits", type=Path, default=None, help="splits JSON of --data (split name -> patient ids)")
    v.add_argument("--split", default="test", help="split of --data to evaluate")
    v.add_argument("--target", choices=tuple(MODALITY_KEYS), default=None,
                   help="key of the reference volumes in --data (also their modality)")
    v.add_argument("--mask", default=None, help="key of the body masks in --data (e.g. body_mask)")
    v.add_argument("--source", choices=tuple(MODALITY_KEYS), default=None,
                   help="key of the input volumes in --data (for --baseline copy)")
    v.add_argument("--mask-dir", type=Path, default=None, help="with --real: body masks matched by relative path")
    v.add_argument("--baseline", default=None,
                   help="trivial baseline: 'copy' or 'mean' (made from --data), or with --real a folder of baseline "
                        "volumes matched by relative path")
    v.add_argument("--modality", choices=tuple(MODALITY_KEYS), default=None,
                   help="modality of reference volumes that declare none (no sidecar / DICOM tag)")
    v.add_argument("--protocol", choices=("default", "synthrad2023", "synthrad2025"), default="default",
                   help="volume metric protocol")
    v.add_argument("--window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="one fixed evaluation window in physical units; unset: by modality")
    t = p.add_argument_group("training windows (MR evaluation window, --baseline copy/mean)")
    t.add_argument("--ckpt", type=Path, default=None,
                   help="checkpoint of the evaluated model: the options below not given come from its datamodule "
                        "(else the datamodule defaults)")
    t.add_argument("--mr-percentiles", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="MR per-volume window percentiles (datamodule mr_percentiles; 0.5 99.5)")
    t.add_argument("--ct-window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="CT window in HU (datamodule ct_window; -1024 3000)")
    t.add_argument("--pet-window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="PET window in SUV (datamodule pet_window; 0 20)")
    t.add_argument("--pet-log", action="store_true", default=None, help="the PET window is log-compressed")
    v.add_argument("--lpips-net", choices=("alex", "vgg", "squeeze"), default="alex", help="LPIPS backbone")
    v.add_argument("--lpips-weights", type=weights_arg, default=None,
                   help="LPIPS backbone weights, or 'random'; unset: the torch hub cache")
    v.add_argument("--lpips-max-slices", type=int, default=32, help="slices per axis for 2.5D LPIPS")



def training_windows_from(args: argparse.Namespace) -> TrainingWindows:
    """The training windows of parsed arguments: each option given, else the checkpoint's datamodule setting
    (``--ckpt``), else the datamodule default.

    Args:
        args: parsed ``medsynth evaluate`` arguments.
    """
    from gan.commands.evaluate.volumes import TrainingWindows

    settings: dict[str, Any] = {}
    if getattr(args, "ckpt", None) is not None:
        from gan.models.checkpoint import read_checkpoint

        hp = read_checkpoint(args.ckpt).get("datamodule_hyper_parameters") or {}
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in hp.items() if k in _WINDOW_FIELDS}
    for key in _WINDOW_FIELDS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = tuple(value) if isinstance(value, list) else value
    return TrainingWindows(**settings)


def _volumes_from_args(args: argparse.Namespace, names: tuple[str, ...], quiet: bool) -> dict[str, Any]:
    """Paired volumes from ``--data``/``--splits`` or ``--real``/``--mask-dir``, scored by ``evaluate_volumes``."""
    from data.image_sets import MaskedVolume, find_volume_pairs, split_volume_pairs, training_volumes
    from gan.commands.evaluate.volumes import LPIPSSettings, VolumeSettings, evaluate_volumes

    baseline = args.baseline
    computed = baseline if baseline in ("copy", "mean") else None
    modality, given_by = args.modality, "--modality"
    if len(args.fake) != 1:
        raise ValueError(f"--fake: paired metrics take ONE folder of volumes, got {[str(p) for p in args.fake]}")
    fake = args.fake[0]
    if fake.is_file() and fake.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise ValueError(f"--fake {fake}: is a checkpoint; translate the volumes first (`medsynth translate` or "
                         "`medsynth generate`) and pass the folder of synthetic volumes")
    training: list[MaskedVolume] = []
    if args.data is not None:
        if args.real is not None or args.mask_dir is not None:
            raise ValueError("give --data (with --splits, --split, --target) or --real (with --mask-dir), not both")
        if args.splits is None or args.target is None:
            raise ValueError("--data needs --splits (the splits JSON) and --target (the reference key, e.g. mr)")
        if baseline is not None and computed is None:
            raise ValueError(f"--baseline {baseline}: with --data the baseline is made here: 'copy' or 'mean'")
        if modality is not None and modality != args.target:
            raise ValueError(f"--modality {modality} contradicts --target {args.target}")
        modality, given_by = args.target, "--target"
        pairs = split_volume_pairs(data_dir=args.data, splits_file=args.splits, split=args.split, target=args.target,
                                   fake_dir=fake, mask=args.mask, source=args.source if computed == "copy" else None)
        if computed == "mean":
            training = training_volumes(data_dir=args.data, splits_file=args.splits, target=args.target,
                                        mask=args.mask)
        inputs = {"data": str(args.data), "splits": str(args.splits), "split": args.split, "target": args.target,
                  "mask": args.mask, "fake": str(fake), "baseline": baseline, "source": args.source,
                  "ckpt": None if args.ckpt is None else str(args.ckpt)}
    else:
        if args.real is None:
            raise ValueError("paired metrics need --real DIR (reference volumes) or --data DIR --splits FILE")
        if len(args.real) != 1:
            raise ValueError(f"--real: paired metrics take ONE folder of volumes, got {[str(p) for p in args.real]}")
        if computed is not None:
            raise ValueError(f"--baseline {computed} is made from a data folder: use --data/--splits/--split/--target "
                             "(or give a folder of baseline volumes)")
        pairs = find_volume_pairs(args.real[0], fake, mask_dir=args.mask_dir, baseline_dir=baseline)
        inputs = {"real": str(args.real[0]), "fake": str(fake), "mask_dir": None if args.mask_dir is None else
                  str(args.mask_dir), "baseline": baseline}
    settings = VolumeSettings(
        protocol=args.protocol, window=None if args.window is None else tuple(args.window), modality=modality,
        training=training_windows_from(args),
        baseline=computed, source=args.source)
    return evaluate_volumes(pairs, metrics=names, out=args.out, settings=settings, training=training,
                            lpips_settings=LPIPSSettings(net=args.lpips_net, weights=args.lpips_weights,
                                                         max_slices=args.lpips_max_slices),
                            device=args.device, inputs=inputs, overwrite=args.overwrite, quiet=quiet,
                            given_by=given_by)


def _utility_from_args(args: argparse.Namespace) -> UtilityRequest | None:
    """The utility test asked for by ``--utility`` (None without it)."""
    if not getattr(args, "utility", False):
        return None
    from gan.commands.evaluate.utility import UtilityRequest
    from gan.utility import TrainSettings, UtilitySettings

    if not args.train:
        raise UsageError("--utility needs --train: the real labelled training tiles (<root>/<class>/<slide>/"
                         "<tile>.png, a CSV with columns path,label,slide, or slides with region CSVs)")
    try:
        train = TrainSettings(classifier=args.classifier, classifier_weights=args.classifier_weights,
                              steps=args.utility_steps, batch_size=args.utility_batch_size, lr=args.utility_lr,
                              device=args.device, threads=args.utility_threads)
        settings = UtilitySettings(seeds=tuple(args.utility_seeds), rare_class=args.rare_class,
                                   size=args.utility_size, max_synthetic=args.utility_max_synthetic, train=train)
    except ValueError as exc:
        raise UsageError(f"--utility: {exc}") from exc
    return UtilityRequest(train=tuple(args.train), synthetic=tuple(args.fake), heldout=tuple(args.heldout or ()),
                          heldout_fraction=args.heldout_fraction, split_seed=args.seed, settings=settings)


def _images_from_args(args: argparse.Namespace, names: tuple[str, ...], quiet: bool) -> dict[str, Any]:
    """Image sets from ``--real``/``--fake`` (``--train``/``--heldout``), scored by ``evaluate_images``."""
    from data.image_sets import TileScale
    from gan.commands.evaluate.fidelity import FidelitySettings
    from gan.commands.evaluate.images import FeatureSettings, ImageSetInputs, KIDSettings, evaluate_images
    from gan.release import AuditSettings

    if names and args.real is None:
        raise UsageError(f"--real: --metrics {','.join(names)} needs the real images (or FID statistics .npz)")
    if args.data is not None:
        raise UsageError("--data evaluates paired volumes (--metrics mae,psnr,ssim); image sets take --real")
    utility = _utility_from_args(args)
    inputs = ImageSetInputs(real=tuple(args.real or ()), fake=tuple(args.fake), train=tuple(args.train or ()),
                            heldout=tuple(args.heldout or ()))
    features = FeatureSettings(extractor=args.extractor, weights=args.weights, protocol=args.fid_protocol,
                               batch_size=args.batch_size, device=args.device)
    fidelity = FidelitySettings(k=tuple(args.prdc_k), swd_patches=args.swd_patches,
                                swd_projections=args.swd_projections, swd_normalisation=args.swd_normalisation,
                                swd_min_resolution=args.swd_min_resolution, swd_size=args.swd_size,
                                swd_max_descriptors=args.swd_max_descriptors, seed=args.seed,
                                batch_size=args.batch_size)
    return evaluate_images(
        inputs, metrics=names, out=args.out, features=features,
        tiles=TileScale(tile_size=args.tile_size, mpp=args.mpp, magnification=args.magnification,
                        mpp_override=args.mpp_override),
        kid=KIDSettings(subsets=args.kid_subsets, subset_size=args.kid_subset_size, seed=args.seed),
        audit=AuditSettings(quantile=args.audit_quantile, cells=args.audit_cells, min_cell=args.audit_min_cell,
                            seed=args.seed, batch_size=args.batch_size),
        fidelity=fidelity, utility=utility, overwrite=args.overwrite, quiet=quiet)


def evaluate_args(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate from parsed ``medsynth evaluate`` arguments and return the report (as written to report.json).

    Args:
        args: the namespace of a parser filled by :func:`add_arguments` (``args.quiet`` optional).

    Raises:
        UsageError: neither ``--metrics`` nor ``--utility``, or ``--utility`` beside paired-volume metrics.
    """
    metrics = getattr(args, "metrics", None)
    names = () if metrics is None else (tuple(metrics) if not isinstance(metrics, str) else parse_metrics(metrics))
    quiet = bool(getattr(args, "quiet", False))
    utility = bool(getattr(args, "utility", False))
    if not names and not utility:
        raise UsageError("nothing to evaluate: give --metrics (e.g. fid,kid, prdc,swd or mae,psnr,ssim) and/or "
                         "--utility")
    if names and names[0] in PAIRED_METRICS:
        if utility:
            raise UsageError(f"--utility scores tile classifiers; it cannot run beside the paired-volume metrics "
                             f"{','.join(names)}: run `medsynth evaluate` once for each")
        return _volumes_from_args(args, names, quiet)
    return _images_from_args(args, names, quiet)


def run(args: argparse.Namespace) -> int:
    """Run ``medsynth evaluate``: write the report, print its markdown (unless quiet); returns 0.

    Args:
        args: the parsed arguments.
    """
    evaluate_args(args)
    if not getattr(args, "quiet", False):
        print((Path(args.out) / "report.md").read_text(encoding="utf-8"))
        print(f"report: {Path(args.out) / 'report.json'}")
    return 0
