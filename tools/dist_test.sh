#!/usr/bin/env bash
# Multi-process evaluation through torchrun.
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS_PER_NODE [test.py options]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Each process saves its predictions as it goes (tools/test.py); after a
# crash, the same command (with any NUM_PROCS) predicts only what is left.
set -euo pipefail
CONFIG=${1:?usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [options]}
CHECKPOINT=${2:?usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [options]}
NPROCS=${3:?usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [options]}
shift 3
DIR=$(cd "$(dirname "$0")" && pwd)
exec bash "$DIR/torchrun.sh" "$NPROCS" "$DIR/test.py" "$CONFIG" \
  "$CHECKPOINT" --launcher pytorch "$@"
