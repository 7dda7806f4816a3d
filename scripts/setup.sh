#!/usr/bin/env bash
# Creates .venv (once), installs what jaxmg needs, builds and installs jaxmg.
# Sourced by run_demo.sh and run_tests.sh; leaves $PY pointing at the venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
BASE=${JAXMG_PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  # Reuse a JAX that is already installed (a GPU image, an offline machine);
  # otherwise the venv gets its own from PyPI.
  if "$BASE" -c "import jax" 2>/dev/null; then
    "$BASE" -m venv --system-site-packages "$VENV"
  else
    "$BASE" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
need=()
for mod in jax numpy scipy pytest scikit_build_core ninja cmake; do
  "$PY" -c "import $mod" 2>/dev/null || need+=("$mod")
done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=()
  for mod in "${need[@]}"; do
    case $mod in
      jax) if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then pkgs+=("jax[cuda13]"); else pkgs+=(jax); fi ;;
      scikit_build_core) pkgs+=(scikit-build-core) ;;
      cmake) command -v cmake >/dev/null || pkgs+=(cmake) ;;
      *) pkgs+=("$mod") ;;
    esac
  done
  [ ${#pkgs[@]} -gt 0 ] && "$PY" -m pip install -q "${pkgs[@]}"
fi
# The C library is built against this venv's jaxlib headers.
mkdir -p "$ROOT/build"
"$PY" -m pip install -q --no-build-isolation --no-deps "$ROOT" >"$ROOT/build/pip-install.log" 2>&1 \
  || { cat "$ROOT/build/pip-install.log"; exit 1; }
export PY
