/* gpu_party.c - see gpu_party.h. */
#include "engines/cuda/gpu_party.h"

#include <cuda_runtime.h>
#include <stdio.h>

#include "ffi/seam.h"

/* 0, or -1 with the failing call named in err. */
static int cu(cudaError_t e, const char* what, char* err) {
  if (e == cudaSuccess) return 0;
  snprintf(err, JMG_ERRLEN, "%s: %s", what, cudaGetErrorString(e));
  return -1;
}

int gpu_party_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                    int64_t count, int32_t* where_out, char* err) {
  XLA_FFI_Error* e = jmg_ffi_device_ordinal(cf, &me->ordinal);
  if (!e) e = jmg_ffi_stream(cf, &me->stream);
  if (e) {
    jmg_ffi_drop(cf, e);
    snprintf(err, JMG_ERRLEN, "no device ordinal or stream from XLA");
    return -1;
  }
  cudaStream_t s = (cudaStream_t)me->stream;
  /* The sync makes this device's inputs complete before other streams
   * (the leader's, or the library's) read them. */
  if (cu(cudaSetDevice(me->ordinal), "cudaSetDevice", err) ||
      cu(cudaMemcpyAsync(where_out, where, (size_t)count * sizeof(int32_t), cudaMemcpyDeviceToHost, s),
         "cudaMemcpyAsync(where)", err) ||
      cu(cudaStreamSynchronize(s), "cudaStreamSynchronize", err))
    return -1;
  return 0;
}

int gpu_party_copy_in(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, const void* src,
                      int64_t bytes, char* err) {
  (void)cf;
  cudaStream_t s = (cudaStream_t)me->stream;
  if (cu(cudaSetDevice(me->ordinal), "cudaSetDevice", err) ||
      cu(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, s),
         "cudaMemcpyAsync(copy in)", err) ||
      cu(cudaStreamSynchronize(s), "cudaStreamSynchronize", err))
    return -1;
  return 0;
}

int gpu_party_fill_nan(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, int64_t bytes,
                       char* err) {
  (void)cf;
  /* finish's sync completes it. */
  return cu(cudaSetDevice(me->ordinal), "cudaSetDevice", err) ||
                 cu(cudaMemsetAsync(dst, 0xFF, (size_t)bytes, (cudaStream_t)me->stream),
                    "cudaMemsetAsync(NaN)", err)
             ? -1
             : 0;
}

int gpu_party_finish(const XLA_FFI_CallFrame* cf, jmg_party* me, const jmg_result* res,
                     char* err) {
  (void)cf;
  /* The values live on this stack frame until the sync below. */
  int32_t info = res->info;
  float f[JMG_MAX_SCALARS];
  int single_prec = jmg_dtype_real_size((jmg_dtype)me->dtype) == 4;
  cudaStream_t s = (cudaStream_t)me->stream;
  if (cu(cudaSetDevice(me->ordinal), "cudaSetDevice", err) ||
      cu(cudaMemcpyAsync(me->status, &info, sizeof info, cudaMemcpyHostToDevice, s),
         "cudaMemcpyAsync(status)", err))
    return -1;
  for (int k = 0; k < JMG_MAX_SCALARS; k++) {
    if (!me->scalar[k]) continue;
    f[k] = (float)res->scalar[k];
    const void* v = single_prec ? (const void*)&f[k] : (const void*)&res->scalar[k];
    if (cu(cudaMemcpyAsync(me->scalar[k], v, single_prec ? sizeof f[k] : sizeof(double),
                           cudaMemcpyHostToDevice, s), "cudaMemcpyAsync(scalar)", err))
      return -1;
  }
  return cu(cudaStreamSynchronize(s), "cudaStreamSynchronize", err);
}
