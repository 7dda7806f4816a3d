/* ops.h - run one jaxmg op end to end from an FFI call frame.
 *
 * Every exported handler (one per op and platform) is a one-line call to
 * jmg_op_handle with its op and its engine. The FFI interface, per device:
 *
 *   potrs  args (a[nloc, n], b[n, nrhs] col-major, where[2] int32)
 *          rets (a[nloc, n], x[n, nrhs] col-major, status int32[])
 *   potri  args (a, where)        rets (a = inverse, status)
 *   syevd  args (a, where)        rets (a = eigenvectors of M, w[n], status)
 *
 * with rets aliasing args (a -> a, b -> x) and attributes
 *   site (string: unique per call site), tile, nparties, jobz (syevd).
 * `where` is (rank along the solve axis, group id over the other axes).
 */
#ifndef JAXMG_OPS_H
#define JAXMG_OPS_H

#include "engines/engine.h"
#include "xla/ffi/api/c_api.h"

XLA_FFI_Error* jmg_op_handle(XLA_FFI_CallFrame* cf, jmg_op op, const jmg_engine* eng);

#endif
