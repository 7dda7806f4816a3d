#!/usr/bin/env bash
# Runs every test: the C unit tests (ctest), the Python suite on 8 CPU host
# devices, and the GPU suite (skipped where JAX sees no GPU).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
JAX_INC=$("$PY" -c "import jax.ffi; print(jax.ffi.include_dir())")
cmake -S . -B build/ctest -G Ninja -DCMAKE_MAKE_PROGRAM="$(dirname "$PY")/ninja" \
  -DJAXMG_TESTS=ON -DJAXMG_CUDA=OFF -DJAX_FFI_INCLUDE_DIR="$JAX_INC" >build/ctest.log 2>&1 \
  || { cat build/ctest.log; exit 1; }
cmake --build build/ctest >>build/ctest.log 2>&1 || { cat build/ctest.log; exit 1; }
(cd build/ctest && ctest --output-on-failure)
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
"$PY" -m pytest -q -p no:cacheprovider tests/python "$@"
if "$PY" -c "import jax, sys; sys.exit(0 if any(d.platform == 'gpu' for d in jax.devices()) else 1)" 2>/dev/null; then
  "$PY" -m pytest -q -p no:cacheprovider tests/gpu
fi
