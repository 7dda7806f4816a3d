/* test_meet.c - the rendezvous with real threads.
 *
 * CHECK is not thread-safe, so the threads only record what they saw and
 * the main thread checks it after joining them. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "clock.h"
#include "rendezvous/meet.h"

static void spawn(pthread_t* t, int n, void* (*fn)(void*), void* args, size_t argsize) {
  for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, fn, (char*)args + (size_t)i * argsize);
}

static void reap(pthread_t* t, int n) {
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

/* The byte a rank puts at position j of exchange x, iteration it; `tag`
 * separates call sites and groups so that a mix-up shows in the data. */
static unsigned char pattern(int tag, int it, int rank, int x, int j) {
  return (unsigned char)(tag * 131 + it * 17 + rank * 31 + x * 7 + j);
}

/* ---- success: 8 ranks, 3 exchanges, leader broadcast ---- */

enum { MSG = 48 };

typedef struct worker {
  jmg_meet_key key;
  int np, rank, iters, tag;
  double timeout;
  /* results */
  int rc[3];
  int bad_bytes;
  uint64_t leader_seen;
  char err[JMG_MEET_ERRLEN];
} worker;

static uint64_t leader_result(const unsigned char* all, int np) {
  uint64_t h = 0;
  for (int i = 0; i < np * MSG; i++) h = h * 31 + all[i];
  return h;
}

static void* success_main(void* arg) {
  worker* w = arg;
  unsigned char mine[MSG], all[JMG_MEET_MAX_PARTIES * MSG];
  jmg_meet* m;
  w->rc[0] = jmg_meet_join(&w->key, w->np, w->rank, &m, w->err, sizeof w->err);
  if (w->rc[0]) return NULL;
  for (int x = 0; x < 2; x++) {
    for (int j = 0; j < MSG; j++) mine[j] = pattern(0, 0, w->rank, x, j);
    w->rc[x] = jmg_meet_exchange(m, mine, MSG, all, NULL, 10.0, w->err, sizeof w->err);
    if (w->rc[x]) break;
    for (int r = 0; r < w->np; r++)
      for (int j = 0; j < MSG; j++)
        if (all[r * MSG + j] != pattern(0, 0, r, x, j)) w->bad_bytes++;
  }
  /* The leader's result depends on what it gathered, as a solver's would. */
  memset(mine, 0, sizeof mine);
  if (w->rank == 0) {
    uint64_t v = leader_result(all, w->np);
    memcpy(mine, &v, sizeof v);
  }
  w->rc[2] = jmg_meet_exchange(m, mine, MSG, all, NULL, 10.0, w->err, sizeof w->err);
  memcpy(&w->leader_seen, all, sizeof w->leader_seen);
  jmg_meet_leave(m);
  return NULL;
}

static void test_success(void) {
  enum { N = 8 };
  pthread_t t[N];
  worker w[N];
  unsigned char all[N * MSG];
  memset(w, 0, sizeof w);
  for (int r = 0; r < N; r++) {
    w[r].key = (jmg_meet_key){1, jmg_meet_hash("success", 7), 0};
    w[r].np = N;
    w[r].rank = r;
  }
  spawn(t, N, success_main, w, sizeof *w);
  reap(t, N);
  for (int r = 0; r < N; r++)
    for (int j = 0; j < MSG; j++) all[r * MSG + j] = pattern(0, 0, r, 1, j);
  uint64_t want = leader_result(all, N);
  for (int r = 0; r < N; r++) {
    CHECK(w[r].rc[0] == 0 && w[r].rc[1] == 0 && w[r].rc[2] == 0, "rank %d: %d %d %d: %s", r,
          w[r].rc[0], w[r].rc[1], w[r].rc[2], w[r].err);
    CHECK(w[r].bad_bytes == 0, "rank %d: %d bad bytes", r, w[r].bad_bytes);
    CHECK(w[r].leader_seen == want, "rank %d saw leader result %llx", r,
          (unsigned long long)w[r].leader_seen);
    CHECK(w[r].err[0] == '\0', "rank %d: err not cleared: %s", r, w[r].err);
  }
}

/* ---- reuse: many meetings in a row, new run ids or the same one ---- */

static void* loop_main(void* arg) {
  worker* w = arg;
  unsigned char mine[MSG], all[JMG_MEET_MAX_PARTIES * MSG];
  for (int it = 0; it < w->iters; it++) {
    jmg_meet* m;
    jmg_meet_key key = w->key;
    if (w->key.run_id < 0) key.run_id = 1000 + it; /* a fresh run each time */
    int rc = jmg_meet_join(&key, w->np, w->rank, &m, w->err, sizeof w->err);
    if (rc) {
      w->rc[0] = rc;
      return NULL;
    }
    for (int x = 0; x < 2 && !rc; x++) {
      for (int j = 0; j < MSG; j++) mine[j] = pattern(w->tag, it, w->rank, x, j);
      rc = jmg_meet_exchange(m, mine, MSG, all, NULL, 10.0, w->err, sizeof w->err);
      for (int r = 0; r < w->np && !rc; r++)
        for (int j = 0; j < MSG; j++)
          if (all[r * MSG + j] != pattern(w->tag, it, r, x, j)) w->bad_bytes++;
    }
    jmg_meet_leave(m);
    if (rc) {
      w->rc[1] = rc;
      return NULL;
    }
  }
  return NULL;
}

static void run_loops(worker* w, int n, const char* what) {
  pthread_t t[16];
  spawn(t, n, loop_main, w, sizeof *w);
  reap(t, n);
  for (int i = 0; i < n; i++) {
    CHECK(w[i].rc[0] == 0 && w[i].rc[1] == 0, "%s: worker %d: join %d, exchange %d: %s", what, i,
          w[i].rc[0], w[i].rc[1], w[i].err);
    CHECK(w[i].bad_bytes == 0, "%s: worker %d: %d bad bytes", what, i, w[i].bad_bytes);
  }
}

static void test_reuse(void) {
  worker w[4];
  memset(w, 0, sizeof w);
  for (int r = 0; r < 4; r++)
    w[r] = (worker){.key = {-1, jmg_meet_hash("reuse", 5), 0}, .np = 4, .rank = r, .iters = 1000};
  run_loops(w, 4, "1000 runs");

  /* One run id and site, 50 calls in a row: only the sequence number tells
   * the meetings apart. */
  memset(w, 0, sizeof w);
  for (int r = 0; r < 4; r++)
    w[r] = (worker){.key = {7, jmg_meet_hash("loop", 4), 0}, .np = 4, .rank = r, .iters = 50};
  run_loops(w, 4, "loop");
}

/* ---- two sites x two groups at once never mix ---- */

static void test_no_mixing(void) {
  enum { NP = 3 };
  worker w[4 * NP];
  memset(w, 0, sizeof w);
  for (int c = 0; c < 4; c++)
    for (int r = 0; r < NP; r++)
      w[c * NP + r] = (worker){.key = {9, jmg_meet_hash(c & 1 ? "site-b" : "site-a", 6), c >> 1},
                               .np = NP,
                               .rank = r,
                               .iters = 30,
                               .tag = c + 1};
  run_loops(w, 4 * NP, "sites x groups");
}

/* ---- failure, timeout, bad parties ---- */

typedef struct party {
  jmg_meet_key key;
  int np, rank;
  int fail_at;   /* exchange where this rank reports a failure, or -1 */
  int skip_join; /* never shows up */
  double delay;  /* before the first exchange */
  double timeout;
  pthread_barrier_t* joined; /* all joins before any exchange, if set */
  /* results */
  int join_rc, rc[3];
  double secs[3];
  char err[3][JMG_MEET_ERRLEN];
} party;

static void* party_main(void* arg) {
  party* p = arg;
  jmg_meet* m = NULL;
  unsigned char mine[8] = {0}, all[8 * JMG_MEET_MAX_PARTIES];
  if (p->skip_join) return NULL;
  p->join_rc = jmg_meet_join(&p->key, p->np, p->rank, &m, p->err[0], sizeof p->err[0]);
  if (p->joined) pthread_barrier_wait(p->joined);
  if (p->join_rc) return NULL;
  nap(p->delay);
  for (int x = 0; x < 3; x++) {
    double t0 = now();
    p->rc[x] =
        jmg_meet_exchange(m, mine, sizeof mine, all, x == p->fail_at ? "cusolver said no" : NULL,
                          p->timeout, p->err[x], sizeof p->err[x]);
    p->secs[x] = now() - t0;
  }
  jmg_meet_leave(m);
  return NULL;
}

static void run_parties(party* p, int n) {
  pthread_t t[8];
  spawn(t, n, party_main, p, sizeof *p);
  reap(t, n);
}

static void test_failure(void) {
  party p[4];
  memset(p, 0, sizeof p);
  for (int r = 0; r < 4; r++)
    p[r] =
        (party){.key = {20, 1, 0}, .np = 4, .rank = r, .fail_at = r == 2 ? 1 : -1, .timeout = 10.0};
  run_parties(p, 4);
  for (int r = 0; r < 4; r++) {
    CHECK(p[r].rc[0] == 0, "rank %d exchange 0: %d %s", r, p[r].rc[0], p[r].err[0]);
    CHECK(p[r].rc[1] == JMG_MEET_EPEER, "rank %d exchange 1: %d", r, p[r].rc[1]);
    CHECK(strcmp(p[r].err[1], "rank 2: cusolver said no") == 0, "rank %d: '%s'", r, p[r].err[1]);
    CHECK(p[r].rc[2] == JMG_MEET_EPEER && strstr(p[r].err[2], "rank 2"), "rank %d later: %d %s", r,
          p[r].rc[2], p[r].err[2]);
    CHECK(p[r].secs[2] < 0.05, "rank %d: a failed meeting took %.3f s", r, p[r].secs[2]);
    CHECK(p[r].secs[1] < 2.0, "rank %d: failure took %.3f s to arrive", r, p[r].secs[1]);
  }
}

static void test_timeout(void) {
  party p[4];
  memset(p, 0, sizeof p);
  /* Rank 3 comes last and has the short timeout, so all three are surely
   * in the exchange when it fires; ranks 0 and 1 would wait 10 s alone. */
  for (int r = 0; r < 4; r++)
    p[r] = (party){.key = {30, 1, 0},
                   .np = 4,
                   .rank = r,
                   .fail_at = -1,
                   .skip_join = r == 2,
                   .delay = r == 3 ? 0.1 : 0,
                   .timeout = r == 3 ? 0.3 : 10.0};
  double t0 = now();
  run_parties(p, 4);
  double took = now() - t0;
  const char* want =
      "jaxmg rendezvous timed out after 0.3 s: 3 of 4 parties arrived (ranks 0,1,3); "
      "missing rank 2";
  CHECK(took < 1.5, "timeout took %.3f s", took);
  for (int r = 0; r < 4; r++) {
    if (r == 2) continue;
    CHECK(p[r].rc[0] == JMG_MEET_ETIMEOUT, "rank %d: %d", r, p[r].rc[0]);
    CHECK(strcmp(p[r].err[0], want) == 0, "rank %d: '%s'", r, p[r].err[0]);
    CHECK(p[r].rc[1] == JMG_MEET_ETIMEOUT && p[r].secs[1] < 0.05, "rank %d later: %d, %.3f s", r,
          p[r].rc[1], p[r].secs[1]);
  }

  /* The straggler finds nothing (the meeting was freed) and times out
   * alone; this is the message a user sees on the device that was late. */
  char err[JMG_MEET_ERRLEN];
  jmg_meet* m;
  unsigned char b[4] = {0}, all[16];
  jmg_meet_key key = {30, 1, 0};
  CHECK(jmg_meet_join(&key, 4, 2, &m, err, sizeof err) == 0, "%s", err);
  int rc = jmg_meet_exchange(m, b, 4, all, NULL, 0.05, err, sizeof err);
  CHECK(rc == JMG_MEET_ETIMEOUT, "straggler: %d", rc);
  CHECK(strcmp(err,
               "jaxmg rendezvous timed out after 0.050 s: 1 of 4 parties arrived (rank 2); "
               "missing ranks 0,1,3") == 0,
        "'%s'", err);
  jmg_meet_leave(m);

  /* The registry is not poisoned: the next run meets as usual. */
  memset(p, 0, sizeof p);
  for (int r = 0; r < 4; r++)
    p[r] = (party){.key = {31, 1, 0}, .np = 4, .rank = r, .fail_at = -1, .timeout = 10.0};
  run_parties(p, 4);
  for (int r = 0; r < 4; r++)
    CHECK(p[r].rc[0] == 0 && p[r].rc[1] == 0 && p[r].rc[2] == 0, "rank %d after timeout: %s", r,
          p[r].err[0]);
}

/* A late joiner of a failed meeting that still lives learns of the failure
 * at once instead of waiting for parties that gave up. */
static void test_late_joiner(void) {
  char err[JMG_MEET_ERRLEN];
  jmg_meet *a, *b;
  unsigned char x[4] = {0}, all[8];
  jmg_meet_key key = {40, 1, 0};
  CHECK(jmg_meet_join(&key, 2, 0, &a, err, sizeof err) == 0, "%s", err);
  CHECK(jmg_meet_exchange(a, x, 4, all, NULL, 0.02, err, sizeof err) == JMG_MEET_ETIMEOUT, "%s",
        err);
  CHECK(jmg_meet_join(&key, 2, 1, &b, err, sizeof err) == 0, "%s", err);
  double t0 = now();
  int rc = jmg_meet_exchange(b, x, 4, all, NULL, 10.0, err, sizeof err);
  CHECK(rc == JMG_MEET_ETIMEOUT && now() - t0 < 0.05, "late joiner: %d", rc);
  CHECK(strstr(err, "missing rank 1") != NULL, "'%s'", err);
  jmg_meet_leave(b);
  jmg_meet_leave(a);
}

/* A party that leaves early must not leave the others waiting. */
static void test_left_early(void) {
  char err[JMG_MEET_ERRLEN];
  jmg_meet *a, *b;
  unsigned char x[4] = {0}, all[8];
  jmg_meet_key key = {41, 1, 0};
  CHECK(jmg_meet_join(&key, 2, 1, &b, err, sizeof err) == 0, "%s", err);
  jmg_meet_leave(b);
  CHECK(jmg_meet_join(&key, 2, 0, &a, err, sizeof err) == 0, "%s", err);
  double t0 = now();
  int rc = jmg_meet_exchange(a, x, 4, all, NULL, 10.0, err, sizeof err);
  CHECK(rc == JMG_MEET_EPEER && now() - t0 < 0.05, "left early: %d", rc);
  CHECK(strstr(err, "rank 1: left") != NULL, "'%s'", err);
  jmg_meet_leave(a);

  /* The same while the other is already waiting. */
  party p = {.key = {42, 1, 0}, .np = 2, .rank = 0, .fail_at = -1, .timeout = 10.0};
  pthread_t t;
  t0 = now();
  pthread_create(&t, NULL, party_main, &p);
  nap(0.05);
  key.run_id = 42;
  CHECK(jmg_meet_join(&key, 2, 1, &b, err, sizeof err) == 0, "%s", err);
  jmg_meet_leave(b);
  pthread_join(t, NULL);
  CHECK(p.rc[0] == JMG_MEET_EPEER && now() - t0 < 2.0, "waiting party: %d after %.3f s", p.rc[0],
        now() - t0);
  CHECK(strstr(p.err[0], "rank 1: left") != NULL, "'%s'", p.err[0]);
}

/* Rank 1's side of two calls of one run, on a thread of its own. */
typedef struct pair_args {
  jmg_meet *b, *b2;
  int got1[2], got2[2];
} pair_args;

static void* pair_main(void* arg) {
  pair_args* p = arg;
  int eleven = 11, twelve = 12;
  char err[JMG_MEET_ERRLEN];
  jmg_meet_exchange(p->b, &eleven, sizeof eleven, p->got1, NULL, 5.0, err, sizeof err);
  jmg_meet_exchange(p->b2, &twelve, sizeof twelve, p->got2, NULL, 5.0, err, sizeof err);
  return NULL;
}

static void test_bad_parties(void) {
  /* Rank 1 thinks there are 2 parties, the others 3. Whoever came first
   * decides the meeting's size; either way nobody hangs and nobody gets OK. */
  party p[3];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, 3);
  memset(p, 0, sizeof p);
  for (int r = 0; r < 3; r++)
    p[r] = (party){.key = {50, 1, 0},
                   .np = r == 1 ? 2 : 3,
                   .rank = r,
                   .fail_at = -1,
                   .timeout = 10.0,
                   .joined = &bar};
  double t0 = now();
  run_parties(p, 3);
  pthread_barrier_destroy(&bar);
  CHECK(now() - t0 < 2.0, "nparties mismatch took %.3f s", now() - t0);
  for (int r = 0; r < 3; r++) {
    int rc = p[r].join_rc ? p[r].join_rc : p[r].rc[0];
    CHECK(rc == JMG_MEET_EINVAL, "rank %d: join %d, exchange %d", r, p[r].join_rc, p[r].rc[0]);
    CHECK(strstr(p[r].err[0], "parties") != NULL, "rank %d: '%s'", r, p[r].err[0]);
  }

  /* A run id that comes back (run 60, run 61, run 60 again: launches
   * interleaved on one device) is the same run's next call, never a rank
   * joining its own meeting twice: rank 0's two calls of run 60 meet rank
   * 1's two calls in order. */
  char err[JMG_MEET_ERRLEN];
  jmg_meet *a, *a61, *b61, *a2 = NULL, *b, *b2;
  unsigned char x[4] = {0}, all[8];
  jmg_meet_key k60 = {60, 1, 0}, k61 = {61, 1, 0};
  CHECK(jmg_meet_join(&k60, 2, 0, &a, err, sizeof err) == 0, "%s", err);
  CHECK(jmg_meet_join(&k61, 2, 0, &a61, err, sizeof err) == 0, "%s", err);
  CHECK(jmg_meet_join(&k60, 2, 0, &a2, err, sizeof err) == 0 && a2 && a2 != a,
        "run 60's second call: %s", err);
  CHECK(jmg_meet_join(&k60, 2, 1, &b, err, sizeof err) == 0, "%s", err);
  CHECK(jmg_meet_join(&k60, 2, 1, &b2, err, sizeof err) == 0, "%s", err);
  pair_args pa = {b, b2, {0}, {0}};
  pthread_t t;
  pthread_create(&t, NULL, pair_main, &pa);
  int one = 1, two = 2, got1[2] = {0}, got2[2] = {0};
  int rc1 = jmg_meet_exchange(a, &one, sizeof one, got1, NULL, 5.0, err, sizeof err);
  int rc2 = jmg_meet_exchange(a2, &two, sizeof two, got2, NULL, 5.0, err, sizeof err);
  pthread_join(t, NULL);
  CHECK(!rc1 && !rc2 && got1[1] == 11 && got2[1] == 12 && pa.got1[0] == 1 && pa.got2[0] == 2,
        "run 60's calls paired out of order: %d %d (%d %d)", rc1, rc2, got1[1], got2[1]);
  jmg_meet_leave(a);
  jmg_meet_leave(b);
  jmg_meet_leave(a2);
  jmg_meet_leave(b2);
  CHECK(jmg_meet_join(&k61, 2, 1, &b61, err, sizeof err) == 0, "%s", err);
  jmg_meet_leave(a61);
  jmg_meet_leave(b61);
  (void)x;
  (void)all;
}

static void test_args(void) {
  char err[JMG_MEET_ERRLEN], tiny[8];
  jmg_meet* m = (jmg_meet*)&err; /* must be reset to NULL on error */
  jmg_meet_key key = {80, 1, 0};
  CHECK(jmg_meet_join(&key, 0, 0, &m, err, sizeof err) == JMG_MEET_EINVAL && m == NULL, "np 0");
  CHECK(jmg_meet_join(&key, JMG_MEET_MAX_PARTIES + 1, 0, &m, err, sizeof err) == JMG_MEET_EINVAL,
        "np 65");
  CHECK(jmg_meet_join(&key, 4, 4, &m, err, sizeof err) == JMG_MEET_EINVAL, "rank 4 of 4");
  CHECK(jmg_meet_join(&key, 4, -1, &m, tiny, sizeof tiny) == JMG_MEET_EINVAL, "rank -1");
  CHECK(strlen(tiny) == sizeof tiny - 1, "err not truncated: '%s'", tiny);
  CHECK(jmg_meet_join(&key, 4, -1, &m, NULL, 0) == JMG_MEET_EINVAL, "NULL err");
  CHECK(jmg_meet_join(NULL, 4, 0, &m, err, sizeof err) == JMG_MEET_EINVAL, "NULL key");
  CHECK(jmg_meet_exchange(NULL, NULL, 0, NULL, NULL, 1.0, err, sizeof err) == JMG_MEET_EINVAL,
        "NULL meeting");

  /* Too big a message fails the meeting, for the others too. */
  static unsigned char big[JMG_MEET_MAX_MSG + 1], all[2 * (JMG_MEET_MAX_MSG + 1)];
  jmg_meet *a, *b;
  CHECK(jmg_meet_join(&key, 2, 0, &a, err, sizeof err) == 0, "%s", err);
  CHECK(jmg_meet_join(&key, 2, 1, &b, err, sizeof err) == 0, "%s", err);
  CHECK(jmg_meet_exchange(a, big, sizeof big, all, NULL, 1.0, err, sizeof err) == JMG_MEET_EINVAL,
        "oversized message");
  CHECK(jmg_meet_exchange(b, big, 4, all, NULL, 10.0, err, sizeof err) == JMG_MEET_EINVAL &&
            strstr(err, "rank 0"),
        "peer of oversized: '%s'", err);
  jmg_meet_leave(a);
  jmg_meet_leave(b);
}

/* Size mismatch: rank 0 waits with 8 bytes, rank 1 comes with 4. */
typedef struct sz {
  jmg_meet* m;
  int rc;
  char err[JMG_MEET_ERRLEN];
} sz;

static void* sz_main(void* arg) {
  sz* s = arg;
  unsigned char x[8] = {0}, all[16];
  s->rc = jmg_meet_exchange(s->m, x, 8, all, NULL, 10.0, s->err, sizeof s->err);
  return NULL;
}

static void test_size_mismatch(void) {
  char err[JMG_MEET_ERRLEN];
  jmg_meet *a, *b;
  unsigned char x[4] = {0}, all[16];
  jmg_meet_key key = {71, 1, 0};
  CHECK(jmg_meet_join(&key, 2, 0, &a, err, sizeof err) == 0, "%s", err);
  CHECK(jmg_meet_join(&key, 2, 1, &b, err, sizeof err) == 0, "%s", err);
  sz s = {a, 0, ""};
  pthread_t t;
  double t0 = now();
  pthread_create(&t, NULL, sz_main, &s);
  nap(0.02);
  int rc = jmg_meet_exchange(b, x, 4, all, NULL, 10.0, err, sizeof err);
  pthread_join(t, NULL);
  CHECK(rc == JMG_MEET_EINVAL && s.rc == JMG_MEET_EINVAL, "size mismatch: %d %d", rc, s.rc);
  CHECK(strcmp(err, s.err) == 0 && strstr(err, "bytes"), "'%s' vs '%s'", err, s.err);
  CHECK(now() - t0 < 2.0, "size mismatch took %.3f s", now() - t0);
  jmg_meet_leave(a);
  jmg_meet_leave(b);
}

static void test_single(void) {
  char err[JMG_MEET_ERRLEN];
  jmg_meet* m;
  unsigned char x[5] = {1, 2, 3, 4, 5}, all[5];
  jmg_meet_key key = {90, 1, 0};
  for (int it = 0; it < 3; it++) {
    CHECK(jmg_meet_join(&key, 1, 0, &m, err, sizeof err) == 0, "%s", err);
    for (int k = 0; k < 3; k++) {
      memset(all, 0, sizeof all);
      x[0] = (unsigned char)(it * 3 + k);
      CHECK(jmg_meet_exchange(m, x, 5, all, NULL, 0.0, err, sizeof err) == 0, "%s", err);
      CHECK(memcmp(all, x, 5) == 0, "single party got other bytes");
    }
    /* A zero-byte exchange is a plain barrier. */
    CHECK(jmg_meet_exchange(m, NULL, 0, NULL, NULL, 1.0, err, sizeof err) == 0, "%s", err);
    jmg_meet_leave(m);
  }
}

/* ---- interleaved launches: two runs of one executable in flight, the
 * device threads taking their calls in different orders. Rank 0 joins
 * R1,R1,R2,R2 and rank 1 R1,R2,R1,R2 at one site, two calls per run (a
 * loop in the program). A count per (site, rank) that restarts when the
 * run id changes gave rank 1's second R1 call the number 0 again: it
 * never met rank 0's and both timed out. ---- */

typedef struct interleaved {
  int run, rank; /* run 0 or 1, rank 0 or 1 */
  int rc[2];
  int got[2][2]; /* per iteration, what each rank sent */
} interleaved;

static pthread_mutex_t turn_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_cv = PTHREAD_COND_INITIALIZER;
static int turn[2];

/* Where (run, it) falls in rank's join order. */
static int position(int rank, int run, int it) { return rank == 0 ? run * 2 + it : it * 2 + run; }

static void* interleaved_main(void* arg) {
  interleaved* w = arg;
  jmg_meet_key key = {w->run ? 9002 : 9001, 4242, 0};
  for (int it = 0; it < 2; it++) {
    char err[JMG_MEET_ERRLEN];
    jmg_meet* m = NULL;
    pthread_mutex_lock(&turn_lock);
    while (turn[w->rank] != position(w->rank, w->run, it)) pthread_cond_wait(&turn_cv, &turn_lock);
    int rc = jmg_meet_join(&key, 2, w->rank, &m, err, sizeof err);
    turn[w->rank]++;
    pthread_cond_broadcast(&turn_cv);
    pthread_mutex_unlock(&turn_lock);
    int mine = 100 * w->run + 10 * it + w->rank;
    if (!rc) rc = jmg_meet_exchange(m, &mine, sizeof mine, w->got[it], NULL, 2.0, err, sizeof err);
    jmg_meet_leave(m);
    w->rc[it] = rc;
  }
  return NULL;
}

static void test_interleaved_runs(void) {
  interleaved w[4];
  pthread_t t[4];
  memset(w, 0, sizeof w);
  turn[0] = turn[1] = 0;
  for (int i = 0; i < 4; i++) {
    w[i].run = i / 2;
    w[i].rank = i % 2;
  }
  spawn(t, 4, interleaved_main, w, sizeof w[0]);
  reap(t, 4);
  for (int i = 0; i < 4; i++)
    for (int it = 0; it < 2; it++) {
      CHECK(w[i].rc[it] == 0, "interleaved: run %d rank %d call %d failed (%d)", w[i].run,
            w[i].rank, it, w[i].rc[it]);
      for (int r = 0; r < 2; r++)
        CHECK(w[i].rc[it] || w[i].got[it][r] == 100 * w[i].run + 10 * it + r,
              "interleaved: run %d rank %d call %d met %d", w[i].run, w[i].rank, it,
              w[i].got[it][r]);
    }
}

/* ---- many runs: the records of finished runs are freed, so a long job
 * does not slow down (a list scanned under the lock grew by one record per
 * run and site). 20000 runs must cost about what 2000 cost. ---- */

static double time_runs(int nruns, int64_t first) {
  double t0 = now();
  for (int i = 0; i < nruns; i++) {
    jmg_meet_key key = {first + i, 77, 0};
    jmg_meet* m;
    char err[JMG_MEET_ERRLEN];
    if (jmg_meet_join(&key, 1, 0, &m, err, sizeof err)) return -1;
    jmg_meet_leave(m);
  }
  return now() - t0;
}

static void test_runs_freed(void) {
  double small = time_runs(2000, 1000000);
  double big = time_runs(20000, 2000000);
  CHECK(small >= 0 && big >= 0, "runs: a join failed");
  /* Linear growth would make this about 100 times slower, not 10. */
  CHECK(big < 40 * small + 0.05, "runs: 20000 runs took %.3f s, 2000 took %.3f s", big, small);
}

static void test_hash(void) {
  CHECK(jmg_meet_hash("", 0) == 0xcbf29ce484222325u, "empty");
  CHECK(jmg_meet_hash("a", 1) == 0xaf63dc4c8601ec8cu, "a");
  CHECK(jmg_meet_hash("foobar", 6) == 0x85944171f73967e8u, "foobar");
  CHECK(jmg_meet_hash(NULL, 0) == 0xcbf29ce484222325u, "NULL");
}

int main(void) {
  test_hash();
  test_args();
  test_single();
  test_success();
  test_reuse();
  test_no_mixing();
  test_failure();
  test_timeout();
  test_late_joiner();
  test_left_early();
  test_bad_parties();
  test_size_mismatch();
  test_interleaved_runs();
  test_runs_freed();
  return CHECK_DONE("test_meet");
}
