/* gpu_util.c - see gpu_util.h. */
#include "engines/cuda/gpu_util.h"

#include <stdlib.h>

int gpu_sync_streams(mg_context* ctx, char* err) {
  for (int r = 0; r < ctx->ndev; r++) {
    cudaError_t e = cudaStreamSynchronize(ctx->stream[r]);
    if (e != cudaSuccess) {
      snprintf(err, JMG_ERRLEN, "stream sync on device %d: %s", ctx->dev[r], cudaGetErrorString(e));
      return -1;
    }
  }
  return 0;
}

int gpu_sync_devices(mg_context* ctx, char* err) {
  for (int r = 0; r < ctx->ndev; r++) {
    cudaError_t e = cudaSetDevice(ctx->dev[r]);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      snprintf(err, JMG_ERRLEN, "device sync on %d: %s", ctx->dev[r], cudaGetErrorString(e));
      return -1;
    }
  }
  return 0;
}

int gpu_broadcast(mg_context* ctx, void* const* dst, const void* src, size_t bytes, char* err) {
  for (int r = 0; r < ctx->ndev; r++)
    if (dst[r] != src)
      CU(cudaMemcpyPeerAsync(dst[r], ctx->dev[r], src, ctx->dev[0], bytes, ctx->stream[r]));
  return gpu_sync_streams(ctx, err);
fail:
  return -1;
}

int gpu_fill_nan(void* p, int dev, size_t bytes, cudaStream_t s, char* err) {
  CU(cudaSetDevice(dev));
  CU(cudaMemsetAsync(p, 0xFF, bytes, s));
  return 0;
fail:
  return -1;
}

int gpu_identity_cols(void* x, int dev, jmg_dtype t, int64_t n, int64_t c0, int64_t ncols,
                      cudaStream_t s, char* err) {
  size_t es = jmg_dtype_size(t);
  int64_t ndiag = c0 >= n ? 0 : (n - c0 < ncols ? n - c0 : ncols);
  char* ones = calloc((size_t)(ndiag > 0 ? ndiag : 1), es);
  if (!ones) {
    snprintf(err, JMG_ERRLEN, "out of host memory");
    return -1;
  }
  /* The real part leads every element type we handle. */
  for (int64_t j = 0; j < ndiag; j++) {
    if (t == JMG_F32 || t == JMG_C64) ((float*)(void*)(ones + j * es))[0] = 1.0f;
    else ((double*)(void*)(ones + j * es))[0] = 1.0;
  }
  CU(cudaSetDevice(dev));
  CU(cudaMemsetAsync(x, 0, (size_t)n * (size_t)ncols * es, s));
  /* Element (c0 + j, j) sits j * (n + 1) elements past row c0 of column 0. */
  if (ndiag > 0)
    CU(cudaMemcpy2DAsync((char*)x + (size_t)c0 * es, (size_t)(n + 1) * es, ones, es, es,
                         (size_t)ndiag, cudaMemcpyHostToDevice, s));
  /* `ones` is pageable host memory: wait until the copy has read it. */
  CU(cudaStreamSynchronize(s));
  free(ones);
  return 0;
fail:
  free(ones);
  return -1;
}
