/* exports_cuda.c - the FFI handlers of the CUDA library, one per op. */
#include "engines/cuda/cuda_engine.h"
#include "ops/ops.h"

JMG_EXPORT XLA_FFI_Error* jaxmg_potrs_cuda(XLA_FFI_CallFrame* cf) {
  return jmg_op_handle(cf, JMG_POTRS, &jmg_cusolvermg_engine);
}

JMG_EXPORT XLA_FFI_Error* jaxmg_potri_cuda(XLA_FFI_CallFrame* cf) {
  return jmg_op_handle(cf, JMG_POTRI, &jmg_cusolvermg_engine);
}

JMG_EXPORT XLA_FFI_Error* jaxmg_syevd_cuda(XLA_FFI_CallFrame* cf) {
  return jmg_op_handle(cf, JMG_SYEVD, &jmg_cusolvermg_engine);
}
