/* dn_solve.c - an op on one GPU with cuSOLVER's dense 64-bit API: the
 * shards are gathered onto the group's first device, solved there, and the
 * results scattered back.
 *
 * One GPU beats cuSolverMg on small and mid-sized problems (its per-call
 * overheads and the block-cyclic move cost more than the flops it shares
 * out; bench/README.md has the crossovers), and its inverse is right where
 * cuSolverMg's potri is not. Rank 0's workspace holds, in order:
 *   G      n x n, the gathered matrix (M read as column-major, as the
 *          engine sees it everywhere)
 *   X      potri, chol_inverse: n x n, the identity, then the inverse
 *   W      syevd: n eigenvalues
 *   info   one int
 *   dwork  cuSOLVER's device workspace
 * The other ranks bring none.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engines/cuda/gpu_util.h"
#include "engines/cuda/solvers.h"

typedef struct dn_plan {
  int64_t g, x, w, info, dwork; /* byte offsets into rank 0's workspace */
  size_t dwork_bytes, hwork_bytes;
  int64_t total;
} dn_plan;

static size_t real_size(jmg_dtype t) { return (t == JMG_F32 || t == JMG_C64) ? 4 : 8; }

static int plan(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err) {
  int64_t es = (int64_t)jmg_dtype_size(job->dtype), n = job->n;
  cudaDataType t = mg_cuda_type(job->dtype);
  memset(p, 0, sizeof *p);
  if (mg_context_dn(ctx, err)) return -1;
  size_t d1 = 0, h1 = 0;
  const void* any = job->parties[0].a; /* the queries read no data */
  if (cudaSetDevice(ctx->dev[0]) != cudaSuccess) {
    snprintf(err, JMG_ERRLEN, "cudaSetDevice(%d) failed", ctx->dev[0]);
    return -1;
  }
  if (job->op == JMG_SYEVD) {
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
  at += gpu_round_up(n * n * es);
  p->x = at;
  if (job->op == JMG_POTRI || job->op == JMG_CHOL_INVERSE) at += gpu_round_up(n * n * es);
  p->w = at;
  if (job->op == JMG_SYEVD) at += gpu_round_up(n * (int64_t)real_size(job->dtype));
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

/* log det from the Cholesky factor at g (n x n on the context's first
 * device, current): 2 sum log L_ii, the diagonal read with stride n + 1. */
static int dn_logdet(const jmg_job* job, const char* g, double* logdet, char* err) {
  size_t es = jmg_dtype_size(job->dtype);
  int64_t n = job->n;
  char* diag = malloc((size_t)n * es + 1);
  if (!diag) {
    snprintf(err, JMG_ERRLEN, "out of host memory");
    return -1;
  }
  CU(cudaMemcpy2D(diag, es, g, (size_t)(n + 1) * es, es, (size_t)n, cudaMemcpyDeviceToHost));
  double sum = 0;
  for (int64_t i = 0; i < n; i++) {
    const void* d = diag + (size_t)i * es;
    sum += log(fabs(jmg_dtype_real_size(job->dtype) == 4 ? (double)*(const float*)d : *(const double*)d));
  }
  free(diag);
  *logdet = 2 * sum;
  return 0;
fail:
  free(diag);
  return -1;
}

/* Shard r (n x nloc) <-> columns [r nloc, (r+1) nloc) of g. */
static int move_shards(const jmg_job* job, mg_context* ctx, char* g, int to_g, char* err) {
  size_t shard = (size_t)job->n * (size_t)job->nloc * jmg_dtype_size(job->dtype);
  for (int r = 0; r < job->nparties; r++) {
    char* mine = (char*)job->parties[r].a;
    char* there = g + (size_t)r * shard;
    if (to_g)
      CU(cudaMemcpyPeerAsync(there, ctx->dev[0], mine, ctx->dev[r], shard, ctx->stream[r]));
    else
      CU(cudaMemcpyPeerAsync(mine, ctx->dev[r], there, ctx->dev[0], shard, ctx->stream[r]));
  }
  return gpu_sync_streams(ctx, err);
fail:
  return -1;
}

static int dn_solve_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_plan p;
  if (plan(job, ctx, &p, err)) return -1;
  int np = job->nparties;
  int64_t n = job->n;
  size_t es = jmg_dtype_size(job->dtype);
  cudaDataType t = mg_cuda_type(job->dtype);
  char* base = job->parties[0].work;
  char* g = base + p.g;
  char* x = base + p.x;
  char* w = base + p.w;
  int* d_info = (int*)(void*)(base + p.info);
  void* dwork = base + p.dwork;
  void* hwork = p.hwork_bytes ? malloc(p.hwork_bytes) : NULL;
  void* outs[JMG_MAX_DEVICES];
  int h_info = 0;
  cudaStream_t s0 = ctx->stream[0];
  if (p.hwork_bytes && !hwork) {
    snprintf(err, JMG_ERRLEN, "out of host memory for cuSOLVER's host workspace");
    return -1;
  }
  if (move_shards(job, ctx, g, 1, err)) goto fail;
  CU(cudaSetDevice(ctx->dev[0]));
  if (job->op == JMG_SYEVD) {
    SOLVER(cusolverDnXsyevd(ctx->dn, ctx->dn_params,
                            job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR,
                            CUBLAS_FILL_MODE_LOWER, n, t, g, n, mg_cuda_real_type(job->dtype), w, t,
                            dwork, p.dwork_bytes, hwork, p.hwork_bytes, d_info));
  } else {
    SOLVER(cusolverDnXpotrf(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, n, t, g, n, t, dwork,
                            p.dwork_bytes, hwork, p.hwork_bytes, d_info));
  }
  CU(cudaMemcpyAsync(&h_info, d_info, sizeof h_info, cudaMemcpyDeviceToHost, s0));
  CU(cudaStreamSynchronize(s0));

  int spoil = 0; /* a failed potri or syevd leaves NaN in every shard of A */
  if (job->op == JMG_POTRS) {
    size_t xbytes = (size_t)n * (size_t)job->nrhs * es;
    void* b0 = job->parties[0].b;
    if (h_info == 0) {
      SOLVER(cusolverDnXpotrs(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, n, job->nrhs, t, g, n, t,
                              b0, n, d_info));
    } else if (gpu_fill_nan(b0, ctx->dev[0], xbytes, s0, err)) {
      goto fail;
    }
    CU(cudaStreamSynchronize(s0));
    for (int r = 0; r < np; r++) outs[r] = job->parties[r].b;
    if (gpu_broadcast(ctx, outs, b0, xbytes, err)) goto fail;
    res->scalar[0] = NAN;
    if (h_info == 0 && dn_logdet(job, g, &res->scalar[0], err)) goto fail;
  } else if (job->op == JMG_POTRI) {
    /* A X = I gives both triangles of the inverse, where potri would give
     * one and need a mirror. */
    if (h_info == 0) {
      if (gpu_identity_cols(x, ctx->dev[0], job->dtype, n, 0, n, s0, err)) goto fail;
      SOLVER(cusolverDnXpotrs(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, n, n, t, g, n, t, x, n,
                              d_info));
      CU(cudaStreamSynchronize(s0));
      if (move_shards(job, ctx, x, 0, err)) goto fail;
    } else {
      spoil = 1;
    }
  } else {
    size_t wbytes = (size_t)n * real_size(job->dtype);
    if (h_info != 0 && gpu_fill_nan(w, ctx->dev[0], wbytes, s0, err)) goto fail;
    CU(cudaStreamSynchronize(s0));
    for (int r = 0; r < np; r++) outs[r] = job->parties[r].w;
    if (gpu_broadcast(ctx, outs, w, wbytes, err)) goto fail;
    if (h_info == 0 && job->jobz) {
      if (move_shards(job, ctx, g, 0, err)) goto fail;
    } else if (h_info != 0) {
      spoil = 1;
    }
  }
  size_t shard = (size_t)n * (size_t)job->nloc * es;
  for (int r = 0; spoil && r < np; r++)
    if (gpu_fill_nan(job->parties[r].a, ctx->dev[r], shard, ctx->stream[r], err)) goto fail;
  if (gpu_sync_streams(ctx, err)) goto fail;
  free(hwork);
  res->info = h_info;
  return 0;
fail:;
  char ignored[JMG_ERRLEN]; /* keep the first error, but let issued work finish */
  gpu_sync_streams(ctx, ignored);
  free(hwork);
  return -1;
}

/* ---- factor reuse: the factor of the gathered matrix G goes back into
 * A's shards (the caller's layout, G's columns), where the solves and the
 * inverse gather it again: an n x n copy instead of a factorization. ---- */

static int dn_chol_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_plan p;
  if (plan(job, ctx, &p, err)) return -1;
  int64_t n = job->n;
  size_t es = jmg_dtype_size(job->dtype);
  cudaDataType t = mg_cuda_type(job->dtype);
  char* base = job->parties[0].work;
  char* g = base + p.g;
  char* x = base + p.x;
  int* d_info = (int*)(void*)(base + p.info);
  void* hwork = p.hwork_bytes ? malloc(p.hwork_bytes) : NULL;
  void* outs[JMG_MAX_DEVICES];
  int h_info = 0;
  cudaStream_t s0 = ctx->stream[0];
  if (p.hwork_bytes && !hwork) {
    snprintf(err, JMG_ERRLEN, "out of host memory for cuSOLVER's host workspace");
    return -1;
  }
  res->scalar[0] = NAN;
  if (move_shards(job, ctx, g, 1, err)) goto fail;
  CU(cudaSetDevice(ctx->dev[0]));
  if (job->op == JMG_CHOL_FACTOR) {
    SOLVER(cusolverDnXpotrf(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, n, t, g, n, t,
                            base + p.dwork, p.dwork_bytes, hwork, p.hwork_bytes, d_info));
  } else if (job->op == JMG_CHOL_SOLVE) {
    SOLVER(cusolverDnXpotrs(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, n, job->nrhs, t, g, n,
                            t, job->parties[0].b, n, d_info));
  } else {
    if (gpu_identity_cols(x, ctx->dev[0], job->dtype, n, 0, n, s0, err)) goto fail;
    SOLVER(cusolverDnXpotrs(ctx->dn, ctx->dn_params, CUBLAS_FILL_MODE_LOWER, n, n, t, g, n, t, x, n,
                            d_info));
  }
  CU(cudaMemcpyAsync(&h_info, d_info, sizeof h_info, cudaMemcpyDeviceToHost, s0));
  CU(cudaStreamSynchronize(s0));
  if (job->op == JMG_CHOL_FACTOR) {
    if (h_info == 0 && dn_logdet(job, g, &res->scalar[0], err)) goto fail;
    /* A failed factor is NaN: every solve and inverse from it is NaN too. */
    if (h_info != 0 && gpu_fill_nan(g, ctx->dev[0], (size_t)n * (size_t)n * es, s0, err)) goto fail;
    CU(cudaStreamSynchronize(s0));
    if (move_shards(job, ctx, g, 0, err)) goto fail;
  } else if (job->op == JMG_CHOL_SOLVE) {
    for (int r = 0; r < job->nparties; r++) outs[r] = job->parties[r].b;
    if (gpu_broadcast(ctx, outs, job->parties[0].b, (size_t)n * (size_t)job->nrhs * es, err))
      goto fail;
  } else if (move_shards(job, ctx, x, 0, err)) {
    goto fail;
  }
  free(hwork);
  res->info = h_info;
  return 0;
fail:;
  char ignored[JMG_ERRLEN]; /* keep the first error, but let issued work finish */
  gpu_sync_streams(ctx, ignored);
  free(hwork);
  return -1;
}

/* potrs, potri and syevd share the gather and the Cholesky/eigensolver
 * call above; the general ops are in dn_general.c. */
const gpu_solver dn_solvers[JMG_NOPS] = {
    [JMG_POTRS] = {dn_solve_workspace, dn_solve_run},
    [JMG_POTRI] = {dn_solve_workspace, dn_solve_run},
    [JMG_SYEVD] = {dn_solve_workspace, dn_solve_run},
    [JMG_LU_SOLVE] = {dn_general_workspace, dn_lu_run},
    [JMG_LSTSQ] = {dn_general_workspace, dn_lstsq_run},
    [JMG_QR] = {dn_general_workspace, dn_qr_run},
    [JMG_GESVD] = {dn_general_workspace, dn_gesvd_run},
    [JMG_POLAR] = {dn_general_workspace, dn_polar_run},
    [JMG_CHOL_FACTOR] = {dn_solve_workspace, dn_chol_run},
    [JMG_CHOL_SOLVE] = {dn_solve_workspace, dn_chol_run},
    [JMG_CHOL_INVERSE] = {dn_solve_workspace, dn_chol_run},
};
