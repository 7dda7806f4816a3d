#!/usr/bin/env bash
# Builds the one jaxmg wheel for CPU and GPU machines into DIR (default dist/):
#   PY=python bash scripts/wheel.sh [DIR]
# With the ziglang package importable, the C libraries are compiled by
# `zig cc` for glibc 2.28 and, where auditwheel is importable, the wheel is
# tagged with the manylinux tag `auditwheel show` finds (manylinux_2_27) by
# scripts/retag_wheel.py, nothing grafted: the CUDA libraries come from JAX's
# nvidia wheels at run time. Otherwise the system
# compiler builds it, tagged py3-none-linux_x86_64, for this machine's glibc.
# GPU engines: wherever CUDA is found (docs/install.md); NVIDIA_PARTS=<folder
# holding nvidia/> adds wheels unpacked there (e.g. ~/.cache/jaxmg-ci/cu13,
# filled by .ci/run), so that a machine without cuSOLVERMp installed still
# builds every engine into the wheel.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-python3}
OUT=$(mkdir -p "${1:-$ROOT/dist}" && cd "${1:-$ROOT/dist}" && pwd)
TMP="$ROOT/build/wheel-out"
rm -rf "$TMP"
args=()
if "$PY" -c "import ziglang" 2>/dev/null; then
  zig="$ROOT/build/zig"
  mkdir -p "$zig"
  printf '#!/bin/sh\nexec "%s" -m ziglang cc -target x86_64-linux-gnu.2.28 "$@"\n' "$PY" >"$zig/cc"
  printf '#!/bin/sh\nexec "%s" -m ziglang ar "$@"\n' "$PY" >"$zig/ar"
  chmod +x "$zig/cc" "$zig/ar"
  args=(-C cmake.define.CMAKE_C_COMPILER="$zig/cc" -C cmake.define.CMAKE_AR="$zig/ar"
        -C build-dir="$ROOT/build/wheel-glibc2.28")
fi
(cd "$ROOT" && PYTHONPATH="${NVIDIA_PARTS:-}${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pip wheel -v --no-build-isolation --no-deps "${args[@]}" . -w "$TMP") \
  >"$ROOT/build/wheel.log" 2>&1 || { tail -40 "$ROOT/build/wheel.log"; exit 1; }
grep -E "jaxmg:|cuSOLVERMp engine" "$ROOT/build/wheel.log" | sed 's/^ *//'
whl=$(ls "$TMP"/jaxmg-*.whl)
if [ ${#args[@]} -gt 0 ] && "$PY" -c "import auditwheel" 2>/dev/null; then
  "$PY" "$ROOT/scripts/retag_wheel.py" "$whl" "$OUT" >/dev/null
else
  cp "$whl" "$OUT/"
fi
ls -1 "$OUT"/jaxmg-*.whl
