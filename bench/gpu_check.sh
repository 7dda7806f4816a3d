#!/usr/bin/env bash
# The device-machine call: build jaxmg from source, run the GPU test suite,
# then benchmark steps, each ending in a markdown table (in $OUT).
#   bash bench/gpu_check.sh STEP...    (default: build test core)
# Steps:
#   build    pip install from source          test     tests/gpu (not large)
#   suite    tests/gpu (not large), every test (no -x), one line per test
#   large    tests/gpu -m large (N = 65536)   core     3 ops, f64, 4096/16384 (+ potrs/potri 32768)
#   eig32k   syevd f64 32768                  big      potrs f64/f32 65536
#   largest  potrs f64 131072, f32 196608     tiles    T_A sweep, potrs/potri f64 32768
#   scaling  1 and 2 GPUs                     minsr    the MinSR demo at a GPU size
#   potrs32k potrs f64 32768, multi only      extra    potrs 256 rhs, f32 potri/syevd, c128
#   split    the engine's time split per call (JAXMG_VERBOSE=2), 3 ops f64 4096/16384, potri 32768
#   mp       tests/gpu one process per GPU    mpbench  process per GPU vs one process
#   memory   measured device peak per call vs docs/memory.md
#   grad     gradient of potrs and of its logdet vs the primal, f64 (GRAD_SIZES, default 16384,32768)
#   smoke    every op of the cuSOLVERMp engine on the local GPUs (bench/mp_smoke.py)
#   general  lu_solve (multi and single, vs raw getrf/getrs and jnp.linalg.solve) and least
#            squares (2N x N), qr, gesvd, polar (one GPU, vs jnp.linalg / jax.scipy), f64 at
#            8192, 16384 (GENERAL_SIZES; 32768 with general32k, gesvd/polar take minutes there)
#   gtest    tests/gpu/test_general_gpu.py alone
#   wheel    the wheel built elsewhere (WHEEL, default dist/jaxmg-*.whl) in a fresh venv: GPU suite
#   peer     JAXMg 1.4.1 itself next to jaxmg, one process per GPU (wheels: bench/README.md)
#   vmap     a batch through jax.vmap: one FFI call vs a loop of calls vs jnp batched (VMAP_CASES)
#   mpwheels the carried NCCL / cuSOLVERMp wheels on the path of every later step (first)
#   routes   qr, gesvd, polar: the one-device JAX route vs cuSOLVER on one GPU vs jnp, f64 8192/16384
#   gpusweep every op on GPU 0 (bench/sweep.py): auto, single, mp (1 x 1), local, jnp and JAXMg
#            1.4.1, f64 8192/16384 (SWEEP_OPS, SWEEP_SIZES, SWEEP_DTYPES); after mpwheels. SWEEP_END (epoch s)
#            bounds it: its time budget ends 30 s before (else SWEEP_BUDGET_S, default none);
#            SWEEP_PEER_S of it for 1.4.1 (150); a first call >= SWEEP_SLOW_S (2) is timed alone;
#            SWEEP_SKIP: op:route pairs left out (route: single, mp, local, one-dev or 1.4.1)
# mp takes MP_MARK, MP_K (pytest -m / -k), MP_VERBOSE (JAXMG_VERBOSE for its jobs:
# 2 traces every step of every call) and JAXMG_MP_LIMIT_S (each job's deadline); mpbench
# takes MP_OPS and MP_SIZES. EIG_DISPATCH=multi drops eig32k's one-GPU jaxmg
# run (about 90 s), so that eig32k fits in one call after core and big.
# Every bench step times jaxmg with cuSolverMg (multi) and on one GPU
# (single), the raw cuSolverMg driver, and jnp on one GPU where it fits.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/jaxmg_out}
# The device tool brings back only a few files: logs are kept here and
# packed into $OUT/logs.tgz every 20 s and at the end (so a call cut off at
# its time limit still brings back the logs of the step it was in); tables
# and the summary go to $OUT. STEP_LIMIT (seconds) kills a step that runs
# longer, so that the steps after it still run.
LOGS=${LOGS:-/tmp/jaxmg_logs}
PY=${PY:-python3}
REPS=${REPS:-3}
mkdir -p "$OUT" "$LOGS"
steps=${*:-build test core}
status=0
pack() { tar czf "$OUT/logs.tgz.tmp" -C "$LOGS" --exclude raw . 2>/dev/null && mv "$OUT/logs.tgz.tmp" "$OUT/logs.tgz"; }
(while sleep 20; do pack; done) &
packer=$!
trap 'kill $packer 2>/dev/null' EXIT
run() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  if [ -n "${STEP_LIMIT:-}" ]; then set -- timeout -s KILL "$STEP_LIMIT" "$@"; fi
  "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  printf '%-10s rc=%d  %4ds\n' "$name" "$rc" $((SECONDS - t0)) | tee -a "$OUT/summary.txt"
  # pytest's assertion lines first (they say what failed), then the end.
  [ $rc -eq 0 ] || { status=1; grep -E '^E  ' "$LOGS/$name.log" | head -40; tail -15 "$LOGS/$name.log"; }
}
raw() {
  [ -x "$LOGS/raw/raw_mg" ] || bash bench/build_raw.sh "$LOGS/raw" >"$LOGS/raw_build.log" 2>&1 ||
    { status=1; tail "$LOGS/raw_build.log"; }
}
bench() { # name, bench.py arguments...
  local name=$1; shift
  raw
  run "$name" "$PY" bench/bench.py --reps "$REPS" --raw "$LOGS/raw/raw_mg" \
    --csv "$LOGS/$name.csv" --md "$OUT/$name.md" "$@"
}

# ---- step "wheel" (issue 21): one wheel for CPU and GPU -------------------
# The wheel is built on a machine with no GPU (bash scripts/wheel.sh: every
# engine, glibc 2.28, py3-none-manylinux_2_27_x86_64) and carried here. It goes into a fresh venv that sees
# this machine's JAX (--system-site-packages), then the GPU suite runs against
# it (not against ./src or a build tree); wheel_libs.txt lists the CUDA
# libraries the process loaded and where from.
wheel_step() {
  local whl=${WHEEL:-$(ls dist/jaxmg-*.whl 2>/dev/null | head -1)}
  local venv="$LOGS/wheel_venv"
  if [ -z "$whl" ] || [ ! -f "$whl" ]; then
    echo "wheel: no wheel (set WHEEL or carry dist/jaxmg-*.whl)" | tee -a "$OUT/summary.txt"; status=1; return
  fi
  rm -rf "$venv"
  # The .pth adds $PY's own site-packages where $PY is itself a venv's python.
  run wheel_install bash -c "'$PY' -m venv --system-site-packages '$venv' &&
    '$PY' -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])' >\"\$('$venv/bin/python' -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')/outer.pth\" &&
    '$venv/bin/python' -m pip install --no-deps --force-reinstall '$whl'"
  [ -x "$venv/bin/python" ] || return
  run wheel_libs env -u JAXMG_LIBRARY_DIR "$venv/bin/python" -c "
import jax, jax.numpy as jnp, jaxmg, re
from jax.sharding import NamedSharding, PartitionSpec as P
print('jaxmg from', jaxmg.__file__)
mesh = jax.make_mesh((jax.device_count(),), ('x',))
n = 256 * jax.device_count()
A = jax.device_put(2 * jnp.eye(n), NamedSharding(mesh, P('x', None)))
b = jax.device_put(jnp.ones((n, 1)), NamedSharding(mesh, P(None, None)))
x = jaxmg.potrs(A, b, T_A=256, mesh=mesh, in_specs=(P('x', None), P(None, None)))
assert abs(float(x[0, 0]) - 0.5) < 1e-5, x[0, 0]
maps = open('/proc/self/maps').read()
for lib in sorted({m for m in re.findall(r'\S*/lib(?:jaxmg|cusolver|cudart|nccl)\S*', maps)}):
    print(lib)"
  cat "$LOGS/wheel_libs.log" > "$OUT/wheel_libs.txt" 2>/dev/null
  run wheel_test env -u JAXMG_LIBRARY_DIR "$venv/bin/python" -m pytest -q -x tests/gpu -m "not large" \
    -p no:cacheprovider --ignore=tests/gpu/test_multiprocess_gpu.py
}
# ---- end of step "wheel" ------------------------------------------------------

# ---- step "peer" (issue 17, H17): JAXMg 1.4.1 itself next to jaxmg -------------
# Carry the wheels bench/README.md lists (PEER_WHEELS, default .whl). JAXMg 1.4.1
# goes into a --target folder of its own (it is also named jaxmg); cuSOLVERMp and
# cuBLASMp into another, on the path of both jobs. This machine's jax (0.11.1-0.11.2
# for JAXMg 1.4.1) and nvidia-nccl-cu13 (>= 2.29.2 for cuSOLVERMp 0.9.1; its wheel is
# too large to carry) are checked first. jaxmg is rebuilt against those wheels so
# that it has its cuSOLVERMp engine (PEER_BUILD=0: keep the installed one).
# bench/peer_jaxmg14.py runs each implementation as its own job, one process per GPU.
# PEER_IMPLS, PEER_OPS, PEER_DTYPES, PEER_SIZES, PEER_GRIDS choose the rows.
peer_step() {
  local w=${PEER_WHEELS:-.whl} peer="$LOGS/peer14" mpw="$LOGS/mpwheels"
  local jx
  jx=$(ls "$w"/jaxmg-1.4.1-*.whl 2>/dev/null | head -1)
  if [ -z "$jx" ] || ! ls "$w"/nvidia_cusolvermp_cu13-*.whl "$w"/nvidia_cublasmp_cu13-*.whl >/dev/null 2>&1; then
    echo "peer: wheels missing under $w (bench/README.md lists them)" | tee -a "$OUT/summary.txt"; status=1; return
  fi
  run peer_env "$PY" -c "
import importlib.metadata as m
def v(s): return tuple(int(x) for x in s.split('.')[:3])
j, n = m.version('jax'), m.version('nvidia-nccl-cu13')
print('jax', j, 'nvidia-nccl-cu13', n)
assert v(n) >= (2, 29, 2), f'nvidia-nccl-cu13 {n} < 2.29.2: cuSOLVERMp 0.9.1 cannot run here'
assert (0, 11, 1) <= v(j) < (0, 11, 3), f'jax {j}: JAXMg 1.4.1 needs jax >= 0.11.1, < 0.11.3'"
  grep -qE "^peer_env +rc=0" "$OUT/summary.txt" || return
  run peer_install bash -c "rm -rf '$peer' '$mpw' &&
    '$PY' -m pip install -q --no-index --no-deps --no-compile --target '$peer' '$jx' &&
    '$PY' -m pip install -q --no-index --no-deps --no-compile --target '$mpw' \
      $w/nvidia_cusolvermp_cu13-*.whl $w/nvidia_cublasmp_cu13-*.whl"
  grep -qE "^peer_install +rc=0" "$OUT/summary.txt" || return
  if [ "${PEER_BUILD:-1}" = 1 ]; then
    run peer_build env CMAKE_ARGS="-DJAXMG_CUSOLVERMP_ROOT=$mpw" \
      "$PY" -m pip install --no-build-isolation --no-deps -v .
    grep -E "cuSOLVERMp engine" "$LOGS/peer_build.log" | head -2
  fi
  # LD_LIBRARY_PATH too: where site-packages/nvidia is a regular package, the
  # folder's nvidia/ is no part of the nvidia namespace that jaxmg searches.
  run peer env -u JAXMG_LIBRARY_DIR \
    LD_LIBRARY_PATH="$mpw/nvidia/cu13/lib:$mpw/nvidia/cublasmp/cu13/lib:${LD_LIBRARY_PATH:-}" \
    "$PY" bench/peer_jaxmg14.py --peer-site "$peer" --mp-site "$mpw" \
    --impls "${PEER_IMPLS:-peer,mp,multi,single}" --ops "${PEER_OPS:-potrs}" \
    --dtypes "${PEER_DTYPES:-f64}" --sizes "${PEER_SIZES:-32768,65536}" \
    --grids "${PEER_GRIDS:-2x2,1x4}" --reps "$REPS" --workdir "$LOGS" \
    --md "$OUT/peer.md" --csv "$LOGS/peer.csv"
}
# ---- end of step "peer" ------------------------------------------------------

# ---- step "mpwheels": the cuSOLVERMp engine on an image whose NCCL is too old ----
# ../shared/device/README.md: the carried (pruned, sm_90-only) NCCL wheel goes into
# /tmp/site, first on PYTHONPATH and preloaded (JAX's plugin loads the image's NCCL by
# path otherwise); cuSOLVERMp and cuBLASMp into $LOGS/mpwheels. Exported for every
# later step of this call: "build" then builds the cuSOLVERMp engine, "peer" finds
# NCCL >= 2.29.2, "smoke" and the tests load it.
mpwheels_step() {
  local w=${PEER_WHEELS:-.whl} mpw="$LOGS/mpwheels"
  run mpwheels bash -c "'$PY' -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
      $w/nvidia_nccl_cu13-*.whl &&
    '$PY' -m pip install -q --no-index --no-deps --no-compile --target '$mpw' \
      $w/nvidia_cusolvermp_cu13-*.whl $w/nvidia_cublasmp_cu13-*.whl"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  export LD_PRELOAD=/tmp/site/nvidia/nccl/lib/libnccl.so.2
  export LD_LIBRARY_PATH="$mpw/nvidia/cu13/lib:$mpw/nvidia/cublasmp/cu13/lib:${LD_LIBRARY_PATH:-}"
  export CMAKE_ARGS="-DJAXMG_CUSOLVERMP_ROOT=$mpw"
}

# ---- step "gpusweep" (issue 27 item 4): the one-GPU table -------------------------
# JAXMg 1.4.1 goes into its own --target folder (it is also named jaxmg); the sweep
# runs it in a child of its own, on the same matrices, before jaxmg's routes.
gpusweep_step() {
  local w=${PEER_WHEELS:-.whl} peer="$LOGS/peer14" jx budget=${SWEEP_BUDGET_S:-}
  local extra=()
  jx=$(ls "$w"/jaxmg-1.4.1-*.whl 2>/dev/null | head -1)
  if [ -n "$jx" ] && rm -rf "$peer" &&
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$peer" "$jx"; then
    extra+=(--peer-site "$peer" --mp-site "$LOGS/mpwheels" --peer-budget "${SWEEP_PEER_S:-150}")
  else
    echo "gpusweep: JAXMg 1.4.1 not installed (no wheel under $w?): no 1.4.1 column" |
      tee -a "$OUT/summary.txt"
  fi
  [ -n "${SWEEP_END:-}" ] && budget=$((SWEEP_END - $(date +%s) - 30))
  [ -n "$budget" ] && extra+=(--time-budget "$budget")
  # The cuSOLVERMp engine's buffers and workspace live outside XLA's pool.
  run gpusweep env XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}" \
    "$PY" bench/sweep.py --dtypes "${SWEEP_DTYPES:-f64}" --ndev 1 --tiles auto \
    --ops "${SWEEP_OPS:-potrs,lu_solve,potri,qr,least_squares,syevd,polar,eigh_generalized,gesvd}" \
    --sizes "${SWEEP_SIZES:-8192,16384}" --engines single,mp,local --reps "$REPS" \
    --slow-s "${SWEEP_SLOW_S:-2}" --target 1.0 --skip "${SWEEP_SKIP:-}" "${extra[@]}" \
    --json "$OUT/one_gpu_sweep.json" --md "$OUT/one_gpu_sweep.md"
}
# ---- end of step "gpusweep" ----------------------------------------------------

nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee "$LOGS/gpus.txt"
ngpu=$(wc -l <"$LOGS/gpus.txt")
for s in $steps; do
  case $s in
    build) run build "$PY" -m pip install --no-build-isolation --no-deps -v . ;;
    test) run test "$PY" -m pytest -q -x tests/gpu -m "not large" -p no:cacheprovider \
        --ignore=tests/gpu/test_multiprocess_gpu.py ;;
    suite) run suite "$PY" -m pytest -v tests/gpu -m "not large" -p no:cacheprovider \
        --ignore=tests/gpu/test_multiprocess_gpu.py ;;
    large) run large "$PY" -m pytest -q tests/gpu -m large -p no:cacheprovider \
        --ignore=tests/gpu/test_multiprocess_gpu.py ;;
    core)
      bench core --ops potrs,potri,syevd --dtypes f64 --sizes 4096,16384 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi,single --single
      bench core32k --ops potrs,potri --dtypes f64 --sizes 32768 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi,single --single ;;
    eig32k)
      bench eig32k --ops syevd --dtypes f64 --sizes 32768 --tiles 1024 --ndev "$ngpu" \
        --dispatch "${EIG_DISPATCH:-multi,single}" --single ;;
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
    potrs32k)
      bench potrs32k --ops potrs --dtypes f64 --sizes 16384,32768 --tiles 1024 --ndev "$ngpu" --dispatch multi ;;
    split) # the engine's time split per call (JAXMG_VERBOSE=2), in $LOGS/split*.log
      JAXMG_VERBOSE=2 bench split --ops potrs,potri,syevd --dtypes f64 --sizes 4096,16384 --tiles 1024 \
        --ndev "$ngpu" --dispatch multi
      JAXMG_VERBOSE=2 bench split32k --ops potri --dtypes f64 --sizes 32768 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi
      grep -h "engine:\|open " "$LOGS"/split*.log | cut -d" " -f3- | head -80 ;;
    extra)
      bench rhs256 --ops potrs --dtypes f64 --sizes 4096,16384 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi,single --single --nrhs 256
      bench f32 --ops potri,syevd --dtypes f32 --sizes 16384 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi,single --single
      bench c128 --ops potri,syevd --dtypes c128 --sizes 8192 --tiles 1024 --ndev "$ngpu" \
        --dispatch multi,single --single ;;
    mp) # the jobs' own logs, findings and (when stuck) stacks land in $LOGS/mp_jobs
      run mp env JAXMG_VERBOSE="${MP_VERBOSE:-${JAXMG_VERBOSE:-0}}" "$PY" -m pytest -q -rA -x tests/gpu/test_multiprocess_gpu.py -p no:cacheprovider \
        --basetemp="$LOGS/mp_jobs" -m "${MP_MARK-not large}" -k "${MP_K:-}" ;;
    mpbench) run mpbench "$PY" bench/mp_compare.py --ops "${MP_OPS:-potrs,potri,syevd}" --dtypes f64 \
        --sizes ${MP_SIZES:-16384,32768} --reps "$REPS" --md "$OUT/mpbench.md" ;;
    memory)
      run memory "$PY" bench/memory.py --ops potrs,potri --dtypes f64 --sizes 32768 --tiles 1024 \
        --ndev "$ngpu" --dispatch multi,single --md "$OUT/memory.md" --csv "$LOGS/memory.csv"
      run memory_eig "$PY" bench/memory.py --ops syevd --dtypes f64 --sizes 16384 --tiles 1024 \
        --ndev "$ngpu" --dispatch multi,single --md "$OUT/memory_eig.md" --csv "$LOGS/memory_eig.csv" ;;
    minsr) run minsr "$PY" examples/minsr.py ${MINSR_ARGS:-} ;;
    grad) run grad "$PY" bench/grad_bench.py --sizes "${GRAD_SIZES:-16384,32768}" --reps "$REPS"
      cp "$LOGS/grad.log" "$OUT/grad.md" ;;
    vmap) run vmap "$PY" bench/vmap_bench.py --cases "${VMAP_CASES:-256x128,64x512,16x2048,4x8192}" \
        --reps "$REPS"
      cp "$LOGS/vmap.log" "$OUT/vmap.md" ;;
    smoke) run smoke "$PY" bench/mp_smoke.py; cp "$LOGS/smoke.log" "$OUT/smoke.txt" ;;
    gtest) run gtest "$PY" -m pytest -q tests/gpu/test_general_gpu.py -p no:cacheprovider ;;
    general)
      bench general_lu --ops lu_solve --dtypes f64 --sizes "${GENERAL_SIZES:-8192,16384}" --tiles 512 \
        --ndev "$ngpu" --dispatch multi,single --single
      bench general_1gpu --ops least_squares,qr,gesvd,polar --dtypes f64 \
        --sizes "${GENERAL_SIZES:-8192,16384}" --tiles 1024 --ndev "$ngpu" --dispatch single --single ;;
    general32k)
      bench general32k_lu --ops lu_solve --dtypes f64 --sizes 32768 --tiles 512 --ndev "$ngpu" \
        --dispatch multi,single --single
      bench general32k --ops least_squares,qr,gesvd,polar --dtypes f64 --sizes 32768 --tiles 1024 \
        --ndev "$ngpu" --dispatch single --single ;;
    routes) # the one-device JAX route (local) against cuSOLVER on one GPU (single) and jnp
      bench routes8k --ops qr,gesvd,polar --dtypes f64 --sizes 8192 --tiles 1024 --ndev 1 \
        --dispatch single,local --single
      bench routes16k --ops qr,polar --dtypes f64 --sizes "${ROUTE_SIZES:-16384}" --tiles 1024 \
        --ndev 1 --dispatch auto --single ;;
    wheel) wheel_step ;;
    mpwheels) mpwheels_step ;;
    peer) peer_step ;;
    gpusweep) gpusweep_step ;;
  esac
done
for t in test large mp wheel_test; do [ -f "$LOGS/$t.log" ] && tail -2 "$LOGS/$t.log"; done
kill $packer 2>/dev/null
pack
for f in "$OUT"/*.md; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
exit $status
