#!/usr/bin/env bash
# The device-machine call: build jaxmg from source, run the GPU test suite,
# then benchmark steps, each ending in a markdown table. Logs go to $OUT.
#   bash bench/gpu_check.sh STEP...    (default: build test core)
# Steps:
#   build    pip install from source          test     tests/gpu (not large)
#   large    tests/gpu -m large (N = 65536)   core     3 ops, f64, 4096/16384 (+ potrs/potri 32768)
#   eig32k   syevd f64 32768                  big      potrs f64/f32 65536
#   largest  potrs f64 131072, f32 196608     tiles    T_A sweep, potrs/potri f64 32768
#   scaling  1 and 2 GPUs                     minsr    the MinSR demo at a GPU size
# Every bench step times jaxmg with cuSolverMg (multi) and on one GPU
# (single), the raw cuSolverMg driver, and jnp on one GPU where it fits.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/jaxmg_out}
PY=${PY:-python3}
REPS=${REPS:-3}
mkdir -p "$OUT"
steps=${*:-build test core}
status=0
run() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-10s rc=%d  %4ds  (%s)\n' "$name" "$rc" $((SECONDS - t0)) "$OUT/$name.log" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || { status=1; tail -25 "$OUT/$name.log"; }
}
raw() {
  [ -x "$OUT/raw/raw_mg" ] || bash bench/build_raw.sh "$OUT/raw" >"$OUT/raw_build.log" 2>&1 ||
    { status=1; tail "$OUT/raw_build.log"; }
}
bench() { # name, bench.py arguments...
  local name=$1; shift
  raw
  run "$name" "$PY" bench/bench.py --reps "$REPS" --raw "$OUT/raw/raw_mg" \
    --csv "$OUT/$name.csv" --md "$OUT/$name.md" "$@"
}

nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$OUT/gpus.txt"
ngpu=$(wc -l <"$OUT/gpus.txt")
for s in $steps; do
  case $s in
    build) run build "$PY" -m pip install --no-build-isolation --no-deps -v . ;;
    test) run test "$PY" -m pytest -q -x tests/gpu -m "not large" -p no:cacheprovider ;;
    large) run large "$PY" -m pytest -q tests/gpu -m large -p no:cacheprovider ;;
    core)
      bench core --ops potrs,potri,syevd --dtypes f64 --sizes 4096,16384 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi,single --single
      bench core32k --ops potrs,potri --dtypes f64 --sizes 32768 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi,single --single ;;
    eig32k)
      bench eig32k --ops syevd --dtypes f64 --sizes 32768 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi,single --single ;;
    big)
      bench big --ops potrs --dtypes f64,f32 --sizes 65536 --tiles 1024 --ndev "$ngpu" --dispatch multi ;;
    largest)
      bench largest64 --ops potrs --dtypes f64 --sizes 131072 --tiles 1024 --ndev "$ngpu" --dispatch multi
      bench largest32 --ops potrs --dtypes f32 --sizes 196608 --tiles 1024 --ndev "$ngpu" --dispatch multi ;;
    tiles)
      bench tiles --ops potrs,potri --dtypes f64 --sizes 32768 --tiles 256,512,2048 --ndev "$ngpu" \
        --dispatch multi ;;
    scaling)
      bench scaling --ops potrs,potri,syevd --dtypes f64 --sizes 16384 --tiles 1024 --ndev 1,2 \
        --dispatch multi ;;
    minsr) run minsr "$PY" examples/minsr.py ${MINSR_ARGS:-} ;;
  esac
done
[ -f "$OUT/test.log" ] && tail -3 "$OUT/test.log"
for f in "$OUT"/*.md; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
exit $status
