"""Files: atomic writes, content hashes and JSON conversion, the one copy every package uses.

A leaf module (standard library and numpy only): ``data`` and ``gan`` both import it.

* :func:`atomic_path` / :func:`atomic_dir`: write to a temporary sibling, then rename, so readers never see half a
  file and an interrupted write leaves the previous content in place.
* :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`atomic_write_json`: the common cases.
* :func:`check_overwrite`: the one overwrite policy of every command (refuse an existing output unless asked).
* :func:`sha256_file`: hex digest of a file's bytes, read in chunks.
* :func:`to_jsonable`: a plain-JSON copy of nested numbers, arrays and paths (NaN/Inf become ``None``).
* :func:`sidecar_path`: the JSON sidecar beside an image file (``ct.nii.gz`` -> ``ct.json``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = [
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_overwrite",
    "sha256_file",
    "sidecar_path",
    "to_jsonable",
]

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it.

    Args:
        path: final destination file (its folder is created).
        suffix: suffix for the temporary file (defaults to the destination's full suffix, so libraries
            that pick a format from the extension, such as nibabel's ``.nii.gz``, still work).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes) if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the result the permissions a normal file would get
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    An existing folder at ``path`` is kept until the new one is complete, then swapped out.

    Args:
        path: final destination folder.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, payload: bytes, *, fsync: bool = False) -> Path:
    """Write ``payload`` to ``path`` atomically and return the path.

    Args:
        path: destination file.
        payload: the bytes.
        fsync: flush the data to disk before the rename (survives a power cut, costs a disk sync).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8) and return the path.

    Args:
        path: destination file.
        text: the content.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2, sort_keys: bool = True) -> Path:
    """Write ``obj`` as JSON (through :func:`to_jsonable`, so NaN/Inf become ``null``) atomically.

    Args:
        path: destination file.
        obj: nested dicts/lists of numbers, strings, numpy values, paths.
        indent: JSON indentation.
        sort_keys: sort object keys (stable diffs).
    """
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def sha256_file(path: str | Path, chunk_size: int = _CHUNK) -> str:
    """Hex sha256 of a file's bytes.

    Args:
        path: the file.
        chunk_size: bytes read at a time.
    """
    digest = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def to_jsonable(obj: Any) -> Any:
    """A plain-JSON copy of ``obj``.

    Dicts (keys become strings), lists and tuples are converted recursively; numpy scalars and arrays and torch
    tensors become Python numbers and lists; non-finite floats become ``None`` (JSON has no NaN); paths and enums
    become strings. Anything else that JSON cannot hold raises.

    Args:
        obj: the value to convert.

    Raises:
        TypeError: for a value with no JSON form.
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # a torch tensor, without importing torch
        return to_jsonable(obj.detach().cpu().tolist())
    raise TypeError(f"{type(obj).__name__} value {obj!r} is not JSON-serialisable")


def check_overwrite(path: str | Path, *, overwrite: bool, what: str = "output", flag: str = "--overwrite") -> Path:
    """The project's overwrite policy: an existing ``path`` is refused unless ``overwrite`` is set.

    Callers then write with :func:`atomic_path` / :func:`atomic_dir`, so an allowed overwrite replaces the old
    content in one rename and a failed run leaves it untouched.

    Args:
        path: the file or folder a command is about to write.
        overwrite: the user asked to replace an existing output.
        what: what the path is, for the message (``"output volume"``, ``"report folder"``).
        flag: the option that allows replacing it, named in the message.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise FileExistsError(f"{p}: {what} exists; pass {flag} to replace it, or choose another path")
    return p


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of an image file: ``ct.nii.gz`` -> ``ct.json`` (BIDS style), ``a.png`` -> ``a.json``.

    Args:
        path: image file path.
    """
    p = Path(path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".png", ".npy"):
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(p.stem + ".json")
