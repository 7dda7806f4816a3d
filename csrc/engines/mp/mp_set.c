/* mp_set.c - one rank of a device set: communicator, cuSOLVERMp handle and
 * grid, descriptors and the registered workspace, all made once.
 *
 * Order matters for the collective parts: grid creation, workspace
 * (de)registration and destruction are collective, so every rank makes
 * them in the same order, and only inside a guard (a lost peer aborts them
 * instead of hanging). The workspace size is all-reduced first: the same
 * size on every rank, so every rank takes the same grow/keep branch. */
#include <stdlib.h>
#include <string.h>

#include "engines/mp/mp_engine.h"

int jmg_mp_sets_open(jmg_mp_set* const* sets, int count, const char* tag,
                     const unsigned char id[JMG_MP_ID_BYTES], int nranks, const int* ranks,
                     const int* ordinals, int p, int q, double timeout_s, char* err) {
  jmg_mp_comm* cs[JMG_MP_MAX_LOCAL];
  if (count < 1 || count > JMG_MP_MAX_LOCAL) {
    snprintf(err, JMG_MP_ERRLEN, "jaxmg: a process opens 1 to %d ranks at once", JMG_MP_MAX_LOCAL);
    return JMG_MP_EINVAL;
  }
  for (int k = 0; k < count; k++) {
    memset(sets[k], 0, sizeof *sets[k]);
    sets[k]->p = p;
    sets[k]->q = q;
    cs[k] = &sets[k]->comm;
  }
  int rc = jmg_mp_comm_open_group(cs, count, &jmg_mp_nccl_api, tag, id, nranks, ranks, ordinals,
                                  timeout_s, err);
  if (rc == JMG_MP_OK && (p < 1 || q < 1 || (int64_t)p * q != nranks)) {
    jmg_mp_comm_errorf(cs[0], err, "grid %d x %d does not have %d ranks", p, q, nranks);
    rc = JMG_MP_EINVAL;
  }
  return rc;
}

int jmg_mp_set_open(jmg_mp_set* s, const char* tag, const unsigned char id[JMG_MP_ID_BYTES],
                    int nranks, int rank, int ordinal, int p, int q, double timeout_s,
                    char* err) {
  jmg_mp_set* sets[1] = {s};
  return jmg_mp_sets_open(sets, 1, tag, id, nranks, &rank, &ordinal, p, q, timeout_s, err);
}

void jmg_mp_set_close(jmg_mp_set* s) {
  /* After a loss the grid's collectives cannot run any more: leak the
   * solver state rather than hang in its teardown (the process is usually
   * about to report the error and exit). */
  if (s->comm.lost[0] == '\0' && s->comm.nccl != NULL) {
    cudaSetDevice(s->comm.ordinal);
    for (int k = 0; k < JMG_MP_NDESC; k++)
      if (s->descs[k].d) cusolverMpDestroyMatrixDesc(s->descs[k].d);
    if (s->work) s->work_registered ? cusolverMpFree(s->grid, s->work) : cudaFree(s->work);
    if (s->grid) cusolverMpDestroyGrid(s->grid);
    if (s->handle) cusolverMpDestroy(s->handle);
    if (s->blas) cublasDestroy(s->blas);
    if (s->d_info) cudaFree(s->d_info);
    if (s->d_scalar) cudaFree(s->d_scalar);
  }
  free(s->hwork);
  jmg_mp_comm_close(&s->comm);
  memset(s, 0, sizeof *s);
}

int jmg_mp_set_ready(jmg_mp_set* s, cudaStream_t stream, char* err) {
  int rc = jmg_mp_cuda_fail(cudaSetDevice(s->comm.ordinal), "cudaSetDevice", err);
  if (rc) return rc;
  s->calls++;
  if (s->handle == NULL) {
    rc = jmg_mp_solver_fail(cusolverMpCreate(&s->handle, s->comm.ordinal, stream),
                            "cusolverMpCreate", err);
    if (rc) return rc;
    rc = jmg_mp_solver_fail(
        cusolverMpCreateDeviceGrid(s->handle, &s->grid, (ncclComm_t)s->comm.nccl, s->p, s->q,
                                   CUSOLVERMP_GRID_MAPPING_ROW_MAJOR),
        "cusolverMpCreateDeviceGrid", err);
    if (rc) return rc;
    if (cublasCreate(&s->blas) != CUBLAS_STATUS_SUCCESS) {
      snprintf(err, JMG_MP_ERRLEN, "cublasCreate failed");
      return JMG_MP_ESOLVER;
    }
    rc = jmg_mp_cuda_fail(cudaMalloc((void**)&s->d_info, sizeof(int)), "cudaMalloc(info)", err);
    if (!rc) rc = jmg_mp_cuda_fail(cudaMalloc(&s->d_scalar, 32), "cudaMalloc(scalar)", err);
    if (rc) return rc;
  }
  rc = jmg_mp_solver_fail(cusolverMpSetStream(s->handle, stream), "cusolverMpSetStream", err);
  if (!rc && cublasSetStream(s->blas, stream) != CUBLAS_STATUS_SUCCESS) {
    snprintf(err, JMG_MP_ERRLEN, "cublasSetStream failed");
    rc = JMG_MP_ESOLVER;
  }
  return rc;
}

int jmg_mp_set_desc(jmg_mp_set* s, cudaDataType t, int64_t m, int64_t n, int64_t tile,
                    cusolverMpMatrixDescriptor_t* out, char* err) {
  int pr = s->comm.rank / s->q; /* ROW_MAJOR */
  int64_t lld = jmg_bc_count(m, tile, pr, s->p);
  if (lld < 1) lld = 1;
  jmg_mp_desc* d = NULL; /* a hit, else the least recently used slot */
  for (int k = 0; k < JMG_MP_NDESC; k++) {
    jmg_mp_desc* e = &s->descs[k];
    if (e->d && e->t == t && e->m == m && e->n == n && e->tile == tile && e->lld == lld) {
      e->used = s->calls;
      *out = e->d;
      return JMG_MP_OK;
    }
    if (d == NULL || e->used < d->used) d = e;
  }
  if (d->d && d->used == s->calls) { /* every slot is this call's: cannot happen (<= 4 each) */
    snprintf(err, JMG_MP_ERRLEN, "internal: more than %d descriptors in one call", JMG_MP_NDESC);
    return JMG_MP_ENOMEM;
  }
  if (d->d) cusolverMpDestroyMatrixDesc(d->d);
  memset(d, 0, sizeof *d);
  int rc = jmg_mp_solver_fail(
      cusolverMpCreateMatrixDesc(&d->d, s->grid, t, m, n, tile, tile, 0, 0, lld),
      "cusolverMpCreateMatrixDesc", err);
  if (rc) {
    d->d = NULL;
    return rc;
  }
  d->t = t;
  d->m = m;
  d->n = n;
  d->tile = tile;
  d->lld = lld;
  d->used = s->calls;
  *out = d->d;
  return JMG_MP_OK;
}

/* count values of `bytes` bytes each (at most 32 bytes in all). */
static int allreduce(jmg_mp_set* s, cudaStream_t st, void* v, size_t bytes, size_t count,
                     ncclDataType_t t, ncclRedOp_t op, char* err) {
  bytes *= count;
  int rc = jmg_mp_cuda_fail(cudaMemcpyAsync(s->d_scalar, v, bytes, cudaMemcpyHostToDevice, st),
                            "cudaMemcpyAsync", err);
  if (rc) return rc;
  rc = jmg_mp_nccl_fail(ncclAllReduce(s->d_scalar, s->d_scalar, count, t, op,
                                      (ncclComm_t)s->comm.nccl, st),
                        "ncclAllReduce", err);
  if (rc) return rc;
  rc = jmg_mp_cuda_fail(cudaMemcpyAsync(v, s->d_scalar, bytes, cudaMemcpyDeviceToHost, st),
                        "cudaMemcpyAsync", err);
  return rc ? rc : jmg_mp_cuda_fail(cudaStreamSynchronize(st), "cudaStreamSynchronize", err);
}

int jmg_mp_set_allmax(jmg_mp_set* s, cudaStream_t st, int* v, char* err) {
  return allreduce(s, st, v, sizeof *v, 1, ncclInt32, ncclMax, err);
}

int jmg_mp_set_allmax_u64(jmg_mp_set* s, cudaStream_t st, uint64_t* v, int count, char* err) {
  if (count < 1 || count > 4) {
    snprintf(err, JMG_MP_ERRLEN, "internal: %d values in a small all-reduce", count);
    return JMG_MP_EINVAL;
  }
  return allreduce(s, st, v, sizeof *v, (size_t)count, ncclUint64, ncclMax, err);
}

int jmg_mp_set_allsum(jmg_mp_set* s, cudaStream_t st, double* v, char* err) {
  return allreduce(s, st, v, sizeof *v, 1, ncclFloat64, ncclSum, err);
}

int jmg_mp_set_workspace(jmg_mp_set* s, cudaStream_t st, size_t dev, size_t host, char* err) {
  uint64_t need = dev;
  int rc = allreduce(s, st, &need, sizeof need, 1, ncclUint64, ncclMax, err);
  if (rc) return rc;
  if (need > s->work_bytes) {
    /* Registration needs quiet streams: the allreduce above synchronised.
     * JAXMG_MP_REGISTER=0 (the same on every rank) takes plain cudaMalloc
     * memory instead: slower syevd/gesvd, but no NCCL symmetric memory. */
    if (s->work) s->work_registered ? cusolverMpFree(s->grid, s->work) : cudaFree(s->work);
    s->work = NULL;
    s->work_bytes = 0;
    const char* reg = getenv("JAXMG_MP_REGISTER");
    s->work_registered = !(reg && reg[0] == '0');
    rc = s->work_registered
             ? jmg_mp_solver_fail(cusolverMpMalloc(s->grid, &s->work, need),
                                  "cusolverMpMalloc (registered workspace; JAXMG_MP_REGISTER=0 "
                                  "avoids it)",
                                  err)
             : jmg_mp_cuda_fail(cudaMalloc(&s->work, need), "cudaMalloc(workspace)", err);
    if (rc) return rc;
    s->work_bytes = need;
  }
  if (host > s->hwork_bytes) {
    void* h = realloc(s->hwork, host);
    if (h == NULL) {
      snprintf(err, JMG_MP_ERRLEN, "cannot allocate %zu bytes of host workspace", host);
      return JMG_MP_ENOMEM;
    }
    s->hwork = h;
    s->hwork_bytes = host;
  }
  return JMG_MP_OK;
}
