/* exports_host.c - the FFI handlers of the host library, one per op of the
 * table, and the table itself for the Python layer. */
#include "engines/host.h"
#include "ops/op_table.h"
#include "ops/ops.h"

#define HOST_HANDLER(name, op)                                  \
  JMG_EXPORT XLA_FFI_Error* jaxmg_##name##_host(XLA_FFI_CallFrame* cf) { \
    return jmg_op_handle(cf, op, &jmg_host_engine);             \
  }
JMG_OP_LIST(HOST_HANDLER)

JMG_EXPORT size_t jaxmg_op_table(char* buf, size_t cap) { return jmg_op_table_text(buf, cap); }
