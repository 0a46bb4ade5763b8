#!/usr/bin/env bash
# Multi-process training through torchrun (torch.distributed + mmengine).
#   tools/dist_train.sh CONFIG NUM_PROCS_PER_NODE [train.py options]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without CUDA the process group uses gloo (tools/train.py sets it).
#
# Restarts: MAX_RESTARTS=N tools/dist_train.sh CONFIG NUM_PROCS [options]
#   When a process dies (OOM kill, pre-emption, a crash), torchrun stops the
#   others and starts the whole group again, up to N times (default 0: the
#   job ends). With N > 0 every start, the first one included, resumes from
#   the newest intact checkpoint in the work dir and starts from the
#   beginning while there is none, so a new run needs a work dir of its own
#   (tools/train.py, mmlongtail.apis.runner_setup.resume_rule).
# When training fails, torchrun names the failed process ("Root Cause":
# rank, local_rank, exit code) and this script says how to continue.
set -euo pipefail
CONFIG=${1:?usage: tools/dist_train.sh CONFIG NUM_PROCS [options]}
NPROCS=${2:?usage: tools/dist_train.sh CONFIG NUM_PROCS [options]}
shift 2
DIR=$(cd "$(dirname "$0")" && pwd)
bash "$DIR/torchrun.sh" "$NPROCS" "$DIR/train.py" "$CONFIG" \
  --launcher pytorch "$@" &
CHILD=$!
# torchrun stops its workers on TERM; pass a stop request on to it
STOPPED=0
trap 'STOPPED=1; kill -TERM "$CHILD" 2>/dev/null || true' TERM INT HUP
RC=0
wait "$CHILD" || RC=$?
while kill -0 "$CHILD" 2>/dev/null; do  # woken by a trapped signal
  RC=0
  wait "$CHILD" || RC=$?
done
if ((RC != 0 && STOPPED == 0)); then
  USED=""
  [[ ${MAX_RESTARTS:-0} =~ ^[1-9][0-9]*$ ]] &&
    USED=" after ${MAX_RESTARTS} restart(s)"
  cat >&2 <<MSG
tools/dist_train.sh: training stopped$USED (torchrun exit code $RC).
  Which process failed first: torchrun's "Root Cause" above (rank,
  local_rank, exitcode; exitcode -9 is SIGKILL, often the kernel's OOM
  killer: see dmesg). The other processes were stopped by torchrun.
  Checkpoints in the work dir are intact: run the same command with
  --resume to continue from the newest, or with MAX_RESTARTS=N to let
  torchrun restart the group, which then resumes by itself.
MSG
fi
exit "$RC"
