/* mirror.cu - completes potri's inverse: cuSolverMg fills the lower
 * triangle only, and the caller gets the whole Hermitian matrix.
 *
 * Each device fills the strict upper part of its own columns. The entries
 * it needs, M[j][i] for i < j, sit in rows of columns that may live on any
 * device, so the kernel reads them through peer access, one 32 x 32 block
 * at a time through shared memory: reads run down source columns and
 * writes down destination columns, both coalesced.
 */
#include <cuComplex.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "engines/cuda/cuda_engine.h"

#define TILE 32
#define ROWS 8

struct cols_t {
  void* p[JMG_MAX_DEVICES];
};

__device__ inline float conj_of(float x) { return x; }
__device__ inline double conj_of(double x) { return x; }
__device__ inline cuFloatComplex conj_of(cuFloatComplex x) { return cuConjf(x); }
__device__ inline cuDoubleComplex conj_of(cuDoubleComplex x) { return cuConj(x); }

template <typename T>
__global__ void mirror_kernel(cols_t cols, int64_t n, int64_t nloc, int dev) {
  __shared__ T block[TILE][TILE + 1];
  int64_t j0 = (int64_t)blockIdx.x * TILE;  // local column block of this device
  int64_t i0 = (int64_t)blockIdx.y * TILE;  // row block
  int64_t gj0 = dev * nloc + j0;            // global column of j0
  if (i0 >= gj0 + TILE) return;             // wholly below the diagonal: nothing to write
  // Load M[j][i] for i in [i0, i0+TILE), j in [gj0, gj0+TILE): column i, rows j.
  for (int k = threadIdx.y; k < TILE; k += ROWS) {
    int64_t i = i0 + k, j = gj0 + threadIdx.x;
    if (i < n && j < n && j0 + threadIdx.x < nloc) {
      const T* src = (const T*)cols.p[i / nloc] + (i % nloc) * n;
      block[k][threadIdx.x] = src[j];
    }
  }
  __syncthreads();
  // Store M[i][j] = conj(M[j][i]) for i < j: local column j, row i.
  T* dst = (T*)cols.p[dev];
  for (int k = threadIdx.y; k < TILE; k += ROWS) {
    int64_t jl = j0 + k, i = i0 + threadIdx.x, j = gj0 + k;
    if (jl < nloc && i < n && i < j) dst[jl * n + i] = conj_of(block[threadIdx.x][k]);
  }
}

template <typename T>
static cudaError_t launch(void* const* cols, int ndev, int64_t n, int64_t nloc, int dev,
                          cudaStream_t s) {
  cols_t c;
  for (int r = 0; r < ndev; r++) c.p[r] = cols[r];
  // Rows past the device's last column are all below the diagonal.
  int64_t rows = (dev + 1) * nloc;
  dim3 grid((unsigned)((nloc + TILE - 1) / TILE), (unsigned)((rows + TILE - 1) / TILE));
  mirror_kernel<T><<<grid, dim3(TILE, ROWS), 0, s>>>(c, n, nloc, dev);
  return cudaGetLastError();
}

extern "C" int jmg_cuda_mirror_lower(int dtype, void* const* cols, int ndev, int64_t n,
                                     int64_t nloc, int dev, void* stream, char* err) {
  cudaStream_t s = (cudaStream_t)stream;
  cudaError_t e;
  switch (dtype) {
    case JMG_F32: e = launch<float>(cols, ndev, n, nloc, dev, s); break;
    case JMG_F64: e = launch<double>(cols, ndev, n, nloc, dev, s); break;
    case JMG_C64: e = launch<cuFloatComplex>(cols, ndev, n, nloc, dev, s); break;
    default: e = launch<cuDoubleComplex>(cols, ndev, n, nloc, dev, s); break;
  }
  if (e != cudaSuccess) {
    snprintf(err, JMG_ERRLEN, "mirror kernel launch: %s", cudaGetErrorString(e));
    return -1;
  }
  return 0;
}
