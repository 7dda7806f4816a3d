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
#define JMG_SHARE_BYTES 512 /* see jmg_party.share */

typedef enum { JMG_POTRS = 0, JMG_POTRI = 1, JMG_SYEVD = 2 } jmg_op;
typedef enum { JMG_F32 = 0, JMG_F64 = 1, JMG_C64 = 2, JMG_C128 = 3 } jmg_dtype;
/* Which solver runs the op, as the caller asked (the Python layer resolves
 * "auto" from the problem size; an engine treats AUTO as MULTI). */
typedef enum { JMG_DISPATCH_AUTO = 0, JMG_DISPATCH_MULTI = 1, JMG_DISPATCH_SINGLE = 2 } jmg_dispatch;

/* One device's part in a call. It is copied to every party at the
 * rendezvous, so it holds plain values and pointers only. */
typedef struct jmg_party {
  int32_t rank;
  int32_t ordinal;  /* device ordinal as XLA reports it */
  int32_t pid;      /* the party's process id in its own PID namespace (GPU IPC only) */
  int32_t dtype;    /* jmg_dtype; all parties must agree */
  int32_t dispatch; /* jmg_dispatch */
  int64_t n, nloc, nrhs, tile, jobz;
  uint64_t token;   /* the party's process, jmg_process_token(): never a PID */
  void* stream;     /* the device's XLA stream (GPU), NULL on the host */
  void* a;          /* nloc columns of M, in/out (aliased by XLA) */
  void* b;          /* potrs: n x nrhs right-hand sides, col-major; x overwrites them */
  void* w;          /* syevd: n eigenvalues (real dtype) */
  int32_t* status;  /* the op's int32 status output */
  void* work;       /* workspace on this device, work_bytes long, or NULL */
  int64_t work_bytes;
  /* Multi-process mode: how another process reaches a, b and w (a shared
   * memory name, CUDA IPC handles...), written by the engine's share(). */
  unsigned char share[JMG_SHARE_BYTES];
} jmg_party;

/* The whole call, as the leader sees it. */
typedef struct jmg_job {
  jmg_op op;
  jmg_dtype dtype;
  int nparties;
  int64_t n, nloc, nrhs, tile;
  int jobz;                 /* syevd: 1 eigenvectors, 0 eigenvalues only */
  jmg_dispatch dispatch;
  jmg_party* parties;       /* nparties, in rank order */
} jmg_job;

typedef struct jmg_engine {
  const char* name;
  /* Every party, before the meeting: fill ordinal and stream, make the
   * inputs complete (GPU: the XLA stream has finished producing them) and
   * read the small int32 `where` input (rank, group) into host memory. */
  int (*enter)(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
               int32_t where_out[2], char* err);
  /* Leader: bytes[r] of workspace party r must bring (0: none). */
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

  /* Multi-process mode, used only when some party of the call runs in
   * another process than the leader (whose buffers the leader then cannot
   * address); NULL where the engine cannot work across processes. The ops
   * layer calls share on every such party, open and close around run on
   * the leader, and fetch on every party that shared, after the leader's
   * verdict and whether or not it succeeded.
   *
   * share: publish me's a, b and w for the leader's process, recorded in
   *   me->share (host: a copy in a shared memory segment; GPU: IPC handles).
   * open:  leader: point a, b and w of every such party in job->parties at
   *   memory the leader can address, from its share record.
   * close: leader: undo open once run is over.
   * fetch: ok != 0: bring the results back into me's own buffers; always:
   *   free what share made. */
  int (*share)(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, char* err);
  int (*open)(jmg_job* job, char* err);
  void (*close)(jmg_job* job);
  int (*fetch)(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, int ok, char* err);
} jmg_engine;

/* Whether party r runs in another process than the leader (rank 0), whose
 * buffers the leader can then reach only through the engine's share hooks. */
static inline int jmg_job_remote(const jmg_job* job, int r) {
  return job->parties[r].token != job->parties[0].token;
}

size_t jmg_dtype_size(jmg_dtype t);
int jmg_dtype_is_complex(jmg_dtype t);

#endif
