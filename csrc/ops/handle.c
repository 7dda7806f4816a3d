/* handle.c - one jaxmg op, from the FFI call frame to the returned status,
 * in phases. Every device's call:
 *
 *   decode    read who it is (rank buffer, site, nparties) and its problem
 *   enter     the engine readies the inputs and reads (rank, group)
 *   meet      join the other devices of its group
 *   agree     exchange parties: every device sees every device's buffers
 *             and checks that all make the same call (the fingerprint);
 *             the parties' non-finite flags (`where`) meet here too: an
 *             element some party flagged runs on no engine and gets
 *             status JMG_STATUS_NONFINITE everywhere
 *   workspace leader: sizes (and the engine's size limits) -> broadcast;
 *             all: allocate, exchange the pointers
 *   share     across processes: publish buffers for the leader
 *   run       leader: the engine's function for the op -> broadcast (no
 *             time limit)
 *   fetch     across processes: results back, and everyone learns that
 *             everyone has them
 *   finish    all: store status and scalar results, release the workspace
 *
 * A party that fails after it knows who it is still meets the others and
 * reports its failure at the next exchange, so no peer is left waiting; a
 * party that cannot say who it is (no rank buffer, site or party count)
 * cannot meet anyone and says so.
 *
 * The collective mode, for engines in which every rank calls the library
 * itself (engine.h: jmg_engine.collective; cuSOLVERMp, one rank per device
 * on an NCCL communicator, across processes and nodes alike). There is no
 * rendezvous and no leader; every party runs
 *
 *   decode    as above (A may come in 2-D blocks: col_split)
 *   enter     as above
 *   join      the engine finds this rank's communicator for the call
 *   agree     one small collective of the engine: every rank's fingerprint
 *             (jmg_call_print) must be the same and no rank may bring a
 *             failure, or the call fails on every rank; the ranks'
 *             non-finite flags meet in it too (one set: no rank runs)
 *   run       every rank: the engine's function for the op on its own
 *             party, element by element of a batch
 *   verdict   the agree collective again: a rank whose run failed fails
 *             the call on every rank
 *   finish    as above, with the rank's own results
 *
 * Every collective of the engine (its library's included) is bounded by
 * JAXMG_TIMEOUT_S: a rank that never arrives is an error on the others,
 * whose engine then aborts its communicator (mp_watch.h).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ffi/seam.h"
#include "ops/call.h"
#include "ops/ops.h"
#include "util/clock.h"
#include "util/identity.h"
#include "util/timeout.h"
#include "util/trace.h"


/* JAXMG_VERBOSE=2: where this party is (trace.h). */
static void step(const jmg_call* c, const char* what) {
  jmg_trace(2, "%s rank %d of %lld: %s", c->row->name, (int)c->me.rank, (long long)c->nparties,
            what);
}

/* An exchange of this party's record (or only of failures when size is 0);
 * reports c->own as this party's failure if it has one. */
static int exchange(jmg_call* c, const void* mine, size_t size, void* all, double timeout) {
  char merr[JMG_ERRLEN];
  int rc = jmg_meeting_exchange(&c->m, mine, size, all, c->own[0] ? c->own : NULL, timeout, merr,
                                sizeof merr);
  if (rc) return jmg_call_fail(c->err, "%s", merr);
  return 0;
}

_Static_assert(sizeof(jmg_party) <= JMG_MEET_MAX_MSG, "a party must fit one exchange");

/* ---- the leader's word ---- */

/* Workspace sizes. */
typedef struct verdict {
  int32_t code; /* 0 ok */
  int64_t bytes[JMG_MAX_DEVICES]; /* workspace per rank */
  char msg[JMG_ERRLEN];
} verdict;

/* Results of up to JMG_WORD_RESULTS elements of a batch, in order. */
#define JMG_WORD_RESULTS 16
typedef struct results_word {
  int32_t code; /* 0 ok */
  jmg_result res[JMG_WORD_RESULTS];
  char msg[JMG_ERRLEN];
} results_word;
_Static_assert(sizeof(verdict) <= JMG_MEET_MAX_MSG && sizeof(results_word) <= JMG_MEET_MAX_MSG,
               "the leader's words must fit one exchange");

/* Every party gets the leader's `size` bytes at word; a non-zero code in
 * them (at *code, inside word) fails the call with msg everywhere. */
static int broadcast(jmg_call* c, void* word, size_t size, const int32_t* code, const char* msg,
                     double timeout) {
  char* all = malloc(size * (size_t)c->nparties);
  char* mine = calloc(1, size);
  int rc = -1;
  if (!all || !mine) {
    jmg_call_fail(c->err, "out of host memory");
  } else {
    if (c->me.rank == 0) memcpy(mine, word, size);
    rc = exchange(c, mine, size, all, timeout);
    if (rc == 0) memcpy(word, all, size);
    if (rc == 0 && *code) rc = jmg_call_fail(c->err, "%s", msg);
  }
  free(all);
  free(mine);
  return rc;
}

/* ---- decode, enter, meet ---- */

/* This party's `where` entries of every element: its (rank, group), and
 * how many elements it flagged non-finite. */
static int read_where(jmg_call* c) {
  if (c->where_count < JMG_WHERE_LEN)
    return jmg_call_fail(c->err, "the where input is empty, so this party cannot meet its peers");
  c->where_all = malloc((size_t)c->where_count * sizeof(int32_t));
  if (!c->where_all) return jmg_call_fail(c->err, "out of host memory");
  char eerr[JMG_ERRLEN] = "";
  int rc = c->eng->enter(c->cf, &c->me, c->where_in, c->where_count, c->where_all, eerr);
  if (rc < 0) return jmg_call_fail(c->err, "%s (cannot read its rank, so it cannot meet its peers)", eerr);
  if (rc > 0 && !c->own[0]) snprintf(c->own, sizeof c->own, "%s", eerr);
  memcpy(c->where, c->where_all, sizeof c->where);
  for (int64_t i = JMG_WHERE_FLAG; i < c->where_count; i += JMG_WHERE_LEN)
    c->me.nonfinite += c->where_all[i] != 0;
  return 0;
}

static int enter(jmg_call* c) {
  jmg_trace(2, "%s: called, waits for its inputs", c->row->name);
  if (read_where(c)) return -1;
  c->me.rank = c->where[0];
  if (c->where[0] < 0 || c->where[0] >= c->nparties)
    return jmg_call_fail(c->err, "rank %d is not in [0, %lld)", (int)c->where[0], (long long)c->nparties);
  if (c->ncopies && !c->eng->copy_in && !c->own[0])
    snprintf(c->own, sizeof c->own, "XLA did not alias a result to its argument, and the %s engine "
             "cannot copy one in", c->eng->name);
  for (int i = 0; i < c->ncopies && !c->own[0]; i++) {
    jmg_trace(1, "%s rank %d: XLA did not alias a result to its argument; copying %lld bytes",
              c->row->name, (int)c->me.rank, (long long)c->copies[i].bytes);
    c->eng->copy_in(c->cf, &c->me, c->copies[i].dst, c->copies[i].src, c->copies[i].bytes, c->own);
  }
  step(c, "entered (inputs ready)");
  return 0;
}

/* Multi-process jobs name their node's shared segment (the `meet`
 * attribute, passed as it comes: an over-long name is the rendezvous'
 * error); without it the parties are threads of this process, matched by
 * XLA's run id. */
static int meet(jmg_call* c) {
  const char* name = NULL;
  size_t len = 0;
  int64_t procs = 0;
  if (jmg_ffi_attr_str(c->cf, "meet", &name, &len)) {
    name = NULL;
    len = 0;
  }
  jmg_ffi_attr_int(c->cf, "meet_procs", &procs);
  int64_t run_id = 0;
  XLA_FFI_Error* e = jmg_ffi_run_id(c->cf, &run_id);
  if (e) {
    jmg_ffi_drop(c->cf, e);
    /* Threads meet by run id; processes do not use it. */
    if (!len) return jmg_call_fail(c->err, "XLA gave no run id, so the devices cannot meet");
    if (!c->own[0]) snprintf(c->own, sizeof c->own, "XLA gave no run id");
  }
  c->me.pid = (int32_t)getpid();
  c->me.token = jmg_process_token();
  jmg_meet_key key = {run_id, c->me.site, c->where[1]};
  char merr[JMG_ERRLEN];
  if (jmg_meeting_join_n(name, len, (int)procs, &key, (int)c->nparties, c->where[0], c->timeout,
                         &c->m, merr, sizeof merr))
    return jmg_call_fail(c->err, "%s", merr);
  c->joined = 1;
  step(c, len ? "joined the node's meeting" : "joined the meeting");
  return 0;
}

/* ---- agree ---- */

/* An engine whose share hooks carry a, b and w only (shares_every_buffer
 * 0) checks each record against potrs/potri/syevd's layout, so only those
 * ops can cross processes on it. */
static int legacy_share_op(const jmg_job* job) {
  return job->op == JMG_POTRS || job->op == JMG_POTRI || job->op == JMG_SYEVD;
}

static int check_agree(jmg_call* c) {
  const jmg_party* all = c->all;
  for (int r = 0; r < c->nparties; r++) {
    if (all[r].rank != r)
      return jmg_call_fail(c->err, "device group is inconsistent: rank %d sits in slot %d",
                  (int)all[r].rank, r);
    if (!jmg_same_call(&all[r], &all[0])) {
      char x[JMG_ERRLEN / 2], y[JMG_ERRLEN / 2];
      jmg_describe(&all[r], x, sizeof x);
      jmg_describe(&all[0], y, sizeof y);
      return jmg_call_fail(c->err, "devices make different calls: %s; %s", x, y);
    }
  }
  return 0;
}

/* The job every party's record p0 describes (its parties set by the caller). */
static void fill_job(jmg_job* job, const jmg_party* p0, int64_t nparties) {
  memset(job, 0, sizeof *job);
  job->op = p0->op;
  job->dtype = (jmg_dtype)p0->dtype;
  job->nparties = (int)nparties;
  job->m = p0->m;
  job->mpad = p0->mpad;
  job->n = p0->n;
  job->nloc = p0->nloc;
  job->nrhs = p0->nrhs;
  job->tile = p0->tile;
  memcpy(job->attr, p0->attr, sizeof job->attr);
  job->jobz = (int)p0->attr[0];
  job->dispatch = (jmg_dispatch)p0->dispatch;
  job->col_split = p0->col_split;
}

static void make_job(jmg_call* c) {
  jmg_job* job = &c->job;
  fill_job(job, &c->all[0], c->nparties);
  job->parties = c->all;
  for (int r = 0; r < job->nparties; r++) c->cross |= jmg_job_remote(job, r);
}

/* Elements per exchange of non-finite flags: one bit each. */
#define JMG_FLAG_BITS (8 * JMG_MEET_MAX_MSG)

/* The per-element flags of a batch, JMG_FLAG_BITS at a time: c->bad[i] is
 * set where any party flagged element i. */
static int exchange_flags(jmg_call* c) {
  int64_t batch = c->me.batch;
  unsigned char mine[JMG_MEET_MAX_MSG];
  unsigned char* all = malloc((size_t)c->nparties * JMG_MEET_MAX_MSG);
  /* Without memory the first exchange reports it, and fails everywhere. */
  if (!all && !c->own[0]) snprintf(c->own, sizeof c->own, "out of host memory");
  for (int64_t i0 = 0; i0 < batch; i0 += JMG_FLAG_BITS) {
    int64_t n = batch - i0 < JMG_FLAG_BITS ? batch - i0 : JMG_FLAG_BITS;
    size_t bytes = (size_t)(n + 7) / 8;
    memset(mine, 0, bytes);
    for (int64_t i = 0; i < n; i++)
      if (c->where_all[(i0 + i) * JMG_WHERE_LEN + JMG_WHERE_FLAG])
        mine[i / 8] |= (unsigned char)(1u << (i % 8));
    if (exchange(c, mine, bytes, all, c->timeout)) {
      free(all);
      return -1;
    }
    for (int r = 0; r < c->nparties; r++)
      for (int64_t i = 0; i < n; i++)
        if (all[(size_t)r * bytes + (size_t)(i / 8)] & (1u << (i % 8))) c->bad[i0 + i] = 1;
  }
  free(all);
  return 0;
}

/* The results of the elements in c->bad: status JMG_STATUS_NONFINITE and
 * NaN scalars; no engine runs on them. */
static void mark_nonfinite(jmg_call* c) {
  for (int64_t i = 0; i < c->me.batch; i++) {
    if (!c->bad[i]) continue;
    c->nbad++;
    c->results[i].info = JMG_STATUS_NONFINITE;
    for (int k = 0; k < JMG_MAX_SCALARS; k++) c->results[i].scalar[k] = NAN;
  }
  jmg_trace(2, "%s rank %d of %lld: %lld of %lld elements have non-finite input", c->row->name,
            (int)c->me.rank, (long long)c->nparties, (long long)c->nbad, (long long)c->me.batch);
}

/* Which elements some party flagged non-finite, into c->bad on every party:
 * the records say whether any did; only then do a batch's per-element
 * flags travel. Those elements get their status and NaN scalars now, and
 * no engine runs on them (run_batch). */
static int agree_nonfinite(jmg_call* c) {
  int64_t flagged = 0, batch = c->me.batch;
  for (int r = 0; r < c->nparties; r++) flagged += c->all[r].nonfinite;
  if (!flagged) return 0;
  if (batch == 1) c->bad[0] = 1;
  else if (exchange_flags(c)) return -1;
  mark_nonfinite(c);
  return 0;
}

static int agree(jmg_call* c) {
  c->all = calloc((size_t)c->nparties, sizeof(jmg_party));
  jmg_party scratch[1];
  if (!c->all && !c->own[0]) snprintf(c->own, sizeof c->own, "out of host memory");
  if (exchange(c, &c->me, sizeof c->me, c->all ? (void*)c->all : (void*)scratch, c->timeout))
    return -1;
  if (check_agree(c)) return -1;
  make_job(c);
  const jmg_engine* eng = c->eng;
  /* Every party reaches the same verdicts below from the same data. */
  if (!eng->ops[c->job.op].run)
    return jmg_call_fail(c->err, "%s is not available on the %s engine", c->row->name, eng->name);
  if (c->cross && (!eng->share || !eng->open || !eng->close || !eng->fetch))
    return jmg_call_fail(c->err, "the %s engine cannot work across processes", eng->name);
  if (c->cross && !eng->shares_every_buffer && !legacy_share_op(&c->job))
    return jmg_call_fail(c->err, "%s cannot run across processes on the %s engine yet (its shared "
                        "memory step carries potrs/potri/syevd's buffers only); use one "
                        "process for all devices",
                c->row->name, eng->name);
  if (c->cross && !eng->shares_every_buffer && c->job.parties[0].batch > 1)
    return jmg_call_fail(c->err, "a batch of %lld %s calls cannot run across processes on the %s "
                        "engine (its shared memory step carries one element's buffers)",
                        (long long)c->job.parties[0].batch, c->row->name, eng->name);
  if (agree_nonfinite(c)) return -1;
  step(c, "all parties known");
  return 0;
}

/* ---- workspace ---- */

static void trace_workspace(const jmg_call* c, const verdict* v) {
  if (c->me.rank != 0 || jmg_trace_level() < 1) return;
  const jmg_job* job = &c->job;
  char ws[JMG_MAX_DEVICES * 21 + 1] = "";
  size_t at = 0;
  for (int r = 0; r < job->nparties && at < sizeof ws; r++)
    at += (size_t)snprintf(ws + at, sizeof ws - at, " %lld", (long long)v->bytes[r]);
  jmg_trace(1, "%s: m=%lld n=%lld nloc=%lld tile=%lld nrhs=%lld parties=%d dispatch=%d workspace%s",
            c->row->name, (long long)job->m, (long long)job->n, (long long)job->nloc,
            (long long)job->tile, (long long)job->nrhs, job->nparties, (int)job->dispatch, ws);
}

static int workspace(jmg_call* c) {
  verdict v;
  memset(&v, 0, sizeof v);
  const jmg_engine_op* eop = &c->eng->ops[c->job.op];
  if (c->me.rank == 0 && eop->workspace && eop->workspace(&c->job, v.bytes, v.msg)) v.code = 1;
  if (broadcast(c, &v, sizeof v, &v.code, v.msg, c->timeout)) return -1;
  trace_workspace(c, &v);
  int64_t any = 0;
  for (int r = 0; r < c->nparties; r++) any |= v.bytes[r];
  if (!any) return 0;
  /* Everyone brings workspace from its own device's allocator. */
  c->me.work_bytes = v.bytes[c->me.rank];
  if (c->me.work_bytes > 0 && c->eng->alloc(c->cf, &c->me, c->own) == 0) c->have_work = 1;
  if (exchange(c, &c->me, sizeof c->me, c->all, c->timeout)) return -1;
  step(c, "workspace ready");
  return 0;
}

/* ---- share, run, fetch ---- */

/* Across processes, the parties the leader cannot address publish their
 * buffers, workspace included (engine share/open/close/fetch). */
static int share(jmg_call* c) {
  if (!c->cross) return 0;
  if (jmg_job_remote(&c->job, c->me.rank) && c->eng->share(c->cf, &c->job, &c->me, c->own) == 0)
    c->shared = 1;
  if (exchange(c, &c->me, sizeof c->me, c->all, c->timeout)) return -1;
  step(c, "buffers shared across processes");
  return 0;
}

/* Points every party's data buffers at element i of the batch, from the
 * bases saved in base (the element's bytes: buf_bytes / batch). */
static void point_party(jmg_party* p, void* const base[JMG_MAX_BUFS], int64_t i) {
  for (int k = 0; k < JMG_MAX_BUFS; k++)
    p->buf[k] = base[k] ? (char*)base[k] + i * (p->buf_bytes[k] / p->batch) : NULL;
}

static void point_at(jmg_job* job, void* base[][JMG_MAX_BUFS], int64_t i) {
  for (int r = 0; r < job->nparties; r++) point_party(&job->parties[r], base[r], i);
}

/* The engine on every element of the batch, one after the other, with
 * the same workspace, but none that holds non-finite input (its result is
 * agree_nonfinite's); stops at the first engine failure. */
static int run_batch(jmg_call* c, char* msg) {
  jmg_job* job = &c->job;
  int64_t batch = c->me.batch;
  void* base[JMG_MAX_DEVICES][JMG_MAX_BUFS];
  for (int r = 0; r < job->nparties; r++) memcpy(base[r], job->parties[r].buf, sizeof base[r]);
  int rc = 0;
  for (int64_t i = 0; i < batch && !rc; i++) {
    if (c->bad[i]) continue;
    if (batch > 1) point_at(job, base, i);
    rc = c->eng->ops[job->op].run(job, &c->results[i], msg);
  }
  point_at(job, base, 0);
  return rc;
}

static int32_t lead(jmg_call* c, char* msg) {
  jmg_job* job = &c->job;
  const jmg_engine* eng = c->eng;
  int32_t code = 0;
  double t0 = jmg_clock_now();
  int opened = c->cross && eng->open(job, msg) == 0;
  if (c->cross && !opened) code = 1;
  double t1 = jmg_clock_now();
  if (!code && run_batch(c, msg)) code = 1;
  double t2 = jmg_clock_now();
  if (opened) eng->close(job);
  jmg_trace(2, "%s rank 0: open %.2f ms, run %.2f ms (%lld elements), close %.2f ms, info %d, "
            "code %d", c->row->name, 1e3 * (t1 - t0), 1e3 * (t2 - t1), (long long)c->me.batch,
            1e3 * (jmg_clock_now() - t2), (int)c->results[0].info, (int)code);
  return code;
}

/* The leader runs the op; the others wait as long as it takes. Then the
 * results go out JMG_WORD_RESULTS at a time (an engine failure: one word). */
static int run(jmg_call* c) {
  results_word w;
  memset(&w, 0, sizeof w);
  step(c, c->me.rank == 0 ? "runs the engine" : "waits for the leader");
  if (c->me.rank == 0) w.code = lead(c, w.msg);
  double timeout = -1.0;
  for (int64_t i0 = 0; i0 < c->me.batch; i0 += JMG_WORD_RESULTS) {
    int64_t n = c->me.batch - i0 < JMG_WORD_RESULTS ? c->me.batch - i0 : JMG_WORD_RESULTS;
    if (c->me.rank == 0) memcpy(w.res, c->results + i0, (size_t)n * sizeof(jmg_result));
    if (broadcast(c, &w, sizeof w, &w.code, w.msg, timeout)) return -1;
    memcpy(c->results + i0, w.res, (size_t)n * sizeof(jmg_result));
    timeout = c->timeout;
  }
  return 0;
}

/* Element i's float results NaN, where no engine ran on it (its scalars
 * are already: mark_nonfinite), so that the JAX side needs no pass over
 * them to say so. */
static int nan_results(jmg_call* c, int64_t i) {
  for (int k = 0; k < c->row->nrets; k++) {
    const jmg_buf_rule* r = &c->row->rets[k];
    if (r->slot < 0 || r->type == 'I' || !(r->flags & JMG_BUF_OUT)) continue;
    char* base = c->me.buf[r->slot];
    int64_t each = c->me.buf_bytes[r->slot] / c->me.batch;
    if (base && each > 0 && c->eng->fill_nan(c->cf, &c->me, base + i * each, each, c->err))
      return -1;
  }
  return 0;
}

/* Every party stores element i's status and scalars at element i of its
 * outputs, through the engine. */
static int finish(jmg_call* c) {
  size_t rs = jmg_dtype_real_size((jmg_dtype)c->me.dtype);
  for (int64_t i = 0; i < c->me.batch; i++) {
    if (c->bad[i] && nan_results(c, i)) return -1;
    jmg_party e = c->me;
    e.status = c->me.status + i;
    for (int k = 0; k < JMG_MAX_SCALARS; k++)
      e.scalar[k] = c->me.scalar[k] ? (char*)c->me.scalar[k] + (size_t)i * rs : NULL;
    if (c->eng->finish(c->cf, &e, &c->results[i], c->err)) return -1;
  }
  return 0;
}

/* Results back (or only the share dropped); then, across processes,
 * everyone learns that every party has its results: a party that died or
 * failed here fails the call everywhere. */
static int fetch(jmg_call* c, int ok) {
  if (c->shared) {
    c->shared = 0;
    if (c->eng->fetch(c->cf, &c->job, &c->me, ok, c->own) && !ok) c->own[0] = '\0';
  }
  if (!ok || !c->cross) return 0;
  return exchange(c, NULL, 0, NULL, c->timeout);
}

/* ---- the collective mode ---- */

/* Every rank runs the op on its own party, element by element. */
static int run_own(jmg_call* c, char* msg) {
  void* base[JMG_MAX_BUFS];
  memcpy(base, c->me.buf, sizeof base);
  int rc = 0;
  for (int64_t i = 0; i < c->me.batch && !rc; i++) {
    if (c->me.batch > 1) point_party(&c->me, base, i);
    rc = c->eng->ops[c->job.op].run(&c->job, &c->results[i], msg);
  }
  point_party(&c->me, base, 0);
  return rc;
}

/* Every element's result when some rank flagged non-finite input: the
 * flags meet as one value per rank, so a batch (which this mode's callers
 * loop over instead) counts as flagged as a whole. */
static void mark_all_nonfinite(jmg_call* c) {
  memset(c->bad, 1, (size_t)c->me.batch);
  mark_nonfinite(c);
}

static int collective_steps(jmg_call* c, void* ctx) {
  const jmg_collective* k = c->eng->collective;
  uint64_t print = jmg_call_print(&c->me);
  uint64_t flag = c->me.nonfinite > 0;
  fill_job(&c->job, &c->me, c->nparties);
  c->job.parties = &c->me;
  c->job.ctx = ctx;
  if (k->agree(ctx, &c->me, print, c->own[0] ? c->own : NULL, &flag, c->err))
    return c->own[0] ? jmg_call_fail(c->err, "%s", c->own) : -1; /* its own reason first */
  step(c, "all ranks agree");
  if (flag) { /* every rank knows it: none runs, none waits */
    mark_all_nonfinite(c);
    step(c, "non-finite input: no engine runs");
    return finish(c);
  }
  char msg[JMG_ERRLEN] = "";
  int rc = run_own(c, msg);
  uint64_t none = 0;
  int agreed = k->agree(ctx, &c->me, print, rc ? msg : NULL, &none, c->err);
  if (rc) return jmg_call_fail(c->err, "%s", msg); /* its own reason, not the verdict's */
  if (agreed) return -1;
  if (finish(c)) return -1;
  step(c, "done");
  return 0;
}

/* The collective mode (see the file header). A failure before join leaves
 * the others to time out in their engine's collectives, as a rank that
 * never came would. */
static int collective(jmg_call* c) {
  if (!c->eng->ops[c->me.op].run)
    return jmg_call_fail(c->err, "%s is not available on the %s engine", c->row->name,
                         c->eng->name);
  if (enter(c)) return -1;
  void* ctx = NULL;
  if (c->eng->collective->join(c->cf, &c->me, c->timeout, &ctx, c->err)) return -1;
  int rc = collective_steps(c, ctx);
  c->eng->collective->leave(ctx);
  return rc;
}

/* ---- the handler ---- */

static XLA_FFI_Error* give_up(jmg_call* c) {
  jmg_trace(2, "%s rank %d of %lld: fails: %s", c->row->name, (int)c->me.rank,
            (long long)c->nparties, c->err);
  return jmg_ffi_error(c->cf, XLA_FFI_Error_Code_INTERNAL, "jaxmg %s (rank %d of %lld): %s",
                       c->row->name, (int)c->me.rank, (long long)c->nparties, c->err);
}

static void cleanup(jmg_call* c) {
  char ignored[JMG_ERRLEN];
  if (c->shared) c->eng->fetch(c->cf, NULL, &c->me, 0, ignored);
  if (c->have_work) c->eng->release(c->cf, &c->me);
  if (c->joined) jmg_meeting_leave(&c->m);
  free(c->all);
  free(c->bad);
  free(c->where_all);
  free(c->results);
}

/* The phases after the meeting, in order; the first failure ends them. */
static int after_meeting(jmg_call* c) {
  if (agree(c)) return -1;
  if (c->nbad == c->me.batch) { /* nothing to run: every party knows it, none waits */
    step(c, "non-finite input: no engine runs");
    return finish(c);
  }
  if (workspace(c) || share(c)) return -1;
  int rc = run(c);
  if (fetch(c, rc == 0)) return -1;
  if (rc) return -1;
  if (finish(c)) return -1;
  step(c, "done");
  return 0;
}

XLA_FFI_Error* jmg_op_handle(XLA_FFI_CallFrame* cf, jmg_op op, const jmg_engine* eng) {
  if (jmg_ffi_answer_metadata(cf, 0)) return NULL;
  if (cf->stage != XLA_FFI_ExecutionStage_EXECUTE) return NULL;
  jmg_call* c = calloc(1, sizeof *c);
  if (!c) return jmg_ffi_error(cf, XLA_FFI_Error_Code_RESOURCE_EXHAUSTED, "jaxmg: out of host memory");
  c->cf = cf;
  c->row = jmg_op_row_of(op);
  c->eng = eng;
  c->me.op = op;
  c->timeout = jmg_timeout_s();
  XLA_FFI_Error* out = NULL;
  if (!c->row) {
    out = jmg_ffi_error(cf, XLA_FFI_Error_Code_INVALID_ARGUMENT, "jaxmg: unknown op %d", op);
  } else if (jmg_decode_identity(c)) {
    out = jmg_ffi_error(cf, XLA_FFI_Error_Code_INVALID_ARGUMENT, "jaxmg: %s", c->err);
  } else {
    /* A bad call still meets, and reports at the first exchange. */
    if (jmg_decode_problem(c) == 0 && c->me.batch == 0) goto done; /* an empty batch: everyone's */
    size_t nres = c->me.batch > 0 ? (size_t)c->me.batch : 1;
    c->results = calloc(nres, sizeof(jmg_result));
    c->bad = calloc(nres, 1);
    if ((!c->results || !c->bad) && !c->own[0])
      snprintf(c->own, sizeof c->own, "out of host memory");
    if (c->eng->collective) {
      if (collective(c)) out = give_up(c);
    } else {
      if (c->me.col_split > 1 && !c->own[0])
        snprintf(c->own, sizeof c->own, "the %s engine takes whole rows (col_split 1)",
                 c->eng->name);
      if (enter(c) || meet(c) || after_meeting(c)) out = give_up(c);
    }
  }
done:
  cleanup(c);
  free(c);
  return out;
}
