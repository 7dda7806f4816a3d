/* host_general.c - lu_solve, least_squares, qr, gesvd and polar on the
 * host: the leader gathers E = A^T (n x m column-major: the shards side
 * by side, no layout move) and calls LAPACK on E itself, so that no
 * transpose is made where LAPACK has a routine for E (lu_solve and qr
 * transpose the shards straight into A, below):
 *
 *   lu_solve       the shards transposed straight into A (E^T exactly, no
 *                  conjugation, complex too), so that getrf factors A
 *                  itself, as cuSolverMg does, and its info is LAPACK's on
 *                  A (a zero column k of A is status k; the factors of A^T
 *                  would find it elsewhere); then getrs 'N'. An O(n^2)
 *                  copy after the meeting, in place of a collective before
 *                  it.
 *   least_squares  gels on E with 'T' (real) or 'C' (complex, on conj(b),
 *                  then x = conj of the result): the overdetermined
 *                  min || E^T x - b || through E's LQ factorization.
 *   qr             the shards transposed straight into A (column-major),
 *                  geqrf and orgqr / ungqr on it, Q's rows transposed
 *                  straight back into the shards: an LQ of E itself
 *                  (gelqf, row-wise Householder panels) measured 5-25 %
 *                  slower than the QR at N = 256-2048 (OpenBLAS).
 *   gesvd          gesdd(E) = U_E S VT_E: A = U S Vh with U^T = VT_E and
 *                  Vh^T = U_E, so VT_E's columns are U's row shards and
 *                  U_E read row-major is Vh. gesdd (divide and conquer)
 *                  rather than gesvd (QR iteration): several times faster
 *                  with vectors at large N, and the driver numpy, scipy
 *                  and jnp use by default.
 *   polar          from the SVD: Up = U Vh and H = Vh^H S Vh, so
 *                  Up^T = U_E VT_E and H^T = U_E S U_E^H (two gemm).
 *                  The SVD route is backward stable for any A, singular
 *                  or badly conditioned (Newton or QDWH iterations need
 *                  their count tuned to the condition number), and costs
 *                  one gesdd plus two products.
 *
 * Status is LAPACK's info; outputs are NaN when it is not 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engines/host_lapack.h"
#include "engines/host_ops.h"

typedef union scalar {
  float f[2];
  double d[2];
} scalar;

static scalar one_of(jmg_dtype t, double v) {
  scalar s;
  memset(&s, 0, sizeof s);
  if (jmg_dtype_real_size(t) == 4) s.f[0] = (float)v;
  else s.d[0] = v;
  return s;
}

static double real_at(jmg_dtype t, const void* p, int64_t i) {
  return jmg_dtype_real_size(t) == 4 ? (double)((const float*)p)[i] : ((const double*)p)[i];
}

/* The LAPACK query's answer (the first element of work) as a count. */
static int64_t queried(jmg_dtype t, const scalar* q) { return (int64_t)real_at(t, q, 0) + 1; }

static void conj_all(jmg_dtype t, void* p, int64_t count) {
  if (!jmg_dtype_is_complex(t)) return;
  for (int64_t i = 0; i < count; i++) {
    if (t == JMG_C64) ((float*)p)[2 * i + 1] = -((float*)p)[2 * i + 1];
    else ((double*)p)[2 * i + 1] = -((double*)p)[2 * i + 1];
  }
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* gesdd's jobz for a job: 'N', 'S' or 'A' (attr: U's columns, Vh's rows). */
static char svd_jobz(const jmg_job* job) {
  int64_t k = min64(job->m, job->n), ucols = job->attr[0], vrows = job->attr[1];
  if (job->op != JMG_GESVD) return 'S'; /* polar */
  if (!ucols && !vrows) return 'N';
  return (ucols > k || vrows > k) ? 'A' : 'S';
}

/* LAPACK's documented minimum workspace of gesdd, which its own query
 * computes in int: checked before anything is allocated. */
static void gesdd_sizes(const jmg_job* job, char jobz, int64_t* lwork, int64_t* lrwork,
                        int64_t* liwork) {
  int64_t mn = min64(job->m, job->n), mx = max64(job->m, job->n);
  if (jmg_dtype_is_complex(job->dtype)) {
    *lwork = jobz == 'N' ? 2 * mn + mx : mn * mn + 2 * mn + mx;
    *lrwork = jobz == 'N' ? 7 * mn : mn * max64(5 * mn + 7, 2 * mx + 2 * mn + 1);
  } else {
    *lwork = jobz == 'N' ? 3 * mn + max64(mx, 7 * mn) : 3 * mn + max64(mx, 4 * mn * mn + 7 * mn);
    *lrwork = 0;
  }
  *liwork = 8 * mn;
}

static int svd_attrs_ok(const jmg_job* job, char* err) {
  if (job->op != JMG_GESVD) return 0;
  int64_t k = min64(job->m, job->n), u = job->attr[0], v = job->attr[1];
  int full = u > k || v > k;
  int ok = full ? (u == 0 || u == job->m) && (v == 0 || v == job->n)
                : (u == 0 || u == k) && (v == 0 || v == k);
  if (ok) return 0;
  snprintf(err, JMG_ERRLEN, "gesvd: U with %lld columns and Vh with %lld rows do not fit a %lld x "
           "%lld matrix", (long long)u, (long long)v, (long long)job->m, (long long)job->n);
  return -1;
}

int jmg_host_general_workspace(const jmg_job* job, int64_t* bytes, char* err) {
  memset(bytes, 0, sizeof(int64_t) * (size_t)job->nparties);
  if (jmg_host_fits_int(job->m, "m", job, err) || jmg_host_fits_int(job->n, "n", job, err) ||
      jmg_host_fits_int(job->nrhs, "nrhs", job, err) ||
      jmg_host_fits_int(job->mpad, "rows", job, err) ||
      jmg_host_fits_int(job->mpad * job->nrhs, "m * nrhs", job, err) || svd_attrs_ok(job, err))
    return -1;
  if (job->op == JMG_GESVD || job->op == JMG_POLAR) {
    int64_t lwork, lrwork, liwork;
    gesdd_sizes(job, svd_jobz(job), &lwork, &lrwork, &liwork);
    if (jmg_host_fits_int(lwork, "an SVD workspace (gesdd lwork)", job, err) ||
        jmg_host_fits_int(lrwork, "an SVD workspace (gesdd lrwork)", job, err) ||
        jmg_host_fits_int(liwork, "an SVD workspace (gesdd liwork)", job, err))
      return -1;
  }
  return 0;
}

static int no_memory(char* err) {
  snprintf(err, JMG_ERRLEN, "out of host memory for the solver's workspace");
  return -1;
}

/* ---- lu_solve ---- */

int jmg_host_lu_solve(jmg_job* job, jmg_result* res, char* err) {
  la_getrf* getrf = (la_getrf*)jmg_la_get(JMG_LA_GETRF, job->dtype, err);
  la_getrs* getrs = (la_getrs*)jmg_la_get(JMG_LA_GETRS, job->dtype, err);
  if (!getrf || !getrs) return -1;
  char* e = jmg_host_alloc(job->n * job->n, jmg_dtype_size(job->dtype));
  int* ipiv = jmg_host_alloc(job->n, sizeof(int));
  if (!e || !ipiv) {
    free(e);
    free(ipiv);
    return no_memory(err);
  }
  int n = (int)job->n, k = (int)job->nrhs, info = 0;
  void* x = job->parties[0].b; /* b in, x out, in place */
  jmg_host_gather_a(job, e); /* A itself */
  getrf(&n, &n, e, &n, ipiv, &info);
  if (info == 0) {
    char trans = 'N';
    getrs(&trans, &n, &k, e, &n, ipiv, x, &n, &info);
  } else {
    jmg_host_fill_nan(job->dtype, x, job->n * job->nrhs);
  }
  jmg_host_broadcast(job, 1, x, (size_t)(job->n * job->nrhs) * jmg_dtype_size(job->dtype));
  free(e);
  free(ipiv);
  res->info = info;
  return 0;
}

/* ---- least_squares ---- */

/* gels returns x = 0 and info 0 for an all-zero A (its early exit on
 * max |a_ij| = 0), where R(1, 1) = 0 should give the status 1 of every
 * other rank deficiency; a scan of E (m n reads, next to gels's m n^2
 * flops) catches that case. */
static int all_zero(jmg_dtype t, const void* p, int64_t count) {
  int64_t reals = count * (jmg_dtype_is_complex(t) ? 2 : 1);
  for (int64_t i = 0; i < reals; i++)
    if (real_at(t, p, i) != 0) return 0;
  return 1;
}

int jmg_host_lstsq(jmg_job* job, jmg_result* res, char* err) {
  la_gels* gels = (la_gels*)jmg_la_get(JMG_LA_GELS, job->dtype, err);
  if (!gels) return -1;
  jmg_dtype t = job->dtype;
  size_t es = jmg_dtype_size(t);
  int m = (int)job->m, ldb = (int)job->mpad, n = (int)job->n, k = (int)job->nrhs, info = 0;
  int lwork = -1;
  char trans = jmg_dtype_is_complex(t) ? 'C' : 'T';
  char* e = jmg_host_gather(job, err);
  char* bw = jmg_host_alloc(job->mpad * job->nrhs, es);
  if (!e || !bw) {
    free(e);
    free(bw);
    return e ? no_memory(err) : -1;
  }
  memcpy(bw, job->parties[0].buf[3], (size_t)(job->mpad * job->nrhs) * es);
  conj_all(t, bw, job->mpad * job->nrhs);
  int rank0 = job->n > 0 && all_zero(t, e, job->n * job->m);
  scalar q;
  gels(&trans, &n, &m, &k, e, &n, bw, &ldb, &q, &lwork, &info);
  int64_t lw = max64(queried(t, &q), min64(job->m, job->n) + max64(min64(job->m, job->n), k));
  void* work = lw <= 2147483647 ? jmg_host_alloc(lw, es) : NULL;
  if (!work) {
    free(e);
    free(bw);
    return no_memory(err);
  }
  lwork = (int)lw;
  gels(&trans, &n, &m, &k, e, &n, bw, &ldb, work, &lwork, &info);
  if (rank0 && info == 0) info = 1;
  char* x = job->parties[0].b;
  for (int64_t j = 0; j < job->nrhs; j++)
    memcpy(x + (size_t)(j * job->n) * es, bw + (size_t)(j * job->mpad) * es, (size_t)job->n * es);
  if (info == 0) conj_all(t, x, job->n * job->nrhs);
  else jmg_host_fill_nan(t, x, job->n * job->nrhs);
  jmg_host_broadcast(job, 1, x, (size_t)(job->n * job->nrhs) * es);
  free(work);
  free(e);
  free(bw);
  res->info = info;
  return 0;
}

/* ---- qr ---- */

/* R (n x n, read row-major: R^T column-major) from the upper triangle of
 * geqrf's a (m x n, column-major). */
static void upper_of(jmg_dtype t, const char* a, int64_t m, int64_t n, char* r) {
  size_t es = jmg_dtype_size(t);
  memset(r, 0, (size_t)(n * n) * es);
  for (int64_t j = 0; j < n; j++)
    for (int64_t i = 0; i <= j; i++)
      memcpy(r + (size_t)(j + i * n) * es, a + (size_t)(i + j * m) * es, es);
}

int jmg_host_qr(jmg_job* job, jmg_result* res, char* err) {
  la_geqrf* geqrf = (la_geqrf*)jmg_la_get(JMG_LA_GEQRF, job->dtype, err);
  la_orgqr* orgqr = (la_orgqr*)jmg_la_get(JMG_LA_ORGQR, job->dtype, err);
  if (!geqrf || !orgqr) return -1;
  jmg_dtype t = job->dtype;
  size_t es = jmg_dtype_size(t);
  int m = (int)job->m, n = (int)job->n, info = 0, lwork = -1;
  char* a = jmg_host_alloc(job->m * job->n, es);
  char* tau = jmg_host_alloc(job->n, es);
  if (!a || !tau) {
    free(a);
    free(tau);
    return no_memory(err);
  }
  scalar q1, q2;
  geqrf(&m, &n, a, &m, tau, &q1, &lwork, &info);
  orgqr(&m, &n, &n, a, &m, tau, &q2, &lwork, &info);
  int64_t lw = max64(max64(queried(t, &q1), queried(t, &q2)), job->n);
  void* work = lw <= 2147483647 ? jmg_host_alloc(lw, es) : NULL;
  if (!work) {
    free(a);
    free(tau);
    return no_memory(err);
  }
  lwork = (int)lw;
  jmg_host_gather_a(job, a);
  geqrf(&m, &n, a, &m, tau, work, &lwork, &info);
  char* r = job->parties[0].b;
  if (info == 0) {
    upper_of(t, a, job->m, job->n, r);
    orgqr(&m, &n, &n, a, &m, tau, work, &lwork, &info);
  }
  if (info != 0) {
    jmg_host_fill_nan(t, r, job->n * job->n);
    jmg_host_fill_nan(t, a, job->m * job->n);
  }
  jmg_host_scatter_a(job, a);
  jmg_host_broadcast(job, 1, r, (size_t)(job->n * job->n) * es);
  free(work);
  free(a);
  free(tau);
  res->info = info;
  return 0;
}

/* ---- gesvd and polar: gesdd on E ---- */

typedef struct svd {
  char jobz;
  int64_t k;          /* min(m, n) */
  int64_t ucols_e;    /* U_E's columns (n x ucols_e, ld n) */
  int64_t vt_rows;    /* VT_E's rows = its leading dimension (vt_rows x m) */
  char *ue, *vte, *s; /* U_E, VT_E, the singular values (real) */
} svd;

static void svd_free(svd* d) {
  free(d->ue);
  free(d->vte);
  free(d->s);
}

/* gesdd on E (destroyed); d's buffers are allocated here. */
static int run_gesdd(jmg_job* job, char* e, svd* d, int32_t* info_out, char* err) {
  jmg_dtype t = job->dtype;
  int cplx = jmg_dtype_is_complex(t);
  la_gesdd_r* gr = (la_gesdd_r*)jmg_la_get(JMG_LA_GESDD, t, err);
  la_gesdd_c* gc = (la_gesdd_c*)jmg_la_get(JMG_LA_GESDD, t, err);
  if (!gr) return -1;
  size_t es = jmg_dtype_size(t), rs = jmg_dtype_real_size(t);
  d->k = min64(job->m, job->n);
  d->ucols_e = d->jobz == 'A' ? job->n : d->jobz == 'S' ? d->k : 1;
  d->vt_rows = d->jobz == 'A' ? job->m : d->jobz == 'S' ? d->k : 1;
  int64_t vt_cols = d->jobz == 'N' ? 1 : job->m;
  int64_t lwork, lrwork, liwork;
  gesdd_sizes(job, d->jobz, &lwork, &lrwork, &liwork);
  d->ue = jmg_host_alloc(job->n * d->ucols_e, es);
  d->vte = jmg_host_alloc(d->vt_rows * vt_cols, es);
  d->s = jmg_host_alloc(d->k, rs);
  int* iwork = jmg_host_alloc(liwork, sizeof(int));
  void* rwork = cplx ? jmg_host_alloc(max64(lrwork, 1), rs) : NULL;
  int m = (int)job->m, n = (int)job->n, ldu = (int)job->n, ldvt = (int)d->vt_rows;
  int lw = -1, info = 0;
  scalar q;
  void* work = NULL;
  if (!d->ue || !d->vte || !d->s || !iwork || (cplx && !rwork)) goto oom;
  if (cplx)
    gc(&d->jobz, &n, &m, e, &n, d->s, d->ue, &ldu, d->vte, &ldvt, &q, &lw, rwork, iwork, &info);
  else
    gr(&d->jobz, &n, &m, e, &n, d->s, d->ue, &ldu, d->vte, &ldvt, &q, &lw, iwork, &info);
  lwork = max64(lwork, queried(t, &q));
  work = lwork <= 2147483647 ? jmg_host_alloc(lwork, es) : NULL;
  if (!work) goto oom;
  lw = (int)lwork;
  if (cplx)
    gc(&d->jobz, &n, &m, e, &n, d->s, d->ue, &ldu, d->vte, &ldvt, work, &lw, rwork, iwork, &info);
  else
    gr(&d->jobz, &n, &m, e, &n, d->s, d->ue, &ldu, d->vte, &ldvt, work, &lw, iwork, &info);
  free(work);
  free(iwork);
  free(rwork);
  *info_out = info;
  return 0;
oom:
  free(iwork);
  free(rwork);
  return no_memory(err);
}

int jmg_host_gesvd(jmg_job* job, jmg_result* res, char* err) {
  jmg_dtype t = job->dtype;
  size_t es = jmg_dtype_size(t), rs = jmg_dtype_real_size(t);
  int64_t ucols = job->attr[0], vrows = job->attr[1];
  svd d;
  memset(&d, 0, sizeof d);
  d.jobz = svd_jobz(job);
  char* e = jmg_host_gather(job, err);
  if (!e) return -1;
  int rc = run_gesdd(job, e, &d, &res->info, err);
  free(e);
  if (rc) {
    svd_free(&d);
    return -1;
  }
  jmg_dtype rt = rs == 4 ? JMG_F32 : JMG_F64;
  if (res->info != 0) {
    jmg_host_fill_nan(rt, d.s, d.k);
    if (d.jobz != 'N') {
      jmg_host_fill_nan(t, d.ue, job->n * d.ucols_e);
      jmg_host_fill_nan(t, d.vte, d.vt_rows * job->m);
    }
  }
  jmg_host_broadcast(job, 2, d.s, (size_t)d.k * rs);
  if (ucols) jmg_host_scatter(job, 3, d.vte, d.vt_rows, d.vt_rows);
  if (vrows) jmg_host_broadcast(job, 1, d.ue, (size_t)(job->n * vrows) * es);
  svd_free(&d);
  return 0;
}

int jmg_host_polar(jmg_job* job, jmg_result* res, char* err) {
  jmg_dtype t = job->dtype;
  la_gemm* gemm = (la_gemm*)jmg_la_get(JMG_LA_GEMM, t, err);
  if (!gemm) return -1;
  size_t es = jmg_dtype_size(t);
  svd d;
  memset(&d, 0, sizeof d);
  d.jobz = 'S';
  char* e = jmg_host_gather(job, err);
  if (!e) return -1;
  if (run_gesdd(job, e, &d, &res->info, err)) {
    free(e);
    svd_free(&d);
    return -1;
  }
  int m = (int)job->m, n = (int)job->n, k = (int)d.k;
  scalar one = one_of(t, 1), zero = one_of(t, 0);
  char nn = 'N', cc = 'C';
  /* Up^T = U_E VT_E, n x m: the shards of Up side by side (into e). */
  gemm(&nn, &nn, &n, &m, &k, &one, d.ue, &n, d.vte, &k, &zero, e, &n);
  if (res->info != 0) jmg_host_fill_nan(t, e, job->n * job->m);
  jmg_host_scatter(job, 0, e, job->n, job->n);
  if (job->attr[0]) {
    /* H^T = (U_E S) U_E^H, n x n. */
    char* us = jmg_host_alloc(job->n * d.k, es);
    if (!us) {
      free(e);
      svd_free(&d);
      return no_memory(err);
    }
    int cplx = jmg_dtype_is_complex(t);
    for (int64_t j = 0; j < d.k; j++) {
      double sj = real_at(t, d.s, j);
      for (int64_t i = 0; i < job->n * (cplx ? 2 : 1); i++) {
        int64_t at = j * job->n * (cplx ? 2 : 1) + i;
        if (jmg_dtype_real_size(t) == 4) ((float*)us)[at] = (float)(((float*)d.ue)[at] * sj);
        else ((double*)us)[at] = ((double*)d.ue)[at] * sj;
      }
    }
    char* h = job->parties[0].b;
    gemm(&nn, &cc, &n, &n, &k, &one, us, &n, d.ue, &n, &zero, h, &n);
    if (res->info != 0) jmg_host_fill_nan(t, h, job->n * job->n);
    jmg_host_broadcast(job, 1, h, (size_t)(job->n * job->n) * es);
    free(us);
  }
  free(e);
  svd_free(&d);
  return 0;
}
