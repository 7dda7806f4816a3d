/* mp_exchange.h - one rank's part of a layout2d plan across ranks, over an
 * abstract transport, so that the protocol runs (and is tested) without
 * CUDA or NCCL: mp_move.c gives it cudaMemcpy2DAsync / cuBLAS geam copies and
 * grouped ncclSend/ncclRecv; tests/c/test_mp_exchange.c gives it memcpy and
 * mailboxes between threads.
 *
 * Protocol: the rank's own patches are copied directly; then at step
 * d = 1 .. R-1 it sends everything it owes rank (me + d) mod R and receives
 * what rank (me - d) mod R owes it, in one exchange, the patches packed back
 * to back in plan order (both ends enumerate the same patches in the same
 * order, so no offsets travel). A transposing plan transposes while packing.
 * Zero-byte sends and receives are posted by neither end.
 * Staging: one send and one receive buffer, each as large as the largest
 * volume this rank sends to / receives from one peer.
 */
#ifndef JAXMG_MP_EXCHANGE_H
#define JAXMG_MP_EXCHANGE_H

#include <stddef.h>
#include <stdint.h>

#include "layout/layout2d.h"

typedef struct jmg_mp_xfer {
  void* ctx;
  /* dst (ld dld) <- src (rows x cols, ld sld), transposed (dst cols x rows)
   * when asked. 0 or JMG_MP_* with err. */
  int (*copy)(void* ctx, void* dst, int64_t dld, const void* src, int64_t sld, int64_t rows,
              int64_t cols, int transpose, char* err);
  /* Sends sbytes to rank `to` and receives rbytes from rank `from`
   * together (either may be 0). */
  int (*exchange)(void* ctx, const void* sbuf, size_t sbytes, int to, void* rbuf,
                  size_t rbytes, int from, char* err);
  void* (*alloc)(void* ctx, size_t bytes);
  void (*release)(void* ctx, void* p);
} jmg_mp_xfer;

/* Runs rank me's part of plan p (of nranks ranks): src is its buffer in
 * the plan's source layout (ld src_ld), dst in the target one. esz: bytes
 * per element. */
int jmg_mp_exchange_run(const jmg_plan2d* p, int me, int nranks, size_t esz, const void* src,
                        int64_t src_ld, void* dst, int64_t dst_ld, const jmg_mp_xfer* x,
                        char* err);

#endif
