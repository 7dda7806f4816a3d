/* mp_engine.h - the cuSOLVERMp engine: one rank of a device set per call.
 *
 * Unlike the cuSolverMg engine (engine.h: the parties meet and a leader
 * runs the op for all), every rank here makes its own, collective call:
 * cuSOLVERMp runs one rank per GPU over an NCCL communicator. A rank's FFI
 * call decodes into a jmg_mp_job and goes to its op's row of
 * jmg_mp_ops[] (mp_ops.c), all rows with the same signature:
 *
 *     int fn(jmg_mp_set* set, const jmg_mp_job* job, int32_t* info, char* err)
 *
 * returning JMG_MP_* (mp_comm.h) with err naming the rank, and *info the
 * LAPACK-style status (also written to job->status). The matrix M the
 * layout works on is A^T, as in engine.h: Hermitian ops (potrs, potri,
 * syevd) factor M (= conj(A)) directly, general ops move A itself
 * (a transposing plan).
 *
 * Memory outside XLA's pool, per rank (docs/multinode.md):
 *   - the NCCL communicator, plus the row/column communicators
 *     cusolverMpCreateDeviceGrid splits off (NCCL buffers, ~tens of MiB);
 *   - the cached device workspace (cusolverMpMalloc: NCCL-registered, grown
 *     to the largest op seen, the same size on every rank) and host work;
 *   - per call, from CUDA's stream-ordered pool (cudaMallocAsync): the
 *     block-cyclic copies of the matrices (one per matrix operand: about the
 *     shard's size each), the move's staging (at most the shard plus the
 *     cyclic part), freed at the end of the call.
 */
#ifndef JAXMG_MP_ENGINE_H
#define JAXMG_MP_ENGINE_H

#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverMp.h>
#include <nccl.h>

#include "engines/engine.h"
#include "engines/mp/mp_comm.h"
#include "layout/layout2d.h"

extern const jmg_mp_api jmg_mp_nccl_api;

typedef enum {
  JMG_MP_POTRS = 0,
  JMG_MP_POTRI,
  JMG_MP_SYEVD,
  JMG_MP_LU_SOLVE,
  JMG_MP_LSTSQ,
  JMG_MP_QR,
  JMG_MP_GESVD,
  JMG_MP_POLAR,
  JMG_MP_SYGVD,
  JMG_MP_NOPS
} jmg_mp_op;

/* One rank's call. A is the caller's row-major m x n array, sharded as
 * `kind` (JMG_SHARD_*) over the a x b mesh of the solve axes; replicated
 * operands are column-major and whole on every rank. What each op reads and
 * writes is in its row of jmg_mp_ops (mp_ops.c). */
typedef struct jmg_mp_job {
  jmg_mp_op op;
  jmg_dtype dtype;
  int64_t m, n, nrhs, tile;
  int kind, mesh_a, mesh_b;
  int jobz;             /* syevd, sygvd: 1 eigenvectors; potrs: 1 also log det */
  int64_t nvalid;       /* sygvd: the order solved (0: n), the rest padding (op_table.c) */
  cudaStream_t stream;  /* the call's XLA stream */
  void* a;              /* A's shard, in; the op's matrix result, out */
  void* b;              /* replicated right-hand sides (m x nrhs), in/out; sygvd: B's
                           shard, laid out as A's, read only */
  void* out[2];         /* further outputs */
  int32_t* status;      /* device int32 */
} jmg_mp_job;

/* A cached matrix descriptor. */
typedef struct jmg_mp_desc {
  cusolverMpMatrixDescriptor_t d;
  cudaDataType t;
  int64_t m, n, tile, lld;
  uint64_t used; /* the call (jmg_mp_set.calls) that last used it */
} jmg_mp_desc;

#define JMG_MP_NDESC 8

/* One rank of one device set; made once (jmg_mp_set_open), its solver
 * state on the first call (collective), kept until jmg_mp_set_close. */
typedef struct jmg_mp_set {
  jmg_mp_comm comm;
  int p, q; /* the grid, ROW_MAJOR */
  cusolverMpHandle_t handle;
  cusolverMpGrid_t grid;
  cublasHandle_t blas;
  void* work;
  size_t work_bytes;
  int work_registered; /* work from cusolverMpMalloc (else cudaMalloc) */
  void* hwork;
  size_t hwork_bytes;
  int* d_info;
  void* d_scalar; /* 16 bytes for small all-reduces */
  jmg_mp_desc descs[JMG_MP_NDESC];
  uint64_t calls; /* counts jmg_mp_set_ready: a descriptor of this call is never evicted */
} jmg_mp_set;

typedef int (*jmg_mp_op_fn)(jmg_mp_set* set, const jmg_mp_job* job, int32_t* info, char* err);

typedef struct jmg_mp_op_row {
  const char* name;
  jmg_mp_op op;
  int square;    /* needs m == n */
  int transpose; /* moves A (1) rather than M = A^T (0) */
  int tall;      /* needs m >= n */
  jmg_mp_op_fn fn;
} jmg_mp_op_row;

extern const jmg_mp_op_row jmg_mp_ops[JMG_MP_NOPS];

/* mp_set.c */
int jmg_mp_set_open(jmg_mp_set* s, const char* tag, const unsigned char id[JMG_MP_ID_BYTES],
                    int nranks, int rank, int ordinal, int p, int q, double timeout_s,
                    char* err);
/* The same for several ranks of this process at once, in one NCCL group. */
int jmg_mp_sets_open(jmg_mp_set* const* sets, int count, const char* tag,
                     const unsigned char id[JMG_MP_ID_BYTES], int nranks, const int* ranks,
                     const int* ordinals, int p, int q, double timeout_s, char* err);
void jmg_mp_set_close(jmg_mp_set* s);
/* Inside a guard: the handle, grid and cuBLAS handle on first use (grid
 * creation is collective), all bound to the call's stream. */
int jmg_mp_set_ready(jmg_mp_set* s, cudaStream_t stream, char* err);
/* A descriptor of an m x n matrix with square tiles on the set's grid. */
int jmg_mp_set_desc(jmg_mp_set* s, cudaDataType t, int64_t m, int64_t n, int64_t tile,
                    cusolverMpMatrixDescriptor_t* out, char* err);
/* Grows the workspace to the grid-wide largest of `dev` (all-reduced MAX,
 * so registration sees one size everywhere) and the host one to `host`. */
int jmg_mp_set_workspace(jmg_mp_set* s, cudaStream_t stream, size_t dev, size_t host,
                         char* err);
/* All-reduces one int (MAX) or one double (SUM) over the set. */
int jmg_mp_set_allmax(jmg_mp_set* s, cudaStream_t stream, int* v, char* err);
int jmg_mp_set_allsum(jmg_mp_set* s, cudaStream_t stream, double* v, char* err);

/* mp_move.c */
typedef struct jmg_mp_mover {
  jmg_mp_set* set;
  cudaStream_t stream;
  jmg_dtype dtype;
  const void* src;
  int64_t src_ld;
  void* dst;
  int64_t dst_ld;
} jmg_mp_mover;
/* Runs this rank's part of a plan (layout2d.h): local patches copied,
 * the others sent and received peer by peer through NCCL. */
int jmg_mp_move(const jmg_plan2d* plan, const jmg_mp_mover* mv, char* err);
/* A replicated column-major m x n matrix (ld m) <-> this rank's cyclic part
 * (ld lld). gather zeroes `full`, writes the rank's tiles and all-reduces. */
int jmg_mp_scatter(jmg_mp_set* s, cudaStream_t st, jmg_dtype t, const void* full, int64_t m,
                   int64_t n, int64_t tile, void* local, int64_t lld, char* err);
int jmg_mp_gather(jmg_mp_set* s, cudaStream_t st, jmg_dtype t, const void* local, int64_t lld,
                  int64_t m, int64_t n, int64_t tile, void* full, char* err);

/* mp_util.c */
cudaDataType jmg_mp_cuda_type(jmg_dtype t);
cudaDataType jmg_mp_real_type(jmg_dtype t);
int jmg_mp_cuda_fail(cudaError_t e, const char* what, char* err);
int jmg_mp_solver_fail(cusolverStatus_t s, const char* what, char* err);
int jmg_mp_nccl_fail(ncclResult_t r, const char* what, char* err);

#endif
