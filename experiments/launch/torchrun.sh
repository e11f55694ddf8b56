#!/usr/bin/env bash
# Multi-node training with torchrun: run this on every node (NODE_RANK 0..NNODES-1), HEAD = node 0's address.
#   NNODES=2 GPUS=4 NODE_RANK=0 HEAD=10.0.0.1 bash experiments/launch/torchrun.sh experiments/stylegan2_pathology.yaml
# The config's data.init_args.batch_size is the GLOBAL batch (shared by NNODES x GPUS ranks); ddp_gan is chosen
# for several devices. Extra arguments after the config go to `medsynth fit`.
set -euo pipefail
CONFIG=${1:?usage: torchrun.sh CONFIG [medsynth fit arguments]}
shift
exec torchrun --nnodes "${NNODES:-1}" --nproc_per_node "${GPUS:-1}" --node_rank "${NODE_RANK:-0}" \
    --master_addr "${HEAD:-127.0.0.1}" --master_port "${PORT:-29500}" \
    -m gan.cli fit --config experiments/base.yaml --config "$CONFIG" \
    --trainer.devices="${GPUS:-1}" --trainer.num_nodes="${NNODES:-1}" --trainer.strategy=ddp_gan "$@"
