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

# One probe for the whole stack, so that a second run imports it only once.
PROBE='
import sys
ok = []
def check(name, fn):
    try:
        fn()
        ok.append(name)
    except Exception:
        pass
def torch_ok():
    import torch
    assert torch.__version__.startswith(sys.argv[1])
def build_ok():
    import mmengine, setuptools, wheel, ninja
    assert mmengine.__version__ == "0.10.7"
    assert 77 <= int(setuptools.__version__.split(".")[0]) < 81
def mmcv_ok():
    import mmcv
    assert mmcv.__version__ == sys.argv[2]
    from mmcv.ops import RoIAlign, nms
def rest_ok():
    import mmdet, lvis, pycocotools, faster_coco_eval, matplotlib, pytest
    import mmlongtail
    assert mmdet.__version__ == "3.3.0"
def ext_ok():
    # the optional C helper of compute_repeat_factors, current with its source
    import shutil, sysconfig
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return
    from mmlongtail.datasets.repeat_factors import _load_ext
    assert _load_ext() is not None
for name, fn in (("torch", torch_ok), ("build", build_ok), ("mmcv", mmcv_ok), ("rest", rest_ok), ("ext", ext_ok)):
    check(name, fn)
print(" ".join(ok))
'
STATUS=" $("$PY" -c "$PROBE" "$TORCH_VERSION" "$MMCV_VERSION" 2>/dev/null || true) "
done_() { [[ $STATUS == *" $1 "* ]]; }

# 1. torch, pinned to the exact CPU build, before anything that depends on it,
#    so that no later requirement can pull the newest CUDA build.
if ! done_ torch; then
  say "installing torch==$TORCH_VERSION"
  "${PIP[@]}" install "torch==$TORCH_VERSION" || die "pip could not install torch==$TORCH_VERSION. Install it into $VENV by hand (the CPU build: pip install torch==$TORCH_VERSION --index-url https://download.pytorch.org/whl/cpu) and re-run make install."
fi

# 2. build tools and mmcv's runtime deps (mmengine brings them), needed by
#    mmcv's setup.py under --no-build-isolation.
if ! done_ build; then
  say "installing mmengine 0.10.7 and build tools"
  "${PIP[@]}" install "setuptools>=77,<81" wheel ninja "mmengine==0.10.7" || die "could not install mmengine/build tools"
fi

# 3. mmcv with compiled ops: a wheel from PIP_FIND_LINKS if one matches,
#    otherwise built from the PyPI sdist against the installed torch (~20 min
#    on 2 cores).
if ! done_ mmcv; then
  say "installing mmcv==$MMCV_VERSION with ops (a source build takes ~20 min on 2 cores; PIP_FIND_LINKS=${PIP_FIND_LINKS:-<unset>})"
  MMCV_WITH_OPS=1 MAX_JOBS=$NPROC "${PIP[@]}" install --no-build-isolation "mmcv==$MMCV_VERSION" \
    || die "building mmcv $MMCV_VERSION failed. It needs gcc/g++ and the Python headers (Debian: apt-get install build-essential python3-dev). See the log above."
fi
done_ mmcv || have "from mmcv.ops import RoIAlign, nms" \
  || die "mmcv is installed but its compiled ops do not load ($("$PY" -c 'from mmcv.ops import nms' 2>&1 | tail -1)). Remove it ($PY -m pip uninstall -y mmcv) and re-run make install to rebuild it against torch $TORCH_VERSION."

# 4. mmdet and the rest, then mmlongtail itself (editable).
if ! done_ rest; then
  say "installing mmdet 3.3.0, lvis, pycocotools, faster-coco-eval, pytest and mmlongtail"
  "${PIP[@]}" install "mmdet==3.3.0" "lvis==0.5.3" "pycocotools>=2.0.7" "faster-coco-eval>=1.6" "matplotlib>=3.7" "pytest>=7" \
    || die "could not install mmdet and its dependencies"
  "${PIP[@]}" install --no-build-isolation --no-deps -e . || die "could not install mmlongtail (pip install -e .)"
elif ! done_ ext; then
  # mmlongtail is installed but its C helper is missing or stale (a checkout
  # that predates it, or a changed ABI): rebuild it in place
  say "building mmlongtail's C helper (mmlongtail/csrc)"
  "${PIP[@]}" install --no-build-isolation --no-deps -e . || die "could not install mmlongtail (pip install -e .)"
fi
if [[ $STATUS == " torch build mmcv rest ext " ]]; then
  say "ok: already installed in $VENV"
else
  VERS=$("$PY" -c 'import torch, mmcv, mmdet, mmengine, numpy, mmlongtail; from mmcv.ops import RoIAlign, nms; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, numpy {numpy.__version__}")') \
    || die "the installed stack does not import; see the error above"
  say "ok: $VERS"
fi
