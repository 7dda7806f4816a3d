/* mp_util.c - dtype mapping and error messages of the cuSOLVERMp engine
 * (the guard prefixes them with the rank). */
#include <stdio.h>

#include "engines/mp/mp_engine.h"

cudaDataType jmg_mp_cuda_type(jmg_dtype t) {
  static const cudaDataType map[] = {CUDA_R_32F, CUDA_R_64F, CUDA_C_32F, CUDA_C_64F};
  return map[t];
}

cudaDataType jmg_mp_real_type(jmg_dtype t) {
  return (t == JMG_F32 || t == JMG_C64) ? CUDA_R_32F : CUDA_R_64F;
}

int jmg_mp_cuda_fail(cudaError_t e, const char* what, char* err) {
  if (e == cudaSuccess) return JMG_MP_OK;
  snprintf(err, JMG_MP_ERRLEN, "%s: %s", what, cudaGetErrorString(e));
  return e == cudaErrorMemoryAllocation ? JMG_MP_ENOMEM : JMG_MP_ECUDA;
}

int jmg_mp_solver_fail(cusolverStatus_t s, const char* what, char* err) {
  if (s == CUSOLVER_STATUS_SUCCESS) return JMG_MP_OK;
  snprintf(err, JMG_MP_ERRLEN, "%s returned cusolverStatus %d", what, (int)s);
  return s == CUSOLVER_STATUS_ALLOC_FAILED ? JMG_MP_ENOMEM : JMG_MP_ESOLVER;
}

int jmg_mp_nccl_fail(ncclResult_t r, const char* what, char* err) {
  if (r == ncclSuccess) return JMG_MP_OK;
  snprintf(err, JMG_MP_ERRLEN, "%s: %s", what, ncclGetErrorString(r));
  return JMG_MP_ENCCL;
}
