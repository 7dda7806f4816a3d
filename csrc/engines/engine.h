/* engine.h - what an engine (LAPACK on the host, cuSolverMg/cuSOLVER on
 * GPUs) must provide to run the jaxmg ops.
 *
 * The ops layer decodes each device's FFI call into a jmg_party (following
 * the op's row in the op table, ops/op_table.h), gathers the parties at the
 * rendezvous and lets rank 0 (the leader) hand the whole job to the
 * engine's function for that op. The engine sees the matrix E, which is the
 * caller's row-sharded A (m x n) read as column-major, column length n:
 * device r holds A's rows [r*l, min((r+1)*l, m)), l = ceil(m / nparties)
 * (jmg_job_lrows), as the first columns of its nloc >= l (mpad = nparties *
 * nloc); what follows them is padding, which the engine ignores and whose
 * results it leaves undefined or zero. The general ops take m from their
 * `mrows` attribute; the square ops have m = n (a square op's shard is
 * nloc x n). So padding, where the caller's sizes need some, always sits
 * after A, never inside it. For symmetric
 * or Hermitian A, E = A^T = conj(A); the Python layer accounts for the
 * conjugate, so those engines simply work on E. The general ops (lu_solve,
 * least_squares, qr, gesvd, polar) undo the transpose themselves.
 */
#ifndef JAXMG_ENGINE_H
#define JAXMG_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "xla/ffi/api/c_api.h"

#define JMG_MAX_DEVICES 32 /* cuSolverMg's limit on one device grid */
#define JMG_ERRLEN 512
#define JMG_SHARE_BYTES 512 /* see jmg_party.share */
#define JMG_MAX_BUFS 6      /* data buffers of one party (op_table.h: slots) */
#define JMG_MAX_ATTRS 3     /* op-specific integer attributes */
#define JMG_MAX_SCALARS 2   /* real scalar results, sent in the leader's verdict */
#define JMG_MAX_BATCH_DIMS 4 /* leading batch dimensions of one call (nested vmaps) */
/* The int32 `where` input of every op, per element of a batch: (rank along
 * the solve axis, group over the other axes, this party's non-finite flag:
 * non-zero when its own shard or copy of an input holds a NaN or an
 * infinity). The flags of all parties meet in the party record (handle.c),
 * so that no collective runs before the call. */
#define JMG_WHERE_LEN 3
#define JMG_WHERE_FLAG 2 /* the flag's index in an element's entries */
/* The status of an element whose input some party flagged non-finite: no
 * engine runs on it, every party returns this (docs/status.md). */
#define JMG_STATUS_NONFINITE (-1)

/* An op: its index in the op table (ops/op_table.h). */
typedef int jmg_op;
enum { JMG_POTRS = 0, JMG_POTRI, JMG_SYEVD, JMG_LU_SOLVE, JMG_LSTSQ, JMG_QR, JMG_GESVD,
       JMG_POLAR, JMG_CHOL_FACTOR, JMG_CHOL_SOLVE, JMG_CHOL_INVERSE, JMG_SYGVD, JMG_NOPS };

typedef enum { JMG_F32 = 0, JMG_F64 = 1, JMG_C64 = 2, JMG_C128 = 3 } jmg_dtype;
/* Which solver runs the op, as the caller asked (the Python layer resolves
 * "auto" from the problem size; an engine treats AUTO as MULTI). */
typedef enum { JMG_DISPATCH_AUTO = 0, JMG_DISPATCH_MULTI = 1, JMG_DISPATCH_SINGLE = 2 } jmg_dispatch;

/* How the leader uses a party's buffer (jmg_party.buf_flags). */
enum {
  JMG_BUF_IN = 1,  /* read from every party (A's shards) */
  JMG_BUF_OUT = 2, /* written into every party (results, sharded or replicated) */
  JMG_BUF_OWN = 4, /* replicated input: the leader reads only its own copy */
};

/* One device's part in a call. It is copied to every party at the
 * rendezvous, so it holds plain values and pointers only. */
typedef struct jmg_party {
  int32_t rank;
  int32_t ordinal;  /* device ordinal as XLA reports it */
  int32_t pid;      /* the party's process id in its own PID namespace (GPU IPC only) */
  int32_t dtype;    /* jmg_dtype; all parties must agree */
  int32_t dispatch; /* jmg_dispatch */
  int32_t op;       /* jmg_op */
  int64_t m, n;     /* A is m x n: its first m of mpad rows (the rest pad) */
  int64_t mpad;     /* rows of all shards: nparties * nloc */
  int64_t nloc, nrhs, tile;
  int32_t col_split; /* A's columns are split into this many blocks (the
                      * `col_split` attribute; 1: each shard holds whole rows) */
  int64_t attr[JMG_MAX_ATTRS]; /* the op's own attributes, in its row's order */
  /* A batched call holds `batch` problems, element after element in every
   * buffer (batch_dims leading, most major); the engine's run sees one at a
   * time (handle.c). Unbatched: nbatch 0, batch 1. */
  int32_t nbatch;
  int64_t batch;
  int64_t batch_dims[JMG_MAX_BATCH_DIMS];
  uint64_t site;    /* hash of the call site */
  uint64_t token;   /* the party's process, jmg_process_token(): never a PID */
  int64_t nonfinite; /* elements of the batch this party flagged non-finite */
  void* stream;     /* the device's XLA stream (GPU), NULL on the host */
  /* The op's data buffers by slot (op_table.h). Slots 0-2 keep the names
   * of the first ops: a (A's shard, in place), b (right-hand sides and
   * solutions, square results), w (eigen/singular values). */
  union {
    void* buf[JMG_MAX_BUFS];
    struct {
      void* a;
      void* b;
      void* w;
    };
  };
  int64_t buf_bytes[JMG_MAX_BUFS]; /* the whole batch's */
  uint8_t buf_flags[JMG_MAX_BUFS];
  int32_t* status;  /* the op's int32 status output */
  void* scalar[JMG_MAX_SCALARS]; /* real scalar outputs (potrs: logdet), or NULL */
  void* work;       /* workspace on this device, work_bytes long, or NULL */
  int64_t work_bytes;
  /* Multi-process mode: how another process reaches the buffers (a shared
   * memory name, CUDA IPC handles...), written by the engine's share(). */
  unsigned char share[JMG_SHARE_BYTES];
} jmg_party;

/* The whole call, as the leader sees it. */
typedef struct jmg_job {
  jmg_op op;
  jmg_dtype dtype;
  int nparties;
  int64_t m, n, nloc, nrhs, tile;
  int64_t mpad;             /* nparties * nloc >= m; rows past m are padding */
  int64_t attr[JMG_MAX_ATTRS];
  int jobz;                 /* syevd: 1 eigenvectors, 0 eigenvalues only (= attr[0]) */
  jmg_dispatch dispatch;
  int col_split;            /* A's shards: (nparties / col_split) x col_split blocks */
  jmg_party* parties;       /* nparties, in rank order; a collective engine's
                             * run sees its own party only, as parties[0] */
  void* ctx;                /* a collective engine's own state for the call (join) */
} jmg_job;

/* What the leader's run returns to every party. */
typedef struct jmg_result {
  int32_t info;                   /* LAPACK-style status: 0 ok, > 0 failing minor/pivot, ... */
  double scalar[JMG_MAX_SCALARS]; /* the op's scalar results (NaN when info != 0) */
} jmg_result;

/* One op on one engine: the leader's two steps. */
typedef struct jmg_engine_op {
  /* bytes[r] of device workspace party r must bring (0: none); also where
   * an engine checks its library's size limits, before anything runs.
   * NULL: none. */
  int (*workspace)(const jmg_job* job, int64_t* bytes, char* err);
  /* Runs the op on all parties' buffers. Returns 0 (res->info says how
   * the matrix fared) or non-zero with a message for an engine failure. */
  int (*run)(jmg_job* job, jmg_result* res, char* err);
} jmg_engine_op;

/* What an engine in which every rank calls the library itself (cuSOLVERMp:
 * one rank per device on an NCCL communicator) adds; handle.c then runs
 * its collective mode: no rendezvous and no leader, every party runs the
 * op's function on its own party. Each hook is bounded by timeout_s (a
 * rank that never comes is an error on the others within it). */
typedef struct jmg_collective {
  /* Every party after enter: its communicator for this call (*ctx), found
   * from the call's attributes and device. */
  int (*join)(const XLA_FFI_CallFrame* cf, const jmg_party* me, double timeout_s, void** ctx,
              char* err);
  /* Every party, together: succeeds on all when every party brings the
   * same fingerprint and none a failure (mine: NULL, or its message);
   * otherwise fails on all, naming a failing rank. *flag: in, this party's
   * non-finite flag (0 or 1); out, the largest over the parties. */
  int (*agree)(void* ctx, const jmg_party* me, uint64_t print, const char* mine, uint64_t* flag,
               char* err);
  void (*leave)(void* ctx);
} jmg_collective;

typedef struct jmg_engine {
  const char* name;
  /* NULL: a leader runs every op for all parties; else the collective mode. */
  const jmg_collective* collective;
  /* Per op (indexed by jmg_op); an op with run == NULL is not available on
   * this engine (a clear error on every party). */
  jmg_engine_op ops[JMG_NOPS];
  /* Every party, before the meeting: fill ordinal and stream, make the
   * inputs complete (GPU: the XLA stream has finished producing them) and
   * read the small int32 `where` input (count entries: JMG_WHERE_LEN per
   * element of the batch) into host memory at where_out. */
  int (*enter)(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where, int64_t count,
               int32_t* where_out, char* err);
  /* Every party, after enter, where XLA did not alias a result to its
   * argument: copy `bytes` from src to dst on the device and make the copy
   * complete (0, or -1 with a message). */
  int (*copy_in)(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, const void* src,
                 int64_t bytes, char* err);
  /* Every party, before finish, for an element no engine ran on (its
   * input was not finite): set `bytes` at dst, one of its results, to NaN
   * (every byte 0xFF: a NaN in each float type) on the party's device. */
  int (*fill_nan)(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, int64_t bytes,
                  char* err);
  /* Every party: allocate / free its workspace (the ops layer calls these
   * only when workspace() asked for some). */
  int (*alloc)(const XLA_FFI_CallFrame* cf, jmg_party* me, char* err);
  void (*release)(const XLA_FFI_CallFrame* cf, jmg_party* me);
  /* Every party, after the leader: store res->info into its status output
   * and the scalars into me->scalar[k] (the op's real dtype), and make all
   * outputs complete before returning to XLA. */
  int (*finish)(const XLA_FFI_CallFrame* cf, jmg_party* me, const jmg_result* res, char* err);

  /* Multi-process mode, used only when some party of the call runs in
   * another process than the leader (whose buffers the leader then cannot
   * address); NULL where the engine cannot work across processes. The ops
   * layer calls share on every such party, open and close around run on
   * the leader, and fetch on every party that shared, after the leader's
   * verdict and whether or not it succeeded.
   *
   * share: publish me's buffers for the leader's process, recorded in
   *   me->share (host: a copy in a shared memory segment; GPU: IPC handles).
   * open:  leader: point the buffers of every such party in job->parties at
   *   memory the leader can address, from its share record.
   * close: leader: undo open once run is over.
   * fetch: ok != 0: bring the results back into me's own buffers; always:
   *   free what share made. */
  int (*share)(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, char* err);
  int (*open)(jmg_job* job, char* err);
  void (*close)(jmg_job* job);
  int (*fetch)(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, int ok, char* err);
  /* 1 when share/open/fetch carry every slot by buf_bytes/buf_flags; 0
   * when they carry a, b and w only, sized from n, nloc and nrhs as for
   * potrs/potri/syevd (the ops layer then refuses calls that need more). */
  int shares_every_buffer;
} jmg_engine;

/* Rows of A each shard holds at its head (engine.h's first comment). */
static inline int64_t jmg_job_lrows(const jmg_job* job) {
  return (job->m + job->nparties - 1) / job->nparties;
}

/* Whether party r runs in another process than the leader (rank 0), whose
 * buffers the leader can then reach only through the engine's share hooks. */
static inline int jmg_job_remote(const jmg_job* job, int r) {
  return job->parties[r].token != job->parties[0].token;
}

size_t jmg_dtype_size(jmg_dtype t);
size_t jmg_dtype_real_size(jmg_dtype t);
int jmg_dtype_is_complex(jmg_dtype t);
const char* jmg_dtype_name(jmg_dtype t);

#endif
