/* mg_context.c - cuSolverMg handles, grids, streams and descriptors, made
 * once per device list. See mg_context.h. */
#include "engines/cuda/mg_context.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mg_context* registry;

cudaDataType mg_cuda_type(jmg_dtype t) {
  static const cudaDataType map[4] = {CUDA_R_32F, CUDA_R_64F, CUDA_C_32F, CUDA_C_64F};
  return map[t];
}

cudaDataType mg_cuda_real_type(jmg_dtype t) {
  return (t == JMG_F32 || t == JMG_C64) ? CUDA_R_32F : CUDA_R_64F;
}

const char* mg_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "cusolverStatus (other)";
  }
}

/* Peer access is the caller's job with cuSolverMg; without it every
 * inter-GPU transfer would bounce through the host. */
static int enable_peers(const int32_t* dev, int ndev, char* err) {
  for (int i = 0; i < ndev; i++) {
    if (cudaSetDevice(dev[i]) != cudaSuccess) {
      snprintf(err, JMG_ERRLEN, "cudaSetDevice(%d) failed", dev[i]);
      return -1;
    }
    for (int j = 0; j < ndev; j++) {
      if (dev[i] == dev[j]) continue;
      int can = 0;
      cudaDeviceCanAccessPeer(&can, dev[i], dev[j]);
      if (!can) continue;
      cudaError_t e = cudaDeviceEnablePeerAccess(dev[j], 0);
      if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) {
        snprintf(err, JMG_ERRLEN, "cudaDeviceEnablePeerAccess(%d -> %d): %s", dev[i], dev[j],
                 cudaGetErrorString(e));
        return -1;
      }
      cudaGetLastError(); /* clear the sticky "already enabled" */
    }
  }
  return 0;
}

static void destroy(mg_context* c) {
  if (c->blas) cublasDestroy(c->blas);
  if (c->dn_params) cusolverDnDestroyParams(c->dn_params);
  if (c->dn) cusolverDnDestroy(c->dn);
  for (int i = 0; i < c->ndesc; i++) cusolverMgDestroyMatrixDesc(c->descs[i].desc);
  for (int i = 0; i < c->ndev; i++)
    if (c->stream[i]) {
      cudaSetDevice(c->dev[i]);
      cudaStreamDestroy(c->stream[i]);
    }
  if (c->grid) cusolverMgDestroyGrid(c->grid);
  if (c->handle) cusolverMgDestroy(c->handle);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

static mg_context* create(const int32_t* dev, int ndev, char* err) {
  mg_context* c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, JMG_ERRLEN, "out of host memory");
    return NULL;
  }
  c->ndev = ndev;
  memcpy(c->dev, dev, sizeof(int32_t) * (size_t)ndev);
  pthread_mutex_init(&c->lock, NULL);
  int prev = 0;
  cudaGetDevice(&prev);
  int ids[JMG_MAX_DEVICES];
  for (int i = 0; i < ndev; i++) ids[i] = dev[i];
  cusolverStatus_t s;
  if (enable_peers(dev, ndev, err)) goto fail;
  if ((s = cusolverMgCreate(&c->handle)) != CUSOLVER_STATUS_SUCCESS ||
      (s = cusolverMgDeviceSelect(c->handle, ndev, ids)) != CUSOLVER_STATUS_SUCCESS ||
      (s = cusolverMgCreateDeviceGrid(&c->grid, 1, ndev, dev, CUDALIBMG_GRID_MAPPING_COL_MAJOR)) !=
          CUSOLVER_STATUS_SUCCESS) {
    snprintf(err, JMG_ERRLEN, "cuSolverMg setup for %d devices failed: %s", ndev,
             mg_status_name(s));
    goto fail;
  }
  for (int i = 0; i < ndev; i++) {
    cudaError_t e;
    if ((e = cudaSetDevice(dev[i])) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream[i], cudaStreamNonBlocking)) != cudaSuccess) {
      snprintf(err, JMG_ERRLEN, "creating a stream on device %d: %s", dev[i],
               cudaGetErrorString(e));
      goto fail;
    }
  }
  cudaSetDevice(prev);
  return c;
fail:
  cudaSetDevice(prev);
  destroy(c);
  return NULL;
}

mg_context* mg_context_get(const int32_t* dev, int ndev, char* err) {
  pthread_mutex_lock(&registry_lock);
  mg_context* c;
  for (c = registry; c; c = c->next)
    if (c->ndev == ndev && !memcmp(c->dev, dev, sizeof(int32_t) * (size_t)ndev)) break;
  if (!c && (c = create(dev, ndev, err)) != NULL) {
    c->next = registry;
    registry = c;
  }
  pthread_mutex_unlock(&registry_lock);
  return c;
}

cudaLibMgMatrixDesc_t mg_context_desc(mg_context* c, int64_t rows, int64_t cols, int64_t col_block,
                                      cudaDataType type, char* err) {
  for (int i = 0; i < c->ndesc; i++) {
    mg_desc* d = &c->descs[i];
    if (d->rows == rows && d->cols == cols && d->col_block == col_block && d->type == type) {
      c->last = i;
      return d->desc;
    }
  }
  /* The grid is one row of devices: a tile is rows x col_block, rows tall. */
  cudaLibMgMatrixDesc_t desc;
  cusolverStatus_t s = cusolverMgCreateMatrixDesc(&desc, rows, cols, rows, col_block, type, c->grid);
  if (s != CUSOLVER_STATUS_SUCCESS) {
    snprintf(err, JMG_ERRLEN, "cusolverMgCreateMatrixDesc(%lld x %lld, tile %lld): %s",
             (long long)rows, (long long)cols, (long long)col_block, mg_status_name(s));
    return NULL;
  }
  /* One call asks for two descriptors (A, then B): never evict the one
   * handed out just before. */
  int slot;
  if (c->ndesc < MG_MAX_DESCS) {
    slot = c->ndesc++;
  } else {
    if (c->next_evict == c->last) c->next_evict = (c->next_evict + 1) % MG_MAX_DESCS;
    slot = c->next_evict;
    c->next_evict = (slot + 1) % MG_MAX_DESCS;
    cusolverMgDestroyMatrixDesc(c->descs[slot].desc);
  }
  mg_desc* d = &c->descs[slot];
  c->last = slot;
  d->rows = rows;
  d->cols = cols;
  d->col_block = col_block;
  d->type = type;
  d->desc = desc;
  return desc;
}

int mg_context_lwork_get(mg_context* c, const int64_t key[6], int64_t* lwork) {
  for (int i = 0; i < c->nlwork; i++)
    if (!memcmp(c->lwork_key[i], key, sizeof c->lwork_key[i])) {
      *lwork = c->lwork_val[i];
      return 1;
    }
  return 0;
}

void mg_context_lwork_put(mg_context* c, const int64_t key[6], int64_t lwork) {
  /* A small ring: problems of one program repeat, old ones fall out. */
  int i = c->nlwork < MG_MAX_DESCS ? c->nlwork++ : c->lwork_next++ % MG_MAX_DESCS;
  memcpy(c->lwork_key[i], key, sizeof c->lwork_key[i]);
  c->lwork_val[i] = lwork;
}

int mg_context_dn(mg_context* c, char* err) {
  if (c->dn) return 0;
  int prev = 0;
  cudaGetDevice(&prev);
  cusolverStatus_t s = CUSOLVER_STATUS_SUCCESS;
  if (cudaSetDevice(c->dev[0]) != cudaSuccess) {
    snprintf(err, JMG_ERRLEN, "cudaSetDevice(%d) failed", c->dev[0]);
    return -1;
  }
  if ((s = cusolverDnCreate(&c->dn)) != CUSOLVER_STATUS_SUCCESS ||
      (s = cusolverDnSetStream(c->dn, c->stream[0])) != CUSOLVER_STATUS_SUCCESS ||
      (s = cusolverDnCreateParams(&c->dn_params)) != CUSOLVER_STATUS_SUCCESS) {
    snprintf(err, JMG_ERRLEN, "cuSOLVER setup on device %d failed: %s", c->dev[0],
             mg_status_name(s));
    if (c->dn_params) cusolverDnDestroyParams(c->dn_params);
    if (c->dn) cusolverDnDestroy(c->dn);
    c->dn = NULL;
    c->dn_params = NULL;
    cudaSetDevice(prev);
    return -1;
  }
  cudaSetDevice(prev);
  return 0;
}

int mg_context_blas(mg_context* c, char* err) {
  if (mg_context_dn(c, err)) return -1;
  if (c->blas) return 0;
  int prev = 0;
  cudaGetDevice(&prev);
  if (cudaSetDevice(c->dev[0]) != cudaSuccess) {
    snprintf(err, JMG_ERRLEN, "cudaSetDevice(%d) failed", c->dev[0]);
    return -1;
  }
  cublasStatus_t s = cublasCreate(&c->blas);
  if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->blas, c->stream[0]);
  cudaSetDevice(prev);
  if (s != CUBLAS_STATUS_SUCCESS) {
    snprintf(err, JMG_ERRLEN, "cuBLAS setup on device %d failed: status %d", c->dev[0], (int)s);
    if (c->blas) cublasDestroy(c->blas);
    c->blas = NULL;
    return -1;
  }
  return 0;
}
