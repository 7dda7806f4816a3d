/* host_sygvd.c - the generalized Hermitian-definite eigenproblem
 * A x = lambda B x on the host: the leader gathers A's and B's shards,
 * calls LAPACK sygvd / hegvd (itype 1) on the leading nvalid x nvalid
 * pencil (the rest is padding, op_table.c) and writes the eigenvectors
 * into A's shards, the eigenvalues to every party.
 *
 * As everywhere, the engine sees E = A^T = conj(A) and E_B = conj(B) and
 * reads their lower triangles (A's and B's upper ones); the eigenvectors
 * of that pencil are the conjugates of A's and B's, and they leave as the
 * rows of the shards (engine.h): the Python layer transposes and
 * conjugates them, as for syevd.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "engines/host_lapack.h"
#include "engines/host_ops.h"

/* LAPACK's work arrays for one call. */
typedef struct gvd_work {
  void* work;
  void* rwork;
  int* iwork;
  int lwork, lrwork, liwork;
} gvd_work;

static void gvd_free(gvd_work* w) {
  free(w->work);
  free(w->rwork);
  free(w->iwork);
}

/* The larger of the documented minimum and the query's answer, as sizes;
 * the query's reals may ask for more (the blocked reduction). */
static int as_size(double queried, int64_t minimum) {
  return queried > (double)minimum && queried < (double)INT_MAX ? (int)queried : (int)minimum;
}

/* Work arrays for order n: query, then allocate. */
static int gvd_alloc(jmg_job* job, int n, int ld, void* g, void* gb, void* w, gvd_work* out,
                     char* err) {
  int cplx = jmg_dtype_is_complex(job->dtype), itype = 1, info = 0, q = -1, iq = 0;
  size_t rs = jmg_dtype_real_size(job->dtype);
  char jobz = job->jobz ? 'V' : 'N', uplo = 'L';
  union {
    float f[4];
    double d[2];
  } wq = {{0}}, rq = {{0}};
  jmg_la_fn* fn = jmg_la_get(JMG_LA_GVD, job->dtype, err);
  if (!fn) return -1;
  if (cplx)
    ((la_hegvd*)fn)(&itype, &jobz, &uplo, &n, g, &ld, gb, &ld, w, &wq, &q, &rq, &q, &iq, &q, &info);
  else
    ((la_sygvd*)fn)(&itype, &jobz, &uplo, &n, g, &ld, gb, &ld, w, &wq, &q, &iq, &q, &info);
  jmg_job sized = *job;
  sized.n = n;
  int64_t lw, lrw, liw;
  jmg_host_evd_sizes(&sized, &lw, &lrw, &liw);
  out->lwork = as_size(rs == 4 ? (double)wq.f[0] : wq.d[0], lw);
  out->lrwork = as_size(rs == 4 ? (double)rq.f[0] : rq.d[0], lrw > 0 ? lrw : 1);
  out->liwork = iq > liw ? iq : (int)liw;
  out->work = jmg_host_alloc(out->lwork, jmg_dtype_size(job->dtype));
  out->rwork = cplx ? jmg_host_alloc(out->lrwork, rs) : NULL;
  out->iwork = jmg_host_alloc(out->liwork, sizeof(int));
  if (out->work && (out->rwork || !cplx) && out->iwork) return 0;
  gvd_free(out);
  snprintf(err, JMG_ERRLEN, "out of host memory for the eigensolver workspace");
  return -1;
}

/* LAPACK's info: 0; 1..n no convergence; n + k B's leading minor k. */
static int gvd_call(jmg_job* job, int n, int ld, void* g, void* gb, void* w, int* info,
                    char* err) {
  gvd_work wk;
  if (gvd_alloc(job, n, ld, g, gb, w, &wk, err)) return -1;
  int itype = 1;
  char jobz = job->jobz ? 'V' : 'N', uplo = 'L';
  jmg_la_fn* fn = jmg_la_get(JMG_LA_GVD, job->dtype, err);
  if (jmg_dtype_is_complex(job->dtype))
    ((la_hegvd*)fn)(&itype, &jobz, &uplo, &n, g, &ld, gb, &ld, w, wk.work, &wk.lwork, wk.rwork,
                    &wk.lrwork, wk.iwork, &wk.liwork, info);
  else
    ((la_sygvd*)fn)(&itype, &jobz, &uplo, &n, g, &ld, gb, &ld, w, wk.work, &wk.lwork, wk.iwork,
                    &wk.liwork, info);
  gvd_free(&wk);
  return 0;
}

/* Zeroes what lies outside the leading nv x nv block of the ld x ld g,
 * so that the padding's part of V is defined. */
static void clear_pad(char* g, int64_t ld, int64_t nv, size_t es) {
  for (int64_t j = 0; j < ld; j++) {
    int64_t from = j < nv ? nv : 0;
    memset(g + (size_t)(j * ld + from) * es, 0, (size_t)(ld - from) * es);
  }
}

int jmg_host_sygvd(jmg_job* job, jmg_result* res, char* err) {
  int64_t nv = job->attr[1];
  if (nv < 1 || nv > job->n) {
    snprintf(err, JMG_ERRLEN, "sygvd: nvalid = %lld is not in [1, %lld]", (long long)nv,
             (long long)job->n);
    return -1;
  }
  size_t es = jmg_dtype_size(job->dtype), rs = jmg_dtype_real_size(job->dtype);
  char* g = jmg_host_gather_slot(job, 0, err);
  char* gb = g ? jmg_host_gather_slot(job, 3, err) : NULL;
  void* w = job->parties[0].w;
  int info = 0, rc = g && gb ? 0 : -1;
  if (rc == 0) {
    memset(w, 0, (size_t)job->n * rs);
    rc = gvd_call(job, (int)nv, (int)job->n, g, gb, w, &info, err);
  }
  if (rc == 0) {
    if (info != 0) {
      jmg_host_fill_nan(rs == 4 ? JMG_F32 : JMG_F64, w, job->n);
      jmg_host_fill_nan(job->dtype, g, job->n * job->n);
    } else {
      clear_pad(g, job->n, nv, es);
    }
    jmg_host_broadcast(job, 2, w, (size_t)job->n * rs);
    if (job->jobz) jmg_host_scatter(job, 0, g, job->n, job->n);
    res->info = info;
  }
  free(g);
  free(gb);
  return rc;
}
