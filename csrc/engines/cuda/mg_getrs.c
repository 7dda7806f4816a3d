/* mg_getrs.c - lu_solve on every GPU of the group: cuSolverMg getrf and
 * getrs. The Python layer hands over A^T's row shards, which read
 * column-major are A's own columns (cuSolverMg's getrs has no transpose),
 * so the leader moves them into the block-cyclic layout in place (as for
 * potri), factors, and solves for b on rank 0 in panels of at most
 * MG_LU_RHS columns (cuSolverMg's potrs is wrong beyond 2048 right-hand
 * sides on several GPUs; getrs is treated alike until measured).
 *
 * Workspace per device, in order: the pivots of its cyclic columns (int),
 * then cuSolverMg's workspace; the head doubles as the staging unit of
 * the layout move, which ends before getrf writes either. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engines/cuda/gpu_util.h"
#include "engines/cuda/solvers.h"
#include "layout/layout.h"
#include "util/clock.h"
#include "util/trace.h"

#define MG_LU_RHS 2048
#define MG_LU_MAX_TILE 512 /* cuSolverMg's getrf/getrs limit */

static int64_t panel(const jmg_job* job) { return job->nrhs < MG_LU_RHS ? job->nrhs : MG_LU_RHS; }

/* A panel of B one tile wide or more lives on rank 0 alone. */
static int64_t b_block(const jmg_job* job, int64_t width) {
  return width > job->tile ? width : job->tile;
}

static int64_t ipiv_bytes(const jmg_job* job, int r) {
  jmg_layout l = {job->n, job->nloc, job->tile, job->nloc, job->nparties};
  return gpu_round_up(jmg_layout_cyclic_count(&l, r) * (int64_t)sizeof(int));
}

typedef struct lu_ptrs {
  void* a[JMG_MAX_DEVICES];
  void* b[JMG_MAX_DEVICES];
  int* ipiv[JMG_MAX_DEVICES];
  void* work[JMG_MAX_DEVICES];
} lu_ptrs;

static void pointers(const jmg_job* job, lu_ptrs* p) {
  for (int r = 0; r < job->nparties; r++) {
    p->a[r] = job->parties[r].a;
    p->b[r] = job->parties[r].b;
    p->ipiv[r] = (int*)job->parties[r].work;
    p->work[r] = (char*)job->parties[r].work + ipiv_bytes(job, r);
  }
}

/* Elements of cuSolverMg workspace per device (the larger of the two
 * queries), kept per problem in the context. */
static int lu_lwork(const jmg_job* job, mg_context* ctx, lu_ptrs* p, int64_t* lwork, char* err) {
  int64_t key[6] = {job->op, job->dtype, job->n, job->tile, panel(job), 0};
  if (mg_context_lwork_get(ctx, key, lwork)) return 0;
  cudaDataType t = mg_cuda_type(job->dtype);
  int n = (int)job->n, w = (int)panel(job);
  int64_t l1 = 0, l2 = 0;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, t, err);
  cudaLibMgMatrixDesc_t db = da ? mg_context_desc(ctx, job->n, w, b_block(job, w), t, err) : NULL;
  if (!db) return -1;
  /* The queries read no data. */
  SOLVER(cusolverMgGetrf_bufferSize(ctx->handle, n, n, p->a, 1, 1, da, p->ipiv, t, &l1));
  SOLVER(cusolverMgGetrs_bufferSize(ctx->handle, CUBLAS_OP_N, n, w, p->a, 1, 1, da, p->ipiv, p->b,
                                    1, 1, db, t, &l2));
  *lwork = l1 > l2 ? l1 : l2;
  mg_context_lwork_put(ctx, key, *lwork);
  return 0;
fail:
  return -1;
}

int mg_getrs_workspace(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err) {
  if (job->n > 2147483647 || job->nrhs > 2147483647) {
    snprintf(err, JMG_ERRLEN, "n = %lld exceeds cuSolverMg's int", (long long)job->n);
    return -1;
  }
  if (job->tile > MG_LU_MAX_TILE) {
    snprintf(err, JMG_ERRLEN, "cuSolverMg getrf/getrs take tiles of at most %d columns, got %lld",
             MG_LU_MAX_TILE, (long long)job->tile);
    return -1;
  }
  if (job->n != job->mpad) { /* the Python layer pads its shards inside (exact for LU) */
    snprintf(err, JMG_ERRLEN, "cuSolverMg getrf/getrs take A as whole shards (n = %lld, %lld "
             "shard rows)", (long long)job->n, (long long)job->nloc);
    return -1;
  }
  lu_ptrs p;
  memset(&p, 0, sizeof p);
  for (int r = 0; r < job->nparties; r++) {
    p.a[r] = job->parties[r].a;
    p.b[r] = job->parties[r].b;
    /* No workspace yet: any device pointer stands in, the query reads none. */
    p.ipiv[r] = (int*)job->parties[r].a;
    p.work[r] = job->parties[r].a;
  }
  int64_t lwork = 0;
  if (lu_lwork(job, ctx, &p, &lwork, err)) return -1;
  jmg_layout l = {job->n, job->nloc, job->tile, job->nloc, job->nparties};
  int64_t stage = jmg_layout_unit(&l) * job->n * (int64_t)jmg_dtype_size(job->dtype);
  for (int r = 0; r < job->nparties; r++) {
    int64_t need = ipiv_bytes(job, r) + lwork * (int64_t)jmg_dtype_size(job->dtype);
    bytes[r] = (need > stage ? need : stage) + 256;
  }
  return 0;
}

/* getrf with LAPACK's info, however cuSolverMg reports a zero pivot. */
static int getrf(const jmg_job* job, mg_context* ctx, lu_ptrs* p, cudaLibMgMatrixDesc_t da,
                 int64_t lwork, int32_t* info, char* err) {
  int h_info = 0;
  cusolverStatus_t s = cusolverMgGetrf(ctx->handle, (int)job->n, (int)job->n, p->a, 1, 1, da,
                                       p->ipiv, mg_cuda_type(job->dtype), p->work, lwork, &h_info);
  if (gpu_sync_devices(ctx, err)) return -1;
  if (s == CUSOLVER_STATUS_SUCCESS || h_info > 0) {
    *info = h_info;
    return 0;
  }
  snprintf(err, JMG_ERRLEN, "cusolverMgGetrf failed: %s", mg_status_name(s));
  return -1;
}

int mg_getrs_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  lu_ptrs p;
  pointers(job, &p);
  int64_t lwork = 0;
  cudaDataType t = mg_cuda_type(job->dtype);
  size_t es = jmg_dtype_size(job->dtype);
  size_t xbytes = (size_t)job->n * (size_t)job->nrhs * es;
  if (lu_lwork(job, ctx, &p, &lwork, err)) return -1;
  double t0 = jmg_clock_now();
  if (mg_move_layout(job, ctx, 1, err)) return -1;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, t, err);
  if (!da) return -1;
  double t1 = jmg_clock_now();
  int32_t info = 0;
  if (getrf(job, ctx, &p, da, lwork, &info, err)) return -1;
  double t2 = jmg_clock_now();
  int64_t pw = panel(job);
  for (int64_t c0 = 0; info == 0 && c0 < job->nrhs; c0 += pw) {
    int64_t w = job->nrhs - c0 < pw ? job->nrhs - c0 : pw;
    void* b[JMG_MAX_DEVICES];
    memcpy(b, p.b, sizeof b);
    b[0] = (char*)p.b[0] + (size_t)c0 * (size_t)job->n * es;
    int h_info = 0;
    cudaLibMgMatrixDesc_t db = mg_context_desc(ctx, job->n, w, b_block(job, w), t, err);
    if (!db) return -1;
    SOLVER(cusolverMgGetrs(ctx->handle, CUBLAS_OP_N, (int)job->n, (int)w, p.a, 1, 1, da, p.ipiv,
                           b, 1, 1, db, t, p.work, lwork, &h_info));
    if (gpu_sync_devices(ctx, err)) return -1;
    if (h_info < 0) {
      snprintf(err, JMG_ERRLEN, "cusolverMgGetrs: argument %d is wrong", -h_info);
      return -1;
    }
  }
  if (info != 0 && gpu_fill_nan(p.b[0], ctx->dev[0], xbytes, ctx->stream[0], err)) return -1;
  CU(cudaStreamSynchronize(ctx->stream[0]));
  res->info = info;
  int rc = gpu_broadcast(ctx, p.b, p.b[0], xbytes, err);
  jmg_trace(2, "lu_solve engine: layout in %.2f ms, getrf %.2f ms, getrs and out %.2f ms",
            1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (jmg_clock_now() - t2));
  return rc;
fail:
  return -1;
}
