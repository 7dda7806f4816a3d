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

typedef struct tile_copy {
  cudaStream_t st;
  size_t esz;
  char* full;
  int64_t m;
  char* local;
  int64_t lld;
  int to_local;
} tile_copy;

static int copy_tile(void* vctx, int64_t r0, int64_t c0, int64_t lr, int64_t lc, int64_t rows,
                     int64_t cols, char* err) {
  tile_copy* t = vctx;
  char* g = (char*)at(t->full, r0, c0, t->m, t->esz);
  char* l = (char*)at(t->local, lr, lc, t->lld, t->esz);
  return t->to_local ? copy2d(t->st, t->esz, l, t->lld, g, t->m, rows, cols, err)
                     : copy2d(t->st, t->esz, g, t->m, l, t->lld, rows, cols, err);
}

/* full <-> this rank's tiles (ROW_MAJOR grid). */
static int each_tile(jmg_mp_set* s, cudaStream_t st, jmg_dtype t, void* full, int64_t m,
                     int64_t n, int64_t tile, void* local, int64_t lld, int to_local,
                     char* err) {
  tile_copy tc = {st, jmg_dtype_size(t), full, m, local, lld, to_local};
  return jmg_mp_each_tile(m, n, tile, s->comm.rank / s->q, s->comm.rank % s->q, s->p, s->q,
                          copy_tile, &tc, err);
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

/* dst = the lower triangle of src (n x n, ld n), zeros above, through the
 * packed form (cuBLAS trttp / tpttr). */
static int lower_only(cublasHandle_t h, cudaStream_t st, jmg_dtype t, void* dst, const void* src,
                      int64_t n, char* err) {
  size_t esz = jmg_dtype_size(t);
  void* packed = NULL;
  if (n > 2147483647) {
    snprintf(err, JMG_MP_ERRLEN, "a triangle of order %lld is beyond cuBLAS's int sizes", (long long)n);
    return JMG_MP_EINVAL;
  }
  int k = (int)n, rc = jmg_mp_cuda_fail(cudaMallocAsync(&packed, (size_t)(n * (n + 1) / 2) * esz, st),
                                        "cudaMallocAsync", err);
  if (!rc) rc = jmg_mp_cuda_fail(cudaMemsetAsync(dst, 0, (size_t)(n * n) * esz, st), "cudaMemsetAsync", err);
  if (rc) return rc;
  const cublasFillMode_t lo = CUBLAS_FILL_MODE_LOWER;
  cublasStatus_t a, b;
  switch (t) {
    case JMG_F32: a = cublasStrttp(h, lo, k, src, k, packed); b = cublasStpttr(h, lo, k, packed, dst, k); break;
    case JMG_F64: a = cublasDtrttp(h, lo, k, src, k, packed); b = cublasDtpttr(h, lo, k, packed, dst, k); break;
    case JMG_C64: a = cublasCtrttp(h, lo, k, src, k, packed); b = cublasCtpttr(h, lo, k, packed, dst, k); break;
    default: a = cublasZtrttp(h, lo, k, src, k, packed); b = cublasZtpttr(h, lo, k, packed, dst, k); break;
  }
  cudaFreeAsync(packed, st);
  if (a == CUBLAS_STATUS_SUCCESS && b == CUBLAS_STATUS_SUCCESS) return JMG_MP_OK;
  snprintf(err, JMG_MP_ERRLEN, "cublas trttp/tpttr returned status %d / %d", (int)a, (int)b);
  return JMG_MP_ESOLVER;
}

/* The m x n gather written row-major: full (ld n) holds its transpose
 * read column-major, through a scratch copy. upper (m == n): only the
 * upper triangle, zeros below (the transpose's lower triangle). */
int jmg_mp_gather_rows(jmg_mp_set* s, cudaStream_t st, jmg_dtype t, const void* local,
                       int64_t lld, int64_t m, int64_t n, int64_t tile, int upper, void* full,
                       char* err) {
  size_t esz = jmg_dtype_size(t);
  void* tmp = NULL;
  int rc = jmg_mp_cuda_fail(cudaMallocAsync(&tmp, (size_t)(m * n) * esz, st), "cudaMallocAsync", err);
  if (rc) return rc;
  if (upper) { /* full <- the gather (scratch), tmp <- its transpose, full <- tmp's lower part */
    rc = jmg_mp_gather(s, st, t, local, lld, m, n, tile, full, err);
    if (!rc) rc = transpose2d(s->blas, t, tmp, n, full, m, m, n, err);
    if (!rc) rc = lower_only(s->blas, st, t, full, tmp, n, err);
  } else {
    rc = jmg_mp_gather(s, st, t, local, lld, m, n, tile, tmp, err);
    if (!rc) rc = transpose2d(s->blas, t, full, n, tmp, m, m, n, err);
  }
  cudaFreeAsync(tmp, st);
  return rc;
}
