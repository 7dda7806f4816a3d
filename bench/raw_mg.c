/* raw_mg.c - the "raw engine" baseline: cuSolverMg called directly, with
 * the matrix already in its block-cyclic layout, so the time is the
 * solver's alone. jaxmg's overhead is measured against this.
 *
 *   raw_mg OP DTYPE N T_A NDEV [NRHS] [REPS]
 *     OP    potrs (potrf + potrs) | potri (potrf + potri) | syevd (vectors, lower)
 *           | lu_solve (getrf + getrs, no transpose; T_A <= 512)
 *     DTYPE f32 | f64 | c64 | c128
 *   Uses devices 0 .. NDEV-1 (pick others with CUDA_VISIBLE_DEVICES).
 *   RAW_BBLOCK=k   B's column tile (default max(T_A, NRHS): all of B on device 0)
 *   RAW_CHECK=1    after timing, check A x = b (potrs) or A X = I (potri) on
 *                  sampled columns against the matrix rebuilt on the host, and
 *                  print the worst residual above and below row 2048
 *
 * Prints one line:
 *   RAW op=.. dtype=.. n=.. tile=.. ndev=.. nrhs=.. median_s=.. min_s=.. info=..
 */
#define _POSIX_C_SOURCE 200809L
#define DISABLE_CUSOLVERMG_DEPRECATED

#include <cuda_runtime.h>
#include <complex.h>
#include <cusolverMg.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DEV 32
/* cuSolverMg's syevd rejects wider tiles. */
#define SYEVD_MAX_TILE 1024

cudaError_t raw_mg_fill(void* a, int dtype, int64_t n, int64_t tile, int ndev, int d, int64_t lcols,
                        uint64_t seed, cudaStream_t stream);
void raw_mg_entry(int dtype, int64_t i, int64_t j, int64_t n, uint64_t seed, double* re, double* im);

#define SEED 0x6a61786d67ull

#define CK(call)                                                                             \
  do {                                                                                       \
    cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      fprintf(stderr, "raw_mg: %s failed: %s (line %d)\n", #call, cudaGetErrorString(e_),    \
              __LINE__);                                                                     \
      exit(1);                                                                               \
    }                                                                                        \
  } while (0)

#define CS(call)                                                                             \
  do {                                                                                       \
    cusolverStatus_t s_ = (call);                                                            \
    if (s_ != CUSOLVER_STATUS_SUCCESS) {                                                     \
      fprintf(stderr, "raw_mg: %s failed: cusolverStatus %d (line %d)\n", #call, (int)s_,   \
              __LINE__);                                                                     \
      exit(1);                                                                               \
    }                                                                                        \
  } while (0)

enum { OP_POTRS, OP_POTRI, OP_SYEVD, OP_LU };
static const char* const OP_NAMES[] = {"potrs", "potri", "syevd", "lu_solve"};
/* cuSolverMg's getrf/getrs reject wider tiles. */
#define LU_MAX_TILE 512

/* The ops with right-hand sides B. */
static int has_b(int op) { return op == OP_POTRS || op == OP_LU; }
static const char* const DT_NAMES[] = {"f32", "f64", "c64", "c128"};
static const size_t DT_SIZE[] = {4, 8, 8, 16};
static const cudaDataType DT_CUDA[] = {CUDA_R_32F, CUDA_R_64F, CUDA_C_32F, CUDA_C_64F};
static const cudaDataType DT_REAL[] = {CUDA_R_32F, CUDA_R_64F, CUDA_R_32F, CUDA_R_64F};

static int lookup(const char* s, const char* const* names, int count) {
  for (int i = 0; i < count; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

static int64_t parse_pos(const char* s, const char* what) {
  char* end = NULL;
  long long v = strtoll(s, &end, 10);
  if (!end || *end || v <= 0) {
    fprintf(stderr, "raw_mg: %s must be a positive integer, got '%s'\n", what, s);
    exit(2);
  }
  return (int64_t)v;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static void sync_all(int ndev) {
  for (int d = 0; d < ndev; d++) {
    CK(cudaSetDevice(d));
    CK(cudaDeviceSynchronize());
  }
}

/* A right-hand side with varied entries, so a solve that mixes up rows
 * cannot look right by accident. */
static double rhs_value(int64_t i, int64_t c, int64_t n) {
  return 1.0 + 0.25 * (double)(((c * n + i) * 7919) % 13);
}

/* Local column lc of device d in a column block-cyclic layout of tile bb. */
static int64_t global_col(int64_t lc, int64_t bb, int ndev, int d) {
  return ((lc / bb) * ndev + d) * bb + lc % bb;
}

/* Device d's share of B (tile bb); columns past nrhs are left as zeros. */
static void host_rhs(void* buf, int dt, int64_t n, int64_t nrhs, int64_t bb, int ndev, int d) {
  memset(buf, 0, (size_t)(n * nrhs) * (dt == 0 ? 4 : dt == 3 ? 16 : 8));
  for (int64_t k = 0; k < n * nrhs; k++) {
    int64_t c = global_col(k / n, bb, ndev, d);
    if (c >= nrhs) break;
    double v = rhs_value(k % n, c, n);
    switch (dt) {
      case 0: ((float*)buf)[k] = (float)v; break;
      case 1: ((double*)buf)[k] = v; break;
      case 2: ((float*)buf)[2 * k] = (float)v; ((float*)buf)[2 * k + 1] = (float)(0.5 * v); break;
      case 3: ((double*)buf)[2 * k] = v; ((double*)buf)[2 * k + 1] = 0.5 * v; break;
    }
  }
}

/* ---- validation (RAW_CHECK=1) ---- */

static double complex element(const void* buf, int dt, int64_t k) {
  switch (dt) {
    case 0: return ((const float*)buf)[k];
    case 1: return ((const double*)buf)[k];
    case 2: return ((const float*)buf)[2 * k] + I * ((const float*)buf)[2 * k + 1];
    default: return ((const double*)buf)[2 * k] + I * ((const double*)buf)[2 * k + 1];
  }
}

/* Entry (i, c) of a column block-cyclic matrix (tile bb) copied to the host. */
static double complex cyclic_at(void* const* host, int dt, int64_t n, int64_t bb, int ndev, int64_t i,
                                int64_t c) {
  int64_t blk = c / bb;
  int64_t lc = (blk / ndev) * bb + c % bb;
  return element(host[blk % ndev], dt, lc * n + i);
}

/* Checks sampled columns of the solution against A rebuilt on the host:
 * potrs r = A x - b, potri r = A X - I (X Hermitian, held in its lower
 * triangle). Prints the worst |r| relative to the right-hand side, split
 * at row 2048, and the first row where it exceeds the tolerance. */
static int check(int op, int dt, int64_t n, int64_t tile, int64_t nrhs, int64_t bb, int ndev,
                 void* const* a, void* const* b, const int64_t* lcols, size_t esz) {
  void* host[MAX_DEV];
  for (int d = 0; d < ndev; d++) {
    size_t bytes = (size_t)n * (size_t)(op == OP_POTRS ? nrhs : lcols[d]) * esz;
    host[d] = malloc(bytes > 0 ? bytes : 1);
    if (!host[d]) {
      fprintf(stderr, "raw_mg: out of host memory for the check\n");
      exit(1);
    }
    CK(cudaSetDevice(d));
    if (bytes) CK(cudaMemcpy(host[d], op == OP_POTRS ? b[d] : a[d], bytes, cudaMemcpyDeviceToHost));
  }
  int64_t ncols = op == OP_POTRS ? nrhs : n;
  int64_t cols[8] = {0, 1, 2047, 2048, ncols / 2, 3 * ncols / 4, ncols - 2, ncols - 1};
  double tol = (dt == 0 || dt == 2 ? 1.2e-7 : 2.3e-16) * (double)n * 10.0;
  double complex* x = malloc(sizeof(double complex) * (size_t)n);
  double worst = 0.0;
  for (int s = 0; s < 8; s++) {
    int64_t c = cols[s];
    if (c < 0 || c >= ncols) continue;
    for (int64_t i = 0; i < n; i++)
      x[i] = op == OP_POTRS ? cyclic_at(host, dt, n, bb, ndev, i, c)
                            : i >= c ? cyclic_at(host, dt, n, tile, ndev, i, c)
                                     : conj(cyclic_at(host, dt, n, tile, ndev, c, i));
    double lo = 0.0, hi = 0.0, scale = 1.0;
    int64_t first_bad = -1;
    for (int64_t i = 0; i < n; i++) {
      double complex r = 0.0;
      for (int64_t j = 0; j < n; j++) {
        double re, im;
        raw_mg_entry(dt, i, j, n, SEED, &re, &im);
        r += (re + I * im) * x[j];
      }
      if (op == OP_POTRS) {
        double v = rhs_value(i, c, n);
        r -= dt >= 2 ? v + 0.5 * I * v : v;
        scale = 3.0; /* the largest |b| */
      } else if (i == c) {
        r -= 1.0;
      }
      double e = cabs(r) / scale;
      if (i < 2048) lo = e > lo ? e : lo;
      else hi = e > hi ? e : hi;
      if (!(e <= tol) && first_bad < 0) first_bad = i;
    }
    printf("CHECK %s col=%lld err_rows<2048=%.2e err_rows>=2048=%.2e first_bad_row=%lld\n",
           OP_NAMES[op], (long long)c, lo, hi, (long long)first_bad);
    if (lo > worst || lo != lo) worst = lo;
    if (hi > worst || hi != hi) worst = hi;
  }
  printf("CHECK %s n=%lld tile=%lld bblock=%lld ndev=%d worst=%.2e tol=%.1e %s\n", OP_NAMES[op],
         (long long)n, (long long)tile, (long long)bb, ndev, worst, tol, worst <= tol ? "ok" : "WRONG");
  fflush(stdout);
  free(x);
  for (int d = 0; d < ndev; d++) free(host[d]);
  return worst <= tol ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc < 6 || argc > 8) {
    fprintf(stderr, "usage: %s potrs|potri|syevd|lu_solve f32|f64|c64|c128 N T_A NDEV [NRHS] [REPS]\n",
            argv[0]);
    return 2;
  }
  int op = lookup(argv[1], OP_NAMES, 4);
  int dt = lookup(argv[2], DT_NAMES, 4);
  if (op < 0 || dt < 0) {
    fprintf(stderr, "raw_mg: unknown op '%s' or dtype '%s'\n", argv[1], argv[2]);
    return 2;
  }
  int64_t n = parse_pos(argv[3], "N");
  int64_t tile = parse_pos(argv[4], "T_A");
  int64_t ndev64 = parse_pos(argv[5], "NDEV");
  int64_t nrhs = argc > 6 ? parse_pos(argv[6], "NRHS") : 1;
  int64_t reps = argc > 7 ? parse_pos(argv[7], "REPS") : 3;
  /* The solver entry points take int sizes. */
  if (n > INT_MAX || nrhs > INT_MAX || ndev64 > MAX_DEV) {
    fprintf(stderr, "raw_mg: N and NRHS must fit an int, NDEV <= %d\n", MAX_DEV);
    return 2;
  }
  if (op == OP_SYEVD && tile > SYEVD_MAX_TILE) {
    fprintf(stderr, "raw_mg: syevd takes T_A <= %d\n", SYEVD_MAX_TILE);
    return 2;
  }
  if (op == OP_LU && tile > LU_MAX_TILE) {
    fprintf(stderr, "raw_mg: lu_solve takes T_A <= %d\n", LU_MAX_TILE);
    return 2;
  }
  int ndev = (int)ndev64;
  int have = 0;
  CK(cudaGetDeviceCount(&have));
  if (ndev > have) {
    fprintf(stderr, "raw_mg: NDEV = %d but only %d devices are visible\n", ndev, have);
    return 2;
  }
  size_t esz = DT_SIZE[dt];
  cudaDataType ctype = DT_CUDA[dt];

  /* cuSolverMg moves data between GPUs itself but leaves peer access to
   * the caller; without it the traffic goes through the host. */
  for (int i = 0; i < ndev; i++) {
    CK(cudaSetDevice(i));
    for (int j = 0; j < ndev; j++) {
      int can = 0;
      if (i == j) continue;
      CK(cudaDeviceCanAccessPeer(&can, i, j));
      if (!can) {
        fprintf(stderr, "raw_mg: warning: no peer access %d -> %d\n", i, j);
        continue;
      }
      cudaError_t e = cudaDeviceEnablePeerAccess(j, 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) {
        (void)cudaGetLastError();
      } else {
        CK(e);
      }
    }
  }

  int ids[MAX_DEV];
  for (int d = 0; d < ndev; d++) ids[d] = d;
  cusolverMgHandle_t handle;
  cudaLibMgGrid_t grid;
  cudaLibMgMatrixDesc_t desc_a, desc_b = NULL;
  CS(cusolverMgCreate(&handle));
  CS(cusolverMgDeviceSelect(handle, ndev, ids));
  CS(cusolverMgCreateDeviceGrid(&grid, 1, ndev, ids, CUDALIBMG_GRID_MAPPING_COL_MAJOR));
  /* One row of devices: a tile is N rows tall, T_A columns wide. */
  CS(cusolverMgCreateMatrixDesc(&desc_a, n, n, n, tile, ctype, grid));
  /* B one tile wide (as jaxmg lays it out): it all sits on device 0. */
  int64_t b_block = nrhs > tile ? nrhs : tile;
  if (getenv("RAW_BBLOCK")) b_block = parse_pos(getenv("RAW_BBLOCK"), "RAW_BBLOCK");
  if (has_b(op)) CS(cusolverMgCreateMatrixDesc(&desc_b, n, nrhs, n, b_block, ctype, grid));

  /* Tile k lives on device k % ndev, packed. Whole tiles are allocated so
   * that a partial last tile never depends on how the library bounds it. */
  int64_t ntiles = (n + tile - 1) / tile;
  int64_t lcols[MAX_DEV];
  void* a[MAX_DEV];
  void* b[MAX_DEV];
  void* work[MAX_DEV];
  int* ipiv[MAX_DEV] = {0};
  cudaStream_t stream[MAX_DEV];
  for (int d = 0; d < ndev; d++) {
    int64_t mine = d < ntiles ? (ntiles - d + ndev - 1) / ndev : 0;
    lcols[d] = mine * tile;
    size_t abytes = (size_t)n * (size_t)(lcols[d] > 0 ? lcols[d] : 1) * esz;
    CK(cudaSetDevice(d));
    CK(cudaStreamCreateWithFlags(&stream[d], cudaStreamNonBlocking));
    CK(cudaMalloc(&a[d], abytes));
    b[d] = NULL;
    if (has_b(op)) CK(cudaMalloc(&b[d], (size_t)n * (size_t)nrhs * esz));
    /* getrf's pivots: one int per local column. */
    if (op == OP_LU) CK(cudaMalloc((void**)&ipiv[d], (size_t)(lcols[d] > 0 ? lcols[d] : 1) * sizeof(int)));
  }

  size_t wsize = (dt == 0 || dt == 2) ? 4 : 8;
  void* w = op == OP_SYEVD ? malloc((size_t)n * wsize) : NULL;
  void* hb[MAX_DEV] = {0};
  for (int d = 0; has_b(op) && d < ndev; d++) {
    if (!(hb[d] = malloc((size_t)n * (size_t)nrhs * esz))) {
      fprintf(stderr, "raw_mg: out of host memory\n");
      return 1;
    }
    host_rhs(hb[d], dt, n, nrhs, b_block, ndev, d);
  }
  if (op == OP_SYEVD && !w) {
    fprintf(stderr, "raw_mg: out of host memory\n");
    return 1;
  }

  int ni = (int)n;
  int64_t lw1 = 0, lw2 = 0;
  if (op == OP_LU) {
    CS(cusolverMgGetrf_bufferSize(handle, ni, ni, a, 1, 1, desc_a, ipiv, ctype, &lw1));
    CS(cusolverMgGetrs_bufferSize(handle, CUBLAS_OP_N, ni, (int)nrhs, a, 1, 1, desc_a, ipiv, b, 1, 1,
                                  desc_b, ctype, &lw2));
  } else if (op == OP_SYEVD) {
    CS(cusolverMgSyevd_bufferSize(handle, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, ni, a, 1, 1,
                                  desc_a, w, DT_REAL[dt], ctype, &lw1));
  } else {
    CS(cusolverMgPotrf_bufferSize(handle, CUBLAS_FILL_MODE_LOWER, ni, a, 1, 1, desc_a, ctype, &lw1));
    if (op == OP_POTRS)
      CS(cusolverMgPotrs_bufferSize(handle, CUBLAS_FILL_MODE_LOWER, ni, (int)nrhs, a, 1, 1, desc_a, b, 1,
                                    1, desc_b, ctype, &lw2));
    else
      CS(cusolverMgPotri_bufferSize(handle, CUBLAS_FILL_MODE_LOWER, ni, a, 1, 1, desc_a, ctype, &lw2));
  }
  /* lwork counts elements per device, not bytes. */
  int64_t lwork = lw1 > lw2 ? lw1 : lw2;
  for (int d = 0; d < ndev; d++) {
    CK(cudaSetDevice(d));
    CK(cudaMalloc(&work[d], (size_t)(lwork > 0 ? lwork : 1) * esz));
  }
  fprintf(stderr, "raw_mg: %s %s n=%lld tile=%lld ndev=%d: A %.3f GB/device, workspace %.3f GB/device\n",
          OP_NAMES[op], DT_NAMES[dt], (long long)n, (long long)tile, ndev,
          (double)n * (double)lcols[0] * (double)esz / 1e9, (double)lwork * (double)esz / 1e9);

  double* times = malloc(sizeof(double) * (size_t)reps);
  if (!times) return 1;
  int info_seen = 0;
  for (int64_t r = -1; r < reps; r++) { /* r = -1: the warm-up */
    /* The solvers overwrite A (and B): rebuild them, untimed. */
    for (int d = 0; d < ndev; d++) {
      CK(cudaSetDevice(d));
      CK(raw_mg_fill(a[d], dt, n, tile, ndev, d, lcols[d], SEED, stream[d]));
      if (has_b(op))
        CK(cudaMemcpyAsync(b[d], hb[d], (size_t)n * (size_t)nrhs * esz, cudaMemcpyHostToDevice, stream[d]));
    }
    sync_all(ndev);
    CK(cudaSetDevice(0));

    int info = 0;
    double t0 = now_s();
    switch (op) {
      case OP_POTRS:
        CS(cusolverMgPotrf(handle, CUBLAS_FILL_MODE_LOWER, ni, a, 1, 1, desc_a, ctype, work, lwork, &info));
        if (info == 0)
          CS(cusolverMgPotrs(handle, CUBLAS_FILL_MODE_LOWER, ni, (int)nrhs, a, 1, 1, desc_a, b, 1, 1, desc_b,
                             ctype, work, lwork, &info));
        break;
      case OP_POTRI:
        CS(cusolverMgPotrf(handle, CUBLAS_FILL_MODE_LOWER, ni, a, 1, 1, desc_a, ctype, work, lwork, &info));
        if (info == 0)
          CS(cusolverMgPotri(handle, CUBLAS_FILL_MODE_LOWER, ni, a, 1, 1, desc_a, ctype, work, lwork, &info));
        break;
      case OP_SYEVD:
        CS(cusolverMgSyevd(handle, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, ni, a, 1, 1, desc_a, w,
                           DT_REAL[dt], ctype, work, lwork, &info));
        break;
      case OP_LU:
        CS(cusolverMgGetrf(handle, ni, ni, a, 1, 1, desc_a, ipiv, ctype, work, lwork, &info));
        if (info == 0)
          CS(cusolverMgGetrs(handle, CUBLAS_OP_N, ni, (int)nrhs, a, 1, 1, desc_a, ipiv, b, 1, 1, desc_b,
                             ctype, work, lwork, &info));
        break;
    }
    /* The calls block, but a final sync keeps any trailing device work
     * inside the measurement, as block_until_ready does on the JAX side. */
    sync_all(ndev);
    double t1 = now_s();
    if (info != 0 && info_seen == 0) info_seen = info;
    if (r >= 0) times[r] = t1 - t0;
  }

  double tmin = times[0];
  for (int64_t r = 1; r < reps; r++)
    if (times[r] < tmin) tmin = times[r];
  qsort(times, (size_t)reps, sizeof(double), cmp_double);
  double med = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
  printf("RAW op=%s dtype=%s n=%lld tile=%lld ndev=%d nrhs=%lld median_s=%.6f min_s=%.6f info=%d\n",
         OP_NAMES[op], DT_NAMES[dt], (long long)n, (long long)tile, ndev, (long long)nrhs, med, tmin,
         info_seen);
  fflush(stdout);
  int bad = 0;
  if (getenv("RAW_CHECK") && (op == OP_POTRS || op == OP_POTRI))
    bad = check(op, dt, n, tile, nrhs, b_block, ndev, a, b, lcols, esz);

  for (int d = 0; d < ndev; d++) {
    CK(cudaSetDevice(d));
    CK(cudaFree(work[d]));
    CK(cudaFree(a[d]));
    if (b[d]) CK(cudaFree(b[d]));
    if (ipiv[d]) CK(cudaFree(ipiv[d]));
    CK(cudaStreamDestroy(stream[d]));
  }
  if (desc_b) CS(cusolverMgDestroyMatrixDesc(desc_b));
  CS(cusolverMgDestroyMatrixDesc(desc_a));
  CS(cusolverMgDestroyGrid(grid));
  CS(cusolverMgDestroy(handle));
  free(times);
  free(w);
  for (int d = 0; d < ndev; d++) free(hb[d]);
  return bad ? 3 : 0;
}
