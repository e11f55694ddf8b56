#!/usr/bin/env bash
# The ONE device check of a session that is lent a GPU (the `run` tool of the tool library): GPU throughput of each
# module, bf16 / channels-last speed-ups, StyleGAN2 256 px s/kimg (the reference: ~22 s/kimg on one V100) and the
# tile loader feeding the GPU with many workers. Writes the table and JSON to $OUT (default benchmarks/results).
#   bash benchmarks/gpu_check.sh            # about 8 minutes on one H200
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
PY=${PY:-python}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
$PY - <<'PY' > "$OUT/env.txt" 2>&1
import torch, lightning; print(torch.__version__, lightning.__version__, torch.cuda.get_device_name(0))
PY
run() { local name=$1; shift; timeout "${LIMIT:-150}" "$PY" "$@" > "$OUT/$name.txt" 2>&1; echo "$name rc=$?" >> "$OUT/status.txt"; }
run precision benchmarks/bench_precision.py --device cuda --size 256 --batch 8 --steps 20
run training benchmarks/bench_training.py --device cuda --size 256 --batch 8 --steps 30 --repeats 2
run stylegan2 benchmarks/bench_stylegan2_training.py --device cuda --full --sizes 256 --batch 32 --steps 16 --repeats 1
run tiles benchmarks/bench_tiles.py --device cuda --workers 8 --tiles 3000
run precision_pix2pix benchmarks/bench_precision.py --model pix2pix --device cuda --size 256 --batch 8 --steps 20
