#!/usr/bin/env bash
# The one device-machine call: build jaxmg from source, run the GPU test
# suite, then the benchmarks, and end with a short table. Logs go to $OUT.
#   bash bench/gpu_check.sh [build] [test] [large] [bench] [bench-big]   (default: build test bench)
set -uo pipefail
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/jaxmg_out}
PY=${PY:-python3}
mkdir -p "$OUT"
steps=${*:-build test bench}
status=0
run() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-10s rc=%d  %4ds  (%s)\n' "$name" "$rc" $((SECONDS - t0)) "$OUT/$name.log" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || { status=1; tail -25 "$OUT/$name.log"; }
}

nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
for s in $steps; do
  case $s in
    build) run build "$PY" -m pip install --no-build-isolation --no-deps -v . ;;
    test) run test "$PY" -m pytest -q -x tests/gpu -m "not large" -p no:cacheprovider ;;
    large) run large "$PY" -m pytest -q tests/gpu -m large -p no:cacheprovider ;;
    bench)
      bash bench/build_raw.sh "$OUT/raw" >"$OUT/raw_build.log" 2>&1 || { status=1; tail "$OUT/raw_build.log"; }
      run bench "$PY" bench/bench.py --ops "${BENCH_OPS:-potrs,potri,syevd}" --dtypes f64 --sizes "${BENCH_SIZES:-4096,16384,32768}" \
        --tiles 1024 --ndev "${NDEV:-4}" --reps 3 --raw "$OUT/raw/raw_mg" --single \
        --csv "$OUT/bench.csv" --md "$OUT/bench.md" ;;
    bench-big)
      run bench_big "$PY" bench/bench.py --ops potrs --dtypes f64,f32 --sizes 65536 --tiles 1024 \
        --ndev "${NDEV:-4}" --reps 3 --raw "$OUT/raw/raw_mg" --csv "$OUT/bench_big.csv" --md "$OUT/bench_big.md" ;;
  esac
done
[ -f "$OUT/test.log" ] && tail -3 "$OUT/test.log"
for f in "$OUT"/bench*.md; do [ -f "$f" ] && cat "$f"; done
exit $status
