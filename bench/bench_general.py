"""The general ops in bench.py: lu_solve, least_squares (2N x N), qr,
gesvd and polar, each timed as jaxmg and as jnp.linalg / jax.scipy on one
GPU, and validated with cheap sharded residuals (a few sampled columns,
never an N x N product)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

ROW = P("x", None)
REP = P(None, None)
HIGHEST = jax.lax.Precision.HIGHEST
OPS = ("lu_solve", "least_squares", "qr", "gesvd", "polar")
RAW_OPS = ("lu_solve",)  # raw_mg has getrf/getrs; the others have no cuSolverMg routine


def rows_of(op, n):
    """A's rows for a benchmark of size N: least squares is 2N x N."""
    return 2 * n if op == "least_squares" else n


def build_general(mesh, m, n, dtype, seed):
    """A = [2 I; 0] + G / sqrt(m) with G standard normal, made on the
    devices row by row (fold_in of the row block): general (not
    symmetric), well conditioned, M x N."""
    nd = mesh.shape["x"]
    mloc = m // nd
    cplx = np.issubdtype(np.dtype(dtype), np.complexfloating)
    rdt = np.finfo(np.dtype(dtype)).dtype

    def body():
        r = jax.lax.axis_index("x")
        key = jax.random.fold_in(jax.random.key(seed), r)
        g = jax.random.normal(key, (mloc, n), rdt)
        if cplx:
            g = jax.lax.complex(g, jax.random.normal(jax.random.fold_in(key, 1), (mloc, n), rdt))
        i = r * mloc + jnp.arange(mloc)[:, None]
        eye = (i == jnp.arange(n)[None, :]).astype(rdt) * 2.0
        return (g / math.sqrt(m) + eye).astype(dtype)

    f = jax.shard_map(body, mesh=mesh, in_specs=(), out_specs=ROW, check_vma=False)
    return jax.jit(f, out_shardings=NamedSharding(mesh, ROW))()


def _sq(x, axis=None):
    return jnp.sum(jnp.real(x * jnp.conj(x)), axis=axis)


def _idx(n):
    return np.unique(np.array([0, 1, n // 3, n // 2, (2 * n) // 3, n - 1]))


def _run(mesh, body, in_specs, *args):
    f = jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=P(), check_vma=False)
    return jax.jit(f)(*args)


def check_solve(mesh, A, x, b):
    def body(a, x, b):
        nloc = a.shape[0]
        bl = jax.lax.dynamic_slice_in_dim(b, jax.lax.axis_index("x") * nloc, nloc, 0)
        r = jnp.matmul(a, x, precision=HIGHEST) - bl
        return {"resid": jnp.sqrt(jax.lax.psum(_sq(r), "x") / jax.lax.psum(_sq(a), "x") / _sq(x))}

    return _run(mesh, body, (ROW, REP, REP), A, x, b)


def check_lstsq(mesh, A, x, b):
    """||A^H (A x - b)|| / (||A||_F (||A||_F ||x|| + ||b||)): the residual
    is orthogonal to A's columns."""

    def body(a, x, b):
        mloc = a.shape[0]
        bl = jax.lax.dynamic_slice_in_dim(b, jax.lax.axis_index("x") * mloc, mloc, 0)
        r = jnp.matmul(a, x, precision=HIGHEST) - bl
        g = jax.lax.psum(jnp.matmul(jnp.conj(a).T, r, precision=HIGHEST), "x")
        an = jnp.sqrt(jax.lax.psum(_sq(a), "x"))
        return {"ortho": jnp.sqrt(_sq(g)) / (an * (an * jnp.sqrt(_sq(x)) + jnp.sqrt(_sq(b))))}

    return _run(mesh, body, (ROW, REP, REP), A, x, b)


def check_qr(mesh, A, Q, R):
    """Sampled columns: ||(Q R - A) e_j|| / ||A e_j|| and ||Q^H Q e_j - e_j||."""
    idx = _idx(A.shape[1])

    def body(a, q, r):
        qr_ = jnp.matmul(q, r[:, idx], precision=HIGHEST) - a[:, idx]
        qq = jax.lax.psum(jnp.matmul(jnp.conj(q).T, q[:, idx], precision=HIGHEST), "x")
        eye = (jnp.arange(q.shape[1])[:, None] == jnp.asarray(idx)[None, :]).astype(qq.dtype)
        return {"resid": jnp.sqrt(jax.lax.psum(_sq(qr_), "x") / jax.lax.psum(_sq(a[:, idx]), "x")),
                "ortho": jnp.sqrt(_sq(qq - eye)),
                "lower": jnp.sqrt(_sq(jnp.tril(r, -1)))}

    return _run(mesh, body, (ROW, ROW, REP), A, Q, R)


def check_svd(mesh, A, U, s, Vh):
    """Sampled pairs: ||A v_j - s_j u_j|| / s_0, ||u_j|| - 1, s descending."""
    idx = _idx(s.shape[0])

    def body(a, u, s, vh):
        r = jnp.matmul(a, jnp.conj(vh[idx]).T, precision=HIGHEST) - u[:, idx] * s[idx].astype(a.dtype)
        un = jnp.sqrt(jax.lax.psum(_sq(u[:, idx], 0), "x"))
        return {"resid": jnp.sqrt(jax.lax.psum(_sq(r), "x")) / s[0],
                "norm": jnp.max(jnp.abs(un - 1)),
                "unsorted": jnp.sum(jnp.diff(s) > 0).astype(s.dtype)}

    return _run(mesh, body, (ROW, ROW, P(None), REP), A, U, s, Vh)


def check_polar(mesh, A, Up, H):
    """Sampled columns: ||(Up H - A) e_j|| / ||A e_j||, ||Up^H Up e_j - e_j||, H - H^H."""
    idx = _idx(A.shape[1])

    def body(a, up, h):
        r = jnp.matmul(up, h[:, idx], precision=HIGHEST) - a[:, idx]
        uu = jax.lax.psum(jnp.matmul(jnp.conj(up).T, up[:, idx], precision=HIGHEST), "x")
        eye = (jnp.arange(up.shape[1])[:, None] == jnp.asarray(idx)[None, :]).astype(uu.dtype)
        return {"resid": jnp.sqrt(jax.lax.psum(_sq(r), "x") / jax.lax.psum(_sq(a[:, idx]), "x")),
                "ortho": jnp.sqrt(_sq(uu - eye)),
                "herm": jnp.sqrt(_sq(h - jnp.conj(h).T) / _sq(h))}

    return _run(mesh, body, (ROW, ROW, REP), A, Up, H)


def jaxmg_case(args, op, dtype, n, tile, mesh, how, timed):
    """(median s, min s, metrics, status) of one jaxmg call of op."""
    import jaxmg as g

    m = rows_of(op, n)
    A = jax.block_until_ready(build_general(mesh, m, n, dtype, args.seed))
    rhs = lambda rows: jax.jit(  # noqa: E731
        lambda: jax.random.normal(jax.random.key(args.seed + 1), (rows, args.nrhs), dtype),
        out_shardings=NamedSharding(mesh, REP))()
    if op == "lu_solve":
        b = rhs(n)
        fn = jax.jit(lambda A, b: g.lu_solve(A, b, tile, mesh, (ROW, REP), return_status=True, dispatch=how))
        med, tmin, (x, st) = timed(fn, (A, b), args.reps)
        return med, tmin, check_solve(mesh, A, x, b), st
    if op == "least_squares":
        b = rhs(m)
        fn = jax.jit(lambda A, b: g.least_squares(A, b, tile, mesh, (ROW, REP), return_status=True,
                                                  dispatch=how))
        med, tmin, (x, st) = timed(fn, (A, b), args.reps)
        return med, tmin, check_lstsq(mesh, A, x, b), st
    if op == "qr":
        fn = jax.jit(lambda A: g.qr(A, tile, mesh, (ROW,), return_status=True, dispatch=how))
        med, tmin, (Q, R, st) = timed(fn, (A,), args.reps)
        return med, tmin, check_qr(mesh, A, Q, R), st
    if op == "gesvd":
        fn = jax.jit(lambda A: g.gesvd(A, tile, mesh, (ROW,), return_status=True, dispatch=how))
        med, tmin, (U, s, Vh, st) = timed(fn, (A,), args.reps)
        return med, tmin, check_svd(mesh, A, U, s, Vh), st
    fn = jax.jit(lambda A: g.polar(A, tile, mesh, (ROW,), return_status=True, dispatch=how))
    med, tmin, (Up, H, st) = timed(fn, (A,), args.reps)
    return med, tmin, check_polar(mesh, A, Up, H), st


def single_fn(op, args, dtype, n):
    """The plain JAX call on one device and its arguments' shapes."""
    m = rows_of(op, n)
    fns = {
        "lu_solve": (jnp.linalg.solve, [(n, n), (n, args.nrhs)]),
        "least_squares": (lambda a, b: jnp.linalg.lstsq(a, b)[0], [(m, n), (m, args.nrhs)]),
        "qr": (jnp.linalg.qr, [(n, n)]),
        "gesvd": (lambda a: jnp.linalg.svd(a, full_matrices=False), [(n, n)]),
        "polar": (jax.scipy.linalg.polar, [(n, n)]),
    }
    return fns[op]
