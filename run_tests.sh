#!/usr/bin/env bash
# Runs every test: the C unit tests (ctest), the Python suite on 8 CPU host
# devices, and the GPU suite (skipped where JAX sees no GPU).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
# The optional extra test-netket (pyproject.toml): NetKet as a real client.
# Installed with jax, jaxlib, numpy and scipy pinned to the venv's versions,
# so that it never changes them. JAXMG_TEST_NETKET=0 skips it (its test then skips).
if [ "${JAXMG_TEST_NETKET:-1}" != 0 ] && ! "$PY" -c "import netket" 2>/dev/null; then
  pins=$(mktemp)
  "$PY" - >"$pins" <<'PINS'
import importlib.metadata as md
for name in ("jax", "jaxlib", "numpy", "scipy"):
    print(f"{name}=={md.version(name)}")
PINS
  extra=$("$PY" -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['test-netket']))")
  # shellcheck disable=SC2086
  "$PY" -m pip install -q -c "$pins" $extra >build/pip-netket.log 2>&1 \
    || { cat build/pip-netket.log; echo "run_tests.sh: installing the test-netket extra failed (JAXMG_TEST_NETKET=0 skips it)"; rm -f "$pins"; exit 1; }
  rm -f "$pins"
fi
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
