/* dn_general.c - lu_solve, least_squares, qr, gesvd, polar and sygvd on one GPU
 * (the group's first) with cuSOLVER and cuBLAS: the shards are gathered
 * into G = E (n x mpad, the engine's column-major view, engine.h), solved
 * there, and the results scattered back, until the cuSOLVERMp engine runs
 * them distributed. With one party G is its shard: nothing is gathered.
 * The size limit: rank 0 holds G, a copy of A and the outputs (about
 * 2 m n elements for least squares and qr, 3 to 4 for gesvd and polar,
 * next to cuSOLVER's workspace), and every dimension is below 2^31
 * (cuBLAS and the legacy cuSOLVER routines take int).
 *
 *   lu_solve       A = E^T by geam (E = A^T exactly, complex too: no
 *                  conjugation), so that Xgetrf factors A itself and its
 *                  info is LAPACK's on A (as host_general.c); Xgetrs 'N'.
 *   least_squares  A = E^T by geam, Xgeqrf, ormqr (Q^H b), trsm with R.
 *   qr             A = E^T, Xgeqrf, R^T out (R read row-major), orgqr,
 *                  Q^T back into the shards.
 *   gesvd, polar   Xgesvd (it needs rows >= columns) on T = A when
 *                  m >= n, else on T = E = A^T; U, Vh, Up and H follow by
 *                  transposes (geam) and products (gemm), as in
 *                  host_general.c.
 *   sygvd          A's and B's shards gathered (G = conj(A), BG = conj(B)),
 *                  legacy sygvd / hegvd on their leading nvalid x nvalid
 *                  pencil, V (the eigenvectors as G's columns) back into
 *                  A's shards: the host engine's host_sygvd.c on a GPU.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engines/cuda/gpu_typed.h"
#include "engines/cuda/gpu_util.h"
#include "engines/cuda/solvers.h"

#define BLAS(call)                                                      \
  do {                                                                  \
    int s_ = (call);                                                    \
    if (s_ != 0) {                                                      \
      snprintf(err, JMG_ERRLEN, "%s failed: status %d", #call, s_);     \
      goto fail;                                                        \
    }                                                                   \
  } while (0)

/* Byte offsets into rank 0's workspace, and cuSOLVER's workspace sizes. */
typedef struct dn_plan {
  int64_t g, t, tau, s, sx, u, vt, ut, h, x, b, bg, w, ipiv, info, dwork, total;
  size_t dwork_bytes, hwork_bytes;
  int tall;          /* gesvd/polar: 1 when T = A (m >= n), 0 when T = E */
  int64_t rt, ct, k; /* T's rows and columns, k = min */
  char jobu, jobvt;  /* for Xgesvd on T */
} dn_plan;

static int64_t take(int64_t* at, int64_t bytes) {
  int64_t o = *at;
  *at += gpu_round_up(bytes > 0 ? bytes : 1);
  return o;
}

/* G's place: with one party its shard (A's result buffer, the engine's to
 * overwrite) is G already, so G takes no workspace and A is not copied. */
static int64_t take_g(const jmg_job* job, int64_t* at, int64_t bytes) {
  return take(at, job->nparties > 1 ? bytes : 0);
}

static int64_t es_of(const jmg_job* job) { return (int64_t)jmg_dtype_size(job->dtype); }

static int fits_int(const jmg_job* job, char* err) {
  int64_t v[4] = {job->mpad, job->n, job->nrhs, job->attr[0]};
  for (int i = 0; i < 4; i++)
    if (v[i] > 2147483647) {
      snprintf(err, JMG_ERRLEN, "%s on one GPU: a dimension of %lld exceeds cuSOLVER's int",
               jmg_dtype_name(job->dtype), (long long)v[i]);
      return -1;
    }
  return 0;
}

/* ---- plans: what each op keeps in rank 0's workspace ---- */

typedef int plan_fn(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err);

static int plan_lu(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err) {
  int64_t n = job->n, at = 0;
  cudaDataType t = mg_cuda_type(job->dtype);
  const void* any = job->parties[0].a; /* the queries read no data */
  SOLVER(cusolverDnXgetrf_bufferSize(ctx->dn, ctx->dn_params, n, n, t, any, n, t, &p->dwork_bytes,
                                     &p->hwork_bytes));
  p->g = take_g(job, &at, n * job->mpad * es_of(job)); /* whole shards land there */
  p->t = take(&at, n * n * es_of(job));         /* A = E^T, factored in place */
  p->ipiv = take(&at, n * (int64_t)sizeof(int64_t));
  p->info = take(&at, 256);
  p->dwork = take(&at, (int64_t)p->dwork_bytes);
  p->total = at;
  return 0;
fail:
  return -1;
}

/* least_squares and qr: G, A = E^T, tau (and b's copy). */
static int plan_qr_common(const jmg_job* job, mg_context* ctx, dn_plan* p, int lstsq, char* err) {
  int64_t m = job->m, n = job->n, at = 0, es = es_of(job);
  cudaDataType t = mg_cuda_type(job->dtype);
  const void* any = job->parties[0].a;
  size_t d1 = 0, h1 = 0;
  int lw = 0;
  SOLVER(cusolverDnXgeqrf_bufferSize(ctx->dn, ctx->dn_params, m, n, t, any, m, t, any, t, &d1, &h1));
  if (lstsq)
    BLAS(gpu_ormqr_size(ctx->dn, job->dtype, (int)m, (int)job->nrhs, (int)n, any, (int)m, any, any,
                        (int)job->mpad, &lw));
  else
    BLAS(gpu_orgqr_size(ctx->dn, job->dtype, (int)m, (int)n, (int)n, any, (int)m, any, &lw));
  p->dwork_bytes = d1 > (size_t)lw * (size_t)es ? d1 : (size_t)lw * (size_t)es;
  p->hwork_bytes = h1;
  p->g = take_g(job, &at, n * job->mpad * es);
  p->t = take(&at, m * n * es);
  p->tau = take(&at, n * es);
  if (lstsq) p->b = take(&at, job->mpad * job->nrhs * es);
  p->info = take(&at, 256);
  p->dwork = take(&at, (int64_t)p->dwork_bytes);
  p->total = at;
  return 0;
fail:
  return -1;
}

static int plan_lstsq(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err) {
  return plan_qr_common(job, ctx, p, 1, err);
}

static int plan_qr(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err) {
  return plan_qr_common(job, ctx, p, 0, err);
}

/* gesvd and polar: T, its SVD and the products. */
static int plan_svd(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err) {
  int64_t m = job->m, n = job->n, at = 0, es = es_of(job);
  int64_t rs = (int64_t)jmg_dtype_real_size(job->dtype);
  int polar = job->op == JMG_POLAR;
  p->tall = m >= n;
  p->rt = p->tall ? m : n;
  p->ct = p->tall ? n : m;
  p->k = p->ct;
  int64_t ucols = polar ? p->k : job->attr[0], vrows = polar ? p->k : job->attr[1];
  int full = ucols > p->k || vrows > p->k;
  /* U_T goes with A's U when T = A, with A's Vh when T = A^T. */
  int64_t want_u = p->tall ? ucols : vrows, want_v = p->tall ? vrows : ucols;
  p->jobu = want_u ? (full ? 'A' : 'S') : 'N';
  p->jobvt = want_v ? 'S' : 'N';
  int64_t ucols_t = p->jobu == 'A' ? p->rt : p->k;
  cudaDataType t = mg_cuda_type(job->dtype);
  const void* any = job->parties[0].a;
  SOLVER(cusolverDnXgesvd_bufferSize(ctx->dn, ctx->dn_params, (signed char)p->jobu,
                                     (signed char)p->jobvt, p->rt, p->ct, t, any, p->rt,
                                     mg_cuda_real_type(job->dtype), any, t, any, p->rt, t, any,
                                     p->k, t, &p->dwork_bytes, &p->hwork_bytes));
  p->g = take_g(job, &at, n * job->mpad * es);
  p->t = take(&at, p->rt * p->ct * es);
  p->s = take(&at, p->k * rs);
  p->sx = take(&at, p->k * es);
  p->u = take(&at, p->rt * ucols_t * es);
  p->vt = take(&at, p->k * p->ct * es);
  if (!polar) p->ut = take(&at, ucols * job->mpad * es);
  if (polar) p->x = take(&at, p->k * n * es);
  if (polar && job->attr[0]) p->h = take(&at, n * n * es);
  p->info = take(&at, 256);
  p->dwork = take(&at, (int64_t)p->dwork_bytes);
  p->total = at;
  return 0;
fail:
  return -1;
}

/* sygvd: G (A), BG (B), w and cuSOLVER's workspace (legacy API: int). */
static int plan_sygvd(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err) {
  int64_t n = job->n, at = 0, nv = job->attr[1];
  int lw = 0;
  const void* any = job->parties[0].a;
  cusolverEigMode_t jobz = job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
  BLAS(gpu_sygvd_size(ctx->dn, job->dtype, jobz, (int)nv, any, (int)n, any, (int)n, any, &lw));
  if (lw < 0) {
    snprintf(err, JMG_ERRLEN, "sygvd on one GPU at n = %lld: cuSOLVER's workspace does not fit "
             "its int", (long long)nv);
    return -1;
  }
  p->dwork_bytes = (size_t)(lw > 0 ? lw : 1) * (size_t)es_of(job);
  p->g = take_g(job, &at, n * n * es_of(job));
  p->bg = take(&at, n * n * es_of(job));
  p->w = take(&at, n * (int64_t)jmg_dtype_real_size(job->dtype));
  p->info = take(&at, 256);
  p->dwork = take(&at, (int64_t)p->dwork_bytes);
  p->total = at;
  return 0;
fail:
  return -1;
}

static plan_fn* const plans[JMG_NOPS] = {
    [JMG_LU_SOLVE] = plan_lu, [JMG_LSTSQ] = plan_lstsq, [JMG_QR] = plan_qr,
    [JMG_GESVD] = plan_svd,   [JMG_POLAR] = plan_svd, [JMG_SYGVD] = plan_sygvd,
};

static int plan(const jmg_job* job, mg_context* ctx, dn_plan* p, char* err) {
  memset(p, 0, sizeof *p);
  if (fits_int(job, err) || mg_context_blas(ctx, err)) return -1;
  if (cudaSetDevice(ctx->dev[0]) != cudaSuccess) {
    snprintf(err, JMG_ERRLEN, "cudaSetDevice(%d) failed", ctx->dev[0]);
    return -1;
  }
  return plans[job->op](job, ctx, p, err);
}

int dn_general_workspace(const jmg_job* job, mg_context* ctx, int64_t* bytes, char* err) {
  dn_plan p;
  if (plan(job, ctx, &p, err)) return -1;
  bytes[0] = p.total;
  for (int r = 1; r < job->nparties; r++) bytes[r] = 0;
  return 0;
}

/* ---- moving data ---- */

/* Shard r (n x nloc, slot `slot`) <-> columns [r nloc, (r+1) nloc) of g
 * (rows x mpad on rank 0's device). */
static int shards(const jmg_job* job, mg_context* ctx, int slot, char* g, int64_t rows, int to_g,
                  char* err) {
  size_t shard = (size_t)rows * (size_t)job->nloc * jmg_dtype_size(job->dtype);
  for (int r = 0; r < job->nparties && shard; r++) {
    char* mine = job->parties[r].buf[slot];
    char* there = g + (size_t)r * shard;
    if (mine == there) continue; /* one party: G is its shard */
    if (to_g) CU(cudaMemcpyPeerAsync(there, ctx->dev[0], mine, ctx->dev[r], shard, ctx->stream[r]));
    else CU(cudaMemcpyPeerAsync(mine, ctx->dev[r], there, ctx->dev[0], shard, ctx->stream[r]));
  }
  return gpu_sync_streams(ctx, err);
fail:
  return -1;
}

/* Zeroes the pad columns m..mpad of a rows x mpad matrix (rank 0, stream 0). */
static int zero_pad(const jmg_job* job, mg_context* ctx, char* g, int64_t rows, char* err) {
  size_t col = (size_t)rows * jmg_dtype_size(job->dtype);
  if (job->mpad > job->m)
    CU(cudaMemsetAsync(g + (size_t)job->m * col, 0, (size_t)(job->mpad - job->m) * col,
                       ctx->stream[0]));
  return 0;
fail:
  return -1;
}

/* src (bytes, on rank 0's device, complete) into slot `slot` of every party. */
static int to_all(const jmg_job* job, mg_context* ctx, int slot, const void* src, size_t bytes,
                  char* err) {
  void* outs[JMG_MAX_DEVICES];
  for (int r = 0; r < job->nparties; r++) outs[r] = job->parties[r].buf[slot];
  CU(cudaStreamSynchronize(ctx->stream[0]));
  return bytes ? gpu_broadcast(ctx, outs, src, bytes, err) : 0;
fail:
  return -1;
}

static int nan_fill(mg_context* ctx, void* p, size_t bytes, char* err) {
  return bytes ? gpu_fill_nan(p, ctx->dev[0], bytes, ctx->stream[0], err) : 0;
}

static int read_info(mg_context* ctx, const int* d_info, int32_t* info, char* err) {
  int h = 0;
  CU(cudaMemcpyAsync(&h, d_info, sizeof h, cudaMemcpyDeviceToHost, ctx->stream[0]));
  CU(cudaStreamSynchronize(ctx->stream[0]));
  *info = h;
  return 0;
fail:
  return -1;
}

/* The common frame of a run: plan, gather, host workspace. */
typedef struct dn_run {
  dn_plan p;
  char *base, *g;
  void* hwork;
  cudaDataType t;
  int64_t es;
} dn_run;

static int begin(jmg_job* job, mg_context* ctx, dn_run* r, char* err) {
  if (plan(job, ctx, &r->p, err)) return -1;
  r->base = job->parties[0].work;
  r->g = job->nparties == 1 ? (char*)job->parties[0].a : r->base + r->p.g;
  r->t = mg_cuda_type(job->dtype);
  r->es = es_of(job);
  r->hwork = r->p.hwork_bytes ? malloc(r->p.hwork_bytes) : NULL;
  if (r->p.hwork_bytes && !r->hwork) {
    snprintf(err, JMG_ERRLEN, "out of host memory for cuSOLVER's host workspace");
    return -1;
  }
  if (shards(job, ctx, 0, r->g, job->n, 1, err) ||
      cudaSetDevice(ctx->dev[0]) != cudaSuccess) {
    if (!err[0]) snprintf(err, JMG_ERRLEN, "cudaSetDevice(%d) failed", ctx->dev[0]);
    free(r->hwork);
    return -1;
  }
  return 0;
}

static int end(mg_context* ctx, dn_run* r, int rc, char* err) {
  char ignored[JMG_ERRLEN]; /* keep the first error, but let issued work finish */
  if (gpu_sync_streams(ctx, rc ? ignored : err)) rc = -1;
  free(r->hwork);
  return rc;
}

#define AT(r, off) ((r).base + (r).p.off)

/* ---- lu_solve ---- */

int dn_lu_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_run r;
  if (begin(job, ctx, &r, err)) return -1;
  int64_t n = job->n;
  int* d_info = (int*)(void*)AT(r, info);
  void* b0 = job->parties[0].b;
  size_t xbytes = (size_t)(n * job->nrhs * r.es);
  BLAS(gpu_geam(ctx->blas, job->dtype, CUBLAS_OP_T, CUBLAS_OP_T, (int)n, (int)n, 1, r.g,
                (int)n, 0, r.g, (int)n, AT(r, t), (int)n));
  SOLVER(cusolverDnXgetrf(ctx->dn, ctx->dn_params, n, n, r.t, AT(r, t), n, (int64_t*)(void*)AT(r, ipiv),
                          r.t, AT(r, dwork), r.p.dwork_bytes, r.hwork, r.p.hwork_bytes, d_info));
  /* getrs is queued behind getrf, with one wait for getrf's info (getrs
   * reports its own, argument errors only, where getrf's is not): a
   * solution from a singular U is overwritten with NaN after it. */
  SOLVER(cusolverDnXgetrs(ctx->dn, ctx->dn_params, CUBLAS_OP_N, n, job->nrhs, r.t, AT(r, t), n,
                          (const int64_t*)(const void*)AT(r, ipiv), r.t, b0, n, d_info + 1));
  if (read_info(ctx, d_info, &res->info, err)) goto fail;
  if (res->info != 0 && nan_fill(ctx, b0, xbytes, err)) goto fail;
  if (to_all(job, ctx, 1, b0, xbytes, err)) goto fail;
  return end(ctx, &r, 0, err);
fail:
  return end(ctx, &r, -1, err);
}

/* ---- least_squares and qr ---- */

/* T = E^T (m x n) from G. */
static int transpose_in(const jmg_job* job, mg_context* ctx, dn_run* r, char* err) {
  BLAS(gpu_geam(ctx->blas, job->dtype, CUBLAS_OP_T, CUBLAS_OP_T, (int)job->m, (int)job->n, 1,
                r->g, (int)job->n, 0, r->g, (int)job->n, AT(*r, t), (int)job->m));
  return 0;
fail:
  return -1;
}

/* The first exactly zero diagonal entry of R (n x n in the m x n T), 1-based, or 0. */
static int zero_pivot(const jmg_job* job, mg_context* ctx, dn_run* r, int32_t* info, char* err) {
  size_t es = (size_t)r->es;
  char* d = malloc((size_t)job->n * es + 1);
  if (!d) {
    snprintf(err, JMG_ERRLEN, "out of host memory");
    return -1;
  }
  CU(cudaStreamSynchronize(ctx->stream[0]));
  CU(cudaMemcpy2D(d, es, AT(*r, t), (size_t)(job->m + 1) * es, es, (size_t)job->n,
                  cudaMemcpyDeviceToHost));
  *info = 0;
  int rs = (int)jmg_dtype_real_size(job->dtype), cplx = jmg_dtype_is_complex(job->dtype);
  for (int64_t i = 0; i < job->n && !*info; i++) {
    const char* e = d + (size_t)i * es;
    double re = rs == 4 ? (double)((const float*)(const void*)e)[0] : ((const double*)(const void*)e)[0];
    double im = !cplx ? 0 : rs == 4 ? (double)((const float*)(const void*)e)[1] : ((const double*)(const void*)e)[1];
    if (re == 0 && im == 0) *info = (int32_t)(i + 1);
  }
  free(d);
  return 0;
fail:
  free(d);
  return -1;
}

int dn_lstsq_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_run r;
  if (begin(job, ctx, &r, err)) return -1;
  int m = (int)job->m, n = (int)job->n, k = (int)job->nrhs, ldb = (int)job->mpad;
  int* d_info = (int*)(void*)AT(r, info);
  void* x0 = job->parties[0].b;
  size_t xbytes = (size_t)((int64_t)n * k * r.es);
  if (transpose_in(job, ctx, &r, err)) goto fail;
  CU(cudaMemcpyAsync(AT(r, b), job->parties[0].buf[3], (size_t)((int64_t)ldb * k * r.es),
                     cudaMemcpyDeviceToDevice, ctx->stream[0]));
  SOLVER(cusolverDnXgeqrf(ctx->dn, ctx->dn_params, m, n, r.t, AT(r, t), m, r.t, AT(r, tau), r.t,
                          AT(r, dwork), r.p.dwork_bytes, r.hwork, r.p.hwork_bytes, d_info));
  if (zero_pivot(job, ctx, &r, &res->info, err)) goto fail;
  if (res->info == 0) {
    int lw = (int)(r.p.dwork_bytes / (size_t)r.es);
    BLAS(gpu_ormqr(ctx->dn, job->dtype, m, k, n, AT(r, t), m, AT(r, tau), AT(r, b), ldb,
                   AT(r, dwork), lw, d_info));
    BLAS(gpu_trsm(ctx->blas, job->dtype, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, n, k, AT(r, t), m,
                  AT(r, b), ldb));
    CU(cudaMemcpy2DAsync(x0, (size_t)n * (size_t)r.es, AT(r, b), (size_t)ldb * (size_t)r.es,
                         (size_t)n * (size_t)r.es, (size_t)k, cudaMemcpyDeviceToDevice,
                         ctx->stream[0]));
  } else if (nan_fill(ctx, x0, xbytes, err)) {
    goto fail;
  }
  if (to_all(job, ctx, 1, x0, xbytes, err)) goto fail;
  return end(ctx, &r, 0, err);
fail:
  return end(ctx, &r, -1, err);
}

int dn_qr_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_run r;
  if (begin(job, ctx, &r, err)) return -1;
  int m = (int)job->m, n = (int)job->n;
  int* d_info = (int*)(void*)AT(r, info);
  char* rt = job->parties[0].b; /* R read row-major: R^T column-major */
  cudaStream_t s0 = ctx->stream[0];
  if (transpose_in(job, ctx, &r, err)) goto fail;
  SOLVER(cusolverDnXgeqrf(ctx->dn, ctx->dn_params, m, n, r.t, AT(r, t), m, r.t, AT(r, tau), r.t,
                          AT(r, dwork), r.p.dwork_bytes, r.hwork, r.p.hwork_bytes, d_info));
  BLAS(gpu_geam(ctx->blas, job->dtype, CUBLAS_OP_T, CUBLAS_OP_T, n, n, 1, AT(r, t), m, 0,
                AT(r, t), m, rt, n));
  /* R^T is lower triangular: clear the reflectors above its diagonal. */
  for (int64_t j = 1; j < n; j++)
    CU(cudaMemsetAsync(rt + (size_t)(j * n) * (size_t)r.es, 0, (size_t)j * (size_t)r.es, s0));
  BLAS(gpu_orgqr(ctx->dn, job->dtype, m, n, n, AT(r, t), m, AT(r, tau), AT(r, dwork),
                 (int)(r.p.dwork_bytes / (size_t)r.es), d_info));
  if (read_info(ctx, d_info, &res->info, err)) goto fail;
  BLAS(gpu_geam(ctx->blas, job->dtype, CUBLAS_OP_T, CUBLAS_OP_T, n, m, 1, AT(r, t), m, 0,
                AT(r, t), m, r.g, n));
  if (zero_pad(job, ctx, r.g, job->n, err)) goto fail;
  CU(cudaStreamSynchronize(s0));
  if (shards(job, ctx, 0, r.g, job->n, 0, err)) goto fail;
  if (to_all(job, ctx, 1, rt, (size_t)((int64_t)n * n * r.es), err)) goto fail;
  return end(ctx, &r, 0, err);
fail:
  return end(ctx, &r, -1, err);
}

/* ---- gesvd and polar ---- */

/* T from G (A = E^T when m >= n, else E itself), then Xgesvd on it. */
static int svd_of_t(jmg_job* job, mg_context* ctx, dn_run* r, jmg_result* res, char* err) {
  dn_plan* p = &r->p;
  if (p->tall) {
    if (transpose_in(job, ctx, r, err)) return -1;
  } else {
    CU(cudaMemcpyAsync(AT(*r, t), r->g, (size_t)(job->n * job->m * r->es),
                       cudaMemcpyDeviceToDevice, ctx->stream[0]));
  }
  SOLVER(cusolverDnXgesvd(ctx->dn, ctx->dn_params, (signed char)p->jobu, (signed char)p->jobvt,
                          p->rt, p->ct, r->t, AT(*r, t), p->rt, mg_cuda_real_type(job->dtype),
                          AT(*r, s), r->t, AT(*r, u), p->rt, r->t, AT(*r, vt), p->k, r->t,
                          AT(*r, dwork), p->dwork_bytes, r->hwork, p->hwork_bytes,
                          (int*)(void*)AT(*r, info)));
  return read_info(ctx, (int*)(void*)AT(*r, info), &res->info, err);
fail:
  return -1;
}

int dn_gesvd_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_run r;
  if (begin(job, ctx, &r, err)) return -1;
  dn_plan* p = &r.p;
  int64_t ucols = job->attr[0], vrows = job->attr[1], n = job->n, m = job->m;
  size_t rs = jmg_dtype_real_size(job->dtype), es = (size_t)r.es;
  char* ut = AT(r, ut);
  char* vh = job->parties[0].b; /* Vh read row-major: Vh^T column-major, n x vrows */
  cudaStream_t s0 = ctx->stream[0];
  if (svd_of_t(job, ctx, &r, res, err)) goto fail;
  if (res->info == 0 && ucols) {
    /* U^T (ucols x m): U_T transposed when T = A, else VT_T itself. */
    if (p->tall)
      BLAS(gpu_geam(ctx->blas, job->dtype, CUBLAS_OP_T, CUBLAS_OP_T, (int)ucols, (int)m, 1,
                    AT(r, u), (int)m, 0, AT(r, u), (int)m, ut, (int)ucols));
    else
      CU(cudaMemcpyAsync(ut, AT(r, vt), (size_t)(ucols * m) * es, cudaMemcpyDeviceToDevice, s0));
  }
  if (res->info == 0 && vrows) {
    /* Vh^T (n x vrows): VT_T transposed when T = A, else U_T itself. */
    if (p->tall)
      BLAS(gpu_geam(ctx->blas, job->dtype, CUBLAS_OP_T, CUBLAS_OP_T, (int)n, (int)vrows, 1,
                    AT(r, vt), (int)p->k, 0, AT(r, vt), (int)p->k, vh, (int)n));
    else
      CU(cudaMemcpyAsync(vh, AT(r, u), (size_t)(n * vrows) * es, cudaMemcpyDeviceToDevice, s0));
  }
  if (res->info != 0 && (nan_fill(ctx, AT(r, s), (size_t)p->k * rs, err) ||
                         nan_fill(ctx, ut, (size_t)(ucols * m) * es, err) ||
                         nan_fill(ctx, vh, (size_t)(n * vrows) * es, err)))
    goto fail;
  if (ucols && zero_pad(job, ctx, ut, ucols, err)) goto fail;
  CU(cudaStreamSynchronize(s0));
  if (ucols && shards(job, ctx, 3, ut, ucols, 0, err)) goto fail;
  if (to_all(job, ctx, 2, AT(r, s), (size_t)p->k * rs, err) ||
      to_all(job, ctx, 1, vh, (size_t)(n * vrows) * es, err))
    goto fail;
  return end(ctx, &r, 0, err);
fail:
  return end(ctx, &r, -1, err);
}

/* s in A's type (the diagonal for dgmm): the real parts of a zeroed vector. */
static int s_as_matrix_type(const jmg_job* job, mg_context* ctx, dn_run* r, char* err) {
  size_t rs = jmg_dtype_real_size(job->dtype), es = (size_t)r->es, k = (size_t)r->p.k;
  cudaStream_t s0 = ctx->stream[0];
  if (!jmg_dtype_is_complex(job->dtype)) {
    CU(cudaMemcpyAsync(AT(*r, sx), AT(*r, s), k * rs, cudaMemcpyDeviceToDevice, s0));
    return 0;
  }
  CU(cudaMemsetAsync(AT(*r, sx), 0, k * es, s0));
  CU(cudaMemcpy2DAsync(AT(*r, sx), es, AT(*r, s), rs, rs, k, cudaMemcpyDeviceToDevice, s0));
  return 0;
fail:
  return -1;
}

int dn_polar_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_run r;
  if (begin(job, ctx, &r, err)) return -1;
  dn_plan* p = &r.p;
  int n = (int)job->n, m = (int)job->m, k = (int)p->k;
  size_t es = (size_t)r.es;
  char* h0 = job->parties[0].b; /* H read row-major: H^T column-major */
  int want_h = job->attr[0] != 0;
  cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N, C = CUBLAS_OP_C;
  if (svd_of_t(job, ctx, &r, res, err)) goto fail;
  if (res->info == 0) {
    /* Up^T (n x m) into G: VT_T^T U_T^T when T = A, else U_T VT_T. */
    if (p->tall)
      BLAS(gpu_gemm(ctx->blas, job->dtype, T, T, n, m, k, AT(r, vt), k, AT(r, u), m, r.g, n));
    else
      BLAS(gpu_gemm(ctx->blas, job->dtype, N, N, n, m, k, AT(r, u), n, AT(r, vt), k, r.g, n));
  }
  if (res->info == 0 && want_h) {
    if (s_as_matrix_type(job, ctx, &r, err)) goto fail;
    if (p->tall) {
      /* H = VT_T^H (S VT_T), then H^T by geam. */
      BLAS(gpu_dgmm(ctx->blas, job->dtype, CUBLAS_SIDE_LEFT, k, n, AT(r, vt), k, AT(r, sx), AT(r, x), k));
      BLAS(gpu_gemm(ctx->blas, job->dtype, C, N, n, n, k, AT(r, vt), k, AT(r, x), k, AT(r, h), n));
      BLAS(gpu_geam(ctx->blas, job->dtype, T, T, n, n, 1, AT(r, h), n, 0, AT(r, h), n, h0, n));
    } else {
      /* H^T = (U_T S) U_T^H. */
      BLAS(gpu_dgmm(ctx->blas, job->dtype, CUBLAS_SIDE_RIGHT, n, k, AT(r, u), n, AT(r, sx), AT(r, x), n));
      BLAS(gpu_gemm(ctx->blas, job->dtype, N, C, n, n, k, AT(r, x), n, AT(r, u), n, h0, n));
    }
  }
  if (res->info != 0 && (nan_fill(ctx, r.g, (size_t)((int64_t)n * m) * es, err) ||
                         (want_h && nan_fill(ctx, h0, (size_t)((int64_t)n * n) * es, err))))
    goto fail;
  if (zero_pad(job, ctx, r.g, job->n, err)) goto fail;
  CU(cudaStreamSynchronize(ctx->stream[0]));
  if (shards(job, ctx, 0, r.g, job->n, 0, err)) goto fail;
  if (want_h && to_all(job, ctx, 1, h0, (size_t)((int64_t)n * n) * es, err)) goto fail;
  return end(ctx, &r, 0, err);
fail:
  return end(ctx, &r, -1, err);
}

/* ---- sygvd ---- */

/* Zeroes the n x n matrix g (ld n) outside its leading nv x nv block:
 * the padding's part of V. */
static int clear_pad(mg_context* ctx, char* g, int64_t n, int64_t nv, size_t es, char* err) {
  if (nv == n) return 0;
  CU(cudaMemset2DAsync(g + (size_t)nv * es, (size_t)n * es, 0, (size_t)(n - nv) * es, (size_t)nv,
                       ctx->stream[0]));
  CU(cudaMemsetAsync(g + (size_t)(nv * n) * es, 0, (size_t)((n - nv) * n) * es, ctx->stream[0]));
  return 0;
fail:
  return -1;
}

/* The leading nv x nv pencil of (E_A, E_B) gathered in G and BG; info is
 * LAPACK's (op_table.c). */
int dn_sygvd_run(jmg_job* job, mg_context* ctx, jmg_result* res, char* err) {
  dn_run r;
  if (begin(job, ctx, &r, err)) return -1;
  int64_t n = job->n, nv = job->attr[1];
  size_t es = (size_t)r.es, wbytes = (size_t)n * jmg_dtype_real_size(job->dtype);
  int* d_info = (int*)(void*)AT(r, info);
  cusolverEigMode_t jobz = job->jobz ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
  if (nv < 1 || nv > n) {
    snprintf(err, JMG_ERRLEN, "sygvd: nvalid = %lld is not in [1, %lld]", (long long)nv,
             (long long)n);
    goto fail;
  }
  if (shards(job, ctx, 3, AT(r, bg), n, 1, err)) goto fail;
  CU(cudaSetDevice(ctx->dev[0]));
  CU(cudaMemsetAsync(AT(r, w), 0, wbytes, ctx->stream[0]));
  BLAS(gpu_sygvd(ctx->dn, job->dtype, jobz, (int)nv, r.g, (int)n, AT(r, bg), (int)n,
                 AT(r, w), AT(r, dwork), (int)(r.p.dwork_bytes / es), d_info));
  if (read_info(ctx, d_info, &res->info, err)) goto fail;
  if (res->info != 0) {
    if (nan_fill(ctx, AT(r, w), wbytes, err) || nan_fill(ctx, r.g, (size_t)(n * n) * es, err))
      goto fail;
  } else if (clear_pad(ctx, r.g, n, nv, es, err)) {
    goto fail;
  }
  if (to_all(job, ctx, 2, AT(r, w), wbytes, err)) goto fail;
  if (job->jobz && shards(job, ctx, 0, r.g, n, 0, err)) goto fail;
  return end(ctx, &r, 0, err);
fail:
  return end(ctx, &r, -1, err);
}
