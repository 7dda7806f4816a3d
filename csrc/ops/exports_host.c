/* exports_host.c - the FFI handlers of the host library, one per op of the
 * table, and for the Python layer the table itself and JAXMG_TIMEOUT_S as the
 * C core reads it (util/timeout.h). */
#include "engines/host.h"
#include "ops/op_table.h"
#include "ops/ops.h"
#include "util/timeout.h"

#define HOST_HANDLER(name, op)                                  \
  JMG_EXPORT XLA_FFI_Error* jaxmg_##name##_host(XLA_FFI_CallFrame* cf) { \
    return jmg_op_handle(cf, op, &jmg_host_engine);             \
  }
JMG_OP_LIST(HOST_HANDLER)

JMG_EXPORT size_t jaxmg_op_table(char* buf, size_t cap) { return jmg_op_table_text(buf, cap); }

JMG_EXPORT double jaxmg_timeout_s(void) { return jmg_timeout_s(); }
