/* mg_context.h - cuSolverMg state kept alive across calls.
 *
 * Creating a handle, a device grid and descriptors costs tens of
 * milliseconds; an earlier wrapper paid that on every call. A context is
 * made once per ordered device list and lives until the process exits. Its
 * lock lets one leader at a time use it: cuSolverMg handles are not
 * thread-safe, and two programs may share the same devices.
 */
#ifndef JAXMG_MG_CONTEXT_H
#define JAXMG_MG_CONTEXT_H

#define DISABLE_CUSOLVERMG_DEPRECATED 1

#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <cusolverMg.h>
#include <cublas_v2.h>
#include <pthread.h>
#include <stdint.h>

#include "engines/engine.h"

#define MG_MAX_DESCS 8

typedef struct mg_desc {
  int64_t rows, cols, col_block;
  cudaDataType type;
  cudaLibMgMatrixDesc_t desc;
} mg_desc;

typedef struct mg_context {
  int ndev;
  int32_t dev[JMG_MAX_DEVICES];          /* CUDA ordinals, in rank order */
  cusolverMgHandle_t handle;
  cudaLibMgGrid_t grid;
  cudaStream_t stream[JMG_MAX_DEVICES];  /* our copy stream on each device */
  pthread_mutex_t lock;
  mg_desc descs[MG_MAX_DESCS];
  int ndesc, next_evict, last;
  int64_t lwork_key[MG_MAX_DESCS][6]; /* (op, dtype, n, tile, nrhs, jobz) */
  int64_t lwork_val[MG_MAX_DESCS];
  int nlwork, lwork_next;
  /* cuSOLVER's dense API on dev[0] for the one-GPU path, made on first use;
   * it runs on stream[0]. */
  cusolverDnHandle_t dn;
  cusolverDnParams_t dn_params;
  cublasHandle_t blas; /* cuBLAS on dev[0], stream[0], for the general ops */
  struct mg_context* next;
} mg_context;

/* The context for these devices (created on first use, with peer access
 * enabled between every pair). NULL on failure, with a message in err. */
mg_context* mg_context_get(const int32_t* dev, int ndev, char* err);

/* A column block-cyclic descriptor rows x cols with col_block-wide tiles,
 * cached in the context. Call with the context locked. */
cudaLibMgMatrixDesc_t mg_context_desc(mg_context* c, int64_t rows, int64_t cols, int64_t col_block,
                                      cudaDataType type, char* err);

/* Workspace sizes already asked of cuSolverMg, by problem; with the
 * context locked. get returns 1 on a hit. */
int mg_context_lwork_get(mg_context* c, const int64_t key[6], int64_t* lwork);
void mg_context_lwork_put(mg_context* c, const int64_t key[6], int64_t lwork);

/* Makes ctx->dn and ctx->dn_params if needed; with the context locked. */
int mg_context_dn(mg_context* c, char* err);

/* Makes ctx->blas if needed (and ctx->dn); with the context locked. */
int mg_context_blas(mg_context* c, char* err);

cudaDataType mg_cuda_type(jmg_dtype t);
cudaDataType mg_cuda_real_type(jmg_dtype t);
const char* mg_status_name(cusolverStatus_t s);

#endif
