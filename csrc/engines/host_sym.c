/* host_sym.c - potrs, potri, syevd and the factor-reuse ops (chol_*) on
 * the host, following the GPU data path on purpose: the leader moves the shards into the block-cyclic
 * layout in place (the same plan the GPU engine runs with peer copies),
 * assembles E from the cyclic tiles, calls LAPACK, writes the results back
 * into the cyclic tiles and moves them back. The assembly costs one host
 * copy of E, which LAPACK needs anyway; in exchange every CPU test
 * exercises the layout code end to end. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/host_lapack.h"
#include "engines/host_ops.h"
#include "layout/layout.h"

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

/* 2 * sum log |g_ii| of a Cholesky factor: log det of the matrix. */
static double chol_logdet(jmg_dtype t, const void* g, int64_t n) {
  double s = 0;
  int cplx = jmg_dtype_is_complex(t);
  for (int64_t i = 0; i < n; i++) {
    int64_t at = (i + i * n) * (cplx ? 2 : 1); /* the real part leads */
    double d = jmg_dtype_real_size(t) == 4 ? (double)((const float*)g)[at] : ((const double*)g)[at];
    s += log(fabs(d));
  }
  return 2 * s;
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

/* ---- the ops on the assembled n x n matrix g ---- */

typedef int square_fn(jmg_job* job, void* g, int n, jmg_result* res, char* err);

static int potrs_on(jmg_job* job, void* g, int n, jmg_result* res, char* err) {
  int t = job->dtype;
  la_potrf* potrf = (la_potrf*)jmg_la_get(JMG_LA_POTRF, job->dtype, err);
  la_potrs* potrs = (la_potrs*)jmg_la_get(JMG_LA_POTRS, job->dtype, err);
  if (!potrf || !potrs) return -1;
  if (jmg_host_fits_int(job->nrhs, "right-hand sides", job, err)) return -1;
  int nrhs = (int)job->nrhs, info = 0;
  char uplo = 'L';
  potrf(&uplo, &n, g, &n, &info);
  void* x = job->parties[0].b;
  size_t xbytes = (size_t)n * (size_t)nrhs * jmg_dtype_size(job->dtype);
  if (info == 0) {
    res->scalar[0] = chol_logdet((jmg_dtype)t, g, n);
    potrs(&uplo, &n, &nrhs, g, &n, x, &n, &info);
  } else {
    /* Like jnp.linalg.cholesky: not positive definite gives NaN. */
    jmg_host_fill_nan(job->dtype, x, (int64_t)n * nrhs);
    res->scalar[0] = NAN;
  }
  jmg_host_broadcast(job, 1, x, xbytes);
  res->info = info;
  return 0;
}

static int potri_on(jmg_job* job, void* g, int n, jmg_result* res, char* err) {
  la_potrf* potrf = (la_potrf*)jmg_la_get(JMG_LA_POTRF, job->dtype, err);
  la_potrf* potri = (la_potrf*)jmg_la_get(JMG_LA_POTRI, job->dtype, err); /* potrf's signature */
  if (!potrf || !potri) return -1;
  int info = 0;
  char uplo = 'L';
  potrf(&uplo, &n, g, &n, &info);
  if (info == 0) potri(&uplo, &n, g, &n, &info);
  if (info == 0) mirror_lower(job->dtype, g, n);
  else jmg_host_fill_nan(job->dtype, g, (int64_t)n * n);
  res->info = info;
  return 0;
}

/* ---- factor reuse: the factor op, then solves and the inverse from it ---- */

static int factor_on(jmg_job* job, void* g, int n, jmg_result* res, char* err) {
  la_potrf* potrf = (la_potrf*)jmg_la_get(JMG_LA_POTRF, job->dtype, err);
  if (!potrf) return -1;
  int info = 0;
  char uplo = 'L';
  potrf(&uplo, &n, g, &n, &info);
  res->scalar[0] = NAN;
  if (info == 0) res->scalar[0] = chol_logdet(job->dtype, g, n);
  /* A failed factor is NaN: every solve and inverse from it is NaN too. */
  else jmg_host_fill_nan(job->dtype, g, (int64_t)n * n);
  res->info = info;
  return 0;
}

static int solve_on(jmg_job* job, void* g, int n, jmg_result* res, char* err) {
  la_potrs* potrs = (la_potrs*)jmg_la_get(JMG_LA_POTRS, job->dtype, err);
  if (!potrs) return -1;
  if (jmg_host_fits_int(job->nrhs, "right-hand sides", job, err)) return -1;
  int nrhs = (int)job->nrhs, info = 0;
  char uplo = 'L';
  void* x = job->parties[0].b;
  potrs(&uplo, &n, &nrhs, g, &n, x, &n, &info);
  jmg_host_broadcast(job, 1, x, (size_t)n * (size_t)nrhs * jmg_dtype_size(job->dtype));
  res->info = info;
  return 0;
}

static int inverse_on(jmg_job* job, void* g, int n, jmg_result* res, char* err) {
  la_potrf* potri = (la_potrf*)jmg_la_get(JMG_LA_POTRI, job->dtype, err); /* potrf's signature */
  if (!potri) return -1;
  int info = 0;
  char uplo = 'L';
  potri(&uplo, &n, g, &n, &info);
  if (info == 0) mirror_lower(job->dtype, g, n);
  else jmg_host_fill_nan(job->dtype, g, (int64_t)n * n);
  res->info = info;
  return 0;
}

/* host_ops.h: LAPACK's documented workspace sizes for syevd/heevd, which
 * the query computes in int and would overflow. */
void jmg_host_evd_sizes(const jmg_job* job, int64_t* lwork, int64_t* lrwork, int64_t* liwork) {
  int64_t n = job->n;
  int cplx = jmg_dtype_is_complex(job->dtype);
  if (job->jobz) {
    *lwork = cplx ? 2 * n + n * n : 1 + 6 * n + 2 * n * n;
    *lrwork = cplx ? 1 + 5 * n + 2 * n * n : 0;
    *liwork = 3 + 5 * n;
  } else {
    *lwork = cplx ? n + 1 : 2 * n + 1;
    *lrwork = cplx ? n : 0;
    *liwork = 1;
  }
}

int jmg_host_syevd_workspace(const jmg_job* job, int64_t* bytes, char* err) {
  memset(bytes, 0, sizeof(int64_t) * (size_t)job->nparties);
  int64_t lwork, lrwork, liwork;
  jmg_host_evd_sizes(job, &lwork, &lrwork, &liwork);
  if (jmg_host_fits_int(job->n * job->n, "n * n elements", job, err) ||
      jmg_host_fits_int(lwork, "an eigensolver workspace (lwork)", job, err) ||
      jmg_host_fits_int(lrwork, "an eigensolver workspace (lrwork)", job, err) ||
      jmg_host_fits_int(liwork, "an eigensolver workspace (liwork)", job, err))
    return -1;
  return 0;
}

static int syevd_on(jmg_job* job, void* g, int n, jmg_result* res, char* err) {
  int cplx = jmg_dtype_is_complex(job->dtype);
  la_syevd* syevd = (la_syevd*)jmg_la_get(JMG_LA_EVD, job->dtype, err);
  la_heevd* heevd = (la_heevd*)jmg_la_get(JMG_LA_EVD, job->dtype, err);
  if (!syevd) return -1;
  size_t rsize = jmg_dtype_real_size(job->dtype);
  void* w = job->parties[0].w;
  char jobz = job->jobz ? 'V' : 'N', uplo = 'L';
  int64_t lw64, lrw64, liw64;
  jmg_host_evd_sizes(job, &lw64, &lrw64, &liw64);
  /* The query (sizes fit LAPACK's int: workspace step) may ask for more
   * than the minimum: the blocked tridiagonal reduction. */
  int info = 0, lwork = -1, lrwork = -1, liwork = -1, iwork_q = 0;
  union {
    float f[4];
    double d[2];
  } work_q = {{0}}, rwork_q = {{0}};
  if (cplx)
    heevd(&jobz, &uplo, &n, g, &n, w, &work_q, &lwork, &rwork_q, &lrwork, &iwork_q, &liwork, &info);
  else
    syevd(&jobz, &uplo, &n, g, &n, w, &work_q, &lwork, &iwork_q, &liwork, &info);
  double lw = rsize == 4 ? (double)work_q.f[0] : work_q.d[0];
  double lrw = rsize == 4 ? (double)rwork_q.f[0] : rwork_q.d[0];
  lwork = lw > (double)lw64 && lw < (double)INT_MAX ? (int)lw : (int)lw64;
  lrwork = lrw > (double)lrw64 && lrw < (double)INT_MAX ? (int)lrw : (int)lrw64;
  liwork = iwork_q > liw64 ? iwork_q : (int)liw64;
  if (lrwork < 1) lrwork = 1;
  void* work = jmg_host_alloc(lwork, jmg_dtype_size(job->dtype));
  void* rwork = cplx ? jmg_host_alloc(lrwork, rsize) : NULL;
  int* iwork = jmg_host_alloc(liwork, sizeof(int));
  if (!work || (cplx && !rwork) || !iwork) {
    free(work);
    free(rwork);
    free(iwork);
    snprintf(err, JMG_ERRLEN, "out of host memory for the eigensolver workspace");
    return -1;
  }
  if (cplx)
    heevd(&jobz, &uplo, &n, g, &n, w, work, &lwork, rwork, &lrwork, iwork, &liwork, &info);
  else
    syevd(&jobz, &uplo, &n, g, &n, w, work, &lwork, iwork, &liwork, &info);
  free(work);
  free(rwork);
  free(iwork);
  if (info != 0) {
    jmg_host_fill_nan(rsize == 4 ? JMG_F32 : JMG_F64, w, n);
    jmg_host_fill_nan(job->dtype, g, (int64_t)n * n);
  }
  jmg_host_broadcast(job, 2, w, (size_t)n * rsize);
  res->info = info;
  return 0;
}

/* Where on_square finds A and leaves its result. A Cholesky factor
 * (chol_factor) stays in the cyclic tiles, as the GPU engine keeps its
 * own in cuSolverMg's layout: the solves read it there and leave it. */
typedef enum {
  IN_CALLER = 0, /* A in the caller's layout: moved into the cyclic one first */
  IN_CYCLIC = 1, /* already cyclic (a factor) */
} square_in;
typedef enum {
  OUT_NONE = 0,   /* A's shards are scratch (or, IN_CYCLIC, read only) */
  OUT_CYCLIC = 1, /* the result written into the cyclic tiles */
  OUT_CALLER = 2, /* ... and moved back into the caller's layout */
} square_out;

/* Assembles A from its tiles (moved there first where `in` says), runs fn
 * on it and writes the result back as `out` says. */
static int on_square(jmg_job* job, jmg_result* res, char* err, square_fn* fn, square_in in,
                     square_out out) {
  if (jmg_host_fits_int(job->n, "n", job, err)) return -1;
  int n = (int)job->n;
  char* g = jmg_host_alloc(job->n * job->n, jmg_dtype_size(job->dtype));
  if (!g) {
    snprintf(err, JMG_ERRLEN, "out of host memory for a %lld x %lld matrix", (long long)job->n,
             (long long)job->n);
    return -1;
  }
  int rc = in == IN_CALLER ? move_layout(job, 1, err) : 0;
  if (rc == 0) {
    tiles_to_matrix(job, g, 1);
    rc = fn(job, g, n, res, err);
  }
  if (rc == 0 && out != OUT_NONE) tiles_to_matrix(job, g, 0);
  if (rc == 0 && out == OUT_CALLER) rc = move_layout(job, 0, err);
  free(g);
  return rc;
}

int jmg_host_potrs(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, potrs_on, IN_CALLER, OUT_NONE); /* A is left as scratch */
}

int jmg_host_potri(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, potri_on, IN_CALLER, OUT_CALLER);
}

int jmg_host_syevd(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, syevd_on, IN_CALLER, OUT_CALLER);
}

int jmg_host_chol_factor(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, factor_on, IN_CALLER, OUT_CYCLIC);
}

int jmg_host_chol_solve(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, solve_on, IN_CYCLIC, OUT_NONE);
}

int jmg_host_chol_inverse(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, inverse_on, IN_CYCLIC, OUT_CALLER);
}
