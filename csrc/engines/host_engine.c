/* host_engine.c - the host engine: jaxmg ops on CPU devices with LAPACK.
 * The per-device steps (trivial on the host: no streams, no device
 * workspace), the helpers of host_ops.h and the engine's op table. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/host.h"
#include "engines/host_ops.h"
#include "engines/host_share.h"
#include "ffi/seam.h"

void jmg_host_fill_nan(jmg_dtype t, void* p, int64_t count) {
  int64_t reals = jmg_dtype_is_complex(t) ? 2 * count : count;
  if (jmg_dtype_real_size(t) == 4) {
    float* f = p;
    for (int64_t i = 0; i < reals; i++) f[i] = NAN;
  } else {
    double* d = p;
    for (int64_t i = 0; i < reals; i++) d[i] = NAN;
  }
}

void jmg_host_broadcast(const jmg_job* job, int slot, const void* src, size_t bytes) {
  for (int r = 0; r < job->nparties; r++)
    if (job->parties[r].buf[slot] && job->parties[r].buf[slot] != src)
      memcpy(job->parties[r].buf[slot], src, bytes);
}

void* jmg_host_alloc(int64_t count, size_t es) {
  if (count < 0 || (uint64_t)count > SIZE_MAX / es) return NULL;
  return malloc(count ? (size_t)count * es : 1);
}

/* dst = src^T: src rows x cols and dst cols x rows, column-major with
 * leading dimensions lds and ldd (submatrices of larger ones), a B x B
 * block at a time through a small buffer, so that every read of src and
 * write of dst is a contiguous run of a column. Element by element, one
 * side strides by its leading dimension, which measured 5-10 x slower at
 * N = 1024-2048 (a power-of-two stride maps a block onto few cache sets). */
static inline void transpose_copy_es(const char* src, int64_t lds, int64_t rows, int64_t cols,
                                     char* dst, int64_t ldd, size_t es) {
  enum { B = 32 };
  char x[B * B * 16];
  for (int64_t j0 = 0; j0 < cols; j0 += B)
    for (int64_t i0 = 0; i0 < rows; i0 += B) {
      int64_t nj = cols - j0 < B ? cols - j0 : B, ni = rows - i0 < B ? rows - i0 : B;
      for (int64_t j = 0; j < nj; j++)
        memcpy(x + (size_t)(j * ni) * es, src + (size_t)(i0 + (j0 + j) * lds) * es,
               (size_t)ni * es);
      for (int64_t i = 0; i < ni; i++)
        for (int64_t j = 0; j < nj; j++)
          memcpy(dst + (size_t)(j0 + j + (i0 + i) * ldd) * es, x + (size_t)(i + j * ni) * es, es);
    }
}

/* transpose_copy_es for each element size, each copy of a fixed size. */
static void transpose_copy(const char* src, int64_t lds, int64_t rows, int64_t cols, char* dst,
                           int64_t ldd, size_t es) {
  switch (es) {
    case 4: transpose_copy_es(src, lds, rows, cols, dst, ldd, 4); break;
    case 8: transpose_copy_es(src, lds, rows, cols, dst, ldd, 8); break;
    default: transpose_copy_es(src, lds, rows, cols, dst, ldd, 16); break;
  }
}

/* How many of A's rows party r holds: [r nloc, r nloc + count), count <=
 * nloc (the rest of its shard is padding after A). */
static int64_t rows_of(const jmg_job* job, int r) {
  int64_t k = job->m - r * job->nloc;
  return k < 0 ? 0 : k < job->nloc ? k : job->nloc;
}

void jmg_host_gather_a(const jmg_job* job, char* a) {
  size_t es = jmg_dtype_size(job->dtype);
  for (int r = 0; r < job->nparties && r * job->nloc < job->m; r++)
    transpose_copy(job->parties[r].buf[0], job->n, job->n, rows_of(job, r),
                   a + (size_t)(r * job->nloc) * es, job->m, es);
}

void jmg_host_scatter_a(const jmg_job* job, const char* a) {
  size_t es = jmg_dtype_size(job->dtype);
  for (int r = 0; r < job->nparties; r++) {
    char* dst = job->parties[r].buf[0];
    int64_t k = rows_of(job, r);
    if (k > 0) transpose_copy(a + (size_t)(r * job->nloc) * es, job->m, k, job->n, dst, job->n, es);
    memset(dst + (size_t)(k * job->n) * es, 0, (size_t)((job->nloc - k) * job->n) * es);
  }
}

char* jmg_host_gather(const jmg_job* job, char* err) { return jmg_host_gather_slot(job, 0, err); }

char* jmg_host_gather_slot(const jmg_job* job, int slot, char* err) {
  size_t shard = (size_t)(job->n * job->nloc) * jmg_dtype_size(job->dtype);
  char* e = jmg_host_alloc(job->n * job->mpad, jmg_dtype_size(job->dtype));
  if (!e) {
    snprintf(err, JMG_ERRLEN, "out of host memory for a %lld x %lld matrix", (long long)job->m,
             (long long)job->n);
    return NULL;
  }
  for (int r = 0; r < job->nparties; r++) memcpy(e + (size_t)r * shard, job->parties[r].buf[slot], shard);
  return e;
}

void jmg_host_scatter(const jmg_job* job, int slot, const char* src, int64_t rows, int64_t ld) {
  size_t es = jmg_dtype_size(job->dtype);
  for (int r = 0; r < job->nparties; r++) {
    char* dst = job->parties[r].buf[slot];
    for (int64_t j = 0; j < job->nloc; j++) {
      int64_t col = r * job->nloc + j;
      if (col < job->m)
        memcpy(dst + (size_t)(j * rows) * es, src + (size_t)(col * ld) * es, (size_t)rows * es);
      else
        memset(dst + (size_t)(j * rows) * es, 0, (size_t)rows * es); /* a pad row of A */
    }
  }
}

int jmg_host_fits_int(int64_t v, const char* what, const jmg_job* job, char* err) {
  if (v >= 0 && v <= INT_MAX) return 0;
  snprintf(err, JMG_ERRLEN,
           "%s at %lld x %lld needs %s = %lld, more than LAPACK's 32-bit int allows (%d)",
           jmg_dtype_name(job->dtype), (long long)job->m, (long long)job->n, what, (long long)v,
           INT_MAX);
  return -1;
}

/* ---- the per-device steps ---- */

static int host_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                      int64_t count, int32_t* where_out, char* err) {
  (void)err;
  int32_t ordinal = 0;
  XLA_FFI_Error* e = jmg_ffi_device_ordinal(cf, &ordinal);
  jmg_ffi_drop(cf, e); /* informative only on the host */
  me->ordinal = ordinal;
  me->stream = NULL;
  memcpy(where_out, where, (size_t)count * sizeof(int32_t));
  return 0;
}

static int host_alloc(const XLA_FFI_CallFrame* cf, jmg_party* me, char* err) {
  (void)cf;
  (void)me;
  snprintf(err, JMG_ERRLEN, "the host engine takes no device workspace");
  return -1;
}

static void host_release(const XLA_FFI_CallFrame* cf, jmg_party* me) {
  (void)cf;
  (void)me;
}

static int host_copy_in(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, const void* src,
                        int64_t bytes, char* err) {
  (void)cf;
  (void)me;
  (void)err;
  memmove(dst, src, (size_t)bytes);
  return 0;
}

static int host_fill_nan(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, int64_t bytes,
                         char* err) {
  (void)cf;
  (void)me;
  (void)err;
  memset(dst, 0xFF, (size_t)bytes);
  return 0;
}

static int host_finish(const XLA_FFI_CallFrame* cf, jmg_party* me, const jmg_result* res,
                       char* err) {
  (void)cf;
  (void)err;
  *me->status = res->info;
  for (int k = 0; k < JMG_MAX_SCALARS; k++) {
    if (!me->scalar[k]) continue;
    if (jmg_dtype_real_size((jmg_dtype)me->dtype) == 4) *(float*)me->scalar[k] = (float)res->scalar[k];
    else *(double*)me->scalar[k] = res->scalar[k];
  }
  return 0;
}

const jmg_engine jmg_host_engine = {
    .name = "host-lapack",
    .ops =
        {
            [JMG_POTRS] = {NULL, jmg_host_potrs},
            [JMG_POTRI] = {NULL, jmg_host_potri},
            [JMG_SYEVD] = {jmg_host_syevd_workspace, jmg_host_syevd},
            [JMG_LU_SOLVE] = {jmg_host_general_workspace, jmg_host_lu_solve},
            [JMG_LSTSQ] = {jmg_host_general_workspace, jmg_host_lstsq},
            [JMG_QR] = {jmg_host_general_workspace, jmg_host_qr},
            [JMG_GESVD] = {jmg_host_general_workspace, jmg_host_gesvd},
            [JMG_POLAR] = {jmg_host_general_workspace, jmg_host_polar},
            [JMG_CHOL_FACTOR] = {NULL, jmg_host_chol_factor},
            [JMG_CHOL_SOLVE] = {NULL, jmg_host_chol_solve},
            [JMG_CHOL_INVERSE] = {NULL, jmg_host_chol_inverse},
            [JMG_SYGVD] = {jmg_host_syevd_workspace, jmg_host_sygvd},
        },
    .enter = host_enter,
    .copy_in = host_copy_in,
    .fill_nan = host_fill_nan,
    .alloc = host_alloc,
    .release = host_release,
    .finish = host_finish,
    .share = jmg_host_share,
    .open = jmg_host_open,
    .close = jmg_host_close,
    .fetch = jmg_host_fetch,
    .shares_every_buffer = 1,
};
