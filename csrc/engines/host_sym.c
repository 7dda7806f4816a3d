/* host_sym.c - potrs, potri, syevd and the factor-reuse ops (chol_*) on
 * the host: the leader assembles A (n x n, A's rows only: the shards' pad
 * rows stay out) from the shards, calls LAPACK on it and writes the
 * results back. LAPACK blocks for itself, so the tile plays no part here
 * and the Python layer pads nothing for this engine (docs/tiles.md). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/host_lapack.h"
#include "engines/host_ops.h"

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

/* ---- A's rows between the shards and the assembled matrix ---- */

/* Copies between the n x n matrix g (column-major: column j is A's row j,
 * read as E) and the shards, which hold A's rows at their heads
 * (engine.h): no tiles and no padding on the host, whatever the tile. */
static void shards_to_matrix(const jmg_job* job, char* g, int into_matrix) {
  size_t col = (size_t)job->n * jmg_dtype_size(job->dtype);
  int64_t l = jmg_job_lrows(job);
  for (int r = 0; r < job->nparties; r++) {
    int64_t first = r * l, cols = job->n - first < l ? job->n - first : l;
    if (cols <= 0) break;
    char* shard = job->parties[r].a;
    char* mat = g + (size_t)first * col;
    if (into_matrix) memcpy(mat, shard, (size_t)cols * col);
    else memcpy(shard, mat, (size_t)cols * col);
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

/* Assembles A from the shards, runs fn on it and, with write_back, puts
 * the result back into them. A Cholesky factor (chol_factor) is kept in the
 * shards as A was, so the solves and the inverse from it read it alike. */
static int on_square(jmg_job* job, jmg_result* res, char* err, square_fn* fn, int write_back) {
  if (jmg_host_fits_int(job->n, "n", job, err)) return -1;
  int n = (int)job->n;
  /* One party's shard is the matrix already (its leading n rows, read as
   * E), and the engine's to overwrite: no copy of A, no n x n allocation. */
  if (job->nparties == 1) return fn(job, job->parties[0].a, n, res, err);
  char* g = jmg_host_alloc(job->n * job->n, jmg_dtype_size(job->dtype));
  if (!g) {
    snprintf(err, JMG_ERRLEN, "out of host memory for a %lld x %lld matrix", (long long)job->n,
             (long long)job->n);
    return -1;
  }
  shards_to_matrix(job, g, 1);
  int rc = fn(job, g, n, res, err);
  if (rc == 0 && write_back) shards_to_matrix(job, g, 0);
  free(g);
  return rc;
}

int jmg_host_potrs(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, potrs_on, 0); /* A is left as scratch */
}

int jmg_host_potri(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, potri_on, 1);
}

int jmg_host_syevd(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, syevd_on, 1);
}

int jmg_host_chol_factor(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, factor_on, 1);
}

int jmg_host_chol_solve(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, solve_on, 0);
}

int jmg_host_chol_inverse(jmg_job* job, jmg_result* res, char* err) {
  return on_square(job, res, err, inverse_on, 1);
}
