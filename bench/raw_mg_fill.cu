/* raw_mg_fill.cu - writes one device's share of the benchmark matrix for
 * raw_mg, straight into cuSolverMg's packed column block-cyclic storage.
 *
 * A = 2 I + W with W a Wigner matrix: entries uniform with variance
 * 1/(6N) per real component, as bench.py builds for jaxmg. The spectrum
 * is a semicircle on about [1.2, 2.8] (complex: [0.85, 3.15]): SPD/HPD,
 * well conditioned, and spread like jaxmg's test matrix so that syevd
 * (whose divide and conquer speeds up on clustered eigenvalues) does the
 * same amount of work in both. A diagonally dominant matrix (N on the
 * diagonal) would squeeze the eigenvalues into a relative width of about
 * N^-1/2 and flatter the baseline.
 *
 * A[i][j] is a hash of (min(i,j), max(i,j)), so every device computes its
 * own columns with no communication, for any device count and tile width.
 */
#include <cuda_runtime.h>
#include <cuComplex.h>
#include <stdint.h>

__host__ __device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* Uniform in (-1, 1) from the top 53 bits. */
__host__ __device__ __forceinline__ double unit(uint64_t h) {
  return (double)(h >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

template <typename T> struct put;
template <> struct put<float> {
  static __device__ void at(float* p, double re, double) { *p = (float)re; }
};
template <> struct put<double> {
  static __device__ void at(double* p, double re, double) { *p = re; }
};
template <> struct put<cuComplex> {
  static __device__ void at(cuComplex* p, double re, double im) { *p = make_cuComplex((float)re, (float)im); }
};
template <> struct put<cuDoubleComplex> {
  static __device__ void at(cuDoubleComplex* p, double re, double im) { *p = make_cuDoubleComplex(re, im); }
};

/* Entry (i, j) of A, both i and j < n. */
template <bool CPLX>
__host__ __device__ __forceinline__ void entry(int64_t i, int64_t j, int64_t n, uint64_t seed, double* re,
                                               double* im) {
  const double scale = 1.0 / sqrt(2.0 * (double)n); /* U(-1,1) has variance 1/3 */
  int64_t lo = i < j ? i : j, hi = i < j ? j : i;
  uint64_t h = mix64(seed ^ mix64((uint64_t)lo * (uint64_t)n + (uint64_t)hi));
  *re = unit(h) * scale + (i == j ? 2.0 : 0.0);
  *im = 0.0;
  if (CPLX && i != j) *im = (i < j ? -1.0 : 1.0) * unit(mix64(h)) * scale; /* A[j][i] = conj(A[i][j]) */
}

template <typename T, bool CPLX>
__global__ void fill(T* a, int64_t n, int64_t tile, int ndev, int d, int64_t lcols, uint64_t seed) {
  const int64_t total = n * lcols;
  for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = idx % n, lc = idx / n;
    int64_t j = ((lc / tile) * ndev + d) * tile + lc % tile;
    double re = 0.0, im = 0.0;
    if (j < n) entry<CPLX>(i, j, n, seed, &re, &im); /* else: the tail of a partial last tile, never read */
    put<T>::at(&a[idx], re, im);
  }
}

/* dtype: 0 f32, 1 f64, 2 c64, 3 c128 (raw_mg's order). Launches on the
 * current device and stream; returns the launch error. */
extern "C" cudaError_t raw_mg_fill(void* a, int dtype, int64_t n, int64_t tile, int ndev, int d,
                                   int64_t lcols, uint64_t seed, cudaStream_t stream) {
  if (lcols <= 0) return cudaSuccess;
  const int threads = 256;
  int sms = 0, dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  /* A grid-stride loop: enough blocks to fill the GPU, no 2^31 limits. */
  int64_t need = (n * lcols + threads - 1) / threads;
  int blocks = (int)(need < (int64_t)sms * 32 ? need : (int64_t)sms * 32);
  switch (dtype) {
    case 0: fill<float, false><<<blocks, threads, 0, stream>>>((float*)a, n, tile, ndev, d, lcols, seed); break;
    case 1: fill<double, false><<<blocks, threads, 0, stream>>>((double*)a, n, tile, ndev, d, lcols, seed); break;
    case 2: fill<cuComplex, true><<<blocks, threads, 0, stream>>>((cuComplex*)a, n, tile, ndev, d, lcols, seed); break;
    case 3:
      fill<cuDoubleComplex, true><<<blocks, threads, 0, stream>>>((cuDoubleComplex*)a, n, tile, ndev, d, lcols, seed);
      break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

/* Entry (i, j) on the host, for raw_mg's validation. */
extern "C" void raw_mg_entry(int dtype, int64_t i, int64_t j, int64_t n, uint64_t seed, double* re,
                             double* im) {
  if (dtype >= 2) entry<true>(i, j, n, seed, re, im);
  else entry<false>(i, j, n, seed, re, im);
}
