"""Content-addressed cache of decoded volumes: float32 ``.npy`` + JSON geometry, read back memory-mapped.

Decoding a ``.nii.gz`` or a DICOM series costs tenths of a second; slicing a memory-mapped ``.npy`` costs
microseconds and lets DataLoader workers share the page cache. Entries are keyed by the SHA-256 of the
source bytes (for a DICOM folder, of its files' digests), so an edited file gets a new entry and renamed
copies share one. Layout under ``root``::

    <key>.npy         float32 array, nibabel axis order
    <key>.json        format, version, key, shape, dtype, affine, modality, source, meta (written last)
    index/<id>.json   fast path: (size, mtime, inode, ctime) signature of a path -> key

Every file is written to a temporary name and renamed (:mod:`data.files`), so several processes may
populate the cache at once: a reader sees either no entry or a complete one.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from data.errors import VolumeError
from data.files import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from data.volumes.dicom import list_series_files
from data.volumes.readers import decode_volume
from data.volumes.volume import Volume

__all__ = ["FORMAT", "FORMAT_VERSION", "VolumeCache", "content_hash", "open_entry"]

FORMAT = "medsynth-volume-cache"
#: Bump when the readers change what they return, so old entries are rebuilt.
FORMAT_VERSION = 1


def content_hash(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, or of a DICOM folder's sorted per-file digests.

    A folder's hash does not depend on file names or their order, only on the files' contents.

    Args:
        path: a file, or a folder holding one DICOM series.
    """
    p = Path(path)
    if p.is_dir():
        digests = sorted(sha256_file(f) for f in list_series_files(p))
        return hashlib.sha256(("dicom-series\n" + "\n".join(digests)).encode()).hexdigest()
    return sha256_file(p)


def open_entry(path: str | Path) -> Volume:
    """Open a cache entry (its ``.npy`` or ``.json``) as a Volume whose array is a read-only ``np.memmap``.

    Args:
        path: ``<root>/<key>.npy`` or ``<root>/<key>.json``.

    Raises:
        VolumeError: naming the entry, when its JSON is missing or malformed, the ``.npy`` is truncated or
            unreadable, or the two disagree on shape or dtype.
    """
    p = Path(path)
    meta_path, npy_path = p.with_suffix(".json"), p.with_suffix(".npy")
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise VolumeError(meta_path, "cache entry has no JSON geometry file") from exc
    except (OSError, ValueError) as exc:
        raise VolumeError(meta_path, f"cache entry JSON is unreadable ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise VolumeError(meta_path, f"not a medsynth cache entry (format {found!r})")
    if info.get("format_version") != FORMAT_VERSION:
        raise VolumeError(
            meta_path, f"cache entry format version {info.get('format_version')!r}, expected {FORMAT_VERSION}")
    try:
        shape = tuple(int(s) for s in info["shape"])
        affine = np.asarray(info["affine"], dtype=np.float64)
        dtype = np.dtype(info["dtype"])
    except (KeyError, TypeError, ValueError) as exc:
        raise VolumeError(meta_path, f"cache entry JSON lacks a valid shape/affine/dtype ({exc})") from exc
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise VolumeError(meta_path, "cache entry affine is not a finite 4x4 matrix")
    try:
        array = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise VolumeError(npy_path, "cache entry array file is missing") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise VolumeError(npy_path, f"cache entry array is truncated or corrupt ({exc})") from exc
    if array.shape != shape or array.dtype != dtype or dtype != np.float32:
        raise VolumeError(
            npy_path, f"cache entry array is {array.dtype}{array.shape} but its JSON says {dtype}{shape}"
        )
    meta = dict(info.get("meta") or {})
    meta["cache_entry"] = str(npy_path)
    return Volume(array=array, affine=affine, modality=info.get("modality", "OT"), source=str(info.get("source", "")),
                  meta=meta)


class VolumeCache:
    """Decode each volume once; serve later reads memory-mapped from ``root``.

    Args:
        root: cache folder (created if missing). Safe to share between processes.
        trust_stat: reuse the content hash recorded for a path while its (size, mtime, inode, ctime) are
            unchanged, instead of rehashing the bytes on every :meth:`get`. Files modified within
            ``racy_window_s`` of being indexed are always rehashed (timestamps are too coarse to trust).
        racy_window_s: see ``trust_stat``.
        decode: reads a source on a miss (default :func:`data.volumes.readers.decode_volume`: NIfTI or DICOM).
    """

    def __init__(self, root: str | Path, *, trust_stat: bool = True, racy_window_s: float = 2.0,
                 decode: Callable[[Path], Volume] = decode_volume) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.trust_stat = trust_stat
        self.racy_window_s = racy_window_s
        self.decode = decode

    def entry_path(self, key: str) -> Path:
        """Path of the ``.npy`` of the entry with content hash ``key``.

        Args:
            key: content hash from :func:`content_hash`.
        """
        return self.root / f"{key}.npy"

    def key(self, path: str | Path) -> str:
        """Content hash of ``path``, from the stat fast path when it can be trusted.

        Args:
            path: NIfTI file, DICOM file or DICOM series folder.
        """
        p = Path(path)
        if not self.trust_stat:
            return content_hash(p)
        signature, newest_ns = _stat_signature(p)
        index = self._index_path(p)
        try:
            known = json.loads(index.read_text(encoding="utf-8"))
            if known.get("path") == str(p.resolve()) and known.get("signature") == signature:
                return str(known["key"])
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        key = content_hash(p)
        if time.time_ns() - newest_ns > self.racy_window_s * 1e9:
            record = {"path": str(p.resolve()), "signature": signature, "key": key}
            atomic_write_text(index, json.dumps(record))
        return key

    def get(self, path: str | Path) -> Volume:
        """Return the volume at ``path``, decoding and storing it on a miss; the array is a read-only memmap.

        A corrupt or inconsistent entry is rebuilt with a warning, never used.

        Args:
            path: NIfTI file, DICOM file, DICOM series folder, or an existing cache entry.

        Raises:
            VolumeError: naming the file, when the source cannot be read (see :func:`data.volumes.io.load_volume`).
        """
        p = Path(path)
        if not p.exists():
            raise VolumeError(p, "no such file or folder")
        if p.is_file() and p.suffix.lower() in (".npy", ".json"):
            return open_entry(p)
        key = self.key(p)
        npy = self.entry_path(key)
        if npy.with_suffix(".json").exists():
            try:
                return self._as_source(open_entry(npy), p)
            except VolumeError as exc:
                warnings.warn(f"rebuilding cache entry for {p}: {exc}", RuntimeWarning, stacklevel=2)
        volume = self.decode(p)
        self._store(key, volume)
        return self._as_source(open_entry(npy), p)

    # ------------------------------------------------------------------------------------------------

    def _store(self, key: str, volume: Volume) -> None:
        npy = self.entry_path(key)
        array = np.ascontiguousarray(volume.array, dtype=np.float32)
        with atomic_path(npy) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)
        info: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "key": key,
            "shape": list(array.shape),
            "dtype": "float32",
            "affine": volume.affine.tolist(),
            "modality": volume.modality,
            "source": volume.source,
            "meta": volume.meta,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        # The JSON is the commit marker: written after the array, so its presence means a complete entry.
        atomic_write_json(npy.with_suffix(".json"), info, indent=1, sort_keys=False)

    def _index_path(self, path: Path) -> Path:
        ident = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
        return self.root / "index" / f"{ident}.json"

    @staticmethod
    def _as_source(volume: Volume, path: Path) -> Volume:
        volume.source = str(path)
        return volume


def _stat_signature(path: Path) -> tuple[list[Any], int]:
    """A cheap fingerprint of a file or series folder, and the newest mtime/ctime in it (ns)."""
    if path.is_dir():
        rows = []
        newest = 0
        for f in list_series_files(path):
            st = f.stat()
            rows.append([f.name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns])
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        st = path.stat()
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
        return ["dir", len(rows), st.st_mtime_ns, digest], newest
    st = path.stat()
    return ["file", st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns], max(st.st_mtime_ns, st.st_ctime_ns)

