"""Where a mesh-level core hands its whole call to an engine that does not
run per shard: cuSOLVERMp (_mp_route: every rank calls the library on its
grid) or the one-device JAX algorithm (_local). Every core asks
`route(op, req, *arrays)` first: None sends it on to its per-shard FFI path
(host, single, mg); otherwise it gets the core's own outputs. The engine
itself was chosen once, by _decide, and is recorded in the request."""

from __future__ import annotations

from ..engines import local as _local
from ..engines import mp_route as _mp_route

_ROUTED = {"mp": _mp_route.run, "local": _local.run}


def route(op: str, req, *arrays):
    run = _ROUTED.get(req.engine)
    return None if run is None else run(op, req, *arrays)
