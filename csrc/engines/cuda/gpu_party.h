/* gpu_party.h - the per-device steps every GPU engine takes the same way
 * (engine.h: enter, copy_in, finish), shared by the cuSolverMg and the
 * cuSOLVERMp engines. */
#ifndef JAXMG_GPU_PARTY_H
#define JAXMG_GPU_PARTY_H

#include "engines/engine.h"

/* Fills me's ordinal and stream, reads `where` (count int32 entries,
 * engine.h: JMG_WHERE_LEN per element) into host memory and waits for the
 * stream, so that the inputs are complete. 0, or -1 with a message. */
int gpu_party_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                    int64_t count, int32_t* where_out, char* err);
/* engine.h's copy_in, fill_nan and finish on the party's device and stream. */
int gpu_party_copy_in(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, const void* src,
                      int64_t bytes, char* err);
int gpu_party_fill_nan(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, int64_t bytes,
                       char* err);
int gpu_party_finish(const XLA_FFI_CallFrame* cf, jmg_party* me, const jmg_result* res,
                     char* err);

#endif
