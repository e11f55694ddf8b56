"""The ``medsynth`` command table: every command's --help is plain text with defaults and appears without importing
torch; a user error is one message and exit status 2 (the traceback behind --debug)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from gan.cli import COMMANDS, LIGHTNING_COMMANDS, main

PROBE = """
import sys, time
t = time.perf_counter()
from gan.cli import main
try:
    main([{args}])
except SystemExit:
    pass
print("SECONDS", time.perf_counter() - t, "TORCH", "torch" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_plain_fast_and_imports_no_torch(command):
    args = ", ".join(repr(a) for a in ([command] if command else []) + ["--help"])
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    probe = proc.stderr.strip().splitlines()[-1].split()
    assert probe[0] == "SECONDS" and probe[3] == "False", f"--help of {command} imported torch"
    assert float(probe[1]) < 1.0, f"--help of {command} took {probe[1]} s (wall {wall:.2f} s)"
    text = proc.stdout
    assert "usage: medsynth" in text
    assert "``" not in text and ":func:" not in text and ":class:" not in text, "help is plain text"
    if command is None:
        for name in [*LIGHTNING_COMMANDS, *COMMANDS]:
            assert name in text
    else:
        assert "(default:" in text, "defaults are shown"


def test_user_error_is_one_line_and_exit_status_2(tmp_path, capsys):
    missing = tmp_path / "missing.ckpt"
    assert main(["translate", "--ckpt", str(missing), "--input", str(tmp_path), "--output",
                 str(tmp_path / "o.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: checkpoint not found" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError):
        main(["--debug", "translate", "--ckpt", str(missing), "--input", str(tmp_path), "--output",
              str(tmp_path / "o.nii.gz")])


def test_unknown_command_is_refused():
    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2
