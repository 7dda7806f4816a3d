/* ops.h - run one jaxmg op end to end from an FFI call frame.
 *
 * Every exported handler (one per op and platform, made from JMG_OP_LIST in
 * exports_*.c) is a one-line call to jmg_op_handle with its op and its
 * engine. What each op's FFI call carries is its row in op_table.h; the
 * attributes every op takes are site (string: unique per call site), tile,
 * nparties, dispatch, and optionally meet / meet_procs (multi-process).
 * `where` is (rank along the solve axis, group id over the other axes).
 */
#ifndef JAXMG_OPS_H
#define JAXMG_OPS_H

#include "engines/engine.h"
#include "xla/ffi/api/c_api.h"

XLA_FFI_Error* jmg_op_handle(XLA_FFI_CallFrame* cf, jmg_op op, const jmg_engine* eng);

#endif
