/* mg_engine.c - the GPU engine: jaxmg ops on cuSolverMg, one leader thread
 * driving every GPU of the group.
 *
 * Per call: every device's thread syncs its XLA stream (inputs complete),
 * brings workspace from its own XLA allocator and waits; the leader moves
 * the shards into cuSolverMg's block-cyclic layout in place with peer
 * copies (independent chains run concurrently, one stream per device),
 * calls cuSolverMg (synchronous), moves results back, broadcasts the small
 * outputs and syncs its streams before anyone returns to XLA.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/cuda/cuda_engine.h"
#include "engines/cuda/mg_context.h"
#include "ffi/seam.h"
#include "layout/layout.h"

#define CU(call)                                                                     \
  do {                                                                               \
    cudaError_t e_ = (call);                                                         \
    if (e_ != cudaSuccess) {                                                         \
      snprintf(err, JMG_ERRLEN, "%s: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, \
               __LINE__);                                                            \
      goto fail;                                                                     \
    }                                                                                \
  } while (0)

#define MG(call)                                                                       \
  do {                                                                                 \
    cusolverStatus_t s_ = (call);                                                      \
    if (s_ != CUSOLVER_STATUS_SUCCESS) {                                               \
      snprintf(err, JMG_ERRLEN, "%s failed: %s", #call, mg_status_name(s_));           \
      goto fail;                                                                       \
    }                                                                                  \
  } while (0)

/* cuSolverMg's syevd accepts tiles of at most this many columns. */
#define MG_SYEVD_MAX_TILE 1024

static mg_context* job_context(const jmg_job* job, char* err) {
  int32_t dev[JMG_MAX_DEVICES];
  for (int r = 0; r < job->nparties; r++) dev[r] = job->parties[r].ordinal;
  return mg_context_get(dev, job->nparties, err);
}

/* ---- the layout move: chains on per-device streams ---- */

typedef struct gpu_copy {
  const jmg_job* job;
  mg_context* ctx;
  size_t col_bytes;
  int owner;     /* the device whose stream and staging unit this chain uses */
  int failed;
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

static int sync_streams(mg_context* ctx, char* err) {
  for (int r = 0; r < ctx->ndev; r++) {
    cudaError_t e = cudaStreamSynchronize(ctx->stream[r]);
    if (e != cudaSuccess) {
      snprintf(err, JMG_ERRLEN, "stream sync on device %d: %s", ctx->dev[r], cudaGetErrorString(e));
      return -1;
    }
  }
  return 0;
}

/* cuSolverMg returns when its host-side driver is done, but kernels it left
 * on its own streams of other devices may still run; nothing of ours may
 * touch A, B or the workspace before every device is idle. */
static int sync_devices(mg_context* ctx, char* err) {
  for (int r = 0; r < ctx->ndev; r++) {
    cudaError_t e = cudaSetDevice(ctx->dev[r]);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      snprintf(err, JMG_ERRLEN, "device sync on %d: %s", ctx->dev[r], cudaGetErrorString(e));
      return -1;
    }
  }
  return 0;
}

static int move_layout(const jmg_job* job, mg_context* ctx, int to_cyclic, char* err) {
  jmg_layout l = {job->n, job->nloc, job->tile, job->nloc, job->nparties};
  jmg_plan plan;
  if (jmg_plan_build(&l, to_cyclic, &plan)) {
    snprintf(err, JMG_ERRLEN, "layout plan failed for n=%lld nloc=%lld tile=%lld",
             (long long)job->n, (long long)job->nloc, (long long)job->tile);
    return -1;
  }
  gpu_copy c = {job, ctx, (size_t)job->n * jmg_dtype_size(job->dtype), 0, 0, err};
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
  return sync_streams(ctx, err);
}

/* ---- workspace ---- */

static int64_t staging_bytes(const jmg_job* job) {
  jmg_layout l = {job->n, job->nloc, job->tile, job->nloc, job->nparties};
  return jmg_layout_unit(&l) * job->n * (int64_t)jmg_dtype_size(job->dtype);
}

static void gather_ptrs(const jmg_job* job, void** a, void** b, void** work) {
  for (int r = 0; r < job->nparties; r++) {
    if (a) a[r] = job->parties[r].a;
    if (b) b[r] = job->parties[r].b;
    if (work) work[r] = job->parties[r].work;
  }
}

static int64_t b_block(const jmg_job* job) { return job->nrhs > job->tile ? job->nrhs : job->tile; }

/* potri solves A X = I: X lives at the head of the workspace, one shard
 * (n x nloc) per device, in A's block-cyclic layout; the solver's own
 * workspace follows it. */
static int64_t inverse_bytes(const jmg_job* job) {
  if (job->op != JMG_POTRI) return 0;
  int64_t b = job->n * job->nloc * (int64_t)jmg_dtype_size(job->dtype);
  return (b + 255) / 256 * 256;
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
  if (job->op == JMG_SYEVD) {
    void* w = NULL; /* not read by the query */
    MG(cusolverMgSyevd_bufferSize(ctx->handle, job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR,
                                  CUBLAS_FILL_MODE_LOWER, n, a, 1, 1, da, w,
                                  mg_cuda_real_type(job->dtype), t, &l1));
  } else {
    MG(cusolverMgPotrf_bufferSize(ctx->handle, CUBLAS_FILL_MODE_LOWER, n, a, 1, 1, da, t, &l1));
    if (job->op == JMG_POTRS) {
      cudaLibMgMatrixDesc_t db = mg_context_desc(ctx, job->n, job->nrhs, b_block(job), t, err);
      if (!db) return -1;
      MG(cusolverMgPotrs_bufferSize(ctx->handle, CUBLAS_FILL_MODE_LOWER, n, (int)job->nrhs, a, 1, 1,
                                    da, b, 1, 1, db, t, &l2));
    } else {
      /* The inverse is found by potrs against the identity (see run_potri). */
      void* x[JMG_MAX_DEVICES];
      gather_ptrs(job, NULL, NULL, x);
      MG(cusolverMgPotrs_bufferSize(ctx->handle, CUBLAS_FILL_MODE_LOWER, n, n, a, 1, 1, da, x, 1, 1,
                                    da, t, &l2));
    }
  }
  *lwork = l1 > l2 ? l1 : l2;
  mg_context_lwork_put(ctx, key, *lwork);
  return 0;
fail:
  return -1;
}

static int mg_workspace(const jmg_job* job, int64_t* bytes, char* err) {
  if (job->n > 2147483647 || job->nrhs > 2147483647) {
    snprintf(err, JMG_ERRLEN, "n = %lld exceeds cuSolverMg's int", (long long)job->n);
    return -1;
  }
  if (job->op == JMG_SYEVD && job->tile > MG_SYEVD_MAX_TILE) {
    snprintf(err, JMG_ERRLEN, "cuSolverMg syevd takes tiles of at most %d columns, got %lld",
             MG_SYEVD_MAX_TILE, (long long)job->tile);
    return -1;
  }
  mg_context* ctx = job_context(job, err);
  if (!ctx) return -1;
  int64_t lwork = 0;
  pthread_mutex_lock(&ctx->lock);
  int rc = solver_lwork(job, ctx, &lwork, err);
  pthread_mutex_unlock(&ctx->lock);
  if (rc) return -1;
  int64_t solver = inverse_bytes(job) + lwork * (int64_t)jmg_dtype_size(job->dtype);
  int64_t stage = staging_bytes(job);
  *bytes = (solver > stage ? solver : stage) + 256;
  return 0;
}

/* ---- the ops ---- */

static int fill_nan(void* p, int dev, size_t bytes, cudaStream_t s, char* err) {
  /* All-ones bits are a NaN in every float format we handle. */
  CU(cudaSetDevice(dev));
  CU(cudaMemsetAsync(p, 0xFF, bytes, s));
  return 0;
fail:
  return -1;
}

/* cuSolverMg reports a matrix that is not positive definite as
 * CUSOLVER_STATUS_INTERNAL_ERROR, without LAPACK's info. The factor still
 * tells: Cholesky stops at the first pivot that is not positive and leaves
 * it on the diagonal, after the positive pivots of the minors before it.
 * So the failing minor is the first diagonal entry that is not > 0. The
 * diagonal is read tile by tile (stride n + 1), only on this failure path. */
static int failing_minor(const jmg_job* job, mg_context* ctx, void** a, int32_t* info, char* err) {
  size_t es = jmg_dtype_size(job->dtype);
  int64_t n = job->n, T = job->tile, P = job->nparties;
  char* diag = malloc((size_t)n * es);
  if (!diag) {
    snprintf(err, JMG_ERRLEN, "out of host memory");
    return -1;
  }
  for (int64_t k = 0; k * T < n; k++) {
    int r = (int)(k % P);
    int64_t rows = n - k * T < T ? n - k * T : T;
    const char* src = (const char*)a[r] + ((size_t)((k / P) * T) * (size_t)n + (size_t)(k * T)) * es;
    CU(cudaSetDevice(ctx->dev[r]));
    CU(cudaMemcpy2D(diag + (size_t)(k * T) * es, es, src, (size_t)(n + 1) * es, es, (size_t)rows,
                    cudaMemcpyDeviceToHost));
  }
  *info = 0;
  for (int64_t i = 0; i < n && *info == 0; i++) {
    /* The real part leads every element type we handle. */
    double d = (job->dtype == JMG_F32 || job->dtype == JMG_C64) ? (double)((float*)(void*)(diag + i * es))[0]
                                                                 : ((double*)(void*)(diag + i * es))[0];
    if (!(d > 0)) *info = (int32_t)(i + 1);
  }
  free(diag);
  if (*info == 0) {
    snprintf(err, JMG_ERRLEN, "cusolverMgPotrf failed (CUSOLVER_STATUS_INTERNAL_ERROR) on a matrix "
                              "whose factor has a positive diagonal");
    return -1;
  }
  return 0;
fail:
  free(diag);
  return -1;
}

/* potrf with LAPACK's info, whichever way cuSolverMg reports a failure. */
static int potrf(const jmg_job* job, mg_context* ctx, void** a, cudaLibMgMatrixDesc_t da,
                 void** work, int64_t lwork, int32_t* info, char* err) {
  int h_info = 0;
  cudaDataType t = mg_cuda_type(job->dtype);
  cusolverStatus_t s = cusolverMgPotrf(ctx->handle, CUBLAS_FILL_MODE_LOWER, (int)job->n, a, 1, 1,
                                       da, t, work, lwork, &h_info);
  if (sync_devices(ctx, err)) return -1;
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

static int run_potrs(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                     int32_t* info, char* err) {
  void* b[JMG_MAX_DEVICES];
  gather_ptrs(job, NULL, b, NULL);
  cudaDataType t = mg_cuda_type(job->dtype);
  int n = (int)job->n;
  int32_t h_info = 0;
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, t, err);
  cudaLibMgMatrixDesc_t db = da ? mg_context_desc(ctx, job->n, job->nrhs, b_block(job), t, err) : NULL;
  if (!db) return -1;
  if (potrf(job, ctx, a, da, work, lwork, &h_info, err)) return -1;
  size_t xbytes = (size_t)job->n * (size_t)job->nrhs * jmg_dtype_size(job->dtype);
  if (h_info == 0) {
    /* B is one tile wide, so all of it lives on rank 0's buffer. */
    MG(cusolverMgPotrs(ctx->handle, CUBLAS_FILL_MODE_LOWER, n, (int)job->nrhs, a, 1, 1, da, b, 1, 1,
                       db, t, work, lwork, &h_info));
    if (sync_devices(ctx, err)) return -1;
  } else if (fill_nan(b[0], ctx->dev[0], xbytes, ctx->stream[0], err)) {
    return -1;
  }
  CU(cudaStreamSynchronize(ctx->stream[0]));
  for (int r = 1; r < job->nparties; r++)
    CU(cudaMemcpyPeerAsync(b[r], ctx->dev[r], b[0], ctx->dev[0], xbytes, ctx->stream[r]));
  *info = h_info;
  return sync_streams(ctx, err);
fail:
  return -1;
}

/* Writes the identity into X, held like A in the block-cyclic layout:
 * zeros, then the diagonal of each tile (stride n + 1) from a host row of
 * ones. */
static int set_identity(const jmg_job* job, mg_context* ctx, void** x, char* err) {
  size_t es = jmg_dtype_size(job->dtype);
  int64_t n = job->n, T = job->tile, P = job->nparties;
  char* ones = calloc((size_t)T, es);
  if (!ones) {
    snprintf(err, JMG_ERRLEN, "out of host memory");
    return -1;
  }
  for (int64_t c = 0; c < T; c++) {
    if (job->dtype == JMG_F32 || job->dtype == JMG_C64) ((float*)(void*)(ones + c * es))[0] = 1.0f;
    else ((double*)(void*)(ones + c * es))[0] = 1.0;
  }
  for (int r = 0; r < job->nparties; r++) {
    CU(cudaSetDevice(ctx->dev[r]));
    CU(cudaMemsetAsync(x[r], 0, (size_t)n * (size_t)job->nloc * es, ctx->stream[r]));
  }
  for (int64_t k = 0; k * T < n; k++) {
    int r = (int)(k % P);
    char* dst = (char*)x[r] + ((size_t)((k / P) * T) * (size_t)n + (size_t)(k * T)) * es;
    CU(cudaSetDevice(ctx->dev[r]));
    CU(cudaMemcpy2DAsync(dst, (size_t)(n + 1) * es, ones, es, es, (size_t)T, cudaMemcpyHostToDevice,
                         ctx->stream[r]));
  }
  /* ones must outlive the copies. */
  if (sync_streams(ctx, err)) goto fail;
  free(ones);
  return 0;
fail:
  free(ones);
  return -1;
}

/* The inverse as the solution of A X = I. cuSolverMg's own potri gave a
 * wrong trailing 2048 x 2048 block for every n > 2048 we tried on H200
 * (every tile size, any workspace), so it is not used. This costs more
 * flops (two triangular solves with n right-hand sides instead of trtri +
 * lauum) but yields both triangles at once. */
static int run_potri(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                     int32_t* info, char* err) {
  cudaDataType t = mg_cuda_type(job->dtype);
  int n = (int)job->n;
  int32_t h_info = 0;
  size_t shard = (size_t)job->nloc * (size_t)job->n * jmg_dtype_size(job->dtype);
  void* x[JMG_MAX_DEVICES];
  void* solver_work[JMG_MAX_DEVICES];
  for (int r = 0; r < job->nparties; r++) {
    x[r] = work[r];
    solver_work[r] = (char*)work[r] + inverse_bytes(job);
  }
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, t, err);
  if (!da) return -1;
  if (potrf(job, ctx, a, da, solver_work, lwork, &h_info, err)) return -1;
  if (h_info == 0) {
    if (set_identity(job, ctx, x, err)) return -1;
    MG(cusolverMgPotrs(ctx->handle, CUBLAS_FILL_MODE_LOWER, n, n, a, 1, 1, da, x, 1, 1, da, t,
                       solver_work, lwork, &h_info));
    if (sync_devices(ctx, err)) return -1;
    for (int r = 0; r < job->nparties; r++) {
      CU(cudaSetDevice(ctx->dev[r]));
      CU(cudaMemcpyAsync(a[r], x[r], shard, cudaMemcpyDeviceToDevice, ctx->stream[r]));
    }
    if (sync_streams(ctx, err) || move_layout(job, ctx, 0, err)) return -1;
  } else {
    for (int r = 0; r < job->nparties; r++)
      if (fill_nan(a[r], ctx->dev[r], shard, ctx->stream[r], err)) return -1;
  }
  *info = h_info;
  return sync_streams(ctx, err);
fail:
  return -1;
}

static int run_syevd(jmg_job* job, mg_context* ctx, void** a, void** work, int64_t lwork,
                     int32_t* info, char* err) {
  cudaDataType t = mg_cuda_type(job->dtype);
  int n = (int)job->n, h_info = 0;
  size_t rsize = (job->dtype == JMG_F32 || job->dtype == JMG_C64) ? 4 : 8;
  void* w = malloc((size_t)job->n * rsize);
  if (!w) {
    snprintf(err, JMG_ERRLEN, "out of host memory for %lld eigenvalues", (long long)job->n);
    return -1;
  }
  cudaLibMgMatrixDesc_t da = mg_context_desc(ctx, job->n, job->n, job->tile, t, err);
  if (!da) goto fail;
  MG(cusolverMgSyevd(ctx->handle, job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR,
                     CUBLAS_FILL_MODE_LOWER, n, a, 1, 1, da, w, mg_cuda_real_type(job->dtype), t,
                     work, lwork, &h_info));
  if (sync_devices(ctx, err)) goto fail;
  if (job->jobz && move_layout(job, ctx, 0, err)) goto fail;
  for (int r = 0; r < job->nparties; r++) {
    CU(cudaSetDevice(ctx->dev[r]));
    CU(cudaMemcpyAsync(job->parties[r].w, w, (size_t)job->n * rsize, cudaMemcpyHostToDevice,
                       ctx->stream[r]));
    if (h_info != 0) {
      size_t shard = (size_t)job->nloc * (size_t)job->n * jmg_dtype_size(job->dtype);
      if (fill_nan(job->parties[r].w, ctx->dev[r], (size_t)job->n * rsize, ctx->stream[r], err) ||
          fill_nan(a[r], ctx->dev[r], shard, ctx->stream[r], err))
        goto fail;
    }
  }
  /* w is read by the copies above: wait for them before freeing it. */
  if (sync_streams(ctx, err)) goto fail;
  free(w);
  *info = h_info;
  return 0;
fail:;
  char ignored[JMG_ERRLEN]; /* keep the first error, but let the copies finish */
  sync_streams(ctx, ignored);
  free(w);
  return -1;
}

static int mg_run(jmg_job* job, int32_t* info, char* err) {
  mg_context* ctx = job_context(job, err);
  if (!ctx) return -1;
  int prev = 0;
  cudaGetDevice(&prev);
  void* a[JMG_MAX_DEVICES];
  void* work[JMG_MAX_DEVICES];
  gather_ptrs(job, a, NULL, work);
  int64_t lwork = 0;
  int rc = -1;
  pthread_mutex_lock(&ctx->lock);
  if (solver_lwork(job, ctx, &lwork, err) == 0 && move_layout(job, ctx, 1, err) == 0) {
    switch (job->op) {
      case JMG_POTRS: rc = run_potrs(job, ctx, a, work, lwork, info, err); break;
      case JMG_POTRI: rc = run_potri(job, ctx, a, work, lwork, info, err); break;
      case JMG_SYEVD: rc = run_syevd(job, ctx, a, work, lwork, info, err); break;
    }
  }
  pthread_mutex_unlock(&ctx->lock);
  cudaSetDevice(prev);
  return rc;
}

/* ---- the per-device steps ---- */

static int mg_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                    int32_t where_out[2], char* err) {
  XLA_FFI_Error* e = jmg_ffi_device_ordinal(cf, &me->ordinal);
  if (!e) e = jmg_ffi_stream(cf, &me->stream);
  if (e) {
    jmg_ffi_drop(cf, e);
    snprintf(err, JMG_ERRLEN, "no device ordinal or stream from XLA");
    return -1;
  }
  CU(cudaSetDevice(me->ordinal));
  /* The sync makes this device's inputs complete before the leader reads
   * them on its own streams. */
  CU(cudaMemcpyAsync(where_out, where, 2 * sizeof(int32_t), cudaMemcpyDeviceToHost,
                     (cudaStream_t)me->stream));
  CU(cudaStreamSynchronize((cudaStream_t)me->stream));
  return 0;
fail:
  return -1;
}

static int mg_alloc(const XLA_FFI_CallFrame* cf, jmg_party* me, char* err) {
  XLA_FFI_Error* e = jmg_ffi_alloc(cf, (size_t)me->work_bytes, &me->work);
  if (e) {
    jmg_ffi_drop(cf, e);
    snprintf(err, JMG_ERRLEN, "XLA could not allocate %lld bytes of workspace on device %d",
             (long long)me->work_bytes, me->ordinal);
    me->work = NULL;
    return -1;
  }
  return 0;
}

static void mg_release(const XLA_FFI_CallFrame* cf, jmg_party* me) {
  if (me->work) jmg_ffi_drop(cf, jmg_ffi_free(cf, (size_t)me->work_bytes, me->work));
  me->work = NULL;
}

static int mg_finish(const XLA_FFI_CallFrame* cf, jmg_party* me, int32_t info, char* err) {
  (void)cf;
  CU(cudaSetDevice(me->ordinal));
  CU(cudaMemcpyAsync(me->status, &info, sizeof info, cudaMemcpyHostToDevice,
                     (cudaStream_t)me->stream));
  /* info lives on this stack frame. */
  CU(cudaStreamSynchronize((cudaStream_t)me->stream));
  return 0;
fail:
  return -1;
}

const jmg_engine jmg_cusolvermg_engine = {
    "cusolvermg", mg_enter, mg_workspace, mg_alloc, mg_release, mg_run, mg_finish,
};
