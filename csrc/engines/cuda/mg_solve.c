/* mg_solve.c - an op on every GPU of the group with cuSolverMg.
 *
 * For potri and syevd the leader moves the shards into cuSolverMg's
 * block-cyclic layout in place with peer copies (independent chains run
 * concurrently, one stream per device), calls cuSolverMg (synchronous) and
 * moves the results back. potrs needs no move (see run_potrs); nor do the
 * factor-reuse ops, which keep potrs's factor of the tile-reordered A in
 * A's shards (chol_factor) and solve with it or invert from it.
 *
 * cuSolverMg's solves are wrong beyond 2048 right-hand sides on more than
 * one device (cusolverMgPotrs with 4096 columns: columns >= 2048 wrong;
 * cusolverMgPotri: inverse columns >= 2048 wrong; CUDA 13.0, H200, checked
 * on plain cudaMalloc buffers by bench/raw_mg with RAW_CHECK=1). So every
 * solve goes in panels of at most MG_MAX_RHS columns, and the inverse is
 * the solution of A X = I, panel by panel.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engines/cuda/gpu_util.h"
#include "engines/cuda/solvers.h"
#include "layout/layout.h"
#include "util/clock.h"
#include "util/trace.h"

#define MG_MAX_RHS 2048

/* cuSolverMg's syevd accepts tiles of at most this many columns. */
#define MG_SYEVD_MAX_TILE 1024

/* ---- the layout move: chains on per-device streams ---- */

typedef struct gpu_copy {
  const jmg_job* job;
  mg_context* ctx;
  size_t col_bytes;
  int owner; /* the device whose stream and staging unit this chain uses */
  char* err;
} gpu_copy;

static int gpu_copy_cols(void* p, int dst, int64_t dst_off, int src, int64_t src_off, int64_t ncols) {
  gpu_copy* c = p;
  const jmg_party* parties = c->job->parties;
  /* The staging unit is the head of the owner's workspace: cuSolverMg only
   * uses the workspace after the move is complete. */
  int dd = dst == JMG_STAGE_DEV ? c->owner : dst;
  int sd = src == JMG_STAGE_DEV ? c->owner : src;
  char* dptr = dst == JMG_STAGE_DEV ? (char*)parties[dd].work
                                    : (char*)parties[dd].a + (size_t)dst_off * c->col_bytes;
  const char* sptr = src == JMG_STAGE_DEV ? (const char*)parties[sd].work
                                          : (const char*)parties[sd].a + (size_t)src_off * c->col_bytes;
  cudaError_t e = cudaMemcpyPeerAsync(dptr, c->ctx->dev[dd], sptr, c->ctx->dev[sd],
                                      (size_t)ncols * c->col_bytes, c->ctx->stream[c->owner]);
  if (e != cudaSuccess) {
    snprintf(c->err, JMG_ERRLEN, "peer copy %d -> %d: %s", c->ctx->dev[sd], c->ctx->dev[dd],
             cudaGetErrorString(e));
    return -1;
  }
  return 0;
}

/* The move between A's rows at the shards' heads (engine.h) and
 * cuSolverMg's tiles, in the shards' nloc columns: for syevd A may be
 * shorter than the shards (its last tile partial), never interleaved with
 * padding, which would couple to A in the eigensolver's reduction. */
static jmg_layout mg_layout(const jmg_job* job) {
  jmg_layout l = {job->n, jmg_job_lrows(job), job->tile, job->nloc, job->nparties};
  return l;
}

int mg_move_layout(const jmg_job* job, mg_context* ctx, int to_cyclic, char* err) {
  jmg_layout l = mg_layout(job);
  jmg_plan plan;
  if (jmg_plan_build(&l, to_cyclic, &plan)) {
    snprintf(err, JMG_ERRLEN, "layout plan failed for n=%lld nloc=%lld tile=%lld",
             (long long)job->n, (long long)job->nloc, (long long)job->tile);
    return -1;
  }
  gpu_copy c = {job, ctx, (size_t)job->n * jmg_dtype_size(job->dtype), 0, err};
  int rc = 0;
  /* A chain runs on the stream of the device its last slot lives on; chains
   * are disjoint, so the P streams run concurrently and keep every link
   * busy. Chains of one owner share its single staging unit, in order. */
  for (int64_t k = 0; k < plan.nchains && rc == 0; k++) {
    const jmg_slot* last = &plan.slots[plan.start[k + 1] - 1];
    c.owner = last->dev;
    rc = jmg_plan_run_chain(&plan, k, gpu_copy_cols, &c);
  }
  jmg_plan_free(&plan);
  if (rc) return -1;
  return gpu_sync_streams(ctx, err);
}

/* ---- workspace ---- */

static void gather_ptrs(const jmg_job* job, void** a, void** b, void** work) {
  for (int r = 0; r < job->nparties; r++) {
    if (a) a[r] = job->parties[r].a;
    if (b) b[r] = job->parties[r].b;
    if (work) work[r] = job->parties[r].work;
  }
}

/* What each op asks of cuSolverMg, as data (the workspace follows):
 *   eig      the eigensolver (else the Cholesky routines)
 *   factors  potrf on A         solves  potrs, into b (has_b) or, for an
 *   inverts  an inverse panel by panel (A X = I), from the factor that is
 *            in place (restage: chol_inverse's factor is of the tile-
 *            reordered A', so its panels need a tile x panel staging area) */
typedef struct mg_op_traits {
  uint8_t eig, factors, solves, has_b, inverts, restage;
} mg_op_traits;

static const mg_op_traits mg_traits[JMG_NOPS] = {
    [JMG_POTRS] = {.factors = 1, .solves = 1, .has_b = 1},
    [JMG_POTRI] = {.factors = 1, .solves = 1, .inverts = 1},
    [JMG_SYEVD] = {.eig = 1},
    [JMG_CHOL_FACTOR] = {.factors = 1},
    [JMG_CHOL_SOLVE] = {.solves = 1, .has_b = 1},
    [JMG_CHOL_INVERSE] = {.solves = 1, .inverts = 1, .restage = 1},
};

static int inverts(const jmg_job* job) { return mg_traits[job->op].inverts; }

/* Columns per cuSolverMg solve. */
static int64_t panel_width(const jmg_job* job) {
  int64_t cols = inverts(job) ? job->n : job->nrhs;
  return cols < MG_MAX_RHS ? cols : MG_MAX_RHS;
}

/* A panel of B is one tile wide, so all of it lives on rank 0's buffer. */
static int64_t b_block(const jmg_job* job, int64_t width) {
  return width > job->tile ? width : job->tile;
}

/* potri's and chol_inverse's workspace, in order: X (the inverse, one
 * n x nloc shard per device, in the caller's layout), on rank 0 the
 * identity panel (chol_inverse: and a tile x panel staging area for its
 * row permutation), then the solver's own workspace. */
static int64_t inverse_bytes(const jmg_job* job) {
  if (!inverts(job)) return 0;
  return gpu_round_up(job->n * job->nloc * (int64_t)jmg_dtype_size(job->dtype));
}

static int64_t panel_only_bytes(const jmg_job* job) {
  return gpu_round_up(job->n * panel_width(job) * (int64_t)jmg_dtype_size(job->dtype));
}

static int64_t panel_bytes(const jmg_job* job, int rank) {
  if (!inverts(job) || rank != 0) return 0;
  int64_t stage = mg_traits[job->op].restage
                      ? gpu_round_up(job->tile * panel_width(job) * (int64_t)jmg_dtype_size(job->dtype))
                      : 0;
  return panel_only_bytes(job) + stage;
}

/* Elements of cuSolverMg workspace per device for this job; the queries
 * cost more than a small solve, so their answer is kept per problem. */
static int solver_lwork(const jmg_job* job, mg_context* ctx, int64_t* lwork, char* err) {
  int64_t key[6] = {job->op, job->dtype, job->n, job->tile, job->nrhs, job->jobz};
  if (mg_context_lwork_get(ctx, key, lwork)) return 0;
  void* a[JMG_MAX_DEVICES];
  void* b[JMG_MAX_DEVICES];
  gather_ptrs(job, a, b, NULL);
  cudaDataType t = mg_cuda_type(job->dtype);
  int n = (int)job->n;
  int64_t l1 = 0, l2 = 0;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, t, err);
  if (!da) return -1;
  const mg_op_traits* op = &mg_traits[job->op];
  if (op->eig) {
    void* w = NULL; /* not read by the query */
    SOLVER(cusolverMgSyevd_bufferSize(ctx->handle,
                                      job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR,
                                      CUBLAS_FILL_MODE_LOWER, n, a, 1, 1, da, w,
                                      mg_cuda_real_type(job->dtype), t, &l1));
  } else {
    if (op->factors)
      SOLVER(cusolverMgPotrf_bufferSize(ctx->handle, CUBLAS_FILL_MODE_LOWER, n, a, 1, 1, da, t, &l1));
    int64_t w = panel_width(job);
    if (op->solves && w > 0) {
      cudaLibMgMatrixDesc_t db = mg_context_desc(ctx, job->n, w, b_block(job, w), t, err);
      if (!db) return -1;
      /* The inverse's panels are not allocated yet; the query reads no data. */
      SOLVER(cusolverMgPotrs_bufferSize(ctx->handle, CUBLAS_FILL_MODE_LOWER, n, (int)w, a, 1, 1, da,
                                        op->has_b ? b : a, 1, 1, db, t, &l2));
    }
  }
  *lwork = l1 > l2 ? l1 : l2;
  mg_context_lwork_put(ctx, key, *lwork);
  return 0;
fail:
  return -1;
}

static int64_t staging_bytes(const jmg_job* job) {
  jmg_layout l = mg_layout(job);
  return jmg_layout_unit(&l) * job->n * (int64_t)jmg_dtype_size(job->dtype);
}

static int mg_solve_workspace(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err) {
  if (job->n > 2147483647 || job->nrhs > 2147483647) {
    snprintf(err, JMG_ERRLEN, "n = %lld exceeds cuSolverMg's int", (long long)job->n);
    return -1;
  }
  /* Only the eigensolver moves A by the layout plan; the others keep the
   * shards' tiles in place (potrs's reordering, potri's inverse in the
   * caller's layout) and take A as whole shards, padded inside by the
   * Python layer (exact for Cholesky: docs/tiles.md). */
  if (!mg_traits[job->op].eig && job->n != job->mpad) {
    snprintf(err, JMG_ERRLEN, "cuSolverMg takes this op's A as whole shards (n = %lld, %lld shard "
             "rows): the Python layer pads them", (long long)job->n, (long long)job->nloc);
    return -1;
  }
  if (mg_traits[job->op].eig && job->tile > MG_SYEVD_MAX_TILE) {
    snprintf(err, JMG_ERRLEN, "cuSolverMg syevd takes tiles of at most %d columns, got %lld",
             MG_SYEVD_MAX_TILE, (long long)job->tile);
    return -1;
  }
  int64_t lwork = 0;
  if (solver_lwork(job, ctx, &lwork, err)) return -1;
  int64_t stage = staging_bytes(job);
  for (int r = 0; r < job->nparties; r++) {
    int64_t solver = inverse_bytes(job) + panel_bytes(job, r) +
                     lwork * (int64_t)jmg_dtype_size(job->dtype);
    bytes[r] = (solver > stage ? solver : stage) + 256;
  }
  return 0;
}

/* ---- the ops ---- */

/* The diagonal of the n x n matrix in cuSolverMg's layout (tile k on
 * device k % P, local tile k / P), into host memory: n elements, read tile
 * by tile with stride n + 1. */
static int read_diag(const jmg_job* job, mg_context* ctx, void** a, char* diag, char* err) {
  size_t es = jmg_dtype_size(job->dtype);
  int64_t n = job->n, T = job->tile, P = job->nparties;
  for (int64_t k = 0; k * T < n; k++) {
    int r = (int)(k % P);
    int64_t rows = n - k * T < T ? n - k * T : T;
    const char* src = (const char*)a[r] + ((size_t)((k / P) * T) * (size_t)n + (size_t)(k * T)) * es;
    CU(cudaSetDevice(ctx->dev[r]));
    CU(cudaMemcpy2D(diag + (size_t)(k * T) * es, es, src, (size_t)(n + 1) * es, es, (size_t)rows,
                    cudaMemcpyDeviceToHost));
  }
  return 0;
fail:
  return -1;
}

/* The real part of diagonal element i (it leads every element type). */
static double diag_at(const jmg_job* job, const char* diag, int64_t i) {
  size_t es = jmg_dtype_size(job->dtype);
  return jmg_dtype_real_size(job->dtype) == 4 ? (double)((const float*)(const void*)(diag + i * es))[0]
                                              : ((const double*)(const void*)(diag + i * es))[0];
}

/* cuSolverMg reports a matrix that is not positive definite as
 * CUSOLVER_STATUS_INTERNAL_ERROR, without LAPACK's info. The factor still
 * tells: Cholesky stops at the first pivot that is not positive and leaves
 * it on the diagonal, after the positive pivots of the minors before it.
 * So the failing minor is the first diagonal entry that is not > 0 (read
 * only on this failure path). With info == 0, the same diagonal gives log
 * det = 2 sum log L_ii (logdet != NULL). */
static int factor_diag(const jmg_job* job, mg_context* ctx, void** a, int32_t* info,
                       double* logdet, char* err) {
  char* diag = malloc((size_t)job->n * jmg_dtype_size(job->dtype));
  if (!diag) {
    snprintf(err, JMG_ERRLEN, "out of host memory");
    return -1;
  }
  if (read_diag(job, ctx, a, diag, err)) {
    free(diag);
    return -1;
  }
  double sum = 0;
  int32_t first_bad = 0;
  for (int64_t i = 0; i < job->n; i++) {
    double d = diag_at(job, diag, i);
    if (!(d > 0) && !first_bad) first_bad = (int32_t)(i + 1);
    sum += log(fabs(d));
  }
  free(diag);
  if (logdet) *logdet = 2 * sum;
  if (info) *info = first_bad;
  return 0;
}

static int failing_minor(const jmg_job* job, mg_context* ctx, void** a, int32_t* info, char* err) {
  if (factor_diag(job, ctx, a, info, NULL, err)) return -1;
  if (*info == 0) {
    snprintf(err, JMG_ERRLEN, "cusolverMgPotrf failed (CUSOLVER_STATUS_INTERNAL_ERROR) on a matrix "
                              "whose factor has a positive diagonal");
    return -1;
  }
  return 0;
}

/* potrf with LAPACK's info, whichever way cuSolverMg reports a failure. */
static int potrf(const jmg_job* job, mg_context* ctx, void** a, cudaLibMgMatrixDesc_t da,
                 void** work, int64_t lwork, int32_t* info, char* err) {
  int h_info = 0;
  cudaDataType t = mg_cuda_type(job->dtype);
  cusolverStatus_t s = cusolverMgPotrf(ctx->handle, CUBLAS_FILL_MODE_LOWER, (int)job->n, a, 1, 1,
                                       da, t, work, lwork, &h_info);
  if (gpu_sync_devices(ctx, err)) return -1;
  if (s == CUSOLVER_STATUS_SUCCESS) {
    *info = h_info;
    return 0;
  }
  if (s == CUSOLVER_STATUS_INTERNAL_ERROR) {
    if (h_info > 0) {
      *info = h_info;
      return 0;
    }
    return failing_minor(job, ctx, a, info, err);
  }
  snprintf(err, JMG_ERRLEN, "cusolverMgPotrf failed: %s", mg_status_name(s));
  return -1;
}

/* Solves with the factor in A for the n x width panel at b0 (rank 0's
 * device); the other ranks' pointers are passed but hold no column. */
static int solve_panel(const jmg_job* job, mg_context* ctx, void** a, cudaLibMgMatrixDesc_t da,
                       void* b0, void** others, int64_t width, void** work, int64_t lwork,
                       int32_t* info, char* err) {
  cudaDataType t = mg_cuda_type(job->dtype);
  void* b[JMG_MAX_DEVICES];
  for (int r = 0; r < job->nparties; r++) b[r] = others[r];
  b[0] = b0;
  int h_info = 0;
  cudaLibMgMatrixDesc_t db = mg_context_desc(ctx, job->n, width, b_block(job, width), t, err);
  if (!db) return -1;
  SOLVER(cusolverMgPotrs(ctx->handle, CUBLAS_FILL_MODE_LOWER, (int)job->n, (int)width, a, 1, 1, da,
                         b, 1, 1, db, t, work, lwork, &h_info));
  if (gpu_sync_devices(ctx, err)) return -1;
  *info = h_info;
  return 0;
fail:
  return -1;
}

/* ---- potrs on a tile-reordered system: no move between devices ----
 *
 * The caller's shards read as column-major already are block-cyclic, only
 * for another order of the tiles: device d's local tile s, which cuSolverMg
 * takes for tile s*P + d, holds tile d*L + s of A (L tiles per device). So
 * potrs solves A' x' = b' with A' = Q^T A Q, Q the permutation that puts
 * tile d*L + s at s*P + d (A' is SPD like A): the columns are in place,
 * and only the rows move, within each device at memory bandwidth instead
 * of 3/4 of A crossing the links. b' = Q^T b before, x = Q x' after. */

/* Tile k of A' is tile reorder(k) of A; unorder is the inverse. */
static int64_t reorder(int64_t k, int64_t P, int64_t L) { return (k % P) * L + k / P; }
static int64_t unorder(int64_t j, int64_t P, int64_t L) { return (j % L) * P + j / L; }

/* Row tile k of the n x ncols matrix at buf (leading dimension n, on
 * device r) becomes its row tile from(k), following the cycles of `from`
 * through a T x ncols staging buffer; ordered on device r's stream. */
static int permute_rows(const jmg_job* job, mg_context* ctx, int r, char* buf, int64_t ncols,
                        char* stage, int inverse, unsigned char* seen, char* err) {
  int64_t P = job->nparties, T = job->tile, L = job->nloc / job->tile, nt = P * L;
  size_t es = jmg_dtype_size(job->dtype), pitch = (size_t)job->n * es, w = (size_t)T * es;
  cudaStream_t s = ctx->stream[r];
  CU(cudaSetDevice(ctx->dev[r]));
  memset(seen, 0, (size_t)nt);
  for (int64_t k0 = 0; k0 < nt; k0++) {
    int64_t k = k0, src = inverse ? unorder(k, P, L) : reorder(k, P, L);
    if (seen[k0] || src == k0) continue;
    CU(cudaMemcpy2DAsync(stage, w, buf + (size_t)k0 * w, pitch, w, (size_t)ncols,
                         cudaMemcpyDeviceToDevice, s));
    for (; src != k0; k = src, src = inverse ? unorder(k, P, L) : reorder(k, P, L)) {
      seen[k] = 1;
      CU(cudaMemcpy2DAsync(buf + (size_t)k * w, pitch, buf + (size_t)src * w, pitch, w,
                           (size_t)ncols, cudaMemcpyDeviceToDevice, s));
    }
    seen[k] = 1;
    CU(cudaMemcpy2DAsync(buf + (size_t)k * w, pitch, stage, w, w, (size_t)ncols,
                         cudaMemcpyDeviceToDevice, s));
  }
  return 0;
fail:
  return -1;
}

/* b' = Q^T b (inverse = 0) or x = Q x' (1) on rank 0, n columns at a time:
 * the staging unit holds T x n. */
static int permute_rhs(const jmg_job* job, mg_context* ctx, char* b, int inverse,
                       unsigned char* seen, char* err) {
  size_t col = (size_t)job->n * jmg_dtype_size(job->dtype);
  for (int64_t c0 = 0; c0 < job->nrhs; c0 += job->n) {
    int64_t w = job->nrhs - c0 < job->n ? job->nrhs - c0 : job->n;
    if (permute_rows(job, ctx, 0, b + (size_t)c0 * col, w, job->parties[0].work, inverse, seen, err))
      return -1;
  }
  return 0;
}

/* P * L bytes of host scratch for permute_rows' cycles. */
static unsigned char* tile_marks(const jmg_job* job, char* err) {
  unsigned char* seen = malloc((size_t)(job->nparties * (job->nloc / job->tile)) + 1);
  if (!seen) snprintf(err, JMG_ERRLEN, "out of host memory");
  return seen;
}

/* The factor of A' = Q^T A Q in place of A's shards: the rows of each
 * shard permuted within its device, then potrf. *info: LAPACK's, as a row
 * of A; *logdet: log det A (NaN when info != 0). The staging units are the
 * heads of the workspaces, which cuSolverMg only uses once the rows are in
 * place. */
static int factor_reordered(const jmg_job* job, mg_context* ctx, void** a, cudaLibMgMatrixDesc_t da,
                            void** work, int64_t lwork, unsigned char* seen, int32_t* info,
                            double* logdet, char* err) {
  int64_t P = job->nparties, L = job->nloc / job->tile, T = job->tile;
  int32_t h_info = 0;
  for (int r = 0; r < job->nparties; r++)
    if (permute_rows(job, ctx, r, a[r], job->nloc, work[r], 0, seen, err)) return -1;
  if (gpu_sync_streams(ctx, err)) return -1;
  if (potrf(job, ctx, a, da, work, lwork, &h_info, err)) return -1;
  /* log det A' = log det A: Q is a permutation. */
  *logdet = NAN;
  if (h_info == 0 && factor_diag(job, ctx, a, NULL, logdet, err)) return -1;
  if (h_info > 0) {
    /* The pivot that failed, as a row of A rather than of A'. */
    int64_t i = h_info - 1;
    h_info = (int32_t)(reorder(i / T, P, L) * T + i % T + 1);
  }
  *info = h_info;
  return 0;
}

/* x = A^-1 b with A' = Q^T A Q factored in a: b' = Q^T b, the solves in
 * panels, x = Q x', x on every party. *info != 0 on entry (a failed
 * factor): x is NaN; on return the solver's info. */
static int solve_reordered(const jmg_job* job, mg_context* ctx, void** a, cudaLibMgMatrixDesc_t da,
                           void** work, int64_t lwork, unsigned char* seen, int32_t* info,
                           char* err) {
  void* b[JMG_MAX_DEVICES];
  gather_ptrs(job, NULL, b, NULL);
  size_t es = jmg_dtype_size(job->dtype);
  size_t xbytes = (size_t)job->n * (size_t)job->nrhs * es;
  int32_t h_info = *info;
  if (h_info == 0) {
    if (permute_rhs(job, ctx, b[0], 0, seen, err) || gpu_sync_streams(ctx, err)) return -1;
    int64_t pw = panel_width(job);
    for (int64_t c0 = 0; c0 < job->nrhs && h_info == 0; c0 += pw) {
      int64_t w = job->nrhs - c0 < pw ? job->nrhs - c0 : pw;
      void* b0 = (char*)b[0] + (size_t)c0 * (size_t)job->n * es;
      if (solve_panel(job, ctx, a, da, b0, b, w, work, lwork, &h_info, err)) return -1;
    }
    if (h_info == 0 && permute_rhs(job, ctx, b[0], 1, seen, err)) return -1;
  } else if (gpu_fill_nan(b[0], ctx->dev[0], xbytes, ctx->stream[0], err)) {
    return -1;
  }
  CU(cudaStreamSynchronize(ctx->stream[0]));
  *info = h_info;
  return gpu_broadcast(ctx, b, b[0], xbytes, err);
fail:
  return -1;
}

static int run_potrs(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                     jmg_result* res, char* err) {
  unsigned char* seen = tile_marks(job, err);
  if (!seen) return -1;
  int32_t info = 0;
  double t0 = jmg_clock_now(), t1 = t0;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, mg_cuda_type(job->dtype), err);
  int rc = !da || factor_reordered(job, ctx, a, da, work, lwork, seen, &info, &res->scalar[0], err);
  if (rc == 0) {
    t1 = jmg_clock_now();
    rc = solve_reordered(job, ctx, a, da, work, lwork, seen, &info, err);
  }
  free(seen);
  if (rc) return -1;
  res->info = info;
  if (info != 0) res->scalar[0] = NAN;
  /* Where the time goes next to the raw engine (bench/README.md). */
  jmg_trace(2, "potrs engine: reorder and potrf %.2f ms, solve and x out %.2f ms", 1e3 * (t1 - t0),
            1e3 * (jmg_clock_now() - t1));
  return 0;
}

/* ---- factor reuse: the factor of A' kept in A's shards (opaque to the
 * caller), then solves and the inverse from it ---- */

static int run_chol_factor(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                           jmg_result* res, char* err) {
  unsigned char* seen = tile_marks(job, err);
  if (!seen) return -1;
  int32_t info = 0;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, mg_cuda_type(job->dtype), err);
  int rc = !da || factor_reordered(job, ctx, a, da, work, lwork, seen, &info, &res->scalar[0], err);
  free(seen);
  if (rc) return -1;
  /* A failed factor is NaN: every solve and inverse from it is NaN too. */
  size_t shard = (size_t)job->nloc * (size_t)job->n * jmg_dtype_size(job->dtype);
  for (int r = 0; info != 0 && r < job->nparties; r++)
    if (gpu_fill_nan(a[r], ctx->dev[r], shard, ctx->stream[r], err)) return -1;
  if (gpu_sync_streams(ctx, err)) return -1;
  res->info = info;
  if (info != 0) res->scalar[0] = NAN;
  return 0;
}

static int run_chol_solve(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                          jmg_result* res, char* err) {
  unsigned char* seen = tile_marks(job, err);
  if (!seen) return -1;
  int32_t info = 0;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, mg_cuda_type(job->dtype), err);
  int rc = !da || solve_reordered(job, ctx, a, da, work, lwork, seen, &info, err);
  free(seen);
  if (rc) return -1;
  res->info = info;
  return 0;
}

/* Sends columns [c0, c0 + w) of the inverse, held in the panel on rank 0,
 * to X in the caller's layout (column c on rank c / nloc). */
static int scatter_panel(const jmg_job* job, mg_context* ctx, const char* panel, void** x,
                         int64_t c0, int64_t w, char* err) {
  size_t col = (size_t)job->n * jmg_dtype_size(job->dtype);
  for (int64_t c = c0; c < c0 + w;) {
    int r = (int)(c / job->nloc);
    int64_t off = c % job->nloc;
    int64_t cnt = job->nloc - off < c0 + w - c ? job->nloc - off : c0 + w - c;
    CU(cudaMemcpyPeerAsync((char*)x[r] + (size_t)off * col, ctx->dev[r], panel + (size_t)(c - c0) * col,
                           ctx->dev[0], (size_t)cnt * col, ctx->stream[0]));
    c += cnt;
  }
  return 0;
fail:
  return -1;
}

/* The inverse as the solution of A X = I, one identity panel at a time,
 * each scattered straight into the caller's layout: both triangles at
 * once, and no move back. The scatter stays serial: with two panel
 * buffers and the copies on the receivers' streams, the next solve did not
 * start before the copies ended (4 H200, N = 16384: 4.5 ms per call either
 * way), as if cuSolverMg waited for the devices to be idle. */
static int run_potri(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                     jmg_result* res, char* err) {
  int32_t* info = &res->info;
  int32_t h_info = 0;
  size_t shard = (size_t)job->nloc * (size_t)job->n * jmg_dtype_size(job->dtype);
  void* x[JMG_MAX_DEVICES];
  void* solver_work[JMG_MAX_DEVICES];
  char* panel = (char*)work[0] + inverse_bytes(job);
  for (int r = 0; r < job->nparties; r++) {
    x[r] = work[r];
    solver_work[r] = (char*)work[r] + inverse_bytes(job) + panel_bytes(job, r);
  }
  double t0 = jmg_clock_now();
  if (mg_move_layout(job, ctx, 1, err)) return -1;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, mg_cuda_type(job->dtype), err);
  if (!da) return -1;
  double t1 = jmg_clock_now();
  if (potrf(job, ctx, a, da, solver_work, lwork, &h_info, err)) return -1;
  double t2 = jmg_clock_now(), t_solve = 0, t_scatter = 0;
  if (h_info == 0) {
    int64_t pw = panel_width(job);
    for (int64_t c0 = 0; c0 < job->n && h_info == 0; c0 += pw) {
      int64_t w = job->n - c0 < pw ? job->n - c0 : pw;
      double u0 = jmg_clock_now();
      if (gpu_identity_cols(panel, ctx->dev[0], job->dtype, job->n, c0, w, ctx->stream[0], err) ||
          solve_panel(job, ctx, a, da, panel, x, w, solver_work, lwork, &h_info, err))
        return -1;
      double u1 = jmg_clock_now();
      if (scatter_panel(job, ctx, panel, x, c0, w, err)) return -1;
      /* The next panel overwrites this one. */
      CU(cudaStreamSynchronize(ctx->stream[0]));
      t_solve += u1 - u0;
      t_scatter += jmg_clock_now() - u1;
    }
  }
  double t3 = jmg_clock_now();
  for (int r = 0; r < job->nparties; r++) {
    if (h_info != 0) {
      if (gpu_fill_nan(a[r], ctx->dev[r], shard, ctx->stream[r], err)) return -1;
      continue;
    }
    CU(cudaSetDevice(ctx->dev[r]));
    CU(cudaMemcpyAsync(a[r], x[r], shard, cudaMemcpyDeviceToDevice, ctx->stream[r]));
  }
  *info = h_info;
  int rc = gpu_sync_streams(ctx, err);
  jmg_trace(2, "potri engine: layout in %.2f ms, potrf %.2f ms, solves %.2f ms, scatter %.2f ms, "
                "out %.2f ms", 1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * t_solve, 1e3 * t_scatter,
            1e3 * (jmg_clock_now() - t3));
  return rc;
fail:
  return -1;
}

/* The inverse from the factor of A' = Q^T A Q: panels of A's identity
 * columns, each permuted into A's tile order (Q^T I), solved with A', put
 * back in A's row order (Q X') and scattered into the caller's layout as
 * potri's; at the end the inverse replaces the factor in A's shards. */
static int run_chol_inverse(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                            jmg_result* res, char* err) {
  int32_t h_info = 0;
  size_t shard = (size_t)job->nloc * (size_t)job->n * jmg_dtype_size(job->dtype);
  void* x[JMG_MAX_DEVICES];
  void* solver_work[JMG_MAX_DEVICES];
  char* panel = (char*)work[0] + inverse_bytes(job);
  char* stage = panel + panel_only_bytes(job);
  for (int r = 0; r < job->nparties; r++) {
    x[r] = work[r];
    solver_work[r] = (char*)work[r] + inverse_bytes(job) + panel_bytes(job, r);
  }
  unsigned char* seen = tile_marks(job, err);
  if (!seen) return -1;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, mg_cuda_type(job->dtype), err);
  if (!da) goto fail;
  int64_t pw = panel_width(job);
  for (int64_t c0 = 0; c0 < job->n && h_info == 0; c0 += pw) {
    int64_t w = job->n - c0 < pw ? job->n - c0 : pw;
    if (gpu_identity_cols(panel, ctx->dev[0], job->dtype, job->n, c0, w, ctx->stream[0], err) ||
        permute_rows(job, ctx, 0, panel, w, stage, 0, seen, err))
      goto fail;
    CU(cudaStreamSynchronize(ctx->stream[0]));
    if (solve_panel(job, ctx, a, da, panel, x, w, solver_work, lwork, &h_info, err) ||
        permute_rows(job, ctx, 0, panel, w, stage, 1, seen, err) ||
        scatter_panel(job, ctx, panel, x, c0, w, err))
      goto fail;
    /* The next panel overwrites this one. */
    CU(cudaStreamSynchronize(ctx->stream[0]));
  }
  for (int r = 0; r < job->nparties; r++) {
    if (h_info != 0) {
      if (gpu_fill_nan(a[r], ctx->dev[r], shard, ctx->stream[r], err)) goto fail;
      continue;
    }
    CU(cudaSetDevice(ctx->dev[r]));
    CU(cudaMemcpyAsync(a[r], x[r], shard, cudaMemcpyDeviceToDevice, ctx->stream[r]));
  }
  free(seen);
  res->info = h_info;
  return gpu_sync_streams(ctx, err);
fail:
  free(seen);
  return -1;
}

static int run_syevd(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                     jmg_result* res, char* err) {
  int32_t* info = &res->info;
  cudaDataType t = mg_cuda_type(job->dtype);
  int n = (int)job->n, h_info = 0;
  size_t rsize = (job->dtype == JMG_F32 || job->dtype == JMG_C64) ? 4 : 8;
  void* w = malloc((size_t)job->n * rsize);
  if (!w) {
    snprintf(err, JMG_ERRLEN, "out of host memory for %lld eigenvalues", (long long)job->n);
    return -1;
  }
  double t0 = jmg_clock_now();
  if (mg_move_layout(job, ctx, 1, err)) goto fail;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, t, err);
  if (!da) goto fail;
  double t1 = jmg_clock_now();
  SOLVER(cusolverMgSyevd(ctx->handle, job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR,
                         CUBLAS_FILL_MODE_LOWER, n, a, 1, 1, da, w, mg_cuda_real_type(job->dtype), t,
                         work, lwork, &h_info));
  if (gpu_sync_devices(ctx, err)) goto fail;
  double t2 = jmg_clock_now();
  if (job->jobz && mg_move_layout(job, ctx, 0, err)) goto fail;
  for (int r = 0; r < job->nparties; r++) {
    CU(cudaSetDevice(ctx->dev[r]));
    CU(cudaMemcpyAsync(job->parties[r].w, w, (size_t)job->n * rsize, cudaMemcpyHostToDevice,
                       ctx->stream[r]));
    if (h_info != 0) {
      size_t shard = (size_t)job->nloc * (size_t)job->n * jmg_dtype_size(job->dtype);
      if (gpu_fill_nan(job->parties[r].w, ctx->dev[r], (size_t)job->n * rsize, ctx->stream[r], err) ||
          gpu_fill_nan(a[r], ctx->dev[r], shard, ctx->stream[r], err))
        goto fail;
    }
  }
  /* w is read by the copies above: wait for them before freeing it. */
  if (gpu_sync_streams(ctx, err)) goto fail;
  free(w);
  *info = h_info;
  jmg_trace(2, "syevd engine: layout in %.2f ms, syevd %.2f ms, out %.2f ms", 1e3 * (t1 - t0),
            1e3 * (t2 - t1), 1e3 * (jmg_clock_now() - t2));
  return 0;
fail:;
  char ignored[JMG_ERRLEN]; /* keep the first error, but let the copies finish */
  gpu_sync_streams(ctx, ignored);
  free(w);
  return -1;
}

typedef int mg_op_fn(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                     jmg_result* res, char* err);

static int on_all(jmg_job* job, mg_context* ctx, jmg_result* res, char* err, mg_op_fn* fn) {
  void* a[JMG_MAX_DEVICES];
  void* work[JMG_MAX_DEVICES];
  gather_ptrs(job, a, NULL, work);
  int64_t lwork = 0;
  if (solver_lwork(job, ctx, &lwork, err)) return -1;
  return fn(job, ctx, a, work, lwork, res, err);
}

static int mg_potrs(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  return on_all(job, ctx, res, err, run_potrs);
}
static int mg_potri(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  return on_all(job, ctx, res, err, run_potri);
}
static int mg_syevd(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  return on_all(job, ctx, res, err, run_syevd);
}
static int mg_chol_factor(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  return on_all(job, ctx, res, err, run_chol_factor);
}
static int mg_chol_solve(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  return on_all(job, ctx, res, err, run_chol_solve);
}
static int mg_chol_inverse(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  return on_all(job, ctx, res, err, run_chol_inverse);
}

const gpu_solver mg_solvers[JMG_NOPS] = {
    [JMG_POTRS] = {mg_solve_workspace, mg_potrs},
    [JMG_POTRI] = {mg_solve_workspace, mg_potri},
    [JMG_SYEVD] = {mg_solve_workspace, mg_syevd},
    [JMG_LU_SOLVE] = {mg_getrs_workspace, mg_getrs_run},
    [JMG_CHOL_FACTOR] = {mg_solve_workspace, mg_chol_factor},
    [JMG_CHOL_SOLVE] = {mg_solve_workspace, mg_chol_solve},
    [JMG_CHOL_INVERSE] = {mg_solve_workspace, mg_chol_inverse},
};
