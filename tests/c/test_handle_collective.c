/* test_handle_collective.c - the op handler's collective mode (ops/handle.c)
 * end to end over a fake XLA runtime and a fake collective engine whose
 * ranks are threads: its "communicator" is a barrier with a deadline that
 * all-reduces (MAX) a few numbers, as NCCL's all-reduce under the
 * cuSOLVERMp engine's watchdog does. Checked:
 *   - every rank calls the engine (no leader), once per batch element, on
 *     its own buffers, and its results land in its own outputs;
 *   - A may come in 2-D blocks (col_split): the problem's sizes follow;
 *   - a rank whose call is bad, or whose run fails, fails the call on every
 *     rank, named;
 *   - ranks that make different calls fail everywhere;
 *   - one rank's non-finite flag: no rank runs, every rank returns -1 and NaN;
 *   - a rank that never arrives is an error on the others within
 *     JAXMG_TIMEOUT_S, not a hang.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "fake_xla.h"
#include "engines/engine.h"
#include "ops/op_table.h"
#include "ops/ops.h"
#include "util/clock.h"

/* ---- the fake communicator: an all-reduce (MAX) with a deadline ---- */

enum { NP = 3, MAXV = 4 };

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int arrived, round;
  uint64_t acc[MAXV], out[MAXV];
} comm = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, {0}, {0}};

static double comm_timeout;

/* 0, or -1 when not every rank came within the deadline. */
static int allmax(uint64_t* v, int count) {
  pthread_mutex_lock(&comm.mu);
  int round = comm.round;
  for (int k = 0; k < count; k++) comm.acc[k] = comm.acc[k] > v[k] ? comm.acc[k] : v[k];
  if (++comm.arrived == NP) {
    memcpy(comm.out, comm.acc, sizeof comm.out);
    memset(comm.acc, 0, sizeof comm.acc);
    comm.arrived = 0;
    comm.round++;
    pthread_cond_broadcast(&comm.cv);
  }
  struct timespec at = jmg_clock_at(jmg_clock_now() + comm_timeout);
  while (comm.round == round)
    if (pthread_cond_timedwait(&comm.cv, &comm.mu, &at)) break;
  int ok = comm.round != round;
  if (ok) memcpy(v, comm.out, (size_t)count * sizeof *v);
  pthread_mutex_unlock(&comm.mu);
  return ok ? 0 : -1;
}

/* ---- the fake collective engine ---- */

static struct {
  pthread_mutex_t mu;
  int runs[NP];
  int fail_rank; /* its run fails, or -1 */
} log_ = {PTHREAD_MUTEX_INITIALIZER, {0}, -1};

static int fake_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                      int64_t count, int32_t* where_out, char* err) {
  (void)cf;
  (void)err;
  me->ordinal = 0;
  memcpy(where_out, where, (size_t)count * sizeof(int32_t));
  return 0;
}

static int fake_join(const XLA_FFI_CallFrame* cf, const jmg_party* me, double timeout_s,
                     void** ctx, char* err) {
  (void)cf;
  (void)me;
  (void)err;
  comm_timeout = timeout_s;
  *ctx = &comm;
  return 0;
}

static int fake_agree(void* ctx, const jmg_party* me, uint64_t print, const char* mine,
                      uint64_t* flag, char* err) {
  (void)ctx;
  uint64_t v[4] = {print, ~print, mine ? (uint64_t)me->rank + 1 : 0, *flag};
  if (allmax(v, 4)) return snprintf(err, JMG_ERRLEN, "timed out: a rank never arrived"), -1;
  *flag = v[3];
  if (v[2]) return snprintf(err, JMG_ERRLEN, "rank %d failed", (int)v[2] - 1), -1;
  if (v[0] != print || v[1] != ~print) return snprintf(err, JMG_ERRLEN, "different calls"), -1;
  return 0;
}

static void fake_leave(void* ctx) { (void)ctx; }

/* Each rank solves "its own part": x = b + 10 * rank + n, with one
 * collective inside, as a library's ranks would; logdet = the sum of the
 * ranks' first b entries (a collective result). */
static int fake_run(jmg_job* job, jmg_result* res, char* err) {
  jmg_party* me = &job->parties[0];
  pthread_mutex_lock(&log_.mu);
  log_.runs[me->rank]++;
  pthread_mutex_unlock(&log_.mu);
  if (me->rank == log_.fail_rank) return snprintf(err, JMG_ERRLEN, "the library failed"), -1;
  double* b = me->b;
  uint64_t v[1] = {(uint64_t)b[0]};
  if (allmax(v, 1)) return snprintf(err, JMG_ERRLEN, "a peer left"), -1;
  for (int64_t i = 0; i < job->n * job->nrhs; i++) b[i] += 10.0 * me->rank + (double)job->n;
  res->info = (int32_t)me->rank;
  res->scalar[0] = (double)v[0];
  return 0;
}

static int fake_finish(const XLA_FFI_CallFrame* cf, jmg_party* me, const jmg_result* res,
                       char* err) {
  (void)cf;
  (void)err;
  *me->status = res->info;
  if (me->scalar[0]) *(double*)me->scalar[0] = res->scalar[0];
  return 0;
}

static int fake_fill_nan(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, int64_t bytes,
                         char* err) {
  (void)cf;
  (void)me;
  (void)err;
  memset(dst, 0xFF, (size_t)bytes);
  return 0;
}

static const jmg_collective fake_collective = {fake_join, fake_agree, fake_leave};

static const jmg_engine fake_engine = {
    .name = "fake-collective",
    .collective = &fake_collective,
    .ops = {[JMG_POTRS] = {NULL, fake_run}},
    .enter = fake_enter,
    .fill_nan = fake_fill_nan,
    .finish = fake_finish,
};

/* ---- one rank's potrs frame: A's block (R x C), b (N x K) ---- */

enum { K = 1, MAXB = 2 };

typedef struct frame {
  int64_t R, C, N, split, batch, tile;
  double *a, *b, *logdet;
  int32_t *where, *status;
  int64_t dims[7][3];
  XLA_FFI_Buffer bufs[7];
  XLA_FFI_ArgType atypes[3];
  XLA_FFI_RetType rtypes[4];
  void *args[3], *rets[4];
  XLA_FFI_AttrType attr_types[5];
  XLA_FFI_ByteSpan names[5], *name_ptrs[5];
  void* attrs[5];
  XLA_FFI_Scalar scalars[4];
  int64_t values[4];
  XLA_FFI_ByteSpan site;
  XLA_FFI_Api api;
  XLA_FFI_ExecutionContext ctx;
  XLA_FFI_CallFrame cf;
  XLA_FFI_Error* out;
  int rank;
} frame;

static void set_buf(frame* f, int k, XLA_FFI_DataType t, void* data, int rank, int64_t d0,
                    int64_t d1) {
  int64_t* d = f->dims[k];
  int nb = f->batch > 1;
  if (nb) d[0] = f->batch;
  if (rank > 0) d[nb] = d0;
  if (rank > 1) d[nb + 1] = d1;
  f->bufs[k] = (XLA_FFI_Buffer){XLA_FFI_Buffer_STRUCT_SIZE, NULL, t, data, nb + rank, d};
}

static void attr(frame* f, int i, const char* name, XLA_FFI_AttrType t, void* value) {
  f->names[i] = (XLA_FFI_ByteSpan){name, strlen(name)};
  f->name_ptrs[i] = &f->names[i];
  f->attr_types[i] = t;
  f->attrs[i] = value;
}

/* Rank `rank`'s frame for an N x N problem in (NP / split) x split blocks,
 * `batch` elements (1: unbatched). */
static void make_frame(frame* f, int rank, int64_t n, int64_t split, int64_t batch) {
  memset(f, 0, sizeof *f);
  f->rank = rank;
  f->N = n;
  f->split = split;
  f->batch = batch;
  f->tile = 1;
  f->R = n / (NP / split);
  f->C = n / split;
  f->a = calloc((size_t)(batch * f->R * f->C), sizeof(double));
  f->b = calloc((size_t)(batch * n * K), sizeof(double));
  f->logdet = calloc((size_t)batch, sizeof(double));
  f->status = calloc((size_t)batch, sizeof(int32_t));
  f->where = calloc((size_t)(JMG_WHERE_LEN * batch), sizeof(int32_t));
  for (int64_t i = 0; i < batch; i++) {
    f->where[JMG_WHERE_LEN * i] = rank;
    f->b[i * n * K] = 100.0 * rank + (double)i;
    f->status[i] = -99;
  }
  set_buf(f, 0, XLA_FFI_DataType_F64, f->a, 2, f->R, f->C);
  set_buf(f, 1, XLA_FFI_DataType_F64, f->b, 2, n, K);
  set_buf(f, 2, XLA_FFI_DataType_S32, f->where, 1, JMG_WHERE_LEN, 0);
  set_buf(f, 3, XLA_FFI_DataType_F64, f->a, 2, f->R, f->C);
  set_buf(f, 4, XLA_FFI_DataType_F64, f->b, 2, n, K);
  set_buf(f, 5, XLA_FFI_DataType_S32, f->status, 0, 0, 0);
  set_buf(f, 6, XLA_FFI_DataType_F64, f->logdet, 0, 0, 0);
  for (int i = 0; i < 3; i++) {
    f->atypes[i] = XLA_FFI_ArgType_BUFFER;
    f->args[i] = &f->bufs[i];
  }
  for (int i = 0; i < 4; i++) {
    f->rtypes[i] = XLA_FFI_RetType_BUFFER;
    f->rets[i] = &f->bufs[3 + i];
  }
  f->values[0] = JMG_DISPATCH_AUTO;
  f->values[1] = NP;
  f->values[2] = f->tile;
  f->values[3] = split;
  for (int i = 0; i < 4; i++) f->scalars[i] = (XLA_FFI_Scalar){XLA_FFI_DataType_S64, &f->values[i]};
  f->site = (XLA_FFI_ByteSpan){"test.collective", 15};
  attr(f, 0, "col_split", XLA_FFI_AttrType_SCALAR, &f->scalars[3]);
  attr(f, 1, "dispatch", XLA_FFI_AttrType_SCALAR, &f->scalars[0]);
  attr(f, 2, "nparties", XLA_FFI_AttrType_SCALAR, &f->scalars[1]);
  attr(f, 3, "site", XLA_FFI_AttrType_STRING, &f->site);
  attr(f, 4, "tile", XLA_FFI_AttrType_SCALAR, &f->scalars[2]);
  memset(&f->api, 0, sizeof f->api);
  f->api.struct_size = XLA_FFI_Api_STRUCT_SIZE;
  f->api.XLA_FFI_Error_Create = fake_error_create;
  f->api.XLA_FFI_Error_Destroy = fake_error_destroy;
  f->ctx.tag = rank;
  XLA_FFI_CallFrame* cf = &f->cf;
  cf->struct_size = XLA_FFI_CallFrame_STRUCT_SIZE;
  cf->api = &f->api;
  cf->ctx = &f->ctx;
  cf->stage = XLA_FFI_ExecutionStage_EXECUTE;
  cf->args = (XLA_FFI_Args){XLA_FFI_Args_STRUCT_SIZE, NULL, 3, f->atypes, f->args};
  cf->rets = (XLA_FFI_Rets){XLA_FFI_Rets_STRUCT_SIZE, NULL, 4, f->rtypes, f->rets};
  cf->attrs = (XLA_FFI_Attrs){XLA_FFI_Attrs_STRUCT_SIZE, NULL, 5, f->attr_types, f->name_ptrs,
                              f->attrs};
}

static void free_frame(frame* f) {
  free(f->a);
  free(f->b);
  free(f->logdet);
  free(f->status);
  free(f->where);
  if (f->out) {
    free(f->out->msg);
    free(f->out);
  }
}

static void* rank_main(void* p) {
  frame* f = p;
  f->out = jmg_op_handle(&f->cf, JMG_POTRS, &fake_engine);
  return NULL;
}

/* The ranks' calls on threads (only the first `come` of them call). */
static void run_ranks(frame* f, int come) {
  pthread_t t[NP];
  memset(log_.runs, 0, sizeof log_.runs);
  /* A fresh communicator: an earlier test may have left a round half full. */
  comm.arrived = 0;
  comm.round++;
  memset(comm.acc, 0, sizeof comm.acc);
  for (int r = 0; r < come; r++) pthread_create(&t[r], NULL, rank_main, &f[r]);
  for (int r = 0; r < come; r++) pthread_join(t[r], NULL);
}

static const char* msg(const frame* f) { return f->out ? f->out->msg : "no error"; }

static void test_every_rank_runs_its_own_part(int64_t split, int64_t batch) {
  frame f[NP];
  int64_t n = 6;
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, n, split, batch);
  run_ranks(f, NP);
  for (int r = 0; r < NP; r++) {
    CHECK(!f[r].out, "split %lld batch %lld rank %d: %s", (long long)split, (long long)batch, r,
          msg(&f[r]));
    CHECK(log_.runs[r] == batch, "rank %d ran %d times, want %lld", r, log_.runs[r], (long long)batch);
    for (int64_t i = 0; i < batch; i++) {
      double want = 100.0 * r + (double)i + 10.0 * r + (double)n;
      double* b = f[r].b + i * n * K;
      CHECK(b[0] == want && b[n - 1] == 10.0 * r + (double)n,
            "rank %d element %lld: x[0] = %g, want %g (n from the blocks: %lld)", r, (long long)i,
            b[0], want, (long long)n);
      CHECK(f[r].status[i] == r, "rank %d element %lld: status %d", r, (long long)i, (int)f[r].status[i]);
      CHECK(f[r].logdet[i] == 100.0 * (NP - 1) + (double)i, "rank %d element %lld: logdet %g", r,
            (long long)i, f[r].logdet[i]);
    }
  }
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_a_bad_rank_fails_all(void) {
  frame f[NP];
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 6, 1, 1);
  f[2].dims[1][0] = 5; /* rank 2's b has the wrong rows */
  run_ranks(f, NP);
  for (int r = 0; r < 2; r++)
    CHECK(f[r].out && strstr(f[r].out->msg, "rank 2 failed"), "rank %d: %s", r, msg(&f[r]));
  CHECK(f[2].out && strstr(f[2].out->msg, "argument b has 5 in dimension 0, expected 6"),
        "rank 2 names its own problem: %s", msg(&f[2]));
  CHECK(log_.runs[0] + log_.runs[1] + log_.runs[2] == 0, "a bad call ran");
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_a_failing_run_fails_all(void) {
  frame f[NP];
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 6, 1, 1);
  log_.fail_rank = 1;
  run_ranks(f, NP);
  log_.fail_rank = -1;
  /* The failing rank left before the library's collective: its peers'
   * collective times out; every rank reports the failure of the call. */
  for (int r = 0; r < NP; r++) CHECK(f[r].out != NULL, "rank %d succeeded", r);
  CHECK(f[1].out && strstr(f[1].out->msg, "the library failed"), "rank 1: %s", msg(&f[1]));
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_different_calls_fail_everywhere(void) {
  frame f[NP];
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 6, 1, 1);
  f[0].values[2] = 2; /* rank 0's tile */
  run_ranks(f, NP);
  for (int r = 0; r < NP; r++)
    CHECK(f[r].out && strstr(f[r].out->msg, "different calls"), "rank %d: %s", r, msg(&f[r]));
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_a_missing_rank_is_an_error_in_time(void) {
  frame f[NP];
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 6, 1, 1);
  double t0 = jmg_clock_now();
  run_ranks(f, NP - 1); /* the last rank never calls */
  double took = jmg_clock_now() - t0;
  for (int r = 0; r < NP - 1; r++)
    CHECK(f[r].out && strstr(f[r].out->msg, "never arrived"), "rank %d: %s", r, msg(&f[r]));
  CHECK(took < 5.0, "the missing rank took %.1f s to notice (JAXMG_TIMEOUT_S=1)", took);
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_one_flagged_rank_runs_none(void) {
  frame f[NP];
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 6, 1, 1);
  f[1].where[JMG_WHERE_FLAG] = 1; /* rank 1's shard holds a NaN */
  run_ranks(f, NP);
  for (int r = 0; r < NP; r++) {
    CHECK(!f[r].out, "rank %d: %s", r, msg(&f[r]));
    CHECK(f[r].status[0] == JMG_STATUS_NONFINITE && f[r].logdet[0] != f[r].logdet[0] &&
              f[r].b[0] != f[r].b[0],
          "rank %d: status %d, logdet %g, x[0] %g", r, (int)f[r].status[0], f[r].logdet[0],
          f[r].b[0]);
  }
  CHECK(log_.runs[0] + log_.runs[1] + log_.runs[2] == 0, "a rank ran on non-finite input");
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_leader_engines_refuse_2d_blocks(void) {
  const jmg_op_row* row = jmg_op_row_of(JMG_POTRS);
  jmg_party p;
  memset(&p, 0, sizeof p);
  p.nloc = 3;
  p.n = 6;
  p.col_split = 2;
  CHECK(jmg_rule_dim(&row->args[0], 1, &p) == 3 && jmg_rule_dim(&row->args[1], 0, &p) == 6,
        "A's block has N / col_split columns; b keeps N rows");
  CHECK(jmg_engine_kind(&fake_engine) == JMG_KIND_COLLECTIVE, "the fake engine is collective");
}

int main(void) {
  setenv("JAXMG_TIMEOUT_S", "1", 1);
  pthread_condattr_t ca; /* deadlines are jmg_clock_now()'s: CLOCK_MONOTONIC */
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&comm.cv, &ca);
  test_every_rank_runs_its_own_part(1, 1);
  test_every_rank_runs_its_own_part(3, 1); /* 1 x 3 blocks: A's columns split */
  test_every_rank_runs_its_own_part(1, 2); /* a batch of 2 */
  test_a_bad_rank_fails_all();
  test_different_calls_fail_everywhere();
  test_a_failing_run_fails_all();
  test_a_missing_rank_is_an_error_in_time();
  test_one_flagged_rank_runs_none();
  test_leader_engines_refuse_2d_blocks();
  return CHECK_DONE("test_handle_collective");
}
