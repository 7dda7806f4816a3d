/* mp_engine.h - the cuSOLVERMp engine: one rank of a device set per call.
 *
 * Unlike the cuSolverMg engine (a leader runs the op for all parties), every
 * rank here makes its own, collective call: cuSOLVERMp runs one rank per
 * GPU over an NCCL communicator. The engine is a collective one
 * (engine.h: jmg_engine.collective): the ops layer (ops/handle.c) decodes
 * each rank's FFI call against the op's row of the one op table, the ranks
 * agree through the engine's communicator, and each runs its op function
 * (mp_ops.c) on its own party. Its results follow the rows (buffers,
 * layouts, the view: op_table.h); on a non-zero status they are NaN.
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

/* The engine's FFI handlers and its table (mp_exports.c). */
extern const jmg_engine jmg_cusolvermp_engine;

/* One rank's call, from its job (ops/handle.c) and its own party. A is the
 * caller's row-major m x n array (m: all shards' rows, padding included)
 * in mesh_a x mesh_b blocks over the solve group; replicated operands are
 * whole on every rank, in the layouts of the op's row. */
typedef struct jmg_mp_job {
  jmg_op op;
  jmg_dtype dtype;
  int64_t m, n, nrhs, tile;
  int mesh_a, mesh_b;
  cudaStream_t stream; /* the call's XLA stream */
  const jmg_party* p;  /* this rank's buffers, by the row's slots */
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
  void* d_scalar; /* 32 bytes for small all-reduces */
  jmg_mp_desc descs[JMG_MP_NDESC];
  uint64_t calls; /* counts jmg_mp_set_ready: a descriptor of this call is never evicted */
} jmg_mp_set;

/* The device set of a job's rank (job->ctx, from the engine's join). */
jmg_mp_set* jmg_mp_job_set(const jmg_job* job);

/* mp_ops.c: the op functions of the engine's table, one per row it runs. */
#define JMG_MP_OPS(X) X(potrs, JMG_POTRS) X(potri, JMG_POTRI) X(syevd, JMG_SYEVD) \
  X(lu_solve, JMG_LU_SOLVE) X(lstsq, JMG_LSTSQ) X(qr, JMG_QR) X(gesvd, JMG_GESVD) \
  X(polar, JMG_POLAR)
#define JMG_MP_DECLARE(name, op) int jmg_mp_run_##name(jmg_job* job, jmg_result* res, char* err);
JMG_MP_OPS(JMG_MP_DECLARE)
#undef JMG_MP_DECLARE

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
/* All-reduces one int (MAX), count uint64 (MAX, count <= 4) or one double
 * (SUM) over the set. */
int jmg_mp_set_allmax(jmg_mp_set* s, cudaStream_t stream, int* v, char* err);
int jmg_mp_set_allmax_u64(jmg_mp_set* s, cudaStream_t stream, uint64_t* v, int count, char* err);
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
/* The same gather written row-major (full holds the transpose, ld n),
 * through a scratch copy; upper: only the upper triangle, zeros below. */
int jmg_mp_gather_rows(jmg_mp_set* s, cudaStream_t st, jmg_dtype t, const void* local,
                       int64_t lld, int64_t m, int64_t n, int64_t tile, int upper, void* full,
                       char* err);

/* mp_util.c */
cudaDataType jmg_mp_cuda_type(jmg_dtype t);
cudaDataType jmg_mp_real_type(jmg_dtype t);
int jmg_mp_cuda_fail(cudaError_t e, const char* what, char* err);
int jmg_mp_solver_fail(cusolverStatus_t s, const char* what, char* err);
int jmg_mp_nccl_fail(ncclResult_t r, const char* what, char* err);

#endif
