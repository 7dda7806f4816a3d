/* gpu_typed.h - the cuBLAS and legacy cuSOLVER routines the general ops
 * need that have no type-generic (void*, cudaDataType) form: one entry
 * each, over jmg_dtype (s, d, c, z). Scalars (alpha, beta) are doubles
 * and are converted to the routine's type. All return a cuBLAS or
 * cuSOLVER status as an int: 0 is success for both. */
#ifndef JAXMG_GPU_TYPED_H
#define JAXMG_GPU_TYPED_H

#include "engines/cuda/mg_context.h"

/* C = alpha op(A) + beta op(B) (m x n); with beta = 0, B may be A. */
int gpu_geam(cublasHandle_t h, jmg_dtype t, cublasOperation_t ta, cublasOperation_t tb, int m,
             int n, double alpha, const void* a, int lda, double beta, const void* b, int ldb,
             void* c, int ldc);
/* C = op(A) op(B) (m x n, inner k). */
int gpu_gemm(cublasHandle_t h, jmg_dtype t, cublasOperation_t ta, cublasOperation_t tb, int m,
             int n, int k, const void* a, int lda, const void* b, int ldb, void* c, int ldc);
/* C = A diag(x) (right) or diag(x) A (left), x of A's type. */
int gpu_dgmm(cublasHandle_t h, jmg_dtype t, cublasSideMode_t side, int m, int n, const void* a,
             int lda, const void* x, void* c, int ldc);
/* B = inv(op(A)) B, A upper or lower triangular (left side, alpha 1). */
int gpu_trsm(cublasHandle_t h, jmg_dtype t, cublasFillMode_t uplo, cublasOperation_t ta, int m,
             int n, const void* a, int lda, void* b, int ldb);

/* y[i * incy] = x[i * incx], i < n. */
int gpu_copy(cublasHandle_t h, jmg_dtype t, int n, const void* x, int incx, void* y, int incy);

/* ormqr / unmqr (trans: OP_T for real, OP_C for complex) and orgqr /
 * ungqr, with their workspace queries (elements of the matrix's type). */
int gpu_ormqr_size(cusolverDnHandle_t h, jmg_dtype t, int m, int n, int k, const void* a, int lda,
                   const void* tau, const void* c, int ldc, int* lwork);
int gpu_ormqr(cusolverDnHandle_t h, jmg_dtype t, int m, int n, int k, const void* a, int lda,
              const void* tau, void* c, int ldc, void* work, int lwork, int* info);
int gpu_orgqr_size(cusolverDnHandle_t h, jmg_dtype t, int m, int n, int k, const void* a, int lda,
                   const void* tau, int* lwork);
int gpu_orgqr(cusolverDnHandle_t h, jmg_dtype t, int m, int n, int k, void* a, int lda,
              const void* tau, void* work, int lwork, int* info);

/* sygvd / hegvd (itype 1: A x = lambda B x), w real, with the workspace
 * query (elements of the matrix's type). */
int gpu_sygvd_size(cusolverDnHandle_t h, jmg_dtype t, cusolverEigMode_t jobz, int n,
                   const void* a, int lda, const void* b, int ldb, const void* w, int* lwork);
int gpu_sygvd(cusolverDnHandle_t h, jmg_dtype t, cusolverEigMode_t jobz, int n, void* a, int lda,
              void* b, int ldb, void* w, void* work, int lwork, int* info);

#endif
