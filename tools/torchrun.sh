#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: run a tool under torchrun.
#   tools/torchrun.sh NUM_PROCS_PER_NODE SCRIPT [script arguments]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Uses .venv/bin/python when it exists, unless PYTHON is set.
#
# MAX_RESTARTS=N (default 0): when a process fails, torchrun stops the
# others and starts the whole group again, up to N times per node
# (torchrun --max-restarts). tools/train.py then resumes by itself from the
# newest intact checkpoint in the work dir. With N > 0 the group meets in
# torchrun's c10d rendezvous at MASTER_ADDR:PORT (node ranks are then
# assigned by torchrun, NODE_RANK is not used) and every restart gets a
# fresh store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1): a store shared across
# restarts hands the new processes the old ones' addresses, and about half
# of the restarts then fail or hang in init_process_group (pytorch#135712).
set -euo pipefail
NPROCS=${1:?usage: tools/torchrun.sh NUM_PROCS SCRIPT [args]}
SCRIPT=${2:?usage: tools/torchrun.sh NUM_PROCS SCRIPT [args]}
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MAX_RESTARTS=${MAX_RESTARTS:-0}
if [[ ! $MAX_RESTARTS =~ ^[0-9]+$ ]]; then
  echo "tools/torchrun.sh: MAX_RESTARTS must be an integer >= 0, got" \
    "'$MAX_RESTARTS'" >&2
  exit 2
fi
if ((MAX_RESTARTS > 0)); then
  export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
  RDZV=(--rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$PORT")
else
  RDZV=(--node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR"
    --master_port="$PORT")
fi
DIR=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python}
[[ -x $DIR/../.venv/bin/python && -z ${PYTHON:-} ]] && PY=$DIR/../.venv/bin/python
PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PY" -m torch.distributed.run \
  --nnodes="$NNODES" --nproc_per_node="$NPROCS" "${RDZV[@]}" \
  --max-restarts="$MAX_RESTARTS" \
  "$SCRIPT" "$@"
