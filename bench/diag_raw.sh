#!/usr/bin/env bash
# Does cuSolverMg itself give a right inverse and a right solve with B
# spread over devices? Raw calls on cudaMalloc'ed buffers, checked on the
# host (RAW_CHECK=1). Logs in $OUT.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/jaxmg_out}
mkdir -p "$OUT"
bash "$(dirname "$0")/build_raw.sh" "$OUT/raw" >"$OUT/raw_build.log" 2>&1 || { tail "$OUT/raw_build.log"; exit 1; }
raw=$OUT/raw/raw_mg
find / -name 'libcusolverMg.so*' -not -path '*/proc/*' 2>/dev/null | tee "$OUT/libs.txt"
ldd "$raw" | grep -i cusolver
wheel=$(dirname "$(grep -m1 'nvidia/cu13/lib/libcusolverMg' "$OUT/libs.txt")")
go() { # label, env..., args...
  echo "== $*"
  env RAW_CHECK=1 "$@" 2>&1 | grep -v '^raw_mg: potr' | grep -E '^CHECK|RAW|rror|fail'
}
ndev=$(nvidia-smi -L | wc -l)
go "$raw" potri f64 2048 512 "$ndev" 1 1
go "$raw" potri f64 4096 1024 "$ndev" 1 1
go "$raw" potri f64 4096 256 "$ndev" 1 1
go "$raw" potri f64 4096 1024 2 1 1
go "$raw" potri f64 4096 1024 1 1 1
go "$raw" potri f64 8192 1024 "$ndev" 1 1
go "$raw" potri f32 4096 1024 "$ndev" 1 1
go "$raw" potri c128 4096 1024 "$ndev" 1 1
go RAW_BBLOCK=1024 "$raw" potrs f64 4096 1024 "$ndev" 4096 1
go RAW_BBLOCK=4096 "$raw" potrs f64 4096 1024 "$ndev" 4096 1
go "$raw" potrs f64 4096 1024 "$ndev" 256 1
go "$raw" potrs f64 8192 1024 "$ndev" 1 1
if [ -n "$wheel" ]; then
  echo "--- with JAX's wheel library ($wheel)"
  go LD_LIBRARY_PATH="$wheel" "$raw" potri f64 4096 1024 "$ndev" 1 1
  go LD_LIBRARY_PATH="$wheel" RAW_BBLOCK=1024 "$raw" potrs f64 4096 1024 "$ndev" 4096 1
fi
