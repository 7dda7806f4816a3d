/* mp_ops.c - the ops of the cuSOLVERMp engine, one function each with the
 * signature of jmg_mp_op_fn, and their table (jmg_mp_ops).
 *
 * Every op runs as one guarded body (mp_comm.h): arguments are checked
 * first, the same way on every rank, so a bad call is refused everywhere
 * before any collective; then the matrix is moved into the block-cyclic
 * layout, solved, and moved back, all under one watchdog arm.
 *
 * What each op reads and writes (A: m x n, sharded; B: m x nrhs replicated):
 *   potrs     M x = B for Hermitian positive definite M    b <- x; out[0] <- log det (jobz)
 *   potri     M^-1 (potrf, then potrs against I)          a <- inverse
 *   syevd     M = Q diag(w) Q^H                            a <- Q (jobz); out[0] <- w (n reals)
 *   lu_solve  A x = B (getrf, getrs)                       b <- x
 *   lstsq     min |A x - B|, m >= n (gels)                 b <- x in its first n rows
 *   qr        A = Q R, m >= n (geqrf, orgqr)               a <- Q (m x n); out[0] <- the n x n
 *             top of the factor, whose upper triangle is R
 *   gesvd     A = U diag(s) V^H, m >= n, thin              a <- U; out[0] <- s; out[1] <- V^H
 *   polar     A = U_p H, m >= n                            a <- U_p; out[0] <- H (n x n)
 * On a non-zero status (a failing minor, no convergence) the outputs are
 * NaN. potri costs ~2.3 n^3 flops against LAPACK's n^3: cuSOLVERMp 0.9.1
 * has no trtri/lauum (docs/multinode.md).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engines/mp/mp_engine.h"

#define LOWER CUBLAS_FILL_MODE_LOWER
#define NPTR 8

typedef struct opctx {
  jmg_mp_set* s;
  const jmg_mp_job* j;
  const jmg_mp_op_row* row;
  int32_t* info;
  cudaDataType t;
  size_t esz;
  jmg_layout2d l;  /* the block layout of M = A^T */
  jmg_plan2d to;   /* into the cyclic layout */
  int64_t cm, cn;  /* the cyclic operand's global shape (A, or M) */
  int64_t lld;     /* its local leading dimension */
  void* cyc;       /* its local part */
  cusolverMpMatrixDescriptor_t desc;
  void* ptrs[NPTR]; /* device buffers of the call */
  int nptr;
} opctx;

static int pr_of(const opctx* c) { return c->s->comm.rank / c->s->q; }
static int pc_of(const opctx* c) { return c->s->comm.rank % c->s->q; }

static int64_t loc_rows(const opctx* c, int64_t m) {
  return jmg_bc_count(m, c->j->tile, pr_of(c), c->s->p);
}
static int64_t loc_cols(const opctx* c, int64_t n) {
  return jmg_bc_count(n, c->j->tile, pc_of(c), c->s->q);
}
static int64_t ld_of(const opctx* c, int64_t m) {
  int64_t r = loc_rows(c, m);
  return r > 0 ? r : 1;
}

/* A device buffer for this call, freed (stream-ordered) at its end. */
static int dalloc(opctx* c, size_t bytes, void** out, char* err) {
  *out = NULL;
  if (c->nptr == NPTR) {
    snprintf(err, JMG_MP_ERRLEN, "internal: too many buffers");
    return JMG_MP_ENOMEM;
  }
  int rc = jmg_mp_cuda_fail(cudaMallocAsync(out, bytes ? bytes : 16, c->j->stream),
                            "cudaMallocAsync", err);
  if (!rc) c->ptrs[c->nptr++] = *out;
  return rc;
}

/* A local cyclic m x n matrix of this call's dtype, and its descriptor. */
static int cyclic_matrix(opctx* c, int64_t m, int64_t n, void** buf,
                         cusolverMpMatrixDescriptor_t* desc, char* err) {
  size_t bytes = (size_t)(ld_of(c, m) * loc_cols(c, n)) * c->esz;
  int rc = dalloc(c, bytes, buf, err);
  return rc ? rc : jmg_mp_set_desc(c->s, c->t, m, n, c->j->tile, desc, err);
}

/* Moves A's shard into the cyclic operand (A itself, or M). */
static int bring_in(opctx* c, char* err) {
  const jmg_mp_job* j = c->j;
  jmg_grid2d g = {c->s->p, c->s->q, JMG_GRID_ROW_MAJOR};
  if (jmg_layout2d_from_jax(j->m, j->n, j->kind, j->mesh_a, j->mesh_b, j->tile, g, &c->l) ||
      jmg_plan2d_build(&c->l, c->row->transpose, 1, &c->to)) {
    snprintf(err, JMG_MP_ERRLEN, "cannot plan the layout move");
    return JMG_MP_ENOMEM;
  }
  jmg_layout2d cl = jmg_plan2d_cyclic_layout(&c->to);
  c->cm = cl.m;
  c->cn = cl.n;
  c->lld = ld_of(c, c->cm);
  int rc = cyclic_matrix(c, c->cm, c->cn, &c->cyc, &c->desc, err);
  if (rc) return rc;
  jmg_mp_mover mv = {c->s, j->stream, j->dtype, j->a, jmg_layout2d_block_rows(&c->l),
                     c->cyc, c->lld};
  return jmg_mp_move(&c->to, &mv, err);
}

/* Moves a cyclic matrix shaped like the operand back into A's shard. */
static int send_back(opctx* c, const void* cyc, char* err) {
  jmg_plan2d back;
  if (jmg_plan2d_build(&c->l, c->row->transpose, 0, &back)) {
    snprintf(err, JMG_MP_ERRLEN, "cannot plan the layout move back");
    return JMG_MP_ENOMEM;
  }
  jmg_mp_mover mv = {c->s, c->j->stream, c->j->dtype, cyc, c->lld, c->j->a,
                     jmg_layout2d_block_rows(&c->l)};
  int rc = jmg_mp_move(&back, &mv, err);
  jmg_plan2d_free(&back);
  return rc;
}

/* info from the device, made equal on every rank (the largest). */
static int take_info(opctx* c, char* err) {
  int v = 0;
  int rc = jmg_mp_cuda_fail(
      cudaMemcpyAsync(&v, c->s->d_info, sizeof v, cudaMemcpyDeviceToHost, c->j->stream),
      "cudaMemcpyAsync(info)", err);
  if (!rc) rc = jmg_mp_set_allmax(c->s, c->j->stream, &v, err);
  if (!rc && v != 0 && *c->info == 0) *c->info = v;
  return rc;
}

static int zero_info(opctx* c, char* err) {
  return jmg_mp_cuda_fail(cudaMemsetAsync(c->s->d_info, 0, sizeof(int), c->j->stream),
                          "cudaMemsetAsync(info)", err);
}

static int nan_fill(opctx* c, void* p, size_t elems, char* err) {
  if (p == NULL || elems == 0) return JMG_MP_OK;
  /* All-ones bytes are a NaN in every float format. */
  return jmg_mp_cuda_fail(cudaMemsetAsync(p, 0xFF, elems * c->esz, c->j->stream),
                          "cudaMemsetAsync(NaN)", err);
}

static size_t shard_elems(const opctx* c) {
  return (size_t)(c->j->m * c->j->n / c->s->comm.nranks);
}

static int workspace(opctx* c, size_t dev, size_t host, char* err) {
  return jmg_mp_set_workspace(c->s, c->j->stream, dev, host, err);
}

#define WS c->s->work, c->s->work_bytes, c->s->hwork, c->s->hwork_bytes, c->s->d_info
#define SOLVER(call, name)                                      \
  do {                                                          \
    int rc_ = jmg_mp_solver_fail((call), name, err);            \
    if (rc_) return rc_;                                        \
  } while (0)
#define TRY(expr)         \
  do {                    \
    int rc_ = (expr);     \
    if (rc_) return rc_;  \
  } while (0)

static size_t maxz(size_t a, size_t b) { return a > b ? a : b; }

/* ------------------------------------------------------------------------ */
/* Cholesky family (on M). */

static int factor(opctx* c, char* err) {
  size_t d = 0, h = 0;
  SOLVER(cusolverMpPotrf_bufferSize(c->s->handle, LOWER, c->cn, c->cyc, 1, 1, c->desc, c->t, &d, &h),
         "cusolverMpPotrf_bufferSize");
  TRY(workspace(c, d, h, err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpPotrf(c->s->handle, LOWER, c->cn, c->cyc, 1, 1, c->desc, c->t, WS),
         "cusolverMpPotrf");
  return take_info(c, err);
}

static int solve_chol(opctx* c, void* b, cusolverMpMatrixDescriptor_t db, int64_t nrhs,
                      char* err) {
  size_t d = 0, h = 0;
  SOLVER(cusolverMpPotrs_bufferSize(c->s->handle, LOWER, c->cn, nrhs, c->cyc, 1, 1, c->desc, b,
                                    1, 1, db, c->t, &d, &h),
         "cusolverMpPotrs_bufferSize");
  TRY(workspace(c, d, h, err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpPotrs(c->s->handle, LOWER, c->cn, nrhs, c->cyc, 1, 1, c->desc, b, 1, 1, db,
                         c->t, WS),
         "cusolverMpPotrs");
  return take_info(c, err);
}

/* The diagonal of diagonal tile k of the cyclic operand into host (*len
 * entries), when this rank owns that tile (else *len = 0). */
static int diag_tile(opctx* c, int64_t k, unsigned char* host, int64_t* len, char* err) {
  int64_t n = c->cn, T = c->j->tile;
  size_t esz = c->esz;
  *len = 0;
  if (k % c->s->p != pr_of(c) || k % c->s->q != pc_of(c)) return JMG_MP_OK;
  int64_t l = n - k * T < T ? n - k * T : T;
  const char* d0 = (const char*)c->cyc +
                   ((size_t)((k / c->s->p) * T) + (size_t)((k / c->s->q) * T) * c->lld) * esz;
  int rc = jmg_mp_cuda_fail(cudaMemcpy2DAsync(host, esz, d0, (c->lld + 1) * esz, esz, l,
                                              cudaMemcpyDeviceToHost, c->j->stream),
                            "cudaMemcpy2DAsync(diagonal)", err);
  if (!rc) rc = jmg_mp_cuda_fail(cudaStreamSynchronize(c->j->stream), "sync", err);
  if (!rc) *len = l;
  return rc;
}

/* Entry i of a host diagonal: its real part (first in a complex element)
 * and, for complex, its imaginary part. */
static double diag_re(const opctx* c, const unsigned char* host, int64_t i) {
  int dbl = c->t == CUDA_R_64F || c->t == CUDA_C_64F;
  const unsigned char* e = host + (size_t)i * c->esz;
  return dbl ? *(const double*)(const void*)e : (double)*(const float*)(const void*)e;
}

static double diag_im(const opctx* c, const unsigned char* host, int64_t i) {
  if (!jmg_dtype_is_complex(c->j->dtype)) return 0;
  size_t half = c->esz / 2;
  const unsigned char* e = host + (size_t)i * c->esz + half;
  return half == 8 ? *(const double*)(const void*)e : (double)*(const float*)(const void*)e;
}

/* log det M = 2 sum log re(L_kk): each rank reads the diagonals of the
 * diagonal tiles it owns, the sum is all-reduced. */
static int logdet(opctx* c, double* out, char* err) {
  int64_t n = c->cn, T = c->j->tile;
  unsigned char* host = malloc((size_t)T * c->esz);
  if (host == NULL) return JMG_MP_ENOMEM;
  double sum = 0;
  int rc = JMG_MP_OK;
  for (int64_t k = 0; k * T < n && !rc; k++) {
    int64_t len = 0;
    rc = diag_tile(c, k, host, &len, err);
    for (int64_t i = 0; i < len && !rc; i++) sum += 2 * log(diag_re(c, host, i));
  }
  free(host);
  if (!rc) rc = jmg_mp_set_allsum(c->s, c->j->stream, &sum, err);
  *out = sum;
  return rc;
}

/* The status of a rank-deficient least-squares A (docs/status.md): the
 * first exactly zero R(k, k), 1-based, of the QR factor gels leaves in the
 * cyclic operand, made equal on every rank (the smallest k, carried as
 * n + 1 - k through the max all-reduce; n < 2^31 as no m x n matrix with
 * more columns fits in memory). Read from R itself: LAPACK's gels reports
 * it in info, and cusolverMpGels's documentation does not promise that. */
static int zero_diagonal(opctx* c, char* err) {
  int64_t n = c->cn, T = c->j->tile, first = 0;
  unsigned char* host = malloc((size_t)T * c->esz);
  if (host == NULL) return JMG_MP_ENOMEM;
  int rc = JMG_MP_OK;
  for (int64_t k = 0; k * T < n && !rc && !first; k++) {
    int64_t len = 0;
    rc = diag_tile(c, k, host, &len, err);
    for (int64_t i = 0; i < len && !rc && !first; i++)
      if (diag_re(c, host, i) == 0 && diag_im(c, host, i) == 0) first = k * T + i + 1;
  }
  free(host);
  int v = first ? (int)(n + 1 - first) : 0;
  if (!rc) rc = jmg_mp_set_allmax(c->s, c->j->stream, &v, err);
  if (!rc && v != 0) *c->info = (int32_t)(n + 1 - v);
  return rc;
}

static int write_real(opctx* c, void* dst, double v, char* err) {
  float f = (float)v;
  int dbl = jmg_mp_real_type(c->j->dtype) == CUDA_R_64F;
  return jmg_mp_cuda_fail(cudaMemcpyAsync(dst, dbl ? (void*)&v : (void*)&f, dbl ? 8 : 4,
                                          cudaMemcpyHostToDevice, c->j->stream),
                          "cudaMemcpyAsync(scalar)", err);
}

static int rhs_in(opctx* c, void** b, cusolverMpMatrixDescriptor_t* db, char* err) {
  TRY(cyclic_matrix(c, c->j->m, c->j->nrhs, b, db, err));
  return jmg_mp_scatter(c->s, c->j->stream, c->j->dtype, c->j->b, c->j->m, c->j->nrhs,
                        c->j->tile, *b, ld_of(c, c->j->m), err);
}

static int rhs_out(opctx* c, const void* b, char* err) {
  if (*c->info != 0) return nan_fill(c, c->j->b, (size_t)(c->j->m * c->j->nrhs), err);
  return jmg_mp_gather(c->s, c->j->stream, c->j->dtype, b, ld_of(c, c->j->m), c->j->m,
                       c->j->nrhs, c->j->tile, c->j->b, err);
}

static int body_potrs(opctx* c, char* err) {
  void* b;
  cusolverMpMatrixDescriptor_t db;
  TRY(bring_in(c, err));
  TRY(rhs_in(c, &b, &db, err));
  TRY(factor(c, err));
  double ld = NAN;
  if (*c->info == 0 && c->j->jobz) TRY(logdet(c, &ld, err));
  if (*c->info == 0) TRY(solve_chol(c, b, db, c->j->nrhs, err));
  if (c->j->jobz && c->j->out[0]) TRY(write_real(c, c->j->out[0], *c->info ? NAN : ld, err));
  return rhs_out(c, b, err);
}

static int body_potri(opctx* c, char* err) {
  TRY(bring_in(c, err));
  TRY(factor(c, err));
  if (*c->info != 0) return nan_fill(c, c->j->a, shard_elems(c), err);
  void* inv;
  cusolverMpMatrixDescriptor_t di;
  TRY(cyclic_matrix(c, c->cn, c->cn, &inv, &di, err));
  /* laset: alpha off the diagonal, beta on it (LAPACK's convention). */
  double z[2] = {0, 0}, o[2] = {1, 0};
  float zf[2] = {0, 0}, of[2] = {1, 0};
  int dbl = jmg_mp_real_type(c->j->dtype) == CUDA_R_64F;
  SOLVER(cusolverMpLaset(c->s->handle, CUBLAS_FILL_MODE_FULL, c->cn, c->cn, dbl ? (void*)z : (void*)zf,
                         dbl ? (void*)o : (void*)of, inv, 1, 1, di, c->s->d_info),
         "cusolverMpLaset");
  TRY(solve_chol(c, inv, di, c->cn, err));
  if (*c->info != 0) return nan_fill(c, c->j->a, shard_elems(c), err);
  return send_back(c, inv, err);
}

/* ------------------------------------------------------------------------ */
/* Eigen- and singular values. */

static int body_syevd(opctx* c, char* err) {
  TRY(bring_in(c, err));
  void* q = NULL;
  cusolverMpMatrixDescriptor_t dq = c->desc;
  if (c->j->jobz) TRY(cyclic_matrix(c, c->cn, c->cn, &q, &dq, err));
  char jobz[2] = {c->j->jobz ? 'V' : 'N', 0};
  size_t d = 0, h = 0;
  SOLVER(cusolverMpSyevd_bufferSize(c->s->handle, jobz, LOWER, c->cn, c->cyc, 1, 1, c->desc,
                                    c->j->out[0], q, 1, 1, dq, c->t, &d, &h),
         "cusolverMpSyevd_bufferSize");
  TRY(workspace(c, d, h, err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpSyevd(c->s->handle, jobz, LOWER, c->cn, c->cyc, 1, 1, c->desc, c->j->out[0],
                         q, 1, 1, dq, c->t, WS),
         "cusolverMpSyevd");
  TRY(take_info(c, err));
  if (*c->info != 0) {
    size_t rz = jmg_dtype_size(c->j->dtype == JMG_C64 ? JMG_F32 : c->j->dtype == JMG_C128 ? JMG_F64 : c->j->dtype);
    TRY(jmg_mp_cuda_fail(cudaMemsetAsync(c->j->out[0], 0xFF, (size_t)c->cn * rz, c->j->stream), "NaN", err));
    return c->j->jobz ? nan_fill(c, c->j->a, shard_elems(c), err) : JMG_MP_OK;
  }
  return c->j->jobz ? send_back(c, q, err) : JMG_MP_OK;
}

static int set_attr(cusolverStatus_t s, char* err) {
  return jmg_mp_solver_fail(s, "descriptor attribute", err);
}

static int body_gesvd(opctx* c, char* err) {
  TRY(bring_in(c, err));
  int64_t m = c->cm, n = c->cn;
  void *u, *vt;
  cusolverMpMatrixDescriptor_t du, dvt;
  TRY(cyclic_matrix(c, m, n, &u, &du, err));
  TRY(cyclic_matrix(c, n, n, &vt, &dvt, err));
  cusolverMpGesvdDescriptor_t gd;
  SOLVER(cusolverMpGesvdDescriptorCreate(&gd), "cusolverMpGesvdDescriptorCreate");
  cusolverMpGesvdOutputShape_t shape = CUSOLVERMP_GESVD_OUTPUT_SHAPE_THIN;
  int rc = set_attr(cusolverMpGesvdDescriptorSetAttribute(
                        gd, CUSOLVERMP_GESVD_DESCRIPTOR_ATTRIBUTE_SHAPE, &shape, sizeof shape),
                    err);
  size_t d = 0, h = 0;
  const cusolverEigMode_t V = CUSOLVER_EIG_MODE_VECTOR;
  if (!rc)
    rc = jmg_mp_solver_fail(
        cusolverMpGesvd_bufferSize(c->s->handle, gd, V, V, m, n, c->cyc, 1, 1, c->desc,
                                   c->j->out[0], u, 1, 1, du, vt, 1, 1, dvt, c->t, &d, &h),
        "cusolverMpGesvd_bufferSize", err);
  if (!rc) rc = workspace(c, d, h, err);
  if (!rc) rc = zero_info(c, err);
  if (!rc)
    rc = jmg_mp_solver_fail(cusolverMpGesvd(c->s->handle, gd, V, V, m, n, c->cyc, 1, 1, c->desc,
                                            c->j->out[0], u, 1, 1, du, vt, 1, 1, dvt, c->t, WS),
                            "cusolverMpGesvd", err);
  cusolverMpGesvdDescriptorDestroy(gd);
  TRY(rc);
  TRY(take_info(c, err));
  if (*c->info != 0) {
    TRY(nan_fill(c, c->j->out[1], (size_t)(n * n), err));
    return nan_fill(c, c->j->a, shard_elems(c), err);
  }
  TRY(jmg_mp_gather(c->s, c->j->stream, c->j->dtype, vt, ld_of(c, n), n, n, c->j->tile,
                    c->j->out[1], err));
  return send_back(c, u, err);
}

static int body_polar(opctx* c, char* err) {
  TRY(bring_in(c, err));
  int64_t m = c->cm, n = c->cn;
  void* hm;
  cusolverMpMatrixDescriptor_t dh;
  TRY(cyclic_matrix(c, n, n, &hm, &dh, err));
  cusolverMpPolarDescriptor_t pd;
  SOLVER(cusolverMpPolarDescriptorCreate(&pd), "cusolverMpPolarDescriptorCreate");
  size_t d = 0, h = 0;
  int rc = jmg_mp_solver_fail(cusolverMpPolar_bufferSize(c->s->handle, pd, LOWER, m, n, c->cyc,
                                                         1, 1, c->desc, hm, 1, 1, dh, c->t, &d,
                                                         &h),
                              "cusolverMpPolar_bufferSize", err);
  if (!rc) rc = workspace(c, d, h, err);
  if (!rc) rc = zero_info(c, err);
  if (!rc)
    rc = jmg_mp_solver_fail(cusolverMpPolar(c->s->handle, pd, LOWER, m, n, c->cyc, 1, 1, c->desc,
                                            hm, 1, 1, dh, c->t, WS),
                            "cusolverMpPolar", err);
  cusolverMpPolarDescriptorDestroy(pd);
  TRY(rc);
  TRY(take_info(c, err));
  if (*c->info != 0) {
    TRY(nan_fill(c, c->j->out[0], (size_t)(n * n), err));
    return nan_fill(c, c->j->a, shard_elems(c), err);
  }
  TRY(jmg_mp_gather(c->s, c->j->stream, c->j->dtype, hm, ld_of(c, n), n, n, c->j->tile,
                    c->j->out[0], err));
  return send_back(c, c->cyc, err);
}

/* ------------------------------------------------------------------------ */
/* LU, least squares and QR (on A). */

static int body_lu_solve(opctx* c, char* err) {
  TRY(bring_in(c, err));
  void *b, *ipiv;
  cusolverMpMatrixDescriptor_t db;
  TRY(rhs_in(c, &b, &db, err));
  int64_t n = c->cn, piv = loc_rows(c, n) + c->j->tile;
  TRY(dalloc(c, (size_t)piv * sizeof(int64_t), &ipiv, err));
  size_t d = 0, h = 0, d2 = 0, h2 = 0;
  SOLVER(cusolverMpGetrf_bufferSize(c->s->handle, n, n, c->cyc, 1, 1, c->desc, ipiv, c->t, &d, &h),
         "cusolverMpGetrf_bufferSize");
  SOLVER(cusolverMpGetrs_bufferSize(c->s->handle, CUBLAS_OP_N, n, c->j->nrhs, c->cyc, 1, 1,
                                    c->desc, ipiv, b, 1, 1, db, c->t, &d2, &h2),
         "cusolverMpGetrs_bufferSize");
  TRY(workspace(c, maxz(d, d2), maxz(h, h2), err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpGetrf(c->s->handle, n, n, c->cyc, 1, 1, c->desc, ipiv, c->t, WS),
         "cusolverMpGetrf");
  TRY(take_info(c, err));
  if (*c->info == 0) {
    TRY(zero_info(c, err));
    SOLVER(cusolverMpGetrs(c->s->handle, CUBLAS_OP_N, n, c->j->nrhs, c->cyc, 1, 1, c->desc, ipiv,
                           b, 1, 1, db, c->t, WS),
           "cusolverMpGetrs");
    TRY(take_info(c, err));
  }
  return rhs_out(c, b, err);
}

static int body_lstsq(opctx* c, char* err) {
  TRY(bring_in(c, err));
  void* b;
  cusolverMpMatrixDescriptor_t db;
  TRY(rhs_in(c, &b, &db, err));
  size_t d = 0, h = 0;
  SOLVER(cusolverMpGels_bufferSize(c->s->handle, CUBLAS_OP_N, c->cm, c->cn, c->j->nrhs, c->cyc, 1,
                                   1, c->desc, b, 1, 1, db, c->t, &d, &h),
         "cusolverMpGels_bufferSize");
  TRY(workspace(c, d, h, err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpGels(c->s->handle, CUBLAS_OP_N, c->cm, c->cn, c->j->nrhs, c->cyc, 1, 1, c->desc,
                        b, 1, 1, db, c->t, WS),
         "cusolverMpGels");
  TRY(take_info(c, err));
  if (*c->info == 0) TRY(zero_diagonal(c, err));
  return rhs_out(c, b, err);
}

static int body_qr(opctx* c, char* err) {
  TRY(bring_in(c, err));
  int64_t m = c->cm, n = c->cn;
  void* tau;
  TRY(dalloc(c, (size_t)(loc_cols(c, n) + c->j->tile) * c->esz, &tau, err));
  size_t d = 0, h = 0, d2 = 0, h2 = 0;
  SOLVER(cusolverMpGeqrf_bufferSize(c->s->handle, m, n, c->cyc, 1, 1, c->desc, c->t, &d, &h),
         "cusolverMpGeqrf_bufferSize");
  SOLVER(cusolverMpOrgqr_bufferSize(c->s->handle, m, n, n, c->cyc, 1, 1, c->desc, tau, c->t, &d2,
                                    &h2),
         "cusolverMpOrgqr_bufferSize");
  TRY(workspace(c, maxz(d, d2), maxz(h, h2), err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpGeqrf(c->s->handle, m, n, c->cyc, 1, 1, c->desc, tau, c->t, WS),
         "cusolverMpGeqrf");
  TRY(take_info(c, err));
  /* The top n x n of the factor holds R: global rows < n are the first
   * local rows of each rank, so it is gathered from the same local array. */
  TRY(jmg_mp_gather(c->s, c->j->stream, c->j->dtype, c->cyc, c->lld, n, n, c->j->tile,
                    c->j->out[0], err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpOrgqr(c->s->handle, m, n, n, c->cyc, 1, 1, c->desc, tau, c->t, WS),
         "cusolverMpOrgqr");
  TRY(take_info(c, err));
  if (*c->info != 0) {
    TRY(nan_fill(c, c->j->out[0], (size_t)(n * n), err));
    return nan_fill(c, c->j->a, shard_elems(c), err);
  }
  return send_back(c, c->cyc, err);
}

/* ------------------------------------------------------------------------ */
/* Checks (the same verdict on every rank) and the guarded run. */

static int check_job(const jmg_mp_set* s, const jmg_mp_op_row* row, const jmg_mp_job* j,
                     char* err) {
  int R = s->comm.nranks;
  const char* bad = NULL;
  if (j->dtype < JMG_F32 || j->dtype > JMG_C128) bad = "unknown dtype";
  else if (j->m < 1 || j->n < 1 || j->tile < 1) bad = "sizes and the tile must be positive";
  else if (row->square && j->m != j->n) bad = "the matrix must be square";
  else if (row->tall && j->m < j->n) bad = "the matrix must have m >= n rows";
  else if ((row->op == JMG_MP_POTRS || row->op == JMG_MP_LU_SOLVE || row->op == JMG_MP_LSTSQ) &&
           (j->nrhs < 1 || j->b == NULL))
    bad = "right-hand sides are missing";
  else if (j->a == NULL || j->status == NULL) bad = "a buffer is missing";
  else if ((int64_t)j->mesh_a * j->mesh_b != R &&
           !(j->kind == JMG_SHARD_ROWS && j->mesh_a == R) &&
           !(j->kind == JMG_SHARD_COLS && j->mesh_b == R))
    bad = "the sharding's mesh does not match the device set";
  if (bad == NULL) {
    jmg_layout2d l;
    jmg_grid2d g = {s->p, s->q, JMG_GRID_ROW_MAJOR};
    if (jmg_layout2d_from_jax(j->m, j->n, j->kind, j->mesh_a, j->mesh_b, j->tile, g, &l))
      bad = "the shards do not split the matrix evenly";
  }
  if (bad == NULL) return JMG_MP_OK;
  snprintf(err, JMG_MP_ERRLEN, "%s (m=%lld n=%lld nrhs=%lld tile=%lld)", bad, (long long)j->m,
           (long long)j->n, (long long)j->nrhs, (long long)j->tile);
  return JMG_MP_EINVAL;
}

typedef int (*body_fn)(opctx* c, char* err);

typedef struct guarded {
  opctx* c;
  body_fn fn;
} guarded;

static int run_body(void* vg, char* err) {
  guarded* g = vg;
  opctx* c = g->c;
  int rc = check_job(c->s, c->row, c->j, err);
  if (rc) return rc;
  rc = jmg_mp_set_ready(c->s, c->j->stream, err);
  if (!rc) rc = g->fn(c, err);
  for (int k = 0; k < c->nptr; k++) cudaFreeAsync(c->ptrs[k], c->j->stream);
  jmg_plan2d_free(&c->to);
  if (!rc) {
    int32_t v = *c->info;
    rc = jmg_mp_cuda_fail(
        cudaMemcpyAsync(c->j->status, &v, sizeof v, cudaMemcpyHostToDevice, c->j->stream),
        "cudaMemcpyAsync(status)", err);
    /* The host value above must outlive the copy. */
    if (!rc) rc = jmg_mp_cuda_fail(cudaStreamSynchronize(c->j->stream), "sync", err);
  }
  return rc;
}

static int run_op(jmg_mp_set* s, const jmg_mp_job* j, int32_t* info, char* err, body_fn fn) {
  opctx c;
  memset(&c, 0, sizeof c);
  c.s = s;
  c.j = j;
  c.row = &jmg_mp_ops[j->op];
  c.info = info;
  *info = 0;
  if (j->dtype >= JMG_F32 && j->dtype <= JMG_C128) {
    c.t = jmg_mp_cuda_type(j->dtype);
    c.esz = jmg_dtype_size(j->dtype);
  }
  guarded g = {&c, fn};
  return jmg_mp_comm_guard(&s->comm, c.row->name, run_body, &g, err);
}

#define OP_FN(name)                                                                   \
  static int jmg_mp_##name(jmg_mp_set* s, const jmg_mp_job* j, int32_t* info, char* err) { \
    return run_op(s, j, info, err, body_##name);                                      \
  }
OP_FN(potrs)
OP_FN(potri)
OP_FN(syevd)
OP_FN(lu_solve)
OP_FN(lstsq)
OP_FN(qr)
OP_FN(gesvd)
OP_FN(polar)

/*                      name            op               sq tr tall fn */
const jmg_mp_op_row jmg_mp_ops[JMG_MP_NOPS] = {
    {"potrs", JMG_MP_POTRS, 1, 0, 0, jmg_mp_potrs},
    {"potri", JMG_MP_POTRI, 1, 0, 0, jmg_mp_potri},
    {"syevd", JMG_MP_SYEVD, 1, 0, 0, jmg_mp_syevd},
    {"lu_solve", JMG_MP_LU_SOLVE, 1, 1, 0, jmg_mp_lu_solve},
    {"least_squares", JMG_MP_LSTSQ, 0, 1, 1, jmg_mp_lstsq},
    {"qr", JMG_MP_QR, 0, 1, 1, jmg_mp_qr},
    {"gesvd", JMG_MP_GESVD, 0, 1, 1, jmg_mp_gesvd},
    {"polar", JMG_MP_POLAR, 0, 1, 1, jmg_mp_polar},
};
