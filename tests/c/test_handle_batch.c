/* test_handle_batch.c - the op handler (ops/handle.c, ops/decode.c) on
 * batched calls, end to end over a fake XLA runtime and a fake engine:
 * two parties (threads that meet by run id) make one potrs call whose
 * buffers carry a batch of 5 x 8 problems. The fake engine records what
 * its run sees, so the checks judge the handler's side:
 *   - run is called once per element, with every party's buffers at that
 *     element (base + i * element bytes);
 *   - each element's status and scalar reach element i of every party's
 *     outputs, across more results than one message carries (16);
 *   - an empty batch returns without meeting anyone;
 *   - a result XLA did not alias is filled from its argument (copy_in) and
 *     the engine works there;
 *   - a batch dimension that differs between buffers, or too many of them,
 *     is an error naming the buffer, on every party (no hang);
 *   - an element that one party flags non-finite (its `where`) runs on no
 *     engine and gets status -1, a NaN scalar and a NaN solution on every
 *     party (the other elements' solutions untouched); a call whose every
 *     element is flagged runs nothing at all.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fake_xla.h"
#include "engines/engine.h"
#include "ops/op_table.h"
#include "ops/ops.h"

static int64_t run_id = 1000; /* a fresh meeting key per test */

static XLA_FFI_Error* fake_runid_get(XLA_FFI_RunId_Get_Args* a) {
  a->run_id = run_id;
  return NULL;
}

static XLA_FFI_Api api(void) {
  XLA_FFI_Api x;
  memset(&x, 0, sizeof x);
  x.struct_size = XLA_FFI_Api_STRUCT_SIZE;
  x.XLA_FFI_Error_Create = fake_error_create;
  x.XLA_FFI_Error_Destroy = fake_error_destroy;
  x.XLA_FFI_RunId_Get = fake_runid_get;
  return x;
}

/* ---- the fake engine: host memory, run records what it sees ---- */

enum { MAXRUNS = 64, NP = 2 };

static struct {
  int runs, copies;
  void* b_seen[MAXRUNS][NP]; /* each run's b pointer of every party */
  void* a_seen[MAXRUNS][NP];
} eng_log;

static int fake_enter(const XLA_FFI_CallFrame* cf, jmg_party* me, const void* where,
                      int64_t count, int32_t* where_out, char* err) {
  (void)cf;
  (void)err;
  me->ordinal = 0;
  memcpy(where_out, where, (size_t)count * sizeof(int32_t));
  return 0;
}

static int fake_run(jmg_job* job, jmg_result* res, char* err) {
  (void)err;
  int i = eng_log.runs++;
  for (int r = 0; r < job->nparties && i < MAXRUNS; r++) {
    eng_log.b_seen[i][r] = job->parties[r].b;
    eng_log.a_seen[i][r] = job->parties[r].a;
  }
  /* The leader's solution: element i's first entry becomes i + the b it had. */
  ((double*)job->parties[0].b)[0] += 100.0;
  res->info = i;
  res->scalar[0] = 0.5 * i;
  return 0;
}

static int fake_copy_in(const XLA_FFI_CallFrame* cf, jmg_party* me, void* dst, const void* src,
                        int64_t bytes, char* err) {
  (void)cf;
  (void)me;
  (void)err;
  eng_log.copies++;
  memmove(dst, src, (size_t)bytes);
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

static int fake_alloc(const XLA_FFI_CallFrame* cf, jmg_party* me, char* err) {
  (void)cf;
  (void)me;
  (void)err;
  return 0;
}

static void fake_release(const XLA_FFI_CallFrame* cf, jmg_party* me) {
  (void)cf;
  (void)me;
}

static int fake_finish(const XLA_FFI_CallFrame* cf, jmg_party* me, const jmg_result* res,
                       char* err) {
  (void)cf;
  (void)err;
  *me->status = res->info;
  if (me->scalar[0]) *(double*)me->scalar[0] = res->scalar[0];
  return 0;
}

static const jmg_engine fake_engine = {
    .name = "fake",
    .ops = {[JMG_POTRS] = {NULL, fake_run}},
    .enter = fake_enter,
    .copy_in = fake_copy_in,
    .fill_nan = fake_fill_nan,
    .alloc = fake_alloc,
    .release = fake_release,
    .finish = fake_finish,
};

/* ---- one party's potrs frame: batch dims, then A (L x N), b (N x K) ---- */

enum { L = 2, N = 4, K = 1 };

typedef struct party_frame {
  int nb;
  int64_t bd[6];
  int64_t count;
  double *a, *b, *x, *logdet;
  int32_t *where, *status;
  int64_t dims[8][8];
  XLA_FFI_Buffer bufs[7];
  XLA_FFI_ArgType atypes[3];
  XLA_FFI_RetType rtypes[4];
  void *args[3], *rets[4];
  XLA_FFI_AttrType attr_types[4];
  XLA_FFI_ByteSpan names[4], *name_ptrs[4];
  void* attrs[4];
  XLA_FFI_Scalar scalars[3];
  int64_t values[3];
  XLA_FFI_ByteSpan site;
  XLA_FFI_Api api;
  XLA_FFI_ExecutionContext ctx;
  XLA_FFI_CallFrame cf;
  XLA_FFI_Error* out;
  int rank;
} party_frame;

static void set_buf(party_frame* f, int k, XLA_FFI_DataType t, void* data, int rank, const int64_t* tail) {
  int64_t* d = f->dims[k];
  for (int i = 0; i < f->nb; i++) d[i] = f->bd[i];
  for (int i = 0; i < rank; i++) d[f->nb + i] = tail[i];
  f->bufs[k] = (XLA_FFI_Buffer){XLA_FFI_Buffer_STRUCT_SIZE, NULL, t, data, f->nb + rank, d};
}

static void attr(party_frame* f, int i, const char* name, XLA_FFI_AttrType t, void* value) {
  f->names[i] = (XLA_FFI_ByteSpan){name, strlen(name)};
  f->name_ptrs[i] = &f->names[i];
  f->attr_types[i] = t;
  f->attrs[i] = value;
}

/* A frame for `rank` with the batch dims bd[0..nb); unaliased: x gets its
 * own buffer instead of b's. */
static void make_frame(party_frame* f, int rank, int nb, const int64_t* bd, int unaliased) {
  memset(f, 0, sizeof *f);
  f->rank = rank;
  f->nb = nb;
  f->count = 1;
  for (int i = 0; i < nb; i++) f->count *= (f->bd[i] = bd[i]);
  int64_t c = f->count ? f->count : 1;
  f->a = calloc((size_t)(c * L * N), sizeof(double));
  f->b = calloc((size_t)(c * N * K), sizeof(double));
  f->x = unaliased ? calloc((size_t)(c * N * K), sizeof(double)) : f->b;
  f->logdet = calloc((size_t)c, sizeof(double));
  f->status = calloc((size_t)c, sizeof(int32_t));
  f->where = calloc((size_t)(JMG_WHERE_LEN * c), sizeof(int32_t));
  for (int64_t i = 0; i < f->count; i++) {
    f->where[JMG_WHERE_LEN * i] = rank;
    f->b[i * N * K] = (double)i; /* element i's b starts with i */
    f->status[i] = -99;
  }
  set_buf(f, 0, XLA_FFI_DataType_F64, f->a, 2, (const int64_t[]){L, N});
  set_buf(f, 1, XLA_FFI_DataType_F64, f->b, 2, (const int64_t[]){N, K});
  set_buf(f, 2, XLA_FFI_DataType_S32, f->where, 1, (const int64_t[]){JMG_WHERE_LEN});
  set_buf(f, 3, XLA_FFI_DataType_F64, f->a, 2, (const int64_t[]){L, N});
  set_buf(f, 4, XLA_FFI_DataType_F64, f->x, 2, (const int64_t[]){N, K});
  set_buf(f, 5, XLA_FFI_DataType_S32, f->status, 0, NULL);
  set_buf(f, 6, XLA_FFI_DataType_F64, f->logdet, 0, NULL);
  for (int i = 0; i < 3; i++) {
    f->atypes[i] = XLA_FFI_ArgType_BUFFER;
    f->args[i] = &f->bufs[i];
  }
  for (int i = 0; i < 4; i++) {
    f->rtypes[i] = XLA_FFI_RetType_BUFFER;
    f->rets[i] = &f->bufs[3 + i];
  }
  f->values[0] = JMG_DISPATCH_MULTI;
  f->values[1] = NP;
  f->values[2] = L;
  for (int i = 0; i < 3; i++) f->scalars[i] = (XLA_FFI_Scalar){XLA_FFI_DataType_S64, &f->values[i]};
  f->site = (XLA_FFI_ByteSpan){"test.site", 9};
  attr(f, 0, "dispatch", XLA_FFI_AttrType_SCALAR, &f->scalars[0]);
  attr(f, 1, "nparties", XLA_FFI_AttrType_SCALAR, &f->scalars[1]);
  attr(f, 2, "site", XLA_FFI_AttrType_STRING, &f->site);
  attr(f, 3, "tile", XLA_FFI_AttrType_SCALAR, &f->scalars[2]);
  f->api = api();
  f->ctx.tag = rank;
  XLA_FFI_CallFrame* cf = &f->cf;
  cf->struct_size = XLA_FFI_CallFrame_STRUCT_SIZE;
  cf->api = &f->api;
  cf->ctx = &f->ctx;
  cf->stage = XLA_FFI_ExecutionStage_EXECUTE;
  cf->args = (XLA_FFI_Args){XLA_FFI_Args_STRUCT_SIZE, NULL, 3, f->atypes, f->args};
  cf->rets = (XLA_FFI_Rets){XLA_FFI_Rets_STRUCT_SIZE, NULL, 4, f->rtypes, f->rets};
  cf->attrs = (XLA_FFI_Attrs){XLA_FFI_Attrs_STRUCT_SIZE, NULL, 4, f->attr_types, f->name_ptrs,
                              f->attrs};
}

static void free_frame(party_frame* f) {
  if (f->x != f->b) free(f->x);
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

static void* party_main(void* p) {
  party_frame* f = p;
  f->out = jmg_op_handle(&f->cf, JMG_POTRS, &fake_engine);
  return NULL;
}

/* Both parties' calls, on two threads, as XLA makes them. */
static void run_parties(party_frame* f) {
  pthread_t t[NP];
  memset(&eng_log, 0, sizeof eng_log);
  run_id++;
  for (int r = 0; r < NP; r++) pthread_create(&t[r], NULL, party_main, &f[r]);
  for (int r = 0; r < NP; r++) pthread_join(t[r], NULL);
}

static size_t elem_b = N * K * sizeof(double), elem_a = L * N * sizeof(double);

static void test_batch_runs_per_element(void) {
  party_frame f[NP];
  const int64_t bd[2] = {5, 8};
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 2, bd, 0);
  run_parties(f);
  for (int r = 0; r < NP; r++) CHECK(!f[r].out, "rank %d failed: %s", r, f[r].out ? f[r].out->msg : "");
  CHECK(eng_log.runs == 40, "run called %d times, want 40", eng_log.runs);
  CHECK(eng_log.copies == 0, "aliased results copied %d times", eng_log.copies);
  int ptr_ok = 1, out_ok = 1;
  for (int i = 0; i < 40 && i < eng_log.runs; i++)
    for (int r = 0; r < NP; r++) {
      ptr_ok &= eng_log.b_seen[i][r] == (char*)f[r].b + (size_t)i * elem_b;
      ptr_ok &= eng_log.a_seen[i][r] == (char*)f[r].a + (size_t)i * elem_a;
      out_ok &= f[r].status[i] == i && f[r].logdet[i] == 0.5 * i;
    }
  CHECK(ptr_ok, "the engine did not see every party's buffers at element i");
  CHECK(out_ok, "status/logdet of element i did not reach element i of every party's outputs");
  CHECK(f[0].b[39 * N * K] == 139.0 && f[0].b[0] == 100.0, "the leader's solutions not written in place");
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_unbatched_call(void) {
  party_frame f[NP];
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 0, NULL, 0);
  run_parties(f);
  CHECK(!f[0].out && !f[1].out, "an unbatched call failed");
  CHECK(eng_log.runs == 1 && f[1].status[0] == 0, "unbatched: %d runs, status %d", eng_log.runs,
        (int)f[1].status[0]);
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_empty_batch_meets_no_one(void) {
  /* One party only: had it tried to meet, it would wait for the other. */
  party_frame f;
  make_frame(&f, 0, 1, (const int64_t[]){0}, 0);
  memset(&eng_log, 0, sizeof eng_log);
  party_main(&f);
  CHECK(!f.out && eng_log.runs == 0, "an empty batch: error or a run");
  free_frame(&f);
}

static void test_unaliased_result_is_filled(void) {
  party_frame f[NP];
  const int64_t bd[1] = {3};
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 1, bd, r == 1);
  run_parties(f);
  CHECK(!f[0].out && !f[1].out, "an unaliased result failed the call: %s",
        f[1].out ? f[1].out->msg : "");
  CHECK(eng_log.copies == 1, "copy_in called %d times, want 1", eng_log.copies);
  int ok = 1;
  for (int i = 0; i < 3; i++) {
    ok &= eng_log.b_seen[i][1] == (char*)f[1].x + (size_t)i * elem_b;
    ok &= f[1].x[i * N * K] == (double)i && f[1].b[i * N * K] == (double)i;
  }
  CHECK(ok, "the engine did not work in the result filled from b (b itself must stay)");
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_bad_batches_fail_everywhere(void) {
  party_frame f[NP];
  const int64_t bd[1] = {3};
  for (int r = 0; r < NP; r++) {
    make_frame(&f[r], r, 1, bd, 0);
    f[r].dims[1][0] = 4; /* b's batch differs from A's */
  }
  run_parties(f);
  for (int r = 0; r < NP; r++)
    CHECK(f[r].out && strstr(f[r].out->msg, "argument b has 4 in dimension 0, expected 3"),
          "rank %d: %s", r, f[r].out ? f[r].out->msg : "no error");
  CHECK(eng_log.runs == 0, "a bad call ran");
  for (int r = 0; r < NP; r++) free_frame(&f[r]);

  const int64_t five[5] = {1, 1, 1, 1, 2};
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 5, five, 0);
  run_parties(f);
  for (int r = 0; r < NP; r++)
    CHECK(f[r].out && strstr(f[r].out->msg, "5 batch dimensions; at most 4"), "rank %d: %s", r,
          f[r].out ? f[r].out->msg : "no error");
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

/* Flags element i of party f non-finite (the flag entry of its `where`). */
static void flag(party_frame* f, int64_t i) { f->where[JMG_WHERE_LEN * i + JMG_WHERE_FLAG] = 1; }

static void test_flagged_elements_skip_the_engine(void) {
  /* More elements than one message of flags carries bits for: the flags
   * travel in several exchanges. */
  enum { B = 8 * 1024 + 40 };
  party_frame f[NP];
  const int64_t bd[1] = {B};
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 1, bd, 0);
  flag(&f[1], 3);          /* a party that is not the leader */
  flag(&f[0], 8 * 1024 + 7); /* the leader, in the second message */
  run_parties(f);
  for (int r = 0; r < NP; r++) CHECK(!f[r].out, "rank %d failed: %s", r, f[r].out ? f[r].out->msg : "");
  CHECK(eng_log.runs == B - 2, "run called %d times, want %d", eng_log.runs, B - 2);
  int seen_bad = 0;
  for (int i = 0; i < eng_log.runs && i < MAXRUNS; i++)
    seen_bad |= eng_log.b_seen[i][0] == (char*)f[0].b + (size_t)3 * elem_b;
  CHECK(!seen_bad, "the engine ran on the flagged element 3");
  for (int r = 0; r < NP; r++) {
    CHECK(f[r].status[3] == JMG_STATUS_NONFINITE && f[r].status[8 * 1024 + 7] == JMG_STATUS_NONFINITE,
          "rank %d: flagged elements have status %d and %d", r, (int)f[r].status[3],
          (int)f[r].status[8 * 1024 + 7]);
    CHECK(f[r].logdet[3] != f[r].logdet[3], "rank %d: a flagged element's logdet is not NaN", r);
    for (int k = 0; k < N * K; k++)
      CHECK(f[r].x[3 * N * K + k] != f[r].x[3 * N * K + k],
            "rank %d: a flagged element's solution is not NaN at %d", r, k);
    CHECK(f[r].x[2 * N * K] == (r == 0 ? 102.0 : 2.0) && f[r].x[4 * N * K] == (r == 0 ? 104.0 : 4.0),
          "rank %d: the other elements' solutions moved (%g, %g)", r, f[r].x[2 * N * K],
          f[r].x[4 * N * K]);
    CHECK(f[r].status[2] == 2 && f[r].status[4] == 3, "rank %d: the other elements' statuses moved "
          "(%d, %d)", r, (int)f[r].status[2], (int)f[r].status[4]);
  }
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

static void test_all_flagged_runs_nothing(void) {
  party_frame f[NP];
  for (int r = 0; r < NP; r++) make_frame(&f[r], r, 0, NULL, 0);
  flag(&f[1], 0);
  run_parties(f);
  for (int r = 0; r < NP; r++) {
    CHECK(!f[r].out, "rank %d failed: %s", r, f[r].out ? f[r].out->msg : "");
    CHECK(f[r].status[0] == JMG_STATUS_NONFINITE && f[r].logdet[0] != f[r].logdet[0] &&
              f[r].x[0] != f[r].x[0],
          "rank %d: status %d, logdet %g, x[0] %g", r, (int)f[r].status[0], f[r].logdet[0],
          f[r].x[0]);
  }
  CHECK(eng_log.runs == 0, "the engine ran %d times on flagged input", eng_log.runs);
  for (int r = 0; r < NP; r++) free_frame(&f[r]);
}

int main(void) {
  test_batch_runs_per_element();
  test_unbatched_call();
  test_empty_batch_meets_no_one();
  test_unaliased_result_is_filled();
  test_bad_batches_fail_everywhere();
  test_flagged_elements_skip_the_engine();
  test_all_flagged_runs_nothing();
  return CHECK_DONE("test_handle_batch");
}
