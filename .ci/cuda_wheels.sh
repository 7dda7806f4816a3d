# Sourced by .ci/run after the test suite (issue 21). Two checks:
#   wheel_check     scripts/wheel.sh makes one wheel; on CPU it imports, runs, and
#                   loads no CUDA library; nothing on the CPU path NEEDs one.
#   gpu_build MAJOR the GPU libraries build with the CUDA toolkit hidden from
#                   CMake, against only parts of JAX's nvidia wheels (headers
#                   and the .so files linked, fetched by .ci/wheel_parts.py
#                   into $CACHE, kept between runs), for CUDA 13 and 12.
# Needs $PY (the venv of scripts/setup.sh). Fails with a message saying what.

CACHE=${JAXMG_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jaxmg-ci}
CMAKE=$(command -v cmake)
NINJA="$(dirname "$PY")/ninja"

# requirement:globs of the wheel files each CUDA major's build needs.
WHEELS13=(
  "nvidia-cuda-runtime>=13,<14:nvidia/cu13/include/*,nvidia/cu13/lib/libcudart_static.a,nvidia/cu13/lib/libcudart.so.13"
  "nvidia-cuda-crt>=13,<14:nvidia/cu13/include/*"
  "nvidia-cuda-cccl>=13,<14:nvidia/cu13/include/nv/*"
  "nvidia-cublas>=13,<14:nvidia/cu13/include/*,nvidia/cu13/lib/libcublas.so.13"
  "nvidia-cusolver>=12,<13:nvidia/cu13/include/*,nvidia/cu13/lib/libcusolver*.so.12"
  "nvidia-nccl-cu13>=2.29.2,<3:nvidia/nccl/include/*,nvidia/nccl/lib/libnccl.so.2"
  "nvidia-cusolvermp-cu13==0.9.1.*:nvidia/cu13/include/*,nvidia/cu13/lib/libcusolverMp.so.0"
)
WHEELS12=(
  "nvidia-cuda-runtime-cu12>=12,<13:nvidia/cuda_runtime/include/*,nvidia/cuda_runtime/lib/libcudart_static.a,nvidia/cuda_runtime/lib/libcudart.so.12"
  "nvidia-cuda-nvcc-cu12>=12,<13:nvidia/cuda_nvcc/include/*"
  "nvidia-cuda-cccl-cu12>=12,<13:nvidia/cuda_cccl/include/nv/*"
  "nvidia-cublas-cu12>=12,<13:nvidia/cublas/include/*,nvidia/cublas/lib/libcublas.so.12"
  "nvidia-cusolver-cu12>=11,<12:nvidia/cusolver/include/*,nvidia/cusolver/lib/libcusolver*.so.11"
  "nvidia-nccl-cu12>=2.29.2,<3:nvidia/nccl/include/*,nvidia/nccl/lib/libnccl.so.2"
  "nvidia-cusolvermp-cu12==0.9.1.*:nvidia/cu12/include/*,nvidia/cu12/lib/libcusolverMp.so.0"
)
# What each build must produce, and the sonames the cuSolverMg library must NEED.
ENGINES13="libjaxmg_host.so libjaxmg_cuda.so libjaxmg_mp.so"
ENGINES12="libjaxmg_host.so libjaxmg_cuda.so libjaxmg_mp.so"
NEEDED13="libcusolverMg.so.12 libcusolver.so.12"
NEEDED12="libcusolverMg.so.11 libcusolver.so.11"
RUNPATH13='$ORIGIN/../nvidia/cu13/lib'
RUNPATH12='$ORIGIN/../nvidia/cusolver/lib'

ci_fail() { echo "CI FAILED (issue 21 check): $*" >&2; exit 1; }

# Runs "$@" with no CUDA toolkit in sight: no PATH entry holding nvcc, no CUDA
# environment variables (LIBRARY_PATH would let the linker find toolkit libraries).
hidden() {
  local dir path=""
  local IFS=:
  for dir in $PATH; do
    [ -e "$dir/nvcc" ] || [[ "$dir" == *cuda* ]] || path="$path${path:+:}$dir"
  done
  env -u CUDA_HOME -u CUDA_PATH -u CUDA_ROOT -u CUDAToolkit_ROOT -u LIBRARY_PATH -u CPATH \
    -u C_INCLUDE_PATH -u LD_LIBRARY_PATH PATH="$path" "$@"
}

wheel_check() {
  local out=build/ci/wheel
  rm -rf "$out" && mkdir -p "$out"
  PY="$PY" bash scripts/wheel.sh "$out/dist" >"$out/pip.log" 2>&1 || { cat "$out/pip.log"; ci_fail "scripts/wheel.sh"; }
  local whl
  whl=$(ls "$out"/dist/jaxmg-*.whl)
  "$PY" -m pip install -q --no-deps --target "$out/site" "$whl"
  # The host library is loaded on every machine: it may NEED only the C library.
  local bad
  bad=$(readelf -d "$out/site/jaxmg/libjaxmg_host.so" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' |
        grep -v -E '^(libc|libm|libpthread|libdl|librt|ld-linux-x86-64)\.so' || true)
  [ -z "$bad" ] || ci_fail "libjaxmg_host.so NEEDs $bad"
  (cd "$out" && PYTHONPATH="$PWD/site" XLA_FLAGS=--xla_force_host_platform_device_count=4 "$PY" -c "
import re, jax, jax.numpy as jnp, jaxmg
from jax.sharding import NamedSharding, PartitionSpec as P
assert jaxmg.__file__.startswith('$PWD/site/'), jaxmg.__file__
mesh = jax.make_mesh((4,), ('x',))
A = jax.device_put(2 * jnp.eye(512), NamedSharding(mesh, P('x', None)))
b = jax.device_put(jnp.ones((512, 1)), NamedSharding(mesh, P(None, None)))
x = jaxmg.potrs(A, b, T_A=128, mesh=mesh, in_specs=(P('x', None), P(None, None)))
assert abs(float(x[0, 0]) - 0.5) < 1e-5, x[0, 0]
gpu = re.findall(r'\S*lib(?:jaxmg_cuda|cusolver|cudart|cublas|nccl)\S*', open('/proc/self/maps').read())
assert not gpu, gpu
") || ci_fail "the wheel on CPU"
  echo "wheel: $(basename "$whl") ($(du -k "$whl" | cut -f1) kB: $("$PY" -c "import sys, zipfile; print(sum(n.endswith('.so') for n in zipfile.ZipFile(sys.argv[1]).namelist()))" "$whl") libraries), runs on CPU, loads no CUDA library"
}

gpu_build() {
  local major=$1 t0=$SECONDS
  local nvidia="$CACHE/cu$major" b="build/ci/cu$major"
  local -n wheels=WHEELS$major
  local -n needed=NEEDED$major
  local -n runpath=RUNPATH$major
  local -n engines=ENGINES$major
  mkdir -p "$nvidia"
  "$PY" .ci/wheel_parts.py "$nvidia" "${wheels[@]}" || ci_fail "fetching the CUDA $major wheels"
  local t1=$SECONDS
  hidden sh -c '! command -v nvcc' >/dev/null || ci_fail "nvcc still on PATH"
  local ignore="/usr/local"
  for d in /usr/local/cuda*; do [ -e "$d" ] && ignore="$ignore;$d"; done
  rm -rf "$b"
  # PYTHONPATH: the build's Python finds these wheels as site-packages/nvidia.
  hidden env PYTHONPATH="$nvidia" "$CMAKE" -S . -B "$b" -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" \
    -DPython_EXECUTABLE="$PY" -DJAXMG_CUDA=ON -DCUDAToolkit_ROOT=/nonexistent \
    -DCMAKE_IGNORE_PREFIX_PATH="$ignore" >"$b.log" 2>&1 || { cat "$b.log"; ci_fail "configure, CUDA $major"; }
  grep -q "CUDA $major from the wheels" "$b.log" || { cat "$b.log"; ci_fail "CUDA $major: not built from the wheels"; }
  ! grep -q -E "NO CUDA FOUND|NOT built|not building" "$b.log" || { cat "$b.log"; ci_fail "CUDA $major: an engine is not built"; }
  hidden "$CMAKE" --build "$b" >>"$b.log" 2>&1 || { cat "$b.log"; ci_fail "build, CUDA $major"; }
  ! grep -q -i "warning" "$b.log" || { grep -i -B2 -A2 warning "$b.log"; ci_fail "CUDA $major: compiler warnings"; }
  # Every header came from the wheels: none from a toolkit or /usr/local.
  local leaked
  leaked=$("$NINJA" -C "$b" -t deps | grep -E '^ +/' | grep -E '/usr/local|cuda-[0-9]' | sort -u || true)
  [ -z "$leaked" ] || ci_fail "CUDA $major: headers from outside the wheels: $leaked"
  "$CMAKE" --install "$b" --prefix "$b/inst" >/dev/null
  local lib so
  for lib in $engines; do [ -f "$b/inst/jaxmg/$lib" ] || ci_fail "CUDA $major: $lib not built"; done
  for so in $needed; do
    readelf -d "$b/inst/jaxmg/libjaxmg_cuda.so" | grep -q "NEEDED.*\[$so\]" || ci_fail "CUDA $major: no NEEDED $so"
  done
  readelf -d "$b/inst/jaxmg/libjaxmg_cuda.so" | grep -q "RUNPATH.*\[$runpath" ||
    ci_fail "CUDA $major: RUNPATH does not start at $runpath"
  grep -q "^cuda_major=$major$" "$b/inst/jaxmg/jaxmg_cuda.txt" || ci_fail "CUDA $major: jaxmg_cuda.txt"
  echo "CUDA $major from wheels, toolkit hidden: $engines built; fetch $((t1 - t0)) s ($(du -sm "$nvidia" | cut -f1) MB on disk), build $((SECONDS - t1)) s"
}
