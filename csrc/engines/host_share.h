/* host_share.h - the host engine's multi-process steps (engine.h: share,
 * open, close, fetch) over POSIX shared memory. */
#ifndef JAXMG_HOST_SHARE_H
#define JAXMG_HOST_SHARE_H

#include "engines/engine.h"

int jmg_host_share(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, char* err);
int jmg_host_open(jmg_job* job, char* err);
void jmg_host_close(jmg_job* job);
int jmg_host_fetch(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, int ok,
                   char* err);

#endif
