#!/usr/bin/env bash
# Usage: tools/dist_run.sh TOOL NPROC [TOOL's arguments]
# Runs tools/TOOL.py (train or test) in NPROC processes with
# torch.distributed.run and --launcher pytorch; dist_train.sh and
# dist_test.sh call it.
# Environment: NNODES, NODE_RANK, PORT, MASTER_ADDR (as in MMSegmentation);
# PYTHON: the interpreter (default: python3, else python).
set -e
TOOL=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}

"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" \
    --master_port="$PORT" \
    "$(dirname "$0")/$TOOL.py" \
    "${@:3}" \
    --launcher pytorch
