/* host_lapack.c - the host engine: the jaxmg ops on CPU devices, with LAPACK.
 *
 * It follows the GPU data path on purpose: the leader moves the shards into
 * the block-cyclic layout in place (the same plan the GPU engine runs with
 * peer copies), assembles M from the cyclic tiles, calls LAPACK, writes the
 * results back into the cyclic tiles and moves them back. The assembly costs
 * one host copy of M, which LAPACK needs anyway; in exchange every CPU test
 * exercises the layout code end to end.
 *
 * LAPACK comes from scipy (scipy.linalg.cython_lapack), whose function
 * pointers the Python layer hands over through jaxmg_host_set_lapack. That
 * is what jaxlib itself does: no LAPACK to find or link at build time, and
 * the one scipy already loaded is reused.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/engine.h"
#include "engines/host.h"
#include "engines/host_share.h"
#include "ffi/seam.h"
#include "layout/layout.h"

typedef void potrf_fn(char* uplo, int* n, void* a, int* lda, int* info);
typedef void potrs_fn(char* uplo, int* n, int* nrhs, void* a, int* lda, void* b, int* ldb,
                      int* info);
typedef void syevd_fn(char* jobz, char* uplo, int* n, void* a, int* lda, void* w, void* work,
                      int* lwork, int* iwork, int* liwork, int* info);
typedef void heevd_fn(char* jobz, char* uplo, int* n, void* a, int* lda, void* w, void* work,
                      int* lwork, void* rwork, int* lrwork, int* iwork, int* liwork, int* info);

/* Indexed by jmg_dtype: s, d, c, z. potri has potrf's signature. */
static struct {
  potrf_fn* potrf[4];
  potrs_fn* potrs[4];
  potrf_fn* potri[4];
  syevd_fn* syevd[2]; /* s, d */
  heevd_fn* heevd[4]; /* c, z at indices 2, 3 */
} lapack;

JMG_EXPORT int jaxmg_host_set_lapack(const char* name, uintptr_t fn) {
  static const char prefix[4] = {'s', 'd', 'c', 'z'};
  if (!name || strlen(name) < 6) return -1;
  int t = -1;
  for (int i = 0; i < 4; i++)
    if (name[0] == prefix[i]) t = i;
  if (t < 0) return -1;
  const char* rest = name + 1;
  /* An address as an integer converts to a function pointer in C11; a
   * void* would not. */
  if (!strcmp(rest, "potrf")) lapack.potrf[t] = (potrf_fn*)fn;
  else if (!strcmp(rest, "potrs")) lapack.potrs[t] = (potrs_fn*)fn;
  else if (!strcmp(rest, "potri")) lapack.potri[t] = (potrf_fn*)fn;
  else if (t < 2 && !strcmp(rest, "syevd")) lapack.syevd[t] = (syevd_fn*)fn;
  else if (t >= 2 && !strcmp(rest, "heevd")) lapack.heevd[t] = (heevd_fn*)fn;
  else return -1;
  return 0;
}

/* ---- helpers over the element type ---- */

static void fill_nan(jmg_dtype t, void* p, int64_t count) {
  int64_t reals = jmg_dtype_is_complex(t) ? 2 * count : count;
  if (t == JMG_F32 || t == JMG_C64) {
    float* f = p;
    for (int64_t i = 0; i < reals; i++) f[i] = NAN;
  } else {
    double* d = p;
    for (int64_t i = 0; i < reals; i++) d[i] = NAN;
  }
}

/* Fills the strict upper triangle of the n x n column-major matrix g from
 * its lower one: potri leaves the upper part untouched, and the caller gets
 * the whole (Hermitian) inverse. */
static void mirror_lower(jmg_dtype t, void* g, int64_t n) {
  for (int64_t j = 0; j < n; j++) {
    for (int64_t i = 0; i < j; i++) {
      int64_t up = i + j * n, lo = j + i * n;
      switch (t) {
        case JMG_F32: ((float*)g)[up] = ((float*)g)[lo]; break;
        case JMG_F64: ((double*)g)[up] = ((double*)g)[lo]; break;
        case JMG_C64:
          ((float*)g)[2 * up] = ((float*)g)[2 * lo];
          ((float*)g)[2 * up + 1] = -((float*)g)[2 * lo + 1];
          break;
        case JMG_C128:
          ((double*)g)[2 * up] = ((double*)g)[2 * lo];
          ((double*)g)[2 * up + 1] = -((double*)g)[2 * lo + 1];
          break;
      }
    }
  }
}

/* ---- the layout move, with memcpy as the copy ---- */

typedef struct host_copy {
  const jmg_job* job;
  size_t col_bytes;
  char* stage;
} host_copy;

static char* col_ptr(host_copy* c, int dev, int64_t off) {
  if (dev == JMG_STAGE_DEV) return c->stage;
  return (char*)c->job->parties[dev].a + (size_t)off * c->col_bytes;
}

static int host_copy_cols(void* ctx, int dst_dev, int64_t dst_off, int src_dev, int64_t src_off,
                          int64_t ncols) {
  host_copy* c = ctx;
  memcpy(col_ptr(c, dst_dev, dst_off), col_ptr(c, src_dev, src_off), (size_t)ncols * c->col_bytes);
  return 0;
}

static int move_layout(const jmg_job* job, int to_cyclic, char* err) {
  jmg_layout l = {job->n, job->nloc, job->tile, job->nloc, job->nparties};
  jmg_plan plan;
  int rc = jmg_plan_build(&l, to_cyclic, &plan);
  if (rc) {
    snprintf(err, JMG_ERRLEN, "layout plan failed (code %d) for n=%lld nloc=%lld tile=%lld", rc,
             (long long)job->n, (long long)job->nloc, (long long)job->tile);
    return -1;
  }
  host_copy c = {job, (size_t)job->n * jmg_dtype_size(job->dtype), NULL};
  c.stage = malloc((size_t)plan.unit * c.col_bytes);
  if (!c.stage) {
    jmg_plan_free(&plan);
    snprintf(err, JMG_ERRLEN, "out of host memory for the staging tile");
    return -1;
  }
  rc = jmg_plan_run(&plan, host_copy_cols, &c);
  free(c.stage);
  jmg_plan_free(&plan);
  return rc ? -1 : 0;
}

/* Copies between the assembled matrix g and the cyclic tiles, tile by tile:
 * tile k is local tile k / P of device k % P. */
static void tiles_to_matrix(const jmg_job* job, char* g, int into_matrix) {
  size_t col = (size_t)job->n * jmg_dtype_size(job->dtype);
  int64_t ntiles = job->n / job->tile;
  for (int64_t k = 0; k < ntiles; k++) {
    char* tile = (char*)job->parties[k % job->nparties].a +
                 (size_t)((k / job->nparties) * job->tile) * col;
    char* mat = g + (size_t)(k * job->tile) * col;
    if (into_matrix) memcpy(mat, tile, (size_t)job->tile * col);
    else memcpy(tile, mat, (size_t)job->tile * col);
  }
}

/* ---- the ops ---- */

static int missing(const char* routine, char* err) {
  snprintf(err, JMG_ERRLEN,
           "LAPACK routine %s was not handed over by the Python layer (import jaxmg first)",
           routine);
  return -1;
}

static int run_potrs(jmg_job* job, void* g, int n, int32_t* info, char* err) {
  int t = job->dtype;
  if (!lapack.potrf[t] || !lapack.potrs[t]) return missing("potrf/potrs", err);
  if (job->nrhs > INT_MAX) {
    snprintf(err, JMG_ERRLEN, "%lld right-hand sides exceed LAPACK's int", (long long)job->nrhs);
    return -1;
  }
  int nrhs = (int)job->nrhs, lapack_info = 0;
  char uplo = 'L';
  lapack.potrf[t](&uplo, &n, g, &n, &lapack_info);
  void* x = job->parties[0].b;
  size_t xbytes = (size_t)n * (size_t)nrhs * jmg_dtype_size(job->dtype);
  if (lapack_info == 0) {
    lapack.potrs[t](&uplo, &n, &nrhs, g, &n, x, &n, &lapack_info);
  } else {
    /* Like jnp.linalg.cholesky: not positive definite gives NaN. */
    fill_nan(job->dtype, x, (int64_t)n * nrhs);
  }
  for (int r = 1; r < job->nparties; r++) memcpy(job->parties[r].b, x, xbytes);
  *info = lapack_info;
  return 0;
}

static int run_potri(jmg_job* job, void* g, int n, int32_t* info, char* err) {
  int t = job->dtype;
  if (!lapack.potrf[t] || !lapack.potri[t]) return missing("potrf/potri", err);
  int lapack_info = 0;
  char uplo = 'L';
  lapack.potrf[t](&uplo, &n, g, &n, &lapack_info);
  if (lapack_info == 0) lapack.potri[t](&uplo, &n, g, &n, &lapack_info);
  if (lapack_info == 0) mirror_lower(job->dtype, g, n);
  else fill_nan(job->dtype, g, (int64_t)n * n);
  *info = lapack_info;
  return 0;
}

static int run_syevd(jmg_job* job, void* g, int n, int32_t* info, char* err) {
  int t = job->dtype, cplx = jmg_dtype_is_complex(job->dtype);
  if (cplx ? !lapack.heevd[t] : !lapack.syevd[t]) return missing(cplx ? "heevd" : "syevd", err);
  size_t rsize = (t == JMG_F32 || t == JMG_C64) ? 4 : 8; /* real element */
  void* w = job->parties[0].w;
  char jobz = job->jobz ? 'V' : 'N', uplo = 'L';
  int lapack_info = 0, lwork = -1, lrwork = -1, liwork = -1, iwork_q = 0;
  /* Big enough for one element of any type; the sizes come back as
   * floating values of the routine's own precision. */
  union {
    float f[4];
    double d[2];
  } work_q = {{0}}, rwork_q = {{0}};
  if (cplx)
    lapack.heevd[t](&jobz, &uplo, &n, g, &n, w, &work_q, &lwork, &rwork_q, &lrwork, &iwork_q,
                    &liwork, &lapack_info);
  else
    lapack.syevd[t](&jobz, &uplo, &n, g, &n, w, &work_q, &lwork, &iwork_q, &liwork, &lapack_info);
  double lw = rsize == 4 ? (double)work_q.f[0] : work_q.d[0];
  double lrw = rsize == 4 ? (double)rwork_q.f[0] : rwork_q.d[0];
  lwork = (int)lw + 1;
  lrwork = (int)lrw + 1;
  liwork = iwork_q + 1;
  void* work = malloc((size_t)lwork * jmg_dtype_size(job->dtype));
  void* rwork = cplx ? malloc((size_t)lrwork * rsize) : NULL;
  int* iwork = malloc((size_t)liwork * sizeof(int));
  if (!work || (cplx && !rwork) || !iwork) {
    free(work);
    free(rwork);
    free(iwork);
    snprintf(err, JMG_ERRLEN, "out of host memory for the eigensolver workspace");
    return -1;
  }
  if (cplx)
    lapack.heevd[t](&jobz, &uplo, &n, g, &n, w, work, &lwork, rwork, &lrwork, iwork, &liwork,
                    &lapack_info);
  else
    lapack.syevd[t](&jobz, &uplo, &n, g, &n, w, work, &lwork, iwork, &liwork, &lapack_info);
  free(work);
  free(rwork);
  free(iwork);
  if (lapack_info != 0) {
    fill_nan(job->dtype == JMG_C64 ? JMG_F32 : job->dtype == JMG_C128 ? JMG_F64 : job->dtype, w,
             n);
    fill_nan(job->dtype, g, (int64_t)n * n);
  }
  for (int r = 1; r < job->nparties; r++) memcpy(job->parties[r].w, w, (size_t)n * rsize);
  *info = lapack_info;
  return 0;
}

static int host_run(jmg_job* job, int32_t* info, char* err) {
  if (job->n > INT_MAX) {
    snprintf(err, JMG_ERRLEN, "n = %lld exceeds LAPACK's int", (long long)job->n);
    return -1;
  }
  int n = (int)job->n;
  size_t bytes = (size_t)job->n * (size_t)job->n * jmg_dtype_size(job->dtype);
  char* g = malloc(bytes ? bytes : 1);
  if (!g) {
    snprintf(err, JMG_ERRLEN, "out of host memory for a %lld x %lld matrix", (long long)job->n,
             (long long)job->n);
    return -1;
  }
  int rc = move_layout(job, 1, err);
  if (rc == 0) {
    tiles_to_matrix(job, g, 1);
    switch (job->op) {
      case JMG_POTRS: rc = run_potrs(job, g, n, info, err); break;
      case JMG_POTRI: rc = run_potri(job, g, n, info, err); break;
      case JMG_SYEVD: rc = run_syevd(job, g, n, info, err); break;
    }
  }
  /* potrs leaves A as scratch; the other ops hand back a matrix in A. */
  if (rc == 0 && job->op != JMG_POTRS) {
    tiles_to_matrix(job, g, 0);
    rc = move_layout(job, 0, err);
  }
  free(g);
  return rc;
}

/* ---- the per-device steps ---- */

static int host_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                      int32_t where_out[2], char* err) {
  (void)err;
  int32_t ordinal = 0;
  XLA_FFI_Error* e = jmg_ffi_device_ordinal(cf, &ordinal);
  jmg_ffi_drop(cf, e); /* informative only on the host */
  me->ordinal = ordinal;
  me->stream = NULL;
  memcpy(where_out, where, 2 * sizeof(int32_t));
  return 0;
}

static int host_workspace(const jmg_job* job, int64_t* bytes, char* err) {
  (void)err;
  memset(bytes, 0, sizeof(int64_t) * (size_t)job->nparties);
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

static int host_finish(const XLA_FFI_CallFrame* cf, jmg_party* me, int32_t info, char* err) {
  (void)cf;
  (void)err;
  *me->status = info;
  return 0;
}

const jmg_engine jmg_host_engine = {
    "host-lapack", host_enter,   host_workspace, host_alloc,     host_release,   host_run,
    host_finish,   jmg_host_share, jmg_host_open, jmg_host_close, jmg_host_fetch,
};
