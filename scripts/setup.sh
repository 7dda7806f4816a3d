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
gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi
need=()
for mod in jax numpy scipy pytest scikit_build_core ninja cmake; do
  "$PY" -c "import $mod" 2>/dev/null || need+=("$mod")
done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=()
  for mod in "${need[@]}"; do
    case $mod in
      jax) [ $gpu = 1 ] || pkgs+=(jax) ;;  # on a GPU machine: the cuda extra below
      scikit_build_core) pkgs+=(scikit-build-core) ;;
      cmake) command -v cmake >/dev/null || pkgs+=(cmake) ;;
      *) pkgs+=("$mod") ;;
    esac
  done
  [ ${#pkgs[@]} -gt 0 ] && "$PY" -m pip install -q "${pkgs[@]}"
fi
# ---- GPU machine: every engine, no CUDA toolkit needed ----
# The requirements of jaxmg's extra cuda13 (cuda12 where the installed JAX has
# a CUDA 12 plugin): jax[cudaNN] (kept where it is installed already), the CUDA
# headers it lacks and cuSOLVERMp with its NCCL. Read from pyproject.toml and
# installed as requirements, so that jaxmg itself is built once, below, against
# them (pip install ".[cuda13]" would build it a first time before installing them).
if [ $gpu = 1 ]; then
  cuda=13
  "$PY" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('jax_plugins.xla_cuda12') or u.find_spec('jax_cuda12_plugin') else 1)" 2>/dev/null && cuda=12
  mapfile -t extra < <("$PY" -c "import sys, tomllib; print('\n'.join(tomllib.load(open(sys.argv[1], 'rb'))['project']['optional-dependencies']['cuda' + sys.argv[2]]))" "$ROOT/pyproject.toml" $cuda)
  "$PY" -m pip install -q "${extra[@]}" ||
    echo "==== jaxmg: could not install ${extra[*]} (offline?); GPU engines that need them will be missing ====" >&2
fi
# The C library is built against this venv's jaxlib headers.
mkdir -p "$ROOT/build"
"$PY" -m pip install -v --no-build-isolation --no-deps "$ROOT" >"$ROOT/build/pip-install.log" 2>&1 \
  || { cat "$ROOT/build/pip-install.log"; exit 1; }
# A GPU machine whose build found no CUDA (or missed an engine) says so here, loudly.
if [ $gpu = 1 ] && grep -q -E "NO CUDA FOUND|NOT built|not building" "$ROOT/build/pip-install.log"; then
  echo "==== jaxmg: GPU engines missing from this build (build/pip-install.log): ====" >&2
  grep -A4 -E "NO CUDA FOUND|NOT built|not building" "$ROOT/build/pip-install.log" >&2
fi
export PY
