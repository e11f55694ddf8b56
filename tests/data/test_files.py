"""data.files: atomic writes (nothing half-written on failure, normal permissions on success), JSON conversion,
the overwrite policy and file hashes checked against hashlib."""
import hashlib
import json
import math
import os
import stat
from enum import Enum
from pathlib import Path

import numpy as np
import pytest
import torch

from data.files import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_overwrite,
    sha256_file,
    sidecar_path,
    to_jsonable,
)


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failed_folder_write_keeps_the_old_folder(tmp_path):
    d = tmp_path / "ds"
    with atomic_dir(d) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(d) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError("interrupted")
    assert sorted(p.name for p in d.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_results_get_umask_permissions_not_private_temp_ones(tmp_path):
    old = os.umask(0o022)
    try:
        f = atomic_write_text(tmp_path / "x.json", "{}")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_folder_replaced_as_a_whole(tmp_path):
    d = tmp_path / "ds"
    with atomic_dir(d) as tmp:
        (tmp / "old").write_text("1")
    with atomic_dir(d) as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in d.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp or old copy left


def test_atomic_write_bytes_and_keeps_nifti_suffix_for_libraries(tmp_path):
    out = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"\x00\x01\x02", fsync=True)
    assert out.read_bytes() == b"\x00\x01\x02"
    with atomic_path(tmp_path / "ct.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "ct.nii.gz").read_bytes() == b"x"


def test_atomic_write_json_round_trip_sorted_and_nan_as_null(tmp_path):
    obj = {"b": np.float32(1.5), "a": [np.int64(2), float("nan"), float("inf")], "p": Path("x/y")}
    out = atomic_write_json(tmp_path / "r.json", obj)
    text = out.read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"') < text.index('"p"')
    assert json.loads(text) == {"a": [2, None, None], "b": 1.5, "p": "x/y"}
    unsorted = atomic_write_json(tmp_path / "u.json", {"z": 1, "a": 2}, indent=1, sort_keys=False).read_text()
    assert unsorted.index('"z"') < unsorted.index('"a"') and '\n "z": 1' in unsorted
    with pytest.raises(TypeError, match="object"):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "u.json"]  # the failed write left nothing


class _Colour(Enum):
    RED = "red"


def test_to_jsonable_converts_numbers_arrays_tensors_paths_and_enums():
    value = {
        1: np.arange(3, dtype=np.int16),
        "f": np.float64(0.25),
        "b": np.bool_(True),
        "t": torch.tensor([[1.0, 2.0]]),
        "nested": ({"p": Path("/a/b")}, [np.float32(np.nan), -math.inf]),
        "e": _Colour.RED,
        "none": None,
        "s": "text",
    }
    out = to_jsonable(value)
    assert out == {"1": [0, 1, 2], "f": 0.25, "b": True, "t": [[1.0, 2.0]],
                   "nested": [{"p": "/a/b"}, [None, None]], "e": "red", "none": None, "s": "text"}
    assert type(out["b"]) is bool and all(type(v) is int for v in out["1"])
    assert json.loads(json.dumps(out, allow_nan=False)) == out  # plain JSON, no NaN
    with pytest.raises(TypeError, match="set"):
        to_jsonable({1, 2})


def test_check_overwrite_refuses_existing_outputs_unless_asked(tmp_path):
    free = tmp_path / "new.nii.gz"
    assert check_overwrite(free, overwrite=False) == free
    taken = tmp_path / "out.nii.gz"
    taken.write_text("x")
    with pytest.raises(FileExistsError, match=r"out\.nii\.gz: output volume exists; pass --overwrite"):
        check_overwrite(taken, overwrite=False, what="output volume")
    assert check_overwrite(taken, overwrite=True) == taken
    folder = tmp_path / "report"
    folder.mkdir()
    with pytest.raises(FileExistsError, match="--force"):
        check_overwrite(folder, overwrite=False, flag="--force")
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        check_overwrite(link, overwrite=False)  # a dangling link is an existing output too


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) + 17])
def test_sha256_file_equals_hashlib(tmp_path, size):
    payload = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    f = tmp_path / "blob"
    f.write_bytes(payload)
    assert sha256_file(f) == hashlib.sha256(payload).hexdigest()
    assert sha256_file(f, chunk_size=7) == hashlib.sha256(payload).hexdigest()


def test_sidecar_path_of_images():
    assert sidecar_path("a/ct.nii.gz") == Path("a/ct.json")
    assert sidecar_path("a/CT.NII") == Path("a/CT.json")
    assert sidecar_path("tile.png") == Path("tile.json")
    assert sidecar_path("x/key.npy") == Path("x/key.json")
    assert sidecar_path("slide.svs") == Path("slide.json")
