/* mp_move.c - moving matrices between JAX's shards and the block-cyclic
 * layout (a layout2d plan), and replicated operands in and out of it.
 *
 * The plan's patches are run peer by peer: at step d each rank sends to
 * rank + d and receives from rank - d (one grouped ncclSend/ncclRecv), the
 * patches packed back to back in plan order, which both ends enumerate
 * alike. A transposing plan transposes while packing (cublas geam); the
 * receiver only copies. Staging: one send and one receive buffer, each the
 * largest volume this rank exchanges with one peer (at most its shard and
 * its cyclic part), from the stream-ordered pool, freed before returning. */
#include <stdlib.h>
#include <string.h>

#include "engines/mp/mp_engine.h"

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

/* Copies one patch from `src` (ld sld) to `dst` (ld dld), transposing if
 * the plan does: the destination then holds cols x rows. */
static int put(const jmg_mp_mover* mv, int tr, void* dst, int64_t dld, const void* src,
               int64_t sld, int64_t rows, int64_t cols, char* err) {
  size_t esz = jmg_dtype_size(mv->dtype);
  if (tr) return transpose2d(mv->set->blas, mv->dtype, dst, dld, src, sld, rows, cols, err);
  return copy2d(mv->stream, esz, dst, dld, src, sld, rows, cols, err);
}

typedef struct peer_step {
  int to, from;
  char *sbuf, *rbuf;
} peer_step;

/* Packs (or unpacks) every patch between this rank and one peer. */
static int pack(const jmg_plan2d* p, const jmg_mp_mover* mv, const peer_step* ps, int unpack,
                char* err) {
  size_t esz = jmg_dtype_size(mv->dtype);
  int me = mv->set->comm.rank;
  size_t off = 0;
  for (int64_t k = 0; k < jmg_plan2d_count(p); k++) {
    jmg_patch b = jmg_plan2d_patch(p, k);
    int64_t drows = p->transpose ? b.cols : b.rows;
    int rc;
    if (!unpack && b.src == me && b.dst == ps->to) {
      rc = put(mv, p->transpose, ps->sbuf + off, drows,
               at(mv->src, b.src_row, b.src_col, mv->src_ld, esz), mv->src_ld, b.rows, b.cols,
               err);
    } else if (unpack && b.src == ps->from && b.dst == me) {
      rc = copy2d(mv->stream, esz, (char*)at(mv->dst, b.dst_row, b.dst_col, mv->dst_ld, esz),
                  mv->dst_ld, ps->rbuf + off, drows, drows, b.rows * b.cols / drows, err);
    } else {
      continue;
    }
    if (rc) return rc;
    off += (size_t)(b.rows * b.cols) * esz;
  }
  return JMG_MP_OK;
}

static int local_patches(const jmg_plan2d* p, const jmg_mp_mover* mv, char* err) {
  size_t esz = jmg_dtype_size(mv->dtype);
  int me = mv->set->comm.rank;
  for (int64_t k = 0; k < jmg_plan2d_count(p); k++) {
    jmg_patch b = jmg_plan2d_patch(p, k);
    if (b.src != me || b.dst != me) continue;
    int rc = put(mv, p->transpose, (char*)at(mv->dst, b.dst_row, b.dst_col, mv->dst_ld, esz),
                 mv->dst_ld, at(mv->src, b.src_row, b.src_col, mv->src_ld, esz), mv->src_ld,
                 b.rows, b.cols, err);
    if (rc) return rc;
  }
  return JMG_MP_OK;
}

int jmg_mp_move(const jmg_plan2d* p, const jmg_mp_mover* mv, char* err) {
  int me = mv->set->comm.rank, R = mv->set->comm.nranks;
  size_t esz = jmg_dtype_size(mv->dtype);
  int64_t* vol = calloc(2 * (size_t)R, sizeof *vol); /* sent to / received from each peer */
  if (vol == NULL) return JMG_MP_ENOMEM;
  for (int64_t k = 0; k < jmg_plan2d_count(p); k++) {
    jmg_patch b = jmg_plan2d_patch(p, k);
    if (b.src == me && b.dst != me) vol[b.dst] += b.rows * b.cols;
    if (b.dst == me && b.src != me) vol[R + b.src] += b.rows * b.cols;
  }
  int64_t smax = 0, rmax = 0;
  for (int r = 0; r < R; r++) {
    if (vol[r] > smax) smax = vol[r];
    if (vol[R + r] > rmax) rmax = vol[R + r];
  }
  peer_step ps = {0, 0, NULL, NULL};
  int rc = local_patches(p, mv, err);
  if (!rc && smax > 0)
    rc = jmg_mp_cuda_fail(cudaMallocAsync((void**)&ps.sbuf, (size_t)smax * esz, mv->stream),
                          "cudaMallocAsync(send staging)", err);
  if (!rc && rmax > 0)
    rc = jmg_mp_cuda_fail(cudaMallocAsync((void**)&ps.rbuf, (size_t)rmax * esz, mv->stream),
                          "cudaMallocAsync(receive staging)", err);
  ncclComm_t comm = (ncclComm_t)mv->set->comm.nccl;
  for (int d = 1; d < R && !rc; d++) {
    ps.to = (me + d) % R;
    ps.from = (me - d + R) % R;
    size_t sb = (size_t)vol[ps.to] * esz, rb = (size_t)vol[R + ps.from] * esz;
    if (sb == 0 && rb == 0) continue; /* the peers compute the same: they skip too */
    rc = pack(p, mv, &ps, 0, err);
    if (rc) break;
    ncclGroupStart();
    if (sb) ncclSend(ps.sbuf, sb, ncclInt8, ps.to, comm, mv->stream);
    if (rb) ncclRecv(ps.rbuf, rb, ncclInt8, ps.from, comm, mv->stream);
    rc = jmg_mp_nccl_fail(ncclGroupEnd(), "ncclSend/ncclRecv (layout move)", err);
    if (!rc) rc = pack(p, mv, &ps, 1, err);
  }
  if (ps.sbuf) cudaFreeAsync(ps.sbuf, mv->stream);
  if (ps.rbuf) cudaFreeAsync(ps.rbuf, mv->stream);
  free(vol);
  return rc;
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
