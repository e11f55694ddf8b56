#!/usr/bin/env bash
# The ONE device check of a session that is lent a GPU (the `run` tool of the tool library): GPU throughput of each
# module, bf16 / channels-last speed-ups, StyleGAN2 256 px s/kimg (the reference: ~22 s/kimg on one V100), the tile
# loader feeding the GPU with many workers, and the ddp_gan strategy over NCCL. Writes every output to $OUT
# (default benchmarks/results). Each step has its own time limit; the whole script stays under 8 minutes.
#
# Before the session's one device call, here:   bash benchmarks/gpu_wheels.sh     (the packages the GPU host lacks)
# Then the call:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# and read $OUT/status.txt first (each step's exit code and seconds), then each step's .txt: 8 files in all, the
# most the tool brings back (env.txt holds nvidia-smi, the pip install and the versions).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -d .whl ]; then  # the wheels of benchmarks/gpu_wheels.sh
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >> "$OUT/env.txt" 2>&1 || { echo "pip install of .whl failed (see env.txt)" >> "$OUT/status.txt"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi >> "$OUT/env.txt" 2>&1
$PY - <<'PY' >> "$OUT/env.txt" 2>&1
import torch, lightning; print(torch.__version__, lightning.__version__, torch.cuda.get_device_name(0))
import openslide, lpips, nibabel; print("openslide", openslide.__version__, "lpips, nibabel ok")
PY
run() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
        timeout "$limit" "$PY" "$@" > "$OUT/$name.txt" 2>&1
        echo "$name rc=$? $((SECONDS - t0))s" >> "$OUT/status.txt"; }
run ddp 60 benchmarks/gpu_ddp_check.py --device cuda --epochs 2 --batches 4
run precision 60 benchmarks/bench_precision.py --device cuda --size 256 --batch 8 --steps 20
run precision_pix2pix 60 benchmarks/bench_precision.py --model pix2pix --device cuda --size 256 --batch 8 --steps 20
run training 90 benchmarks/bench_training.py --device cuda --size 256 --batch 8 --steps 30 --repeats 2
run stylegan2 120 benchmarks/bench_stylegan2_training.py --device cuda --full --sizes 256 --batch 32 --steps 16 --repeats 1
run tiles 60 benchmarks/bench_tiles.py --device cuda --workers 8 --tiles 3000 --repeats 2
