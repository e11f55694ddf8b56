"""``gan.style`` and ``gan.nets.stylegan2.load_exported`` work without Lightning: a fresh interpreter that loads an
export and draws a style-mixing grid has imported neither Lightning nor ``gan.models``."""
from __future__ import annotations

import subprocess
import sys

from tests.gan.style.tiny import tiny_export

PROBE = """
import sys
import gan.style
from gan.nets.stylegan2 import load_exported
G = load_exported({folder!r})
grid = gan.style.style_mix(G, [1, 2], [3], "coarse", label=2, psi=0.7)
assert grid.shape == (3, 2, 3, 32, 32)
banned = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning") or
                m.startswith("gan.models") or m.startswith("gan.commands"))
print("BANNED", banned)
"""


def test_style_api_on_an_export_imports_no_lightning(tmp_path_factory):
    folder = tiny_export(tmp_path_factory)
    proc = subprocess.run([sys.executable, "-c", PROBE.format(folder=str(folder))], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "BANNED []"
