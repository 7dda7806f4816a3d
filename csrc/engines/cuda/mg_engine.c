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
#include "engines/cuda/gpu_party.h"
#include "engines/cuda/gpu_share.h"
#include "engines/cuda/gpu_util.h"
#include "engines/cuda/solvers.h"
#include "ffi/seam.h"
#include "ops/op_table.h"

static mg_context* job_context(const jmg_job* job, char* err) {
  int32_t dev[JMG_MAX_DEVICES];
  for (int r = 0; r < job->nparties; r++)
    if (gpu_share_device(job, r, &dev[r], err)) return NULL;
  return mg_context_get(dev, job->nparties, err);
}

static int single(const jmg_job* job) { return job->dispatch == JMG_DISPATCH_SINGLE; }

/* Per op: cuSolverMg on every device, or cuSOLVER on the first one, as
 * the call's dispatch says (solvers.h). */
static int with_context(const jmg_job* job, char* err, int (*fn)(const jmg_job*, mg_context*,
                                                                   void*, char*), void* arg) {
  mg_context* ctx = job_context(job, err);
  if (!ctx) return -1;
  int prev = 0;
  cudaGetDevice(&prev);
  pthread_mutex_lock(&ctx->lock);
  int rc = fn(job, ctx, arg, err);
  pthread_mutex_unlock(&ctx->lock);
  cudaSetDevice(prev);
  return rc;
}

static int workspace_in(const jmg_job* job, mg_context* ctx, void* bytes, char* err) {
  const gpu_solver* s = single(job) ? &dn_solvers[job->op] : &mg_solvers[job->op];
  if (!s->run) {
    snprintf(err, JMG_ERRLEN, "%s has no %s solver on GPUs; use dispatch=\"%s\"",
             jmg_op_name(job->op), single(job) ? "one-GPU" : "multi-GPU",
             single(job) ? "multi" : "single");
    return -1;
  }
  return s->workspace ? s->workspace(job, ctx, bytes, err) : 0;
}

static int run_in(const jmg_job* job, mg_context* ctx, void* res, char* err) {
  const gpu_solver* s = single(job) ? &dn_solvers[job->op] : &mg_solvers[job->op];
  return s->run((jmg_job*)job, ctx, res, err);
}

static int mg_workspace(const jmg_job* job, int64_t* bytes, char* err) {
  return with_context(job, err, workspace_in, bytes);
}

static int mg_run(jmg_job* job, jmg_result* res, char* err) {
  return with_context(job, err, run_in, res);
}

/* ---- the per-device steps ---- */

/* Reads `where` first: a party that knows its rank can still meet the
 * others and report a later failure (returns 1 then, -1 before). */
static int mg_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                    int64_t count, int32_t* where_out, char* err) {
  if (gpu_party_enter(cf, me, where, count, where_out, err)) return -1;
  if (gpu_share_mark(me, err)) return 1;
  return 0;
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

#define ALL_OPS(X) X(JMG_POTRS) X(JMG_POTRI) X(JMG_SYEVD) X(JMG_LU_SOLVE) X(JMG_LSTSQ) X(JMG_QR) \
  X(JMG_GESVD) X(JMG_POLAR) X(JMG_CHOL_FACTOR) X(JMG_CHOL_SOLVE) X(JMG_CHOL_INVERSE) X(JMG_SYGVD)
#define GPU_OP(op) [op] = {mg_workspace, mg_run},

const jmg_engine jmg_cusolvermg_engine = {
    .name = "cusolvermg",
    .ops = {ALL_OPS(GPU_OP)},
    .enter = mg_enter,
    .copy_in = gpu_party_copy_in,
    .fill_nan = gpu_party_fill_nan,
    .alloc = mg_alloc,
    .release = mg_release,
    .finish = gpu_party_finish,
    .share = gpu_share,
    .open = gpu_share_open,
    .close = gpu_share_close,
    .fetch = gpu_share_fetch,
    .shares_every_buffer = 0,
};
