/* dn_solve.c - an op on one GPU with cuSOLVER's dense 64-bit API: the
 * shards are gathered onto the group's first device, solved there, and the
 * results scattered back.
 *
 * One GPU beats cuSolverMg on small and mid-sized problems (its per-call
 * overheads and the block-cyclic move cost more than the flops it shares
 * out; bench/README.md has the crossovers), and its inverse is right where
 * cuSolverMg's potri is not. Rank 0's workspace holds, in order:
 *   G      n x n, the gathered matrix (M read as column-major, as the
 *          engine sees it everywhere); none with one party, whose shard
 *          (A's result buffer, the engine's to overwrite, n leading rows)
 *          is G already: no copy of A, no n x n of workspace
 *   X      potri, chol_inverse: n x n, the identity, then the inverse
 *   W      syevd: n eigenvalues
 *   D      the factor's diagonal, gathered for log det
 *   info   one int
 *   dwork  cuSOLVER's device workspace
 * The other ranks bring none.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engines/cuda/gpu_typed.h"
#include "engines/cuda/gpu_util.h"
#include "engines/cuda/solvers.h"

typedef struct dn_plan {
  int64_t g, x, w, diag, info, dwork; /* byte offsets into rank 0's workspace */
  size_t dwork_bytes, hwork_bytes;
  int64_t total;
} dn_plan;

/* One run, as its step (below) sees it: the plan, rank 0's workspace with
 * G gathered, cuSOLVER's host workspace. */
typedef struct dn_frame {
  dn_plan p;
  char *base, *g, *x, *w;
  int* d_info;
  void* hwork;
  cudaDataType t;
  size_t es;
  int64_t n;
} dn_frame;

typedef int dn_step(jmg_job* job, mg_context* ctx, dn_frame* f, jmg_result* res, char* err);

/* Each op: its step after the gather, whether it runs the eigensolver
 * (else Cholesky: the workspace query) and needs X (an n x n inverse). */
typedef struct dn_op {
  dn_step* step;
  uint8_t eig, x;
} dn_op;

static const dn_op dn_ops[JMG_NOPS];

static size_t real_size(jmg_dtype t) { return (t == JMG_F32 || t == JMG_C64) ? 4 : 8; }

static int plan(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err) {
  int64_t es = (int64_t)jmg_dtype_size(job->dtype), n = job->n;
  cudaDataType t = mg_cuda_type(job->dtype);
  memset(p, 0, sizeof *p);
  if (mg_context_blas(ctx, err)) return -1;
  size_t d1 = 0, h1 = 0;
  const void* any = job->parties[0].a; /* the queries read no data */
  if (cudaSetDevice(ctx->dev[0]) != cudaSuccess) {
    snprintf(err, JMG_ERRLEN, "cudaSetDevice(%d) failed", ctx->dev[0]);
    return -1;
  }
  const dn_op* op = &dn_ops[job->op];
  if (op->eig) {
    SOLVER(cusolverDnXsyevd_bufferSize(ctx->dn, ctx->dn_params,
                                       job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR,
                                       CUBLAS_FILL_MODE_LOWER, n, t, any, n,
                                       mg_cuda_real_type(job->dtype), any, t, &d1, &h1));
  } else {
    SOLVER(cusolverDnXpotrf_bufferSize(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, n, t, any, n,
                                       t, &d1, &h1));
  }
  p->dwork_bytes = d1;
  p->hwork_bytes = h1;
  int64_t at = 0;
  p->g = at;
  if (job->nparties > 1) at += gpu_round_up(n * n * es);
  p->x = at;
  if (op->x) at += gpu_round_up(n * n * es);
  p->w = at;
  if (op->eig) at += gpu_round_up(n * (int64_t)real_size(job->dtype));
  p->diag = at;
  if (!op->eig) at += gpu_round_up(n * es);
  p->info = at;
  at += 256;
  p->dwork = at;
  at += gpu_round_up((int64_t)d1 > 0 ? (int64_t)d1 : 1);
  p->total = at;
  return 0;
fail:
  return -1;
}

static int dn_solve_workspace(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err) {
  dn_plan p;
  if (plan(job, ctx, &p, err)) return -1;
  bytes[0] = p.total;
  for (int r = 1; r < job->nparties; r++) bytes[r] = 0;
  return 0;
}

/* Queues the read of the Cholesky factor's diagonal (G's, stride n + 1)
 * into diag (n elements, host) on stream 0: one strided cuBLAS copy into
 * D and one contiguous read, in place of a 2D copy of n single elements.
 * Complete after the stream's next sync. */
static int queue_diag(const jmg_job* job, mg_context* ctx, const dn_frame* f, char* diag,
                      char* err) {
  char* dev_diag = f->base + f->p.diag;
  int s = gpu_copy(ctx->blas, job->dtype, (int)f->n, f->g, (int)f->n + 1, dev_diag, 1);
  if (s != 0) {
    snprintf(err, JMG_ERRLEN, "cuBLAS copy of the factor's diagonal failed: status %d", s);
    return -1;
  }
  CU(cudaMemcpyAsync(diag, dev_diag, (size_t)f->n * f->es, cudaMemcpyDeviceToHost, ctx->stream[0]));
  return 0;
fail:
  return -1;
}

/* log det = 2 sum log |L_ii| from the diagonal read by queue_diag. */
static double logdet_of(const jmg_job* job, const char* diag, int64_t n) {
  size_t es = jmg_dtype_size(job->dtype);
  int single = jmg_dtype_real_size(job->dtype) == 4;
  double sum = 0;
  for (int64_t i = 0; i < n; i++) {
    const void* d = diag + (size_t)i * es;
    sum += log(fabs(single ? (double)*(const float*)d : *(const double*)d));
  }
  return 2 * sum;
}

static char* diag_buffer(const dn_frame* f, char* err) {
  char* diag = malloc((size_t)f->n * f->es + 1);
  if (!diag) snprintf(err, JMG_ERRLEN, "out of host memory");
  return diag;
}

/* log det from the factor in G (its diagonal read and waited for). */
static int dn_logdet(const jmg_job* job, mg_context* ctx, const dn_frame* f, double* logdet,
                     char* err) {
  char* diag = diag_buffer(f, err);
  if (!diag) return -1;
  if (queue_diag(job, ctx, f, diag, err)) goto fail;
  CU(cudaStreamSynchronize(ctx->stream[0]));
  *logdet = logdet_of(job, diag, f->n);
  free(diag);
  return 0;
fail:
  free(diag);
  return -1;
}

/* A's rows at the head of shard r (engine.h) <-> columns [r l, r l + l)
 * of g, cut at n: only A's own rows travel, never the shards' padding. */
static int move_shards(const jmg_job* job, mg_context* ctx, char* g, int to_g, char* err) {
  size_t col = (size_t)job->n * jmg_dtype_size(job->dtype);
  int64_t l = jmg_job_lrows(job);
  for (int r = 0; r < job->nparties && r * l < job->n; r++) {
    size_t bytes = (size_t)(job->n - r * l < l ? job->n - r * l : l) * col;
    char* mine = (char*)job->parties[r].a;
    char* there = g + (size_t)(r * l) * col;
    if (mine == there) continue; /* one party: G is its shard */
    if (to_g)
      CU(cudaMemcpyPeerAsync(there, ctx->dev[0], mine, ctx->dev[r], bytes, ctx->stream[r]));
    else
      CU(cudaMemcpyPeerAsync(mine, ctx->dev[r], there, ctx->dev[0], bytes, ctx->stream[r]));
  }
  return gpu_sync_streams(ctx, err);
fail:
  return -1;
}

/* ---- the frame: plan, gather G, run the op's step, wait, free ---- */

static int begin(jmg_job* job, mg_context* ctx, dn_frame* f, char* err) {
  memset(f, 0, sizeof *f);
  if (plan(job, ctx, &f->p, err)) return -1;
  f->n = job->n;
  f->es = jmg_dtype_size(job->dtype);
  f->t = mg_cuda_type(job->dtype);
  f->base = job->parties[0].work;
  f->g = job->nparties == 1 ? (char*)job->parties[0].a : f->base + f->p.g;
  f->x = f->base + f->p.x;
  f->w = f->base + f->p.w;
  f->d_info = (int*)(void*)(f->base + f->p.info);
  f->hwork = f->p.hwork_bytes ? malloc(f->p.hwork_bytes) : NULL;
  if (f->p.hwork_bytes && !f->hwork) {
    snprintf(err, JMG_ERRLEN, "out of host memory for cuSOLVER's host workspace");
    return -1;
  }
  if (move_shards(job, ctx, f->g, 1, err)) return -1;
  CU(cudaSetDevice(ctx->dev[0]));
  return 0;
fail:
  return -1;
}

static int dn_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_frame f;
  int rc = begin(job, ctx, &f, err);
  if (rc == 0) rc = dn_ops[job->op].step(job, ctx, &f, res, err);
  char ignored[JMG_ERRLEN]; /* keep the first error, but let issued work finish */
  if (gpu_sync_streams(ctx, rc ? ignored : err)) rc = -1;
  free(f.hwork);
  return rc;
}

/* ---- the pieces of the steps ---- */

/* cuSOLVER's info of the last call, on the host. */
static int info_of(mg_context* ctx, dn_frame* f, int* info, char* err) {
  CU(cudaMemcpyAsync(info, f->d_info, sizeof *info, cudaMemcpyDeviceToHost, ctx->stream[0]));
  CU(cudaStreamSynchronize(ctx->stream[0]));
  return 0;
fail:
  return -1;
}

/* Queues G = its Cholesky factor L (lower), potrf's info at d_info. */
static int queue_factor(mg_context* ctx, dn_frame* f, char* err) {
  SOLVER(cusolverDnXpotrf(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, f->n, f->t, f->g, f->n,
                          f->t, f->base + f->p.dwork, f->p.dwork_bytes, f->hwork, f->p.hwork_bytes,
                          f->d_info));
  return 0;
fail:
  return -1;
}

/* G = its Cholesky factor L (lower); *info as potrf's. */
static int factor(mg_context* ctx, dn_frame* f, int* info, char* err) {
  return queue_factor(ctx, f, err) || info_of(ctx, f, info, err) ? -1 : 0;
}

/* Queues rhs (n x nrhs on rank 0) = G^-1 rhs, G a Cholesky factor;
 * potrs's info (argument errors only) at d_info. */
static int queue_solve(mg_context* ctx, dn_frame* f, void* rhs, int64_t nrhs, int* d_info,
                       char* err) {
  SOLVER(cusolverDnXpotrs(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, f->n, nrhs, f->t, f->g,
                          f->n, f->t, rhs, f->n, d_info));
  return 0;
fail:
  return -1;
}

/* rhs = G^-1 rhs, waited for. */
static int solve(mg_context* ctx, dn_frame* f, void* rhs, int64_t nrhs, char* err) {
  if (queue_solve(ctx, f, rhs, nrhs, f->d_info, err)) return -1;
  CU(cudaStreamSynchronize(ctx->stream[0]));
  return 0;
fail:
  return -1;
}

/* The inverse from the factor in G, into the shards: A X = I gives both
 * triangles, where potri would give one and need a mirror. */
static int inverse_out(jmg_job* job, mg_context* ctx, dn_frame* f, char* err) {
  if (gpu_identity_cols(f->x, ctx->dev[0], job->dtype, f->n, 0, f->n, ctx->stream[0], err) ||
      solve(ctx, f, f->x, f->n, err))
    return -1;
  return move_shards(job, ctx, f->x, 0, err);
}

/* Rank 0's b (n x nrhs) to every party's b. */
static int b_out(jmg_job* job, mg_context* ctx, char* err) {
  void* outs[JMG_MAX_DEVICES];
  for (int r = 0; r < job->nparties; r++) outs[r] = job->parties[r].b;
  return gpu_broadcast(ctx, outs, job->parties[0].b,
                       (size_t)job->n * (size_t)job->nrhs * jmg_dtype_size(job->dtype), err);
}

/* A failed potri or syevd leaves NaN in every shard of A. */
static int spoil(jmg_job* job, mg_context* ctx, char* err) {
  size_t shard = (size_t)job->n * (size_t)job->nloc * jmg_dtype_size(job->dtype);
  for (int r = 0; r < job->nparties; r++)
    if (gpu_fill_nan(job->parties[r].a, ctx->dev[r], shard, ctx->stream[r], err)) return -1;
  return 0;
}

/* ---- the steps ---- */

/* potrf, potrs and the reads of potrf's info and the factor's diagonal
 * are queued together and waited for once (each wait leaves the GPU idle
 * while the host decides): a solution from a failed factor is overwritten
 * with NaN after the wait. */
static int potrs_step(jmg_job* job, mg_context* ctx, dn_frame* f, jmg_result* res, char* err) {
  int info = 0;
  void* b0 = job->parties[0].b;
  char* diag = diag_buffer(f, err);
  if (!diag) return -1;
  res->scalar[0] = NAN;
  /* potrs's info goes where potrf's is not */
  if (queue_factor(ctx, f, err) || queue_solve(ctx, f, b0, job->nrhs, f->d_info + 1, err) ||
      queue_diag(job, ctx, f, diag, err) || info_of(ctx, f, &info, err))
    goto fail;
  if (info != 0 && gpu_fill_nan(b0, ctx->dev[0], (size_t)f->n * (size_t)job->nrhs * f->es,
                                ctx->stream[0], err))
    goto fail;
  if (gpu_sync_streams(ctx, err) || b_out(job, ctx, err)) goto fail;
  if (info == 0) res->scalar[0] = logdet_of(job, diag, f->n);
  res->info = info;
  free(diag);
  return 0;
fail:
  free(diag);
  return -1;
}

static int potri_step(jmg_job* job, mg_context* ctx, dn_frame* f, jmg_result* res, char* err) {
  int info = 0;
  if (factor(ctx, f, &info, err)) return -1;
  if (info == 0 ? inverse_out(job, ctx, f, err) : spoil(job, ctx, err)) return -1;
  res->info = info;
  return 0;
}

static int syevd_step(jmg_job* job, mg_context* ctx, dn_frame* f, jmg_result* res, char* err) {
  int info = 0;
  size_t wbytes = (size_t)f->n * real_size(job->dtype);
  void* outs[JMG_MAX_DEVICES];
  SOLVER(cusolverDnXsyevd(ctx->dn, ctx->dn_params,
                          job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR,
                          CUBLAS_FILL_MODE_LOWER, f->n, f->t, f->g, f->n,
                          mg_cuda_real_type(job->dtype), f->w, f->t, f->base + f->p.dwork,
                          f->p.dwork_bytes, f->hwork, f->p.hwork_bytes, f->d_info));
  if (info_of(ctx, f, &info, err)) return -1;
  if (info != 0 && (gpu_fill_nan(f->w, ctx->dev[0], wbytes, ctx->stream[0], err) ||
                    spoil(job, ctx, err)))
    return -1;
  CU(cudaStreamSynchronize(ctx->stream[0]));
  for (int r = 0; r < job->nparties; r++) outs[r] = job->parties[r].w;
  if (gpu_broadcast(ctx, outs, f->w, wbytes, err)) return -1;
  if (info == 0 && job->jobz && move_shards(job, ctx, f->g, 0, err)) return -1;
  res->info = info;
  return 0;
fail:
  return -1;
}

/* ---- factor reuse: the factor of G goes back into A's shards (the
 * caller's layout, G's columns), where the solves and the inverse gather
 * it again: an n x n copy instead of a factorization. ---- */

static int chol_factor_step(jmg_job* job, mg_context* ctx, dn_frame* f, jmg_result* res,
                            char* err) {
  int info = 0;
  res->scalar[0] = NAN;
  if (factor(ctx, f, &info, err)) return -1;
  if (info == 0 && dn_logdet(job, ctx, f, &res->scalar[0], err)) return -1;
  /* A failed factor is NaN: every solve and inverse from it is NaN too. */
  if (info != 0 && gpu_fill_nan(f->g, ctx->dev[0], (size_t)f->n * (size_t)f->n * f->es,
                                ctx->stream[0], err))
    return -1;
  CU(cudaStreamSynchronize(ctx->stream[0]));
  if (move_shards(job, ctx, f->g, 0, err)) return -1;
  res->info = info;
  return 0;
fail:
  return -1;
}

static int chol_solve_step(jmg_job* job, mg_context* ctx, dn_frame* f, jmg_result* res,
                           char* err) {
  int info = 0;
  if (solve(ctx, f, job->parties[0].b, job->nrhs, err) || info_of(ctx, f, &info, err) ||
      b_out(job, ctx, err))
    return -1;
  res->info = info;
  return 0;
}

static int chol_inverse_step(jmg_job* job, mg_context* ctx, dn_frame* f, jmg_result* res,
                             char* err) {
  int info = 0;
  if (inverse_out(job, ctx, f, err) || info_of(ctx, f, &info, err)) return -1;
  res->info = info;
  return 0;
}

static const dn_op dn_ops[JMG_NOPS] = {
    [JMG_POTRS] = {potrs_step, 0, 0},
    [JMG_POTRI] = {potri_step, 0, 1},
    [JMG_SYEVD] = {syevd_step, 1, 0},
    [JMG_CHOL_FACTOR] = {chol_factor_step, 0, 0},
    [JMG_CHOL_SOLVE] = {chol_solve_step, 0, 0},
    [JMG_CHOL_INVERSE] = {chol_inverse_step, 0, 1},
};

/* The ops of dn_ops share the frame above; the general ops are in
 * dn_general.c. */
const gpu_solver dn_solvers[JMG_NOPS] = {
    [JMG_POTRS] = {dn_solve_workspace, dn_run},
    [JMG_POTRI] = {dn_solve_workspace, dn_run},
    [JMG_SYEVD] = {dn_solve_workspace, dn_run},
    [JMG_LU_SOLVE] = {dn_general_workspace, dn_lu_run},
    [JMG_LSTSQ] = {dn_general_workspace, dn_lstsq_run},
    [JMG_QR] = {dn_general_workspace, dn_qr_run},
    [JMG_GESVD] = {dn_general_workspace, dn_gesvd_run},
    [JMG_POLAR] = {dn_general_workspace, dn_polar_run},
    [JMG_CHOL_FACTOR] = {dn_solve_workspace, dn_run},
    [JMG_CHOL_SOLVE] = {dn_solve_workspace, dn_run},
    [JMG_CHOL_INVERSE] = {dn_solve_workspace, dn_run},
    [JMG_SYGVD] = {dn_general_workspace, dn_sygvd_run},
};
