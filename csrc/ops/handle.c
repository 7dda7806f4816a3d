/* handle.c - one jaxmg op, from the FFI call frame to the returned status.
 *
 * Every device's call decodes its buffers, meets the other devices of its
 * group, and the leader runs the engine between exchanges:
 *
 *   1. all:    exchange parties        (each sees every device's buffers)
 *   2. leader: workspace size  -> broadcast
 *   3. all:    allocate workspace, exchange the pointers
 *  3b. across processes: publish buffers for the leader (engine share)
 *   4. leader: run the engine  -> broadcast the result (no time limit)
 *   5. all:    store the status, release the workspace
 *
 * A party that fails before the meeting still joins it and reports the
 * failure, so no other device is left waiting.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engines/engine.h"
#include "ffi/seam.h"
#include "ops/ops.h"
#include "rendezvous/meeting.h"
#include "util/clock.h"
#include "util/identity.h"
#include "util/trace.h"

static const char* op_name(jmg_op op) {
  switch (op) {
    case JMG_POTRS: return "potrs";
    case JMG_POTRI: return "potri";
    default: return "syevd";
  }
}

static int to_dtype(XLA_FFI_DataType t, jmg_dtype* out) {
  switch (t) {
    case XLA_FFI_DataType_F32: *out = JMG_F32; return 0;
    case XLA_FFI_DataType_F64: *out = JMG_F64; return 0;
    case XLA_FFI_DataType_C64: *out = JMG_C64; return 0;
    case XLA_FFI_DataType_C128: *out = JMG_C128; return 0;
    default: return -1;
  }
}

static XLA_FFI_DataType real_of(XLA_FFI_DataType t) {
  if (t == XLA_FFI_DataType_C64) return XLA_FFI_DataType_F32;
  if (t == XLA_FFI_DataType_C128) return XLA_FFI_DataType_F64;
  return t;
}

/* What one device's call frame says, before anything is run. */
typedef struct decoded {
  jmg_party me;
  int64_t nparties;
  const void* where;
  const char* site;
  size_t site_len;
} decoded;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(char* err, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, JMG_ERRLEN, fmt, ap);
  va_end(ap);
  return -1;
}

/* Checks a matrix-shaped buffer against expectations (rank, dims, dtype). */
static int check_buf(const XLA_FFI_Buffer* b, const char* what, int64_t rank, int64_t d0,
                     int64_t d1, XLA_FFI_DataType dt, char* err) {
  if (!b) return fail(err, "%s is missing", what);
  if (b->dtype != dt)
    return fail(err, "%s has dtype %s, expected %s", what, jmg_ffi_dtype_name(b->dtype),
                jmg_ffi_dtype_name(dt));
  if (b->rank != rank) return fail(err, "%s has rank %lld, expected %lld", what, (long long)b->rank, (long long)rank);
  if (rank >= 1 && b->dims[0] != d0)
    return fail(err, "%s has %lld rows, expected %lld", what, (long long)b->dims[0], (long long)d0);
  if (rank >= 2 && b->dims[1] != d1)
    return fail(err, "%s has %lld columns, expected %lld", what, (long long)b->dims[1],
                (long long)d1);
  return 0;
}

/* Returns 1 when the call cannot even say who it is (no rank, no site):
 * then it cannot meet the others and must return at once. Returns -1 for a
 * bad call that can still meet and report, 0 for a good one. */
static int decode(const XLA_FFI_CallFrame* cf, jmg_op op, decoded* d, char* err) {
  memset(d, 0, sizeof *d);
  int64_t nargs = op == JMG_POTRS ? 3 : 2;
  int64_t nrets = op == JMG_POTRI ? 2 : 3;
  const XLA_FFI_Buffer* where = jmg_ffi_arg(cf, nargs - 1);
  if (cf->args.size != nargs || cf->rets.size != nrets || !where ||
      where->dtype != XLA_FFI_DataType_S32 || jmg_ffi_numel(where) != 2 ||
      jmg_ffi_attr_str(cf, "site", &d->site, &d->site_len) ||
      jmg_ffi_attr_int(cf, "nparties", &d->nparties) || d->nparties < 1 ||
      d->nparties > JMG_MAX_DEVICES) {
    snprintf(err, JMG_ERRLEN,
             "malformed %s call: %lld args, %lld results, or a bad where/site/nparties "
             "(at most %d devices)",
             op_name(op), (long long)cf->args.size, (long long)cf->rets.size, JMG_MAX_DEVICES);
    return 1;
  }
  d->where = where->data;

  jmg_party* p = &d->me;
  const XLA_FFI_Buffer* a = jmg_ffi_arg(cf, 0);
  if (!a || a->rank != 2) return fail(err, "%s: A must be a matrix", op_name(op));
  jmg_dtype dt;
  if (to_dtype(a->dtype, &dt))
    return fail(err, "%s: unsupported dtype %s", op_name(op), jmg_ffi_dtype_name(a->dtype));
  p->dtype = dt;
  p->nloc = a->dims[0];
  p->n = a->dims[1];
  p->nrhs = 0;
  p->jobz = 0;
  if (jmg_ffi_attr_int(cf, "tile", &p->tile) || p->tile < 1)
    return fail(err, "%s: the tile attribute is missing or < 1", op_name(op));
  if (op == JMG_SYEVD && jmg_ffi_attr_int(cf, "jobz", &p->jobz))
    return fail(err, "%s: the jobz attribute is missing", op_name(op));
  int64_t dispatch = JMG_DISPATCH_AUTO; /* optional: absent means auto */
  jmg_ffi_attr_int(cf, "dispatch", &dispatch);
  if (dispatch < JMG_DISPATCH_AUTO || dispatch > JMG_DISPATCH_SINGLE)
    return fail(err, "%s: bad dispatch attribute %lld", op_name(op), (long long)dispatch);
  p->dispatch = (int32_t)dispatch;
  if (p->n != d->nparties * p->nloc)
    return fail(err, "%s: %lld columns is not nparties * %lld rows", op_name(op), (long long)p->n,
                (long long)p->nloc);
  if (p->nloc % p->tile)
    return fail(err, "%s: shard height %lld is not a multiple of the tile %lld", op_name(op),
                (long long)p->nloc, (long long)p->tile);

  const XLA_FFI_Buffer* a_out = jmg_ffi_ret(cf, 0);
  if (check_buf(a_out, "the A result", 2, p->nloc, p->n, a->dtype, err)) return -1;
  /* The op works in place: XLA must have aliased the result to A. */
  if (a_out->data != a->data)
    return fail(err, "%s: the A result is not aliased to A", op_name(op));
  p->a = a->data;

  if (op == JMG_POTRS) {
    const XLA_FFI_Buffer* b = jmg_ffi_arg(cf, 1);
    const XLA_FFI_Buffer* x = jmg_ffi_ret(cf, 1);
    if (!b || b->rank != 2) return fail(err, "%s: b must be a matrix", op_name(op));
    p->nrhs = b->dims[1];
    if (check_buf(b, "b", 2, p->n, p->nrhs, a->dtype, err) ||
        check_buf(x, "the x result", 2, p->n, p->nrhs, a->dtype, err))
      return -1;
    if (x->data != b->data)
      return fail(err, "%s: the x result is not aliased to b", op_name(op));
    p->b = b->data;
  }
  if (op == JMG_SYEVD) {
    const XLA_FFI_Buffer* w = jmg_ffi_ret(cf, 1);
    if (check_buf(w, "the eigenvalue result", 1, p->n, 0, real_of(a->dtype), err)) return -1;
    p->w = w->data;
  }
  const XLA_FFI_Buffer* st = jmg_ffi_ret(cf, nrets - 1);
  if (!st || st->dtype != XLA_FFI_DataType_S32 || jmg_ffi_numel(st) != 1)
    return fail(err, "%s: the status result must be one int32", op_name(op));
  p->status = st->data;
  return 0;
}

/* All parties see the same exchanged data, so they reach the same verdict
 * on a mismatch without another round. */
static int check_agree(const jmg_party* all, int np, char* err) {
  for (int r = 0; r < np; r++) {
    const jmg_party* p = &all[r];
    if (p->rank != r)
      return fail(err, "device group is inconsistent: rank %d sits in slot %d", (int)p->rank, r);
    if (p->dtype != all[0].dtype || p->n != all[0].n || p->nloc != all[0].nloc ||
        p->nrhs != all[0].nrhs || p->tile != all[0].tile || p->jobz != all[0].jobz ||
        p->dispatch != all[0].dispatch)
      return fail(err, "devices disagree on the problem: rank %d vs rank 0", r);
  }
  return 0;
}

/* The leader's word to everyone after phases 2 and 4. */
typedef struct verdict {
  int32_t code; /* 0 ok */
  int32_t info;
  int64_t bytes[JMG_MAX_DEVICES]; /* workspace per rank */
  char msg[JMG_ERRLEN];
} verdict;

static int broadcast(jmg_meeting* m, int rank, int np, verdict* v, double timeout, char* err) {
  verdict* all = malloc(sizeof(verdict) * (size_t)np);
  if (!all) {
    snprintf(err, JMG_ERRLEN, "out of host memory");
    return -1;
  }
  verdict mine;
  if (rank == 0) {
    mine = *v;
  } else {
    memset(&mine, 0, sizeof mine);
  }
  int rc = jmg_meeting_exchange(m, &mine, sizeof mine, all, NULL, timeout, err, JMG_ERRLEN);
  if (rc == 0) *v = all[0];
  free(all);
  return rc;
}

/* JAXMG_VERBOSE=2: where this party is (trace.h). */
static void step(jmg_op op, const decoded* d, const char* what) {
  jmg_trace(2, "%s rank %d of %lld: %s", op_name(op), (int)d->me.rank, (long long)d->nparties,
            what);
}

static XLA_FFI_Error* give_up(const XLA_FFI_CallFrame* cf, jmg_op op, const decoded* d,
                              const char* msg) {
  jmg_trace(2, "%s rank %d of %lld: fails: %s", op_name(op), (int)d->me.rank,
            (long long)d->nparties, msg);
  return jmg_ffi_error(cf, XLA_FFI_Error_Code_INTERNAL, "jaxmg %s (rank %d of %lld): %s",
                       op_name(op), d->me.rank, (long long)d->nparties, msg);
}

XLA_FFI_Error* jmg_op_handle(XLA_FFI_CallFrame* cf, jmg_op op, const jmg_engine* eng) {
  if (jmg_ffi_answer_metadata(cf, 0)) return NULL;
  if (cf->stage != XLA_FFI_ExecutionStage_EXECUTE) return NULL;

  char err[JMG_ERRLEN] = "";
  decoded d;
  int bad = decode(cf, op, &d, err);
  if (bad > 0) return jmg_ffi_error(cf, XLA_FFI_Error_Code_INVALID_ARGUMENT, "jaxmg: %s", err);

  int32_t where[2];
  char enter_err[JMG_ERRLEN] = "";
  jmg_trace(2, "%s: called, waits for its inputs", op_name(op));
  if (eng->enter(cf, &d.me, d.where, where, enter_err))
    return jmg_ffi_error(cf, XLA_FFI_Error_Code_INTERNAL, "jaxmg %s: %s", op_name(op), enter_err);
  d.me.rank = where[0];
  step(op, &d, "entered (inputs ready)");

  int64_t run_id = 0;
  XLA_FFI_Error* e = jmg_ffi_run_id(cf, &run_id);
  if (e) return e;
  jmg_meet_key key = {run_id, jmg_meet_hash(d.site, d.site_len), where[1]};
  /* Multi-process jobs name their node's shared segment; without it the
   * parties are threads of this process. */
  char shm_name[JMG_SHM_NAME_MAX] = "";
  const char* meet_attr = NULL;
  size_t meet_len = 0;
  int64_t meet_procs = 0;
  if (!jmg_ffi_attr_str(cf, "meet", &meet_attr, &meet_len) && meet_len < sizeof shm_name) {
    memcpy(shm_name, meet_attr, meet_len);
    shm_name[meet_len] = '\0';
  }
  jmg_ffi_attr_int(cf, "meet_procs", &meet_procs);
  d.me.pid = (int32_t)getpid();
  d.me.token = jmg_process_token();
  jmg_meeting m;
  char merr[JMG_ERRLEN];
  double timeout = jmg_meet_default_timeout();
  if (jmg_meeting_join(shm_name, (int)meet_procs, &key, (int)d.nparties, where[0], timeout, &m,
                       merr, sizeof merr))
    return give_up(cf, op, &d, merr);
  step(op, &d, shm_name[0] ? "joined the node's meeting" : "joined the meeting");

  int np = (int)d.nparties, rank = where[0];
  jmg_party* all = calloc((size_t)np, sizeof(jmg_party));
  if (!all && !bad) {
    snprintf(err, sizeof err, "out of host memory");
    bad = -1;
  }
  jmg_party scratch[1];
  /* 1: everyone learns everyone's buffers (or the first failure). */
  int rc = jmg_meeting_exchange(&m, &d.me, sizeof d.me, all ? (void*)all : (void*)scratch,
                                bad ? err : NULL, timeout, merr, sizeof merr);
  XLA_FFI_Error* out = NULL;
  int have_work = 0, cross = 0, shared = 0;
  if (rc) {
    out = give_up(cf, op, &d, merr);
    goto done;
  }
  if (check_agree(all, np, err)) {
    out = give_up(cf, op, &d, err);
    goto done;
  }

  jmg_job job;
  memset(&job, 0, sizeof job);
  job.op = op;
  job.dtype = (jmg_dtype)all[0].dtype;
  job.nparties = np;
  job.n = all[0].n;
  job.nloc = all[0].nloc;
  job.nrhs = all[0].nrhs;
  job.tile = all[0].tile;
  job.jobz = (int)all[0].jobz;
  job.dispatch = (jmg_dispatch)all[0].dispatch;
  job.parties = all;

  for (int r = 0; r < np; r++) cross |= jmg_job_remote(&job, r);
  step(op, &d, "all parties known");

  /* 2: the leader sizes the workspace. */
  verdict v;
  memset(&v, 0, sizeof v);
  if (rank == 0 && eng->workspace(&job, v.bytes, v.msg)) v.code = 1;
  if (broadcast(&m, rank, np, &v, timeout, merr)) {
    out = give_up(cf, op, &d, merr);
    goto done;
  }
  if (v.code) {
    out = give_up(cf, op, &d, v.msg);
    goto done;
  }
  if (rank == 0 && jmg_trace_level() >= 1) {
    char ws[JMG_MAX_DEVICES * 21 + 1] = "";
    size_t at = 0;
    for (int r = 0; r < np && at < sizeof ws; r++)
      at += (size_t)snprintf(ws + at, sizeof ws - at, " %lld", (long long)v.bytes[r]);
    jmg_trace(1, "%s: n=%lld nloc=%lld tile=%lld nrhs=%lld parties=%d dispatch=%d workspace%s",
              op_name(op), (long long)job.n, (long long)job.nloc, (long long)job.tile,
              (long long)job.nrhs, np, (int)job.dispatch, ws);
  }

  /* 3: everyone brings workspace from its own device's allocator. */
  int64_t any = 0;
  for (int r = 0; r < np; r++) any |= v.bytes[r];
  if (any) {
    d.me.work_bytes = v.bytes[rank];
    char aerr[JMG_ERRLEN] = "";
    int arc = d.me.work_bytes > 0 ? eng->alloc(cf, &d.me, aerr) : 0;
    have_work = arc == 0 && d.me.work_bytes > 0;
    rc = jmg_meeting_exchange(&m, &d.me, sizeof d.me, all, arc ? aerr : NULL, timeout, merr,
                              sizeof merr);
    if (rc) {
      out = give_up(cf, op, &d, merr);
      goto done;
    }
    step(op, &d, "workspace ready");
  }

  /* 3b: across processes, the parties the leader cannot address publish
   * their buffers, workspace included (engine share/open/close/fetch, see
   * engine.h). */
  if (cross) {
    char serr[JMG_ERRLEN] = "";
    int src = 0;
    if (!eng->share || !eng->open || !eng->close || !eng->fetch)
      src = fail(serr, "the %s engine cannot work across processes", eng->name);
    else if (jmg_job_remote(&job, rank))
      shared = (src = eng->share(cf, &job, &d.me, serr)) == 0;
    rc = jmg_meeting_exchange(&m, &d.me, sizeof d.me, all, src ? serr : NULL, timeout, merr,
                              sizeof merr);
    if (rc) {
      out = give_up(cf, op, &d, merr);
      goto done;
    }
    step(op, &d, "buffers shared across processes");
  }

  /* 4: the leader runs the op; the others wait as long as it takes. */
  memset(&v, 0, sizeof v);
  step(op, &d, rank == 0 ? "runs the engine" : "waits for the leader");
  if (rank == 0) {
    double t0 = jmg_clock_now();
    int opened = cross && eng->open(&job, v.msg) == 0;
    if (cross && !opened) v.code = 1;
    double t1 = jmg_clock_now();
    if (!v.code && eng->run(&job, &v.info, v.msg)) v.code = 1;
    double t2 = jmg_clock_now();
    if (opened) eng->close(&job);
    jmg_trace(2, "%s rank 0: open %.2f ms, run %.2f ms, close %.2f ms, info %d, code %d",
              op_name(op), 1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (jmg_clock_now() - t2),
              (int)v.info, (int)v.code);
  }
  int brc = broadcast(&m, rank, np, &v, -1.0, merr);
  if (shared) {
    /* Results back (or only the share dropped); then, across processes,
     * everyone learns that every party has its results: a party that died
     * or failed here fails the call everywhere. */
    char ferr[JMG_ERRLEN] = "";
    int frc = eng->fetch(cf, &job, &d.me, brc == 0 && v.code == 0, ferr);
    shared = 0;
    if (brc == 0 && v.code == 0)
      brc = jmg_meeting_exchange(&m, NULL, 0, NULL, frc ? ferr : NULL, timeout, merr, sizeof merr);
  } else if (cross && brc == 0 && v.code == 0) {
    brc = jmg_meeting_exchange(&m, NULL, 0, NULL, NULL, timeout, merr, sizeof merr);
  }
  if (brc) {
    out = give_up(cf, op, &d, merr);
    goto done;
  }
  if (v.code) {
    out = give_up(cf, op, &d, v.msg);
    goto done;
  }

  /* 5: every device stores the status and completes its outputs. */
  if (eng->finish(cf, &d.me, v.info, err)) out = give_up(cf, op, &d, err);
  else step(op, &d, "done");

done:
  if (shared) eng->fetch(cf, NULL, &d.me, 0, err);
  if (have_work) eng->release(cf, &d.me);
  jmg_meeting_leave(&m);
  free(all);
  return out;
}
