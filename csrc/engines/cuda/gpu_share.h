/* gpu_share.h - GPU buffers across processes (one process per GPU) with
 * CUDA IPC: the engine's share/open/close/fetch hooks (engine.h).
 *
 * Every party records its device's PCI bus id when it enters, because
 * ordinals are per process: the leader finds the device of a party from
 * another process by bus id. That needs every GPU of the node visible to
 * the leader (no per-process CUDA_VISIBLE_DEVICES).
 */
#ifndef JAXMG_GPU_SHARE_H
#define JAXMG_GPU_SHARE_H

#include "engines/engine.h"

/* enter: writes this device's bus id into me->share. */
int gpu_share_mark(jmg_party* me, char* err);

/* The leader's CUDA ordinal for party r: its own for parties of the
 * leader's process, found by bus id for the others. */
int gpu_share_device(const jmg_job* job, int r, int32_t* dev, char* err);

int gpu_share(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, char* err);
int gpu_share_open(jmg_job* job, char* err);
void gpu_share_close(jmg_job* job);
int gpu_share_fetch(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, int ok, char* err);

#endif
