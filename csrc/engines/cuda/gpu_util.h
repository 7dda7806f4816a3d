/* gpu_util.h - what both GPU solver paths (cuSolverMg on all devices,
 * cuSOLVER on one) share: error macros, waits, and small fills. */
#ifndef JAXMG_GPU_UTIL_H
#define JAXMG_GPU_UTIL_H

#include <stdio.h>

#include "engines/cuda/mg_context.h"

/* Both macros leave a message in `err` and jump to the caller's `fail`. */
#define CU(call)                                                                           \
  do {                                                                                     \
    cudaError_t e_ = (call);                                                               \
    if (e_ != cudaSuccess) {                                                               \
      snprintf(err, JMG_ERRLEN, "%s: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, \
               __LINE__);                                                                  \
      goto fail;                                                                           \
    }                                                                                      \
  } while (0)

#define SOLVER(call)                                                             \
  do {                                                                           \
    cusolverStatus_t s_ = (call);                                                \
    if (s_ != CUSOLVER_STATUS_SUCCESS) {                                         \
      snprintf(err, JMG_ERRLEN, "%s failed: %s", #call, mg_status_name(s_));     \
      goto fail;                                                                 \
    }                                                                            \
  } while (0)

/* Waits for our stream on every device of the context. */
int gpu_sync_streams(mg_context* ctx, char* err);

/* Waits for every device of the context to be idle: cuSolverMg returns when
 * its host-side driver is done, but kernels it left on its own streams may
 * still run, and nothing of ours may touch its operands before they end. */
int gpu_sync_devices(mg_context* ctx, char* err);

/* Sets `bytes` at p (on device dev) to NaN: all-ones bits are a NaN in
 * every float format we handle. Ordered on stream s. */
int gpu_fill_nan(void* p, int dev, size_t bytes, cudaStream_t s, char* err);

/* Writes columns [c0, c0 + ncols) of the n x n identity into x (n x ncols,
 * column-major, on device dev), ordered on stream s; returns after the
 * copies have been issued and the host row they read is no longer needed. */
int gpu_identity_cols(void* x, int dev, jmg_dtype t, int64_t n, int64_t c0, int64_t ncols,
                      cudaStream_t s, char* err);

/* Copies `bytes` at src (on the context's first device, complete) to
 * dst[r] on every device r but where dst[r] is src; returns when done. */
int gpu_broadcast(mg_context* ctx, void* const* dst, const void* src, size_t bytes, char* err);

/* 256-byte alignment for the pieces carved out of one workspace. */
static inline int64_t gpu_round_up(int64_t bytes) { return (bytes + 255) / 256 * 256; }

#endif
