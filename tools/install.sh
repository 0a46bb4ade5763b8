#!/usr/bin/env bash
# Install mmlongtail and its stack into .venv/ (see README, "Install notes").
# Idempotent: each step checks before it acts, so a second run takes seconds.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
MMCV_VERSION=2.1.0
NPROC=$(nproc 2>/dev/null || echo 2)

say() { printf '[install] %s\n' "$*"; }
die() { printf '[install] ERROR: %s\n' "$*" >&2; exit 1; }

# Optional local wheelhouse (a prebuilt mmcv) for dev and CI; never required.
if [[ -d ../shared/wheelhouse ]]; then
  WH=$(cd ../shared/wheelhouse && pwd)
  case " ${PIP_FIND_LINKS:-} " in
    *" $WH "*) ;;
    *) export PIP_FIND_LINKS="${PIP_FIND_LINKS:+$PIP_FIND_LINKS }$WH" ;;
  esac
fi

if [[ ! -x $VENV/bin/python ]]; then
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found. Install Python 3.11 or run: make install PYTHON=/path/to/python3"
  say "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV" || die "could not create $VENV (is the venv module installed? Debian: apt-get install python3-venv)"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

have() { "$PY" -c "$1" >/dev/null 2>&1; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# One probe for the whole stack (tools/install_probe.py), so that a second run
# imports it only once. It prints "ok NAME" or "failed NAME: Error: why" per
# check; a step runs only when its check failed, and says why. Its first line
# is the faster-coco-eval window, declared once in mmlongtail/version.py
# (setup.py reads the same line).
PROBE=$("$PY" "$HERE/install_probe.py" "$TORCH_VERSION" "$MMCV_VERSION" 2>/dev/null) \
  || die "$PY could not run tools/install_probe.py: $("$PY" "$HERE/install_probe.py" "$TORCH_VERSION" "$MMCV_VERSION" 2>&1 | tail -3)"
done_() { grep -qx "ok $1" <<<"$PROBE"; }
why() { sed -n "s/^failed $1: //p" <<<"$PROBE" | head -1; }
FCE_REQ=$(sed -n 's/^requirement //p' <<<"$PROBE")
[[ -n $FCE_REQ ]] || die "tools/install_probe.py printed no faster-coco-eval requirement"

# 1. torch, pinned to the exact CPU build, before anything that depends on it,
#    so that no later requirement can pull the newest CUDA build.
if ! done_ torch; then
  say "torch: $(why torch)"
  say "installing torch==$TORCH_VERSION"
  "${PIP[@]}" install "torch==$TORCH_VERSION" || die "pip could not install torch==$TORCH_VERSION. Install it into $VENV by hand (the CPU build: pip install torch==$TORCH_VERSION --index-url https://download.pytorch.org/whl/cpu) and re-run make install."
fi

# 2. build tools and mmcv's runtime deps (mmengine brings them), needed by
#    mmcv's setup.py under --no-build-isolation.
if ! done_ build; then
  say "build tools: $(why build)"
  say "installing mmengine 0.10.7 and build tools"
  "${PIP[@]}" install "setuptools>=77,<81" wheel ninja "mmengine==0.10.7" || die "could not install mmengine/build tools"
fi

# 3. mmcv with compiled ops: a wheel from PIP_FIND_LINKS if one matches,
#    otherwise built from the PyPI sdist against the installed torch (~20 min
#    on 2 cores).
if ! done_ mmcv; then
  say "mmcv: $(why mmcv)"
  say "installing mmcv==$MMCV_VERSION with ops (a source build takes ~20 min on 2 cores; PIP_FIND_LINKS=${PIP_FIND_LINKS:-<unset>})"
  MMCV_WITH_OPS=1 MAX_JOBS=$NPROC "${PIP[@]}" install --no-build-isolation "mmcv==$MMCV_VERSION" \
    || die "building mmcv $MMCV_VERSION failed. It needs gcc/g++ and the Python headers (Debian: apt-get install build-essential python3-dev). See the log above."
fi
done_ mmcv || have "from mmcv.ops import RoIAlign, nms" \
  || die "mmcv is installed but its compiled ops do not load ($("$PY" -c 'from mmcv.ops import nms' 2>&1 | tail -1)). Remove it ($PY -m pip uninstall -y mmcv) and re-run make install to rebuild it against torch $TORCH_VERSION."

# 4. mmdet and the rest, then mmlongtail itself (editable).
if ! done_ rest; then
  say "mmdet and the rest: $(why rest)"
  say "installing mmdet 3.3.0, lvis, pycocotools, $FCE_REQ, pytest and mmlongtail"
  "${PIP[@]}" install "mmdet==3.3.0" "lvis==0.5.3" "pycocotools>=2.0.7" "$FCE_REQ" "matplotlib>=3.7" "pytest>=7" \
    || die "could not install mmdet and its dependencies"
  "${PIP[@]}" install --no-build-isolation --no-deps -e . || die "could not install mmlongtail (pip install -e .)"
fi
if ! grep -q "^failed" <<<"$PROBE"; then
  say "ok: already installed in $VENV"
else
  VERS=$("$PY" -c 'import torch, mmcv, mmdet, mmengine, numpy, mmlongtail; from mmcv.ops import RoIAlign, nms; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, numpy {numpy.__version__}")') \
    || die "the installed stack does not import; see the error above"
  say "ok: $VERS"
fi
