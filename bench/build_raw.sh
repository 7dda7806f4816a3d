#!/usr/bin/env bash
# Builds the raw cuSolverMg baseline: bench/build_raw.sh OUT_DIR  ->  OUT_DIR/raw_mg
# NVCC_ARCH overrides the GPU targets (default: Hopper SASS plus PTX, so
# newer GPUs JIT the small fill kernel).
set -euo pipefail

out=${1:?usage: build_raw.sh OUT_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

nvcc=$(command -v nvcc || true)
if [[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc; fi
if [[ -z "$nvcc" ]]; then
  echo "build_raw.sh: nvcc not found on PATH or in /usr/local/cuda/bin" >&2
  exit 1
fi
cuda=$(cd "$(dirname "$nvcc")/.." && pwd)

# The toolkit keeps its libraries in lib64 or lib depending on the install.
libdir=""
for d in "$cuda/lib64" "$cuda/lib" "$cuda/targets/x86_64-linux/lib" "$cuda/targets/sbsa-linux/lib"; do
  if ls "$d"/libcusolverMg.so* >/dev/null 2>&1; then libdir=$d; break; fi
done
if [[ -z "$libdir" ]]; then
  echo "build_raw.sh: libcusolverMg not found under $cuda" >&2
  exit 1
fi

arch=${NVCC_ARCH:-"-gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90"}
mkdir -p "$out"
# rpath: the binary then runs without LD_LIBRARY_PATH on the build machine;
# elsewhere bench.py adds the JAX CUDA wheels' library folders.
# shellcheck disable=SC2086
"$nvcc" -O2 $arch -o "$out/raw_mg" "$here/raw_mg.c" "$here/raw_mg_fill.cu" \
  -L"$libdir" -lcusolverMg -Xlinker -rpath -Xlinker "$libdir"
echo "$out/raw_mg"
