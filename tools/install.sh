#!/usr/bin/env bash
# Install mmlongtail and its stack into .venv/ (see README, "Install notes").
# Idempotent: each step checks before it acts, so a second run takes seconds.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
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
# check; a step runs only when its check failed, and says why. Its first lines
# are what mmlongtail/version.py declares, the one place for them (setup.py
# reads the same file): the faster-coco-eval window and the torch/torchvision
# pair.
probe() {
  "$PY" "$HERE/install_probe.py" "$MMCV_VERSION" 2>/dev/null \
    || die "$PY could not run tools/install_probe.py: $("$PY" "$HERE/install_probe.py" "$MMCV_VERSION" 2>&1 | tail -3)"
}
PROBE=$(probe)
done_() { grep -qx "ok $1" <<<"$PROBE"; }
why() { sed -n "s/^failed $1: //p" <<<"$PROBE" | head -1; }
FCE_REQ=$(sed -n 's/^requirement //p' <<<"$PROBE")
TORCH_VERSION=$(sed -n 's/^pin torch //p' <<<"$PROBE")
TORCHVISION_VERSION=$(sed -n 's/^pin torchvision //p' <<<"$PROBE")
[[ -n $FCE_REQ && -n $TORCH_VERSION && -n $TORCHVISION_VERSION ]] \
  || die "tools/install_probe.py did not print the versions declared in mmlongtail/version.py"

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

# 5. torchvision, for stock mmdet configs whose backbones start from
#    `torchvision://resnet50` (this project's LVIS configs name the weights'
#    URL and do not need it). A plain `pip install torchvision` may replace
#    torch (newest release plus CUDA packages), and a torchvision of another
#    build than torch's (CUDA for a CPU torch) fails at import. So: the release
#    declared with torch, of torch's build label (a torch X+cpu gets
#    torchvision Y+cpu, from PyTorch's index for that label), with --no-deps;
#    then check that torch is unchanged and that torchvision's ops run, and
#    remove a torchvision that does not. torchvision is optional: when it
#    cannot be had, the install goes on with a warning that says what to do.
tv_skip() {
  say "WARNING: torchvision not installed ($1). mmlongtail and its configs do not need it; stock mmdet configs that initialise from torchvision:// do. $2"
}
if ! done_ torchvision && [[ ${TORCHVISION:-1} == 0 ]]; then
  tv_skip "TORCHVISION=0; $(why torchvision)" ""
elif ! done_ torchvision; then
  say "torchvision: $(why torchvision)"
  TORCH_HAVE=$("$PY" -c 'import torch; print(torch.__version__)') || die "torch does not import in $VENV"
  LABEL=${TORCH_HAVE#"${TORCH_HAVE%%+*}"}   # "+cpu", "+cu130" or ""
  TV_SPEC="torchvision==$TORCHVISION_VERSION$LABEL"
  TV_INDEX=${TORCHVISION_INDEX_URL:-${LABEL:+https://download.pytorch.org/whl/${LABEL#+}}}
  TV_ARGS=(--no-deps --retries 1)
  [[ -n $TV_INDEX ]] && TV_ARGS+=(--extra-index-url "$TV_INDEX")
  PYV=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  TV_FIX="To add it: on a machine with internet access run pip download --no-deps --python-version $PYV --only-binary=:all: '$TV_SPEC'${TV_INDEX:+ --index-url $TV_INDEX} -d wheels/ ; then re-run here with PIP_FIND_LINKS=/path/to/wheels make install (or set TORCHVISION_INDEX_URL to a mirror of that index). TORCHVISION=0 make install skips this step."
  say "installing $TV_SPEC with --no-deps${TV_INDEX:+ (extra index $TV_INDEX)}, matching torch $TORCH_HAVE"
  if ! "${PIP[@]}" install "${TV_ARGS[@]}" "$TV_SPEC"; then
    tv_skip "pip could not install $TV_SPEC; torch $TORCH_HAVE was left as it was" "$TV_FIX"
  else
    TORCH_NOW=$("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)
    [[ $TORCH_NOW == "$TORCH_HAVE" ]] \
      || die "torch changed from $TORCH_HAVE to $TORCH_NOW while installing torchvision. Reinstall torch==$TORCH_VERSION (the build you had) and re-run make install."
    AFTER=$(probe)
    if ! grep -qx "ok torchvision" <<<"$AFTER"; then
      WHY=$(sed -n "s/^failed torchvision: //p" <<<"$AFTER" | head -1)
      "${PIP[@]}" uninstall -y torchvision || die "the installed $TV_SPEC does not work ($WHY) and could not be removed; remove it by hand: $PY -m pip uninstall -y torchvision"
      tv_skip "the installed $TV_SPEC did not work with torch $TORCH_HAVE ($WHY) and was removed again" "$TV_FIX"
    fi
  fi
fi

if ! grep -q "^failed" <<<"$PROBE"; then
  say "ok: already installed in $VENV"
else
  VERS=$("$PY" -c '
import importlib.util, torch, mmcv, mmdet, mmengine, numpy, mmlongtail
from mmcv.ops import RoIAlign, nms
tv = "not installed"
if importlib.util.find_spec("torchvision"):
    import torchvision
    tv = torchvision.__version__
print(f"torch {torch.__version__}, torchvision {tv}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, numpy {numpy.__version__}")') \
    || die "the installed stack does not import; see the error above"
  say "ok: $VERS"
fi
