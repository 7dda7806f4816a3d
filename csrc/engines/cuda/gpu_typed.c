/* gpu_typed.c - see gpu_typed.h. */
#include "engines/cuda/gpu_typed.h"

#include <cuComplex.h>

/* A scalar in every type at once. */
typedef struct num {
  float s;
  double d;
  cuComplex c;
  cuDoubleComplex z;
} num;

static num num_of(double v) {
  num x = {(float)v, v, make_cuComplex((float)v, 0.0f), make_cuDoubleComplex(v, 0.0)};
  return x;
}

int gpu_geam(cublasHandle_t h, jmg_dtype t, cublasOperation_t ta, cublasOperation_t tb, int m,
             int n, double alpha, const void* a, int lda, double beta, const void* b, int ldb,
             void* c, int ldc) {
  num al = num_of(alpha), be = num_of(beta);
  switch (t) {
    case JMG_F32: return (int)cublasSgeam(h, ta, tb, m, n, &al.s, a, lda, &be.s, b, ldb, c, ldc);
    case JMG_F64: return (int)cublasDgeam(h, ta, tb, m, n, &al.d, a, lda, &be.d, b, ldb, c, ldc);
    case JMG_C64: return (int)cublasCgeam(h, ta, tb, m, n, &al.c, a, lda, &be.c, b, ldb, c, ldc);
    default: return (int)cublasZgeam(h, ta, tb, m, n, &al.z, a, lda, &be.z, b, ldb, c, ldc);
  }
}

int gpu_gemm(cublasHandle_t h, jmg_dtype t, cublasOperation_t ta, cublasOperation_t tb, int m,
             int n, int k, const void* a, int lda, const void* b, int ldb, void* c, int ldc) {
  num one = num_of(1), zero = num_of(0);
  switch (t) {
    case JMG_F32:
      return (int)cublasSgemm(h, ta, tb, m, n, k, &one.s, a, lda, b, ldb, &zero.s, c, ldc);
    case JMG_F64:
      return (int)cublasDgemm(h, ta, tb, m, n, k, &one.d, a, lda, b, ldb, &zero.d, c, ldc);
    case JMG_C64:
      return (int)cublasCgemm(h, ta, tb, m, n, k, &one.c, a, lda, b, ldb, &zero.c, c, ldc);
    default:
      return (int)cublasZgemm(h, ta, tb, m, n, k, &one.z, a, lda, b, ldb, &zero.z, c, ldc);
  }
}

int gpu_dgmm(cublasHandle_t h, jmg_dtype t, cublasSideMode_t side, int m, int n, const void* a,
             int lda, const void* x, void* c, int ldc) {
  switch (t) {
    case JMG_F32: return (int)cublasSdgmm(h, side, m, n, a, lda, x, 1, c, ldc);
    case JMG_F64: return (int)cublasDdgmm(h, side, m, n, a, lda, x, 1, c, ldc);
    case JMG_C64: return (int)cublasCdgmm(h, side, m, n, a, lda, x, 1, c, ldc);
    default: return (int)cublasZdgmm(h, side, m, n, a, lda, x, 1, c, ldc);
  }
}

int gpu_copy(cublasHandle_t h, jmg_dtype t, int n, const void* x, int incx, void* y, int incy) {
  switch (t) {
    case JMG_F32: return (int)cublasScopy(h, n, x, incx, y, incy);
    case JMG_F64: return (int)cublasDcopy(h, n, x, incx, y, incy);
    case JMG_C64: return (int)cublasCcopy(h, n, x, incx, y, incy);
    default: return (int)cublasZcopy(h, n, x, incx, y, incy);
  }
}

int gpu_trsm(cublasHandle_t h, jmg_dtype t, cublasFillMode_t uplo, cublasOperation_t ta, int m,
             int n, const void* a, int lda, void* b, int ldb) {
  num one = num_of(1);
  cublasSideMode_t l = CUBLAS_SIDE_LEFT;
  cublasDiagType_t d = CUBLAS_DIAG_NON_UNIT;
  switch (t) {
    case JMG_F32: return (int)cublasStrsm(h, l, uplo, ta, d, m, n, &one.s, a, lda, b, ldb);
    case JMG_F64: return (int)cublasDtrsm(h, l, uplo, ta, d, m, n, &one.d, a, lda, b, ldb);
    case JMG_C64: return (int)cublasCtrsm(h, l, uplo, ta, d, m, n, &one.c, a, lda, b, ldb);
    default: return (int)cublasZtrsm(h, l, uplo, ta, d, m, n, &one.z, a, lda, b, ldb);
  }
}

/* Q^H C from the left: the least-squares step. */
#define QT(t) (jmg_dtype_is_complex(t) ? CUBLAS_OP_C : CUBLAS_OP_T)

int gpu_ormqr_size(cusolverDnHandle_t h, jmg_dtype t, int m, int n, int k, const void* a, int lda,
                   const void* tau, const void* c, int ldc, int* lwork) {
  cublasSideMode_t l = CUBLAS_SIDE_LEFT;
  switch (t) {
    case JMG_F32: return (int)cusolverDnSormqr_bufferSize(h, l, QT(t), m, n, k, a, lda, tau, c, ldc, lwork);
    case JMG_F64: return (int)cusolverDnDormqr_bufferSize(h, l, QT(t), m, n, k, a, lda, tau, c, ldc, lwork);
    case JMG_C64: return (int)cusolverDnCunmqr_bufferSize(h, l, QT(t), m, n, k, a, lda, tau, c, ldc, lwork);
    default: return (int)cusolverDnZunmqr_bufferSize(h, l, QT(t), m, n, k, a, lda, tau, c, ldc, lwork);
  }
}

int gpu_ormqr(cusolverDnHandle_t h, jmg_dtype t, int m, int n, int k, const void* a, int lda,
              const void* tau, void* c, int ldc, void* work, int lwork, int* info) {
  cublasSideMode_t l = CUBLAS_SIDE_LEFT;
  switch (t) {
    case JMG_F32: return (int)cusolverDnSormqr(h, l, QT(t), m, n, k, a, lda, tau, c, ldc, work, lwork, info);
    case JMG_F64: return (int)cusolverDnDormqr(h, l, QT(t), m, n, k, a, lda, tau, c, ldc, work, lwork, info);
    case JMG_C64: return (int)cusolverDnCunmqr(h, l, QT(t), m, n, k, a, lda, tau, c, ldc, work, lwork, info);
    default: return (int)cusolverDnZunmqr(h, l, QT(t), m, n, k, a, lda, tau, c, ldc, work, lwork, info);
  }
}

int gpu_orgqr_size(cusolverDnHandle_t h, jmg_dtype t, int m, int n, int k, const void* a, int lda,
                   const void* tau, int* lwork) {
  switch (t) {
    case JMG_F32: return (int)cusolverDnSorgqr_bufferSize(h, m, n, k, a, lda, tau, lwork);
    case JMG_F64: return (int)cusolverDnDorgqr_bufferSize(h, m, n, k, a, lda, tau, lwork);
    case JMG_C64: return (int)cusolverDnCungqr_bufferSize(h, m, n, k, a, lda, tau, lwork);
    default: return (int)cusolverDnZungqr_bufferSize(h, m, n, k, a, lda, tau, lwork);
  }
}

int gpu_orgqr(cusolverDnHandle_t h, jmg_dtype t, int m, int n, int k, void* a, int lda,
              const void* tau, void* work, int lwork, int* info) {
  switch (t) {
    case JMG_F32: return (int)cusolverDnSorgqr(h, m, n, k, a, lda, tau, work, lwork, info);
    case JMG_F64: return (int)cusolverDnDorgqr(h, m, n, k, a, lda, tau, work, lwork, info);
    case JMG_C64: return (int)cusolverDnCungqr(h, m, n, k, a, lda, tau, work, lwork, info);
    default: return (int)cusolverDnZungqr(h, m, n, k, a, lda, tau, work, lwork, info);
  }
}

/* Lower triangles, as every engine reads (the caller's upper ones). */
#define GV CUSOLVER_EIG_TYPE_1, jobz, CUBLAS_FILL_MODE_LOWER

int gpu_sygvd_size(cusolverDnHandle_t h, jmg_dtype t, cusolverEigMode_t jobz, int n,
                   const void* a, int lda, const void* b, int ldb, const void* w, int* lwork) {
  switch (t) {
    case JMG_F32: return (int)cusolverDnSsygvd_bufferSize(h, GV, n, a, lda, b, ldb, w, lwork);
    case JMG_F64: return (int)cusolverDnDsygvd_bufferSize(h, GV, n, a, lda, b, ldb, w, lwork);
    case JMG_C64: return (int)cusolverDnChegvd_bufferSize(h, GV, n, a, lda, b, ldb, w, lwork);
    default: return (int)cusolverDnZhegvd_bufferSize(h, GV, n, a, lda, b, ldb, w, lwork);
  }
}

int gpu_sygvd(cusolverDnHandle_t h, jmg_dtype t, cusolverEigMode_t jobz, int n, void* a, int lda,
              void* b, int ldb, void* w, void* work, int lwork, int* info) {
  switch (t) {
    case JMG_F32: return (int)cusolverDnSsygvd(h, GV, n, a, lda, b, ldb, w, work, lwork, info);
    case JMG_F64: return (int)cusolverDnDsygvd(h, GV, n, a, lda, b, ldb, w, work, lwork, info);
    case JMG_C64: return (int)cusolverDnChegvd(h, GV, n, a, lda, b, ldb, w, work, lwork, info);
    default: return (int)cusolverDnZhegvd(h, GV, n, a, lda, b, ldb, w, work, lwork, info);
  }
}
