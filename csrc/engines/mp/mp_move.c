/* mp_move.c - moving matrices between JAX's shards and the block-cyclic
 * layout (a layout2d plan, run by mp_exchange.c over this GPU transport:
 * cudaMemcpy2DAsync, cuBLAS geam for transposes, grouped ncclSend/ncclRecv,
 * staging from the stream-ordered pool), and replicated operands in and
 * out of it. Everything is queued on the call's stream, in order. */
#include <stdlib.h>
#include <string.h>

#include "engines/mp/mp_engine.h"
#include "engines/mp/mp_exchange.h"

static int copy2d(cudaStream_t st, size_t esz, void* dst, int64_t dld, const void* src,
                  int64_t sld, int64_t rows, int64_t cols, char* err) {
  return jmg_mp_cuda_fail(cudaMemcpy2DAsync(dst, (size_t)dld * esz, src, (size_t)sld * esz,
                                            (size_t)rows * esz, (size_t)cols,
                                            cudaMemcpyDeviceToDevice, st),
                          "cudaMemcpy2DAsync", err);
}

/* dst (cols x rows, ld dld) = transpose of src (rows x cols, ld sld). */
static int transpose2d(cublasHandle_t h, jmg_dtype t, void* dst, int64_t dld, const void* src,
                       int64_t sld, int64_t rows, int64_t cols, char* err) {
  static const float f1 = 1, f0 = 0;
  static const double d1 = 1, d0 = 0;
  static const cuComplex c1 = {1, 0}, c0 = {0, 0};
  static const cuDoubleComplex z1 = {1, 0}, z0 = {0, 0};
  cublasStatus_t s;
  const cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
  switch (t) {
    case JMG_F32: s = cublasSgeam_64(h, T, N, cols, rows, &f1, src, sld, &f0, dst, dld, dst, dld); break;
    case JMG_F64: s = cublasDgeam_64(h, T, N, cols, rows, &d1, src, sld, &d0, dst, dld, dst, dld); break;
    case JMG_C64: s = cublasCgeam_64(h, T, N, cols, rows, &c1, src, sld, &c0, dst, dld, dst, dld); break;
    default: s = cublasZgeam_64(h, T, N, cols, rows, &z1, src, sld, &z0, dst, dld, dst, dld); break;
  }
  if (s == CUBLAS_STATUS_SUCCESS) return JMG_MP_OK;
  snprintf(err, JMG_MP_ERRLEN, "cublas geam (transpose) returned status %d", (int)s);
  return JMG_MP_ESOLVER;
}

static const char* at(const void* base, int64_t r, int64_t c, int64_t ld, size_t esz) {
  return (const char*)base + ((size_t)r + (size_t)c * (size_t)ld) * esz;
}

/* The transport of mp_exchange.h on one GPU of an NCCL communicator. */
typedef struct gpu_xfer {
  const jmg_mp_mover* mv;
} gpu_xfer;

static int g_copy(void* ctx, void* dst, int64_t dld, const void* src, int64_t sld, int64_t rows,
                  int64_t cols, int transpose, char* err) {
  const jmg_mp_mover* mv = ((gpu_xfer*)ctx)->mv;
  if (transpose) return transpose2d(mv->set->blas, mv->dtype, dst, dld, src, sld, rows, cols, err);
  return copy2d(mv->stream, jmg_dtype_size(mv->dtype), dst, dld, src, sld, rows, cols, err);
}

static int g_exchange(void* ctx, const void* sbuf, size_t sbytes, int to, void* rbuf,
                      size_t rbytes, int from, char* err) {
  const jmg_mp_mover* mv = ((gpu_xfer*)ctx)->mv;
  ncclComm_t comm = (ncclComm_t)mv->set->comm.nccl;
  ncclGroupStart();
  if (sbytes) ncclSend(sbuf, sbytes, ncclInt8, to, comm, mv->stream);
  if (rbytes) ncclRecv(rbuf, rbytes, ncclInt8, from, comm, mv->stream);
  return jmg_mp_nccl_fail(ncclGroupEnd(), "ncclSend/ncclRecv (layout move)", err);
}

static void* g_alloc(void* ctx, size_t bytes) {
  void* p = NULL;
  const jmg_mp_mover* mv = ((gpu_xfer*)ctx)->mv;
  return cudaMallocAsync(&p, bytes, mv->stream) == cudaSuccess ? p : NULL;
}

static void g_release(void* ctx, void* p) { cudaFreeAsync(p, ((gpu_xfer*)ctx)->mv->stream); }

int jmg_mp_move(const jmg_plan2d* p, const jmg_mp_mover* mv, char* err) {
  gpu_xfer g = {mv};
  jmg_mp_xfer x = {&g, g_copy, g_exchange, g_alloc, g_release};
  return jmg_mp_exchange_run(p, mv->set->comm.rank, mv->set->comm.nranks,
                             jmg_dtype_size(mv->dtype), mv->src, mv->src_ld, mv->dst, mv->dst_ld,
                             &x, err);
}

/* ------------------------------------------------------------------------ */
/* Replicated operands. */

typedef struct tiles {
  int pr, pc, p, q;
} tiles;

static tiles my_tiles(const jmg_mp_set* s) {
  tiles t = {s->comm.rank / s->q, s->comm.rank % s->q, s->p, s->q};
  return t;
}

/* Calls each owned tile's copy: to_local copies full -> local, else back. */
static int each_tile(jmg_mp_set* s, cudaStream_t st, jmg_dtype t, void* full, int64_t m,
                     int64_t n, int64_t tile, void* local, int64_t lld, int to_local,
                     char* err) {
  size_t esz = jmg_dtype_size(t);
  tiles me = my_tiles(s);
  for (int64_t tj = me.pc; tj * tile < n; tj += me.q) {
    int64_t c0 = tj * tile, cols = n - c0 < tile ? n - c0 : tile;
    int64_t lc = jmg_bc_local(c0, tile, me.q);
    for (int64_t ti = me.pr; ti * tile < m; ti += me.p) {
      int64_t r0 = ti * tile, rows = m - r0 < tile ? m - r0 : tile;
      int64_t lr = jmg_bc_local(r0, tile, me.p);
      char* g = (char*)at(full, r0, c0, m, esz);
      char* l = (char*)at(local, lr, lc, lld, esz);
      int rc = to_local ? copy2d(st, esz, l, lld, g, m, rows, cols, err)
                        : copy2d(st, esz, g, m, l, lld, rows, cols, err);
      if (rc) return rc;
    }
  }
  return JMG_MP_OK;
}

int jmg_mp_scatter(jmg_mp_set* s, cudaStream_t st, jmg_dtype t, const void* full, int64_t m,
                   int64_t n, int64_t tile, void* local, int64_t lld, char* err) {
  return each_tile(s, st, t, (void*)full, m, n, tile, local, lld, 1, err);
}

int jmg_mp_gather(jmg_mp_set* s, cudaStream_t st, jmg_dtype t, const void* local, int64_t lld,
                  int64_t m, int64_t n, int64_t tile, void* full, char* err) {
  size_t esz = jmg_dtype_size(t), bytes = (size_t)(m * n) * esz;
  int rc = jmg_mp_cuda_fail(cudaMemsetAsync(full, 0, bytes, st), "cudaMemsetAsync", err);
  if (!rc) rc = each_tile(s, st, t, full, m, n, tile, (void*)local, lld, 0, err);
  if (rc) return rc;
  /* Every element is owned by one rank, zero elsewhere: a sum gathers it. */
  int dbl = t == JMG_F64 || t == JMG_C128;
  size_t count = (size_t)(m * n) * (jmg_dtype_is_complex(t) ? 2 : 1);
  return jmg_mp_nccl_fail(ncclAllReduce(full, full, count, dbl ? ncclFloat64 : ncclFloat32,
                                        ncclSum, (ncclComm_t)s->comm.nccl, st),
                          "ncclAllReduce (gather)", err);
}
