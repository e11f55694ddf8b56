"""What both evaluations of ``medsynth evaluate`` share: the metric names and their check (``--metrics``), the
vocabulary of the options (``--weights random``, ``--extractor``, the modality keys, the checkpoint suffixes refused
as inputs) and the report folder both write.

Imports only the standard library at import time: the CLI reads these names to build ``--help``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "DISTRIBUTION_METRICS",
    "DOMAIN_EXTRACTOR_PREFIXES",
    "EXTRACTORS",
    "FEATURE_METRICS",
    "MODALITY_KEYS",
    "PAIRED_METRICS",
    "RANDOM_WEIGHTS",
    "PathLike",
    "extractor_arg",
    "parse_metrics",
    "weights_arg",
    "write_report_folder",
]

#: Metrics comparing two image distributions (:mod:`gan.commands.evaluate.images`,
#: :mod:`gan.commands.evaluate.fidelity`).
DISTRIBUTION_METRICS: tuple[str, ...] = ("fid", "kid", "memorization", "prdc", "swd")
#: The distribution metrics that need a feature network (``swd`` works on pixels and needs no weights).
FEATURE_METRICS: tuple[str, ...] = ("fid", "kid", "memorization", "prdc")
#: Metrics comparing paired volumes (:mod:`gan.commands.evaluate.volumes`).
PAIRED_METRICS: tuple[str, ...] = ("mae", "psnr", "ssim", "ms_ssim", "lpips")
#: Suffixes of model files, refused where images or volumes are expected (with a hint).
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".safetensors")
#: Feature networks of ``--extractor`` (evaluate also takes ``timm:<model>`` / ``torchvision:<model>``).
EXTRACTORS: tuple[str, ...] = ("fid-inception", "torchvision-inception")
#: Prefixes of domain extractors: any timm or torchvision backbone from a local weights file.
DOMAIN_EXTRACTOR_PREFIXES: tuple[str, ...] = ("timm:", "torchvision:")
#: ``--weights random``: a seeded random network (smoke runs; not comparable with anything).
RANDOM_WEIGHTS = "random"  # = gan.metrics.features.factory.RANDOM_WEIGHTS (this module imports no torch)
#: Modality keys of ``--target``/``--source``/``--modality`` -> DICOM modality codes.
MODALITY_KEYS: dict[str, str] = {"ct": "CT", "mr": "MR", "pet": "PT"}

PathLike = str | Path

log = logging.getLogger("medsynth.evaluate")


def parse_metrics(text: str | Sequence[str]) -> tuple[str, ...]:
    """Split and check a metric list such as ``"fid,kid"`` (duplicates dropped, order kept).

    Args:
        text: comma-separated names, or a sequence of names.

    Raises:
        ValueError: for an unknown name, an empty list, or a mix of distribution and paired metrics.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for raw in items:
        name = raw.strip().lower().replace("-", "_")
        if not name:
            continue
        if name not in DISTRIBUTION_METRICS + PAIRED_METRICS:
            raise ValueError(f"unknown metric {raw.strip()!r}; choose from "
                             f"{', '.join(DISTRIBUTION_METRICS + PAIRED_METRICS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no metric given; e.g. --metrics fid,kid or --metrics mae,psnr,ssim")
    dist = [n for n in names if n in DISTRIBUTION_METRICS]
    paired = [n for n in names if n in PAIRED_METRICS]
    if dist and paired:
        raise ValueError(f"metrics {dist} compare image distributions and {paired} compare paired volumes; their "
                         "inputs differ, so run `medsynth evaluate` once for each group")
    return tuple(names)


def extractor_arg(text: str) -> str:
    """The argparse type of evaluate's ``--extractor``: a name of :data:`EXTRACTORS`, ``timm:<model>`` or
    ``torchvision:<model>``.

    Args:
        text: the option value.

    Raises:
        ValueError: for anything else.
    """
    if text in EXTRACTORS or any(text.startswith(p) and len(text) > len(p) for p in DOMAIN_EXTRACTOR_PREFIXES):
        return text
    raise ValueError(f"--extractor {text!r}: expected {', '.join(EXTRACTORS)}, timm:<model> or torchvision:<model>")


def weights_arg(text: str) -> str | Path:
    """The argparse type of ``--weights``: ``random`` (seeded random network) or a weights file or folder.

    Args:
        text: the option value.
    """
    return RANDOM_WEIGHTS if text == RANDOM_WEIGHTS else Path(text)


def write_report_folder(out: Path, *, overwrite: bool, inputs: dict[str, Any],
                        build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build a report body into a temporary folder, write the report files there (:func:`gan.reports.write_report`),
    swap the folder onto ``out`` and log the report to an active W&B run.

    Args:
        out: the report folder (refused when it exists, unless ``overwrite``: :func:`data.files.check_overwrite`).
        overwrite: replace an existing report folder (atomically).
        inputs: how the inputs were given (the report's ``inputs``).
        build: called with the temporary folder (files of the body go there); returns the report body.

    Returns:
        The report, as written to ``out/report.json``.
    """
    from data.files import atomic_dir, check_overwrite
    from gan.reports import log_wandb, report_header, write_report

    check_overwrite(out, overwrite=overwrite, what="report folder")
    with atomic_dir(out) as tmp:
        report = write_report(tmp, {**report_header(), "inputs": inputs, **build(tmp)})
    if log_wandb(report):
        log.info("logged the evaluation to the active W&B run")
    return report
