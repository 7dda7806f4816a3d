#!/usr/bin/env bash
# Runs the MinSR demo on whatever devices exist: all GPUs, or 8 CPU host
# devices. Extra arguments go to examples/minsr.py (see --help).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
if ! "$PY" -c "import jax, sys; sys.exit(0 if any(d.platform == 'gpu' for d in jax.devices()) else 1)" 2>/dev/null; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
fi
exec "$PY" examples/minsr.py "$@"
