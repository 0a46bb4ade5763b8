#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: run a tool under torchrun.
#   tools/torchrun.sh NUM_PROCS_PER_NODE SCRIPT [script arguments]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Uses .venv/bin/python when it exists, unless PYTHON is set.
set -euo pipefail
NPROCS=${1:?usage: tools/torchrun.sh NUM_PROCS SCRIPT [args]}
SCRIPT=${2:?usage: tools/torchrun.sh NUM_PROCS SCRIPT [args]}
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
DIR=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python}
[[ -x $DIR/../.venv/bin/python && -z ${PYTHON:-} ]] && PY=$DIR/../.venv/bin/python
PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PY" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROCS" --master_port="$PORT" \
  "$SCRIPT" "$@"
