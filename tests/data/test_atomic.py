"""Atomic writes: nothing half-written on failure, normal permissions on success."""
import os
import stat

import pytest

from data.atomic import atomic_dir, atomic_path, atomic_write_text


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
