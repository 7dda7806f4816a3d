/* gpu_party.c - see gpu_party.h. */
#include "engines/cuda/gpu_party.h"

#include <cuda_runtime.h>
#include <stdio.h>

#include "ffi/seam.h"

#define CU(call)                                                                           \
  do {                                                                                     \
    cudaError_t e_ = (call);                                                               \
    if (e_ != cudaSuccess) {                                                               \
      snprintf(err, JMG_ERRLEN, "%s: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, \
               __LINE__);                                                                  \
      return -1;                                                                           \
    }                                                                                      \
  } while (0)

int gpu_party_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                    int32_t where_out[2], char* err) {
  XLA_FFI_Error* e = jmg_ffi_device_ordinal(cf, &me->ordinal);
  if (!e) e = jmg_ffi_stream(cf, &me->stream);
  if (e) {
    jmg_ffi_drop(cf, e);
    snprintf(err, JMG_ERRLEN, "no device ordinal or stream from XLA");
    return -1;
  }
  CU(cudaSetDevice(me->ordinal));
  /* The sync makes this device's inputs complete before other streams
   * (the leader's, or the library's) read them. */
  CU(cudaMemcpyAsync(where_out, where, 2 * sizeof(int32_t), cudaMemcpyDeviceToHost,
                     (cudaStream_t)me->stream));
  CU(cudaStreamSynchronize((cudaStream_t)me->stream));
  return 0;
}

int gpu_party_copy_in(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, const void* src,
                      int64_t bytes, char* err) {
  (void)cf;
  CU(cudaSetDevice(me->ordinal));
  CU(cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)me->stream));
  CU(cudaStreamSynchronize((cudaStream_t)me->stream));
  return 0;
}

int gpu_party_finish(const XLA_FFI_CallFrame* cf, jmg_party* me, const jmg_result* res,
                     char* err) {
  (void)cf;
  /* The values live on this stack frame until the sync below. */
  int32_t info = res->info;
  float f[JMG_MAX_SCALARS];
  int single_prec = jmg_dtype_real_size((jmg_dtype)me->dtype) == 4;
  CU(cudaSetDevice(me->ordinal));
  cudaStream_t s = (cudaStream_t)me->stream;
  CU(cudaMemcpyAsync(me->status, &info, sizeof info, cudaMemcpyHostToDevice, s));
  for (int k = 0; k < JMG_MAX_SCALARS; k++) {
    if (!me->scalar[k]) continue;
    f[k] = (float)res->scalar[k];
    if (single_prec) CU(cudaMemcpyAsync(me->scalar[k], &f[k], sizeof f[k], cudaMemcpyHostToDevice, s));
    else CU(cudaMemcpyAsync(me->scalar[k], &res->scalar[k], sizeof(double), cudaMemcpyHostToDevice, s));
  }
  CU(cudaStreamSynchronize(s));
  return 0;
}
