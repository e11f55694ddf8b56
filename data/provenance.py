"""Files that carry their provenance: JSON manifests and PNG images with a manifest beside them.

Every manifest holds at least ``software`` ("medsynth"), ``version``, ``created`` (UTC ISO 8601), ``source``
and the caller's ``provenance`` dict; a PNG ``tile.png`` gets ``tile.json`` (BIDS-style sidecar). All files
are written atomically (:mod:`data.files`). Volume writers (NIfTI, DICOM) build on this module:
:mod:`data.volumes.writers`.
"""
from __future__ import annotations

import datetime as _dt
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from data.errors import DataError
from data.files import atomic_path, atomic_write_json, sha256_file, sidecar_path

__all__ = ["MANIFEST_NAME", "SOFTWARE", "medsynth_version", "utc_now", "write_manifest", "write_png"]

SOFTWARE = "medsynth"
#: Name of the manifest inside a folder output (a DICOM series, a data set).
MANIFEST_NAME = "manifest.json"


def medsynth_version() -> str:
    """The installed medsynth version (from package metadata, else ``pyproject.toml``, else ``"unknown"``)."""
    try:
        return metadata.version("medsynth")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        import tomllib

        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
    except (ImportError, OSError, KeyError, ValueError):
        return "unknown"


def utc_now() -> str:
    """The current UTC time as ISO 8601 with seconds (``2025-01-31T12:00:00+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_manifest(path: str | Path, manifest: dict) -> Path:
    """Write a JSON manifest atomically, filling ``software``, ``version`` and ``created`` when absent.

    Values go through :func:`data.files.to_jsonable` (numpy scalars/arrays, tensors and paths are converted;
    NaN/Inf become ``null``).

    Args:
        path: destination ``.json`` file.
        manifest: JSON-serialisable content.

    Raises:
        DataError: naming ``path`` when a value cannot be written as JSON.
    """
    content = {"software": SOFTWARE, "version": medsynth_version(), "created": utc_now(), **manifest}
    try:
        return atomic_write_json(path, content, indent=2, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"manifest is not JSON-serialisable ({exc})") from exc


def write_png(image: np.ndarray, path: str | Path, *, provenance: dict | None = None) -> Path:
    """Write a uint8 greyscale (H, W) or RGB (H, W, 3) image as PNG with a sidecar manifest.

    Args:
        image: uint8 array.
        path: destination ``.png`` file; the manifest goes to ``<stem>.json``.
        provenance: caller's provenance; its ``"source"`` (if any) is also the manifest's ``source``.

    Raises:
        DataError: naming ``path`` for a wrong dtype or shape.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DataError(path, f"PNG image must be uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DataError(path, f"PNG image must be (H, W) or (H, W, 3), got shape {image.shape}")
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"{SOFTWARE} {medsynth_version()}")
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", pnginfo=info)
    provenance = dict(provenance or {})
    write_manifest(
        sidecar_path(path),
        {
            "source": str(provenance.get("source", "")),
            "kind": "png",
            "file": path.name,
            "sha256": sha256_file(path),
            "shape": list(image.shape),
            "provenance": provenance,
        },
    )
    return path

