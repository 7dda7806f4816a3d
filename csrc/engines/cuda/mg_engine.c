/* mg_engine.c - the GPU engine: jaxmg ops on NVIDIA GPUs, one leader
 * thread driving every GPU of the group.
 *
 * Per call: every device's thread (or process, see gpu_share.c) syncs its
 * XLA stream (inputs complete), brings workspace from its own XLA
 * allocator and waits; the leader runs the op either with cuSolverMg on
 * all devices (mg_solve.c) or with cuSOLVER on the first one
 * (dn_solve.c), as the call's dispatch says, and every device's outputs
 * are complete before anyone returns to XLA.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/cuda/cuda_engine.h"
#include "engines/cuda/gpu_share.h"
#include "engines/cuda/gpu_util.h"
#include "engines/cuda/solvers.h"
#include "ffi/seam.h"

static mg_context* job_context(const jmg_job* job, char* err) {
  int32_t dev[JMG_MAX_DEVICES];
  for (int r = 0; r < job->nparties; r++)
    if (gpu_share_device(job, r, &dev[r], err)) return NULL;
  return mg_context_get(dev, job->nparties, err);
}

static int single(const jmg_job* job) { return job->dispatch == JMG_DISPATCH_SINGLE; }

static int mg_workspace(const jmg_job* job, int64_t* bytes, char* err) {
  mg_context* ctx = job_context(job, err);
  if (!ctx) return -1;
  pthread_mutex_lock(&ctx->lock);
  int rc = single(job) ? dn_solve_workspace(job, ctx, bytes, err)
                       : mg_solve_workspace(job, ctx, bytes, err);
  pthread_mutex_unlock(&ctx->lock);
  return rc;
}

static int mg_run(jmg_job* job, int32_t* info, char* err) {
  mg_context* ctx = job_context(job, err);
  if (!ctx) return -1;
  int prev = 0;
  cudaGetDevice(&prev);
  pthread_mutex_lock(&ctx->lock);
  int rc = single(job) ? dn_solve_run(job, ctx, info, err) : mg_solve_run(job, ctx, info, err);
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
  if (gpu_share_mark(me, err)) return -1;
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
    "cusolvermg", mg_enter,       mg_workspace,    mg_alloc,        mg_release, mg_run, mg_finish,
    gpu_share,    gpu_share_open, gpu_share_close, gpu_share_fetch,
};
