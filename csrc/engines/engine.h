/* engine.h - what an engine (LAPACK on the host, cuSolverMg on GPUs) must
 * provide to run one jaxmg op.
 *
 * The ops layer decodes each device's FFI call into a jmg_party, gathers the
 * parties at the rendezvous and lets rank 0 (the leader) hand the whole job
 * to the engine. The engine sees the matrix M, which is the caller's
 * row-sharded A read as column-major: device r holds columns
 * [r*nloc, (r+1)*nloc) of M, column length n. For symmetric or Hermitian A,
 * M = A^T = conj(A); the Python layer accounts for the conjugate, so the
 * engine simply works on M.
 */
#ifndef JAXMG_ENGINE_H
#define JAXMG_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "xla/ffi/api/c_api.h"

#define JMG_MAX_DEVICES 32 /* cuSolverMg's limit on one device grid */
#define JMG_ERRLEN 512

typedef enum { JMG_POTRS = 0, JMG_POTRI = 1, JMG_SYEVD = 2 } jmg_op;
typedef enum { JMG_F32 = 0, JMG_F64 = 1, JMG_C64 = 2, JMG_C128 = 3 } jmg_dtype;

/* One device's part in a call. It is copied to every party at the
 * rendezvous, so it holds plain values and pointers only. */
typedef struct jmg_party {
  int32_t rank;
  int32_t ordinal;  /* device ordinal as XLA reports it */
  int32_t process;  /* reserved for the multi-process mode; 0 */
  int32_t dtype;    /* jmg_dtype; all parties must agree */
  int64_t n, nloc, nrhs, tile, jobz;
  void* stream;     /* the device's XLA stream (GPU), NULL on the host */
  void* a;          /* nloc columns of M, in/out (aliased by XLA) */
  void* b;          /* potrs: n x nrhs right-hand sides, col-major; x overwrites them */
  void* w;          /* syevd: n eigenvalues (real dtype) */
  int32_t* status;  /* the op's int32 status output */
  void* work;       /* workspace on this device, work_bytes long, or NULL */
  int64_t work_bytes;
} jmg_party;

/* The whole call, as the leader sees it. */
typedef struct jmg_job {
  jmg_op op;
  jmg_dtype dtype;
  int nparties;
  int64_t n, nloc, nrhs, tile;
  int jobz;                 /* syevd: 1 eigenvectors, 0 eigenvalues only */
  jmg_party* parties;       /* nparties, in rank order */
} jmg_job;

typedef struct jmg_engine {
  const char* name;
  /* Every party, before the meeting: fill ordinal and stream, make the
   * inputs complete (GPU: the XLA stream has finished producing them) and
   * read the small int32 `where` input (rank, group) into host memory. */
  int (*enter)(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
               int32_t where_out[2], char* err);
  /* Leader: bytes of workspace each party must bring (0: none). */
  int (*workspace)(const jmg_job* job, int64_t* bytes, char* err);
  /* Every party: allocate / free its workspace (the ops layer calls these
   * only when workspace() asked for some). */
  int (*alloc)(const XLA_FFI_CallFrame* cf, jmg_party* me, char* err);
  void (*release)(const XLA_FFI_CallFrame* cf, jmg_party* me);
  /* Leader: run the op on all parties' buffers; *info gets the LAPACK-style
   * status (0 ok, > 0 failing minor or no convergence). Returns 0, or
   * non-zero with a message in err for an engine failure. */
  int (*run)(jmg_job* job, int32_t* info, char* err);
  /* Every party, after the leader: store `info` into its status output and
   * make all outputs complete before returning to XLA. */
  int (*finish)(const XLA_FFI_CallFrame* cf, jmg_party* me, int32_t info, char* err);
} jmg_engine;

size_t jmg_dtype_size(jmg_dtype t);
int jmg_dtype_is_complex(jmg_dtype t);

#endif
