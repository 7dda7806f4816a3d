/* exports_host.c - the FFI handlers of the host library, one per op. */
#include "engines/host.h"
#include "ops/ops.h"

JMG_EXPORT XLA_FFI_Error* jaxmg_potrs_host(XLA_FFI_CallFrame* cf) {
  return jmg_op_handle(cf, JMG_POTRS, &jmg_host_engine);
}

JMG_EXPORT XLA_FFI_Error* jaxmg_potri_host(XLA_FFI_CallFrame* cf) {
  return jmg_op_handle(cf, JMG_POTRI, &jmg_host_engine);
}

JMG_EXPORT XLA_FFI_Error* jaxmg_syevd_host(XLA_FFI_CallFrame* cf) {
  return jmg_op_handle(cf, JMG_SYEVD, &jmg_host_engine);
}
