/* mp_ops.c - the ops of the cuSOLVERMp engine, one function each in the
 * engine's table (mp_exports.c), run by every rank on its own party.
 *
 * Every op runs as one guarded body (mp_comm.h): arguments are checked
 * first, the same way on every rank, so a bad call is refused everywhere
 * before any collective; then the matrix is moved into the block-cyclic
 * layout, solved, and moved back, all under one watchdog arm.
 *
 * The matrix: the Hermitian ops (potrs, potri, syevd, sygvd) factor M = A^T =
 * conj(A), the shards read column-major, as their rows say (sees_at); the
 * general ops move A itself (a transposing plan). What each writes, by its
 * row's buffers (A: m x n with m the shards' rows: zero rows the Python
 * layer padded change no result but add zero rows to Q, U and U_p):
 *   potrs     M x = b (potrf, potrs)       x in b; logdet M
 *   potri     M^-1 (potrf, potrs against I)    in a
 *   syevd     M = Q diag(w) Q^H            Q in a (jobz), read row-major its rows; w
 *   lu_solve  A x = b (getrf, getrs)       x in b
 *   lstsq     min |A x - b|, m >= n (gels) x: b's first n rows
 *   qr        A = Q R, m >= n (geqrf, orgqr)    Q in a; R row-major, zeros below
 *   gesvd     A = U diag(s) V^H, m >= n, thin   U in u (ucols n, or none); s;
 *                                          Vh row-major (vrows n, or none)
 *   polar     A = U_p H, m >= n            U_p in a; H row-major (hrows n, or none)
 *   sygvd     M z = lambda M_B z, M_B = B^T = conj(B) (B's shard: slot 3,
 *             laid out as A's): the whole pencil (nvalid = n: check_job);
 *             Z in a (jobz), read row-major its rows; w; status LAPACK
 *             sygvd's info
 * On a non-zero status (a failing minor, no convergence) the outputs are
 * NaN. potri costs ~2.3 n^3 flops against LAPACK's n^3: cuSOLVERMp 0.9.1
 * has no trtri/lauum (docs/multinode.md).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engines/mp/mp_engine.h"
#include "ops/op_table.h"

#define LOWER CUBLAS_FILL_MODE_LOWER
#define GENERAL CUBLAS_FILL_MODE_FULL
#define NPTR 8

typedef struct opctx {
  jmg_mp_set* s;
  const jmg_mp_job* j;
  int transpose;   /* the op moves A itself (its row: this kind sees A, not A^T) */
  jmg_result* res;
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
  if (jmg_layout2d_from_jax(j->m, j->n, JMG_SHARD_2D, j->mesh_a, j->mesh_b, j->tile, g, &c->l) ||
      jmg_plan2d_build(&c->l, c->transpose, 1, &c->to)) {
    snprintf(err, JMG_MP_ERRLEN, "cannot plan the layout move");
    return JMG_MP_ENOMEM;
  }
  jmg_layout2d cl = jmg_plan2d_cyclic_layout(&c->to);
  c->cm = cl.m;
  c->cn = cl.n;
  c->lld = ld_of(c, c->cm);
  int rc = cyclic_matrix(c, c->cm, c->cn, &c->cyc, &c->desc, err);
  if (rc) return rc;
  jmg_mp_mover mv = {c->s, j->stream, j->dtype, j->p->a, jmg_layout2d_block_rows(&c->l),
                     c->cyc, c->lld};
  return jmg_mp_move(&c->to, &mv, err);
}

/* Moves a cyclic matrix shaped like the operand back into a shard of A's
 * layout (dst: A's own, or a result sharded like it). */
static int send_back(opctx* c, const void* cyc, void* dst, char* err) {
  jmg_plan2d back;
  if (jmg_plan2d_build(&c->l, c->transpose, 0, &back)) {
    snprintf(err, JMG_MP_ERRLEN, "cannot plan the layout move back");
    return JMG_MP_ENOMEM;
  }
  jmg_mp_mover mv = {c->s, c->j->stream, c->j->dtype, cyc, c->lld, dst,
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

/* NaN in `count` reals (eigen- or singular values). */
static int nan_reals(opctx* c, void* p, int64_t count, char* err) {
  return jmg_mp_cuda_fail(cudaMemsetAsync(p, 0xFF, (size_t)count * jmg_dtype_real_size(c->j->dtype),
                                          c->j->stream),
                          "cudaMemsetAsync(NaN)", err);
}

/* NaN in this rank's shard of A's layout (A's own buffer, or u). */
static int nan_shard(opctx* c, void* p, char* err) { return nan_fill(c, p, shard_elems(c), err); }

/* NaN in a replicated n x n result where the row has one. */
static int nan_square(opctx* c, void* p, char* err) {
  return nan_fill(c, p, (size_t)(c->j->n * c->j->n), err);
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

/* Replicated right-hand sides (m x nrhs, column-major) into the cyclic
 * layout, and the solution back: all of b, or its first n rows into x. */
static int rhs_in(opctx* c, const void* full, void** b, cusolverMpMatrixDescriptor_t* db,
                  char* err) {
  TRY(cyclic_matrix(c, c->j->m, c->j->nrhs, b, db, err));
  return jmg_mp_scatter(c->s, c->j->stream, c->j->dtype, full, c->j->m, c->j->nrhs, c->j->tile,
                        *b, ld_of(c, c->j->m), err);
}

static int rhs_out(opctx* c, const void* b, int64_t rows, void* x, char* err) {
  if (*c->info != 0) return nan_fill(c, x, (size_t)(rows * c->j->nrhs), err);
  /* Global rows < n are the first local rows of each rank: the top rows
   * gather from the same local array (ld of all m rows). */
  return jmg_mp_gather(c->s, c->j->stream, c->j->dtype, b, ld_of(c, c->j->m), rows, c->j->nrhs,
                       c->j->tile, x, err);
}

/* A replicated n x n result, written row-major as the rows want it. */
static int square_out(opctx* c, const void* cyc, int64_t lld, int upper, void* out, char* err) {
  int64_t n = c->j->n;
  return jmg_mp_gather_rows(c->s, c->j->stream, c->j->dtype, cyc, lld, n, n, c->j->tile, upper,
                            out, err);
}

/* A cyclic n x n matrix set to diag * I (laset, no workspace). */
static int set_square(opctx* c, void* m, cusolverMpMatrixDescriptor_t d, int diag, char* err) {
  /* laset: alpha off the diagonal, beta on it (LAPACK's convention). */
  double z[2] = {0, 0}, o[2] = {diag, 0};
  float zf[2] = {0, 0}, of[2] = {(float)diag, 0};
  int dbl = jmg_mp_real_type(c->j->dtype) == CUDA_R_64F;
  SOLVER(cusolverMpLaset(c->s->handle, GENERAL, c->cn, c->cn, dbl ? (void*)z : (void*)zf,
                         dbl ? (void*)o : (void*)of, m, 1, 1, d, c->s->d_info),
         "cusolverMpLaset");
  return JMG_MP_OK;
}

static int body_potrs(opctx* c, char* err) {
  void* b;
  cusolverMpMatrixDescriptor_t db;
  void* bx = c->j->p->b; /* x aliases b */
  TRY(bring_in(c, err));
  TRY(rhs_in(c, bx, &b, &db, err));
  TRY(factor(c, err));
  double ld = NAN;
  if (*c->info == 0) TRY(logdet(c, &ld, err));
  if (*c->info == 0) TRY(solve_chol(c, b, db, c->j->nrhs, err));
  c->res->scalar[0] = *c->info ? NAN : ld;
  return rhs_out(c, b, c->j->m, bx, err);
}

static int body_potri(opctx* c, char* err) {
  TRY(bring_in(c, err));
  TRY(factor(c, err));
  if (*c->info != 0) return nan_shard(c, c->j->p->a, err);
  void* inv;
  cusolverMpMatrixDescriptor_t di;
  TRY(cyclic_matrix(c, c->cn, c->cn, &inv, &di, err));
  TRY(set_square(c, inv, di, 1, err));
  TRY(solve_chol(c, inv, di, c->cn, err));
  if (*c->info != 0) return nan_shard(c, c->j->p->a, err);
  return send_back(c, inv, c->j->p->a, err);
}

/* ------------------------------------------------------------------------ */
/* Eigen- and singular values. */

static int body_syevd(opctx* c, char* err) {
  const jmg_party* p = c->j->p;
  int jobz = p->attr[0] != 0;
  TRY(bring_in(c, err));
  void* q = NULL;
  cusolverMpMatrixDescriptor_t dq = c->desc;
  if (jobz) TRY(cyclic_matrix(c, c->cn, c->cn, &q, &dq, err));
  char mode[2] = {jobz ? 'V' : 'N', 0};
  size_t d = 0, h = 0;
  SOLVER(cusolverMpSyevd_bufferSize(c->s->handle, mode, LOWER, c->cn, c->cyc, 1, 1, c->desc,
                                    p->w, q, 1, 1, dq, c->t, &d, &h),
         "cusolverMpSyevd_bufferSize");
  TRY(workspace(c, d, h, err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpSyevd(c->s->handle, mode, LOWER, c->cn, c->cyc, 1, 1, c->desc, p->w, q, 1, 1,
                         dq, c->t, WS),
         "cusolverMpSyevd");
  TRY(take_info(c, err));
  if (*c->info != 0) {
    TRY(nan_reals(c, p->w, c->cn, err));
    return jobz ? nan_shard(c, p->a, err) : JMG_MP_OK;
  }
  return jobz ? send_back(c, q, p->a, err) : JMG_MP_OK;
}

/* B's shard (slot 3, laid out as A's) into a cyclic copy by A's plan: it
 * becomes M_B = conj(B), as A becomes M. */
static int bring_in_b(opctx* c, void** b, cusolverMpMatrixDescriptor_t* db, char* err) {
  TRY(cyclic_matrix(c, c->cm, c->cn, b, db, err));
  jmg_mp_mover mv = {c->s, c->j->stream, c->j->dtype, c->j->p->buf[3],
                     jmg_layout2d_block_rows(&c->l), *b, c->lld};
  return jmg_mp_move(&c->to, &mv, err);
}

/* The pencil (M, M_B), whole (nvalid = n: check_job). Z is made even
 * without vectors: the library's descriptor checks take one. */
static int body_sygvd(opctx* c, char* err) {
  const jmg_party* p = c->j->p;
  int jobz = p->attr[0] != 0;
  int64_t nv = p->attr[1];
  TRY(bring_in(c, err));
  void *b, *z;
  cusolverMpMatrixDescriptor_t db, dz;
  TRY(bring_in_b(c, &b, &db, err));
  TRY(cyclic_matrix(c, c->cn, c->cn, &z, &dz, err));
  TRY(set_square(c, z, dz, 0, err));
  TRY(jmg_mp_cuda_fail(cudaMemsetAsync(p->w, 0, (size_t)c->cn * jmg_dtype_real_size(c->j->dtype),
                                       c->j->stream),
                       "cudaMemsetAsync(w)", err));
  cusolverEigMode_t mode = jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
  size_t d = 0, h = 0;
  SOLVER(cusolverMpSygvd_bufferSize(c->s->handle, CUSOLVER_EIG_TYPE_1, mode, LOWER, nv, 1, 1,
                                    c->desc, 1, 1, db, 1, 1, dz, c->t, &d, &h),
         "cusolverMpSygvd_bufferSize");
  TRY(workspace(c, d, h, err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpSygvd(c->s->handle, CUSOLVER_EIG_TYPE_1, mode, LOWER, nv, c->cyc, 1, 1,
                         c->desc, b, 1, 1, db, p->w, z, 1, 1, dz, c->t, WS),
         "cusolverMpSygvd");
  TRY(take_info(c, err));
  if (*c->info != 0) {
    TRY(nan_reals(c, p->w, c->cn, err));
    return jobz ? nan_shard(c, p->a, err) : JMG_MP_OK;
  }
  return jobz ? send_back(c, z, p->a, err) : JMG_MP_OK;
}

static int set_attr(cusolverStatus_t s, char* err) {
  return jmg_mp_solver_fail(s, "descriptor attribute", err);
}

/* gesvd's buffers: u (slot 3) where ucols > 0, s, vh (slot 1) where vrows > 0. */
static int body_gesvd(opctx* c, char* err) {
  const jmg_party* p = c->j->p;
  void *uo = p->attr[0] ? p->buf[3] : NULL, *vho = p->attr[1] ? p->buf[1] : NULL;
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
                                   p->w, u, 1, 1, du, vt, 1, 1, dvt, c->t, &d, &h),
        "cusolverMpGesvd_bufferSize", err);
  if (!rc) rc = workspace(c, d, h, err);
  if (!rc) rc = zero_info(c, err);
  if (!rc)
    rc = jmg_mp_solver_fail(cusolverMpGesvd(c->s->handle, gd, V, V, m, n, c->cyc, 1, 1, c->desc,
                                            p->w, u, 1, 1, du, vt, 1, 1, dvt, c->t, WS),
                            "cusolverMpGesvd", err);
  cusolverMpGesvdDescriptorDestroy(gd);
  TRY(rc);
  TRY(take_info(c, err));
  if (*c->info != 0) {
    TRY(nan_reals(c, p->w, n, err));
    if (vho) TRY(nan_square(c, vho, err));
    return uo ? nan_shard(c, uo, err) : JMG_MP_OK;
  }
  if (vho) TRY(square_out(c, vt, ld_of(c, n), 0, vho, err));
  return uo ? send_back(c, u, uo, err) : JMG_MP_OK;
}

/* polar's buffers: U_p in a; H (slot 1) where hrows > 0. */
static int body_polar(opctx* c, char* err) {
  const jmg_party* p = c->j->p;
  void* ho = p->attr[0] ? p->buf[1] : NULL;
  TRY(bring_in(c, err));
  int64_t m = c->cm, n = c->cn;
  void* hm;
  cusolverMpMatrixDescriptor_t dh;
  TRY(cyclic_matrix(c, n, n, &hm, &dh, err));
  cusolverMpPolarDescriptor_t pd;
  SOLVER(cusolverMpPolarDescriptorCreate(&pd), "cusolverMpPolarDescriptorCreate");
  size_t d = 0, h = 0;
  /* uplo says what A is, not which triangle to read: FULL for a general A
   * (UPPER would claim an already triangular one, square only). The
   * library refuses LOWER with INVALID_VALUE. */
  int rc = jmg_mp_solver_fail(cusolverMpPolar_bufferSize(c->s->handle, pd, GENERAL, m, n, c->cyc,
                                                         1, 1, c->desc, hm, 1, 1, dh, c->t, &d,
                                                         &h),
                              "cusolverMpPolar_bufferSize", err);
  if (!rc) rc = workspace(c, d, h, err);
  if (!rc) rc = zero_info(c, err);
  if (!rc)
    rc = jmg_mp_solver_fail(cusolverMpPolar(c->s->handle, pd, GENERAL, m, n, c->cyc, 1, 1, c->desc,
                                            hm, 1, 1, dh, c->t, WS),
                            "cusolverMpPolar", err);
  cusolverMpPolarDescriptorDestroy(pd);
  TRY(rc);
  TRY(take_info(c, err));
  if (*c->info != 0) {
    if (ho) TRY(nan_square(c, ho, err));
    return nan_shard(c, p->a, err);
  }
  if (ho) TRY(square_out(c, hm, ld_of(c, n), 0, ho, err));
  return send_back(c, c->cyc, p->a, err);
}

/* ------------------------------------------------------------------------ */
/* LU, least squares and QR (on A). */

static int body_lu_solve(opctx* c, char* err) {
  void* bx = c->j->p->b; /* x aliases b */
  TRY(bring_in(c, err));
  void *b, *ipiv;
  cusolverMpMatrixDescriptor_t db;
  TRY(rhs_in(c, bx, &b, &db, err));
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
  return rhs_out(c, b, c->j->m, bx, err);
}

/* b (slot 3, m x nrhs) in; x (slot 1) its first n rows after gels. */
static int body_lstsq(opctx* c, char* err) {
  TRY(bring_in(c, err));
  void* b;
  cusolverMpMatrixDescriptor_t db;
  TRY(rhs_in(c, c->j->p->buf[3], &b, &db, err));
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
  return rhs_out(c, b, c->j->n, c->j->p->buf[1], err);
}

/* Q in a; R (slot 1): the top n x n of the factor, its upper triangle. */
static int body_qr(opctx* c, char* err) {
  void* r = c->j->p->buf[1];
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
  TRY(square_out(c, c->cyc, c->lld, 1, r, err));
  TRY(zero_info(c, err));
  SOLVER(cusolverMpOrgqr(c->s->handle, m, n, n, c->cyc, 1, 1, c->desc, tau, c->t, WS),
         "cusolverMpOrgqr");
  TRY(take_info(c, err));
  if (*c->info != 0) {
    TRY(nan_square(c, r, err));
    return nan_shard(c, c->j->p->a, err);
  }
  return send_back(c, c->cyc, c->j->p->a, err);
}

/* ------------------------------------------------------------------------ */
/* Checks (the same verdict on every rank) and the guarded run. */

static int check_job(const jmg_mp_set* s, const jmg_mp_job* j, char* err) {
  const jmg_party* p = j->p;
  const char* bad = NULL;
  int general = j->op == JMG_GESVD || j->op == JMG_POLAR;
  if ((int64_t)j->mesh_a * j->mesh_b != s->comm.nranks)
    bad = "the sharding's blocks do not match the device set";
  else if (general && j->m < j->n)
    bad = "the matrix must have m >= n rows (pass its transpose)";
  else if (j->op == JMG_GESVD && p->attr[0] != 0 && p->attr[0] != j->n)
    bad = "the engine computes the thin SVD only (U with n columns)";
  else if (j->op == JMG_GESVD && p->attr[1] != 0 && p->attr[1] != j->n)
    bad = "Vh has n rows or none";
  else if (j->op == JMG_POLAR && p->attr[0] != 0 && p->attr[0] != j->n)
    bad = "H has n rows or none";
  else if (j->op == JMG_SYGVD && p->attr[1] != j->n)
    /* cuSOLVERMp 0.9.1 on a leading sub-pencil: f64 vectors off by ~1e-3,
     * c64 CUSOLVER_STATUS_INTERNAL_ERROR (bench/mp_smoke.py, one H100). */
    bad = "sygvd solves the whole pencil only (nvalid = n): cuSOLVERMp's sygvd on a leading "
          "sub-pencil is wrong; pad A with a zero block and drop the pad eigenpairs";
  if (bad == NULL) {
    jmg_layout2d l;
    jmg_grid2d g = {s->p, s->q, JMG_GRID_ROW_MAJOR};
    if (jmg_layout2d_from_jax(j->m, j->n, JMG_SHARD_2D, j->mesh_a, j->mesh_b, j->tile, g, &l))
      bad = "the shards do not split the matrix evenly";
  }
  if (bad == NULL) return JMG_MP_OK;
  snprintf(err, JMG_MP_ERRLEN, "%s (m=%lld n=%lld nrhs=%lld tile=%lld, %d x %d blocks)", bad,
           (long long)j->m, (long long)j->n, (long long)j->nrhs, (long long)j->tile, j->mesh_a,
           j->mesh_b);
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
  int rc = check_job(c->s, c->j, err);
  if (rc) return rc;
  rc = jmg_mp_set_ready(c->s, c->j->stream, err);
  if (!rc) rc = g->fn(c, err);
  for (int k = 0; k < c->nptr; k++) cudaFreeAsync(c->ptrs[k], c->j->stream);
  jmg_plan2d_free(&c->to);
  /* The outputs are complete before the ops layer returns to XLA. */
  if (!rc) rc = jmg_mp_cuda_fail(cudaStreamSynchronize(c->j->stream), "sync", err);
  return rc;
}

/* This rank's call, in the engine's terms (mp_engine.h). */
static jmg_mp_job mp_job(const jmg_job* job) {
  const jmg_party* p = &job->parties[0];
  jmg_mp_job j = {job->op, job->dtype, job->mpad, job->n, job->nrhs, job->tile,
                  job->nparties / job->col_split, job->col_split, (cudaStream_t)p->stream, p};
  return j;
}

static int run_op(jmg_job* job, jmg_result* res, char* err, body_fn fn) {
  jmg_mp_set* s = jmg_mp_job_set(job);
  jmg_mp_job j = mp_job(job);
  opctx c;
  memset(&c, 0, sizeof c);
  c.s = s;
  c.j = &j;
  c.transpose = !(jmg_op_row_of(job->op)->sees_at & JMG_KIND_COLLECTIVE);
  c.res = res;
  c.info = &res->info;
  res->info = 0;
  c.t = jmg_mp_cuda_type(j.dtype);
  c.esz = jmg_dtype_size(j.dtype);
  guarded g = {&c, fn};
  return jmg_mp_comm_guard(&s->comm, jmg_op_name(job->op), run_body, &g, err);
}

#define OP_FN(name, op)                                                  \
  int jmg_mp_run_##name(jmg_job* job, jmg_result* res, char* err) {      \
    return run_op(job, res, err, body_##name);                           \
  }
JMG_MP_OPS(OP_FN)
