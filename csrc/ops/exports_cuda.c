/* exports_cuda.c - the FFI handlers of the CUDA library, one per op of the
 * table, and the table itself for the Python layer. */
#include "engines/cuda/cuda_engine.h"
#include "ops/op_table.h"
#include "ops/ops.h"

#define CUDA_HANDLER(name, op)                                  \
  JMG_EXPORT XLA_FFI_Error* jaxmg_##name##_cuda(XLA_FFI_CallFrame* cf) { \
    return jmg_op_handle(cf, op, &jmg_cusolvermg_engine);       \
  }
JMG_OP_LIST(CUDA_HANDLER)

JMG_EXPORT size_t jaxmg_op_table(char* buf, size_t cap) { return jmg_op_table_text(buf, cap); }
