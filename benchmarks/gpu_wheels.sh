#!/usr/bin/env bash
# Fetch, HERE (where pip reaches PyPI), the wheels the GPU host lacks for benchmarks/gpu_check.sh: that host has
# Python 3.12, torch, lightning, torchmetrics, scipy, tifffile and matplotlib, but not these (the device tool's
# KINDS.md lists what it has). Versions are constraints.txt's. The folder .whl is git-ignored and travels with
# `carry: [".whl"]`; benchmarks/gpu_check.sh installs it with --target when it finds it.
#   bash benchmarks/gpu_wheels.sh          # about 25 MB
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
pin() { grep -iE "^$1==" constraints.txt | head -1; }
mkdir -p .whl
for name in imagecodecs importlib_resources lpips nibabel openslide-bin openslide-python pydicom; do
    spec=$(pin "$name")
    [ -n "$spec" ] || { echo "gpu_wheels: $name is not pinned in constraints.txt" >&2; exit 2; }
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl
du -sh .whl
