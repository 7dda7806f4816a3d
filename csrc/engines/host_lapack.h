/* host_lapack.h - the LAPACK and BLAS routines of the host engine, handed
 * over by the Python layer from scipy (scipy.linalg.cython_lapack and
 * cython_blas) by function address: no LAPACK to find or link at build
 * time, and the one scipy already loaded is reused (as jaxlib does). */
#ifndef JAXMG_HOST_LAPACK_H
#define JAXMG_HOST_LAPACK_H

#include "engines/engine.h"

/* Each routine in the four types, s d c z (jmg_dtype order). */
typedef enum {
  JMG_LA_POTRF, JMG_LA_POTRS, JMG_LA_POTRI,
  JMG_LA_EVD,   /* syevd / heevd */
  JMG_LA_GETRF, JMG_LA_GETRS, JMG_LA_GELS, JMG_LA_GEQRF,
  JMG_LA_ORGQR, /* orgqr / ungqr */
  JMG_LA_GESDD, JMG_LA_GEMM,
  JMG_LA_GVD,   /* sygvd / hegvd */
  JMG_LA_COUNT
} jmg_la;

typedef void jmg_la_fn(void);

/* The routine for type t, or NULL with a message in err when the Python
 * layer did not hand it over. Callers cast it to the routine's signature
 * (that of scipy's cython_lapack / cython_blas). */
jmg_la_fn* jmg_la_get(jmg_la r, jmg_dtype t, char* err);

/* Signatures (int is LAPACK's int; scalars by pointer, as Fortran). */
typedef void la_potrf(char* uplo, int* n, void* a, int* lda, int* info);
typedef void la_potrs(char* uplo, int* n, int* nrhs, void* a, int* lda, void* b, int* ldb,
                      int* info);
typedef void la_syevd(char* jobz, char* uplo, int* n, void* a, int* lda, void* w, void* work,
                      int* lwork, int* iwork, int* liwork, int* info);
typedef void la_heevd(char* jobz, char* uplo, int* n, void* a, int* lda, void* w, void* work,
                      int* lwork, void* rwork, int* lrwork, int* iwork, int* liwork, int* info);
typedef void la_sygvd(int* itype, char* jobz, char* uplo, int* n, void* a, int* lda, void* b,
                      int* ldb, void* w, void* work, int* lwork, int* iwork, int* liwork,
                      int* info);
typedef void la_hegvd(int* itype, char* jobz, char* uplo, int* n, void* a, int* lda, void* b,
                      int* ldb, void* w, void* work, int* lwork, void* rwork, int* lrwork,
                      int* iwork, int* liwork, int* info);
typedef void la_getrf(int* m, int* n, void* a, int* lda, int* ipiv, int* info);
typedef void la_getrs(char* trans, int* n, int* nrhs, void* a, int* lda, int* ipiv, void* b,
                      int* ldb, int* info);
typedef void la_gels(char* trans, int* m, int* n, int* nrhs, void* a, int* lda, void* b, int* ldb,
                     void* work, int* lwork, int* info);
typedef void la_geqrf(int* m, int* n, void* a, int* lda, void* tau, void* work, int* lwork,
                      int* info);
typedef void la_orgqr(int* m, int* n, int* k, void* a, int* lda, void* tau, void* work, int* lwork,
                      int* info);
typedef void la_gesdd_r(char* jobz, int* m, int* n, void* a, int* lda, void* s, void* u, int* ldu,
                        void* vt, int* ldvt, void* work, int* lwork, int* iwork, int* info);
typedef void la_gesdd_c(char* jobz, int* m, int* n, void* a, int* lda, void* s, void* u, int* ldu,
                        void* vt, int* ldvt, void* work, int* lwork, void* rwork, int* iwork,
                        int* info);
typedef void la_gemm(char* ta, char* tb, int* m, int* n, int* k, void* alpha, void* a, int* lda,
                     void* b, int* ldb, void* beta, void* c, int* ldc);

#endif
