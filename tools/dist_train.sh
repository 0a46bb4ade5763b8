#!/usr/bin/env bash
# Multi-process training through torchrun (torch.distributed + mmengine).
#   tools/dist_train.sh CONFIG NUM_PROCS_PER_NODE [train.py options]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without CUDA the process group uses gloo (tools/train.py sets it).
set -euo pipefail
CONFIG=${1:?usage: tools/dist_train.sh CONFIG NUM_PROCS [options]}
NPROCS=${2:?usage: tools/dist_train.sh CONFIG NUM_PROCS [options]}
shift 2
DIR=$(cd "$(dirname "$0")" && pwd)
exec bash "$DIR/torchrun.sh" "$NPROCS" "$DIR/train.py" "$CONFIG" \
  --launcher pytorch "$@"
