/* meet.c - where the per-device calls of one collective op find each other.
 *
 * All state here sits behind one process-wide mutex. Meetings are few, short
 * and exchange small messages, so contention is not a concern, while a
 * single lock makes the lifetime rules (who frees a meeting, whether a late
 * joiner can still find it) free of ordering puzzles. Each meeting has its
 * own condition variable so that completing an exchange wakes only the
 * parties of that meeting. The exchanges themselves are exchange.c's.
 */
#define _POSIX_C_SOURCE 200809L

#include "rendezvous/meet.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "rendezvous/exchange.h"

typedef struct meeting meeting;
typedef struct runrec runrec;

/* What a party holds. It lives inside its meeting, one per rank, so that
 * exchange and leave learn the caller's rank without another allocation. */
struct jmg_meet {
  meeting* mt;
  int rank;
};

struct meeting {
  jmg_sync sync; /* first: the hooks below cast it back to its meeting */
  pthread_cond_t cv;
  runrec* run;
  int64_t seq;
  jmg_round round;
  meeting *prev, *next; /* the run's live meetings */
  jmg_meet party[JMG_MEET_MAX_PARTIES];
  unsigned char buf[]; /* JMG_ROUND_BUF(nparties) bytes */
};

/* One (run id, site, group): how many times each rank joined there, and
 * the meetings of it that are alive. Keyed by the run as well, so that
 * interleaved launches of one executable on one device (two run ids at one
 * site) count apart. Freed with its last meeting: all ranks then stand at
 * the same count (every rank left the last one), so a later call of the
 * same run starting again from 0 cannot be confused with anything. */
struct runrec {
  jmg_meet_key key;
  meeting* meetings;
  runrec* next; /* hash chain */
  int64_t count[JMG_MEET_MAX_PARTIES];
};

#define NBUCKETS 1024 /* runs in flight are few; chains stay short */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static runrec* runs[NBUCKETS];

static size_t bucket(const jmg_meet_key* k) {
  uint64_t h = k->site ^ ((uint64_t)k->run_id * 0x9e3779b97f4a7c15u) ^
               ((uint64_t)k->group * 0xff51afd7ed558ccdu);
  return (size_t)((h ^ (h >> 29)) % NBUCKETS);
}

static runrec* find_run(const jmg_meet_key* k, int make) {
  runrec** at = &runs[bucket(k)];
  for (runrec* r = *at; r; r = r->next)
    if (r->key.run_id == k->run_id && r->key.site == k->site && r->key.group == k->group)
      return r;
  if (!make) return NULL;
  runrec* r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->key = *k;
  r->next = *at;
  *at = r;
  return r;
}

static void drop_run(runrec* r) {
  runrec** at = &runs[bucket(&r->key)];
  while (*at && *at != r) at = &(*at)->next;
  if (*at) *at = r->next;
  free(r);
}

static void wait_cv(jmg_sync* s, double until) {
  meeting* mt = (meeting*)s;
  if (until < 0) {
    pthread_cond_wait(&mt->cv, &lock);
  } else {
    struct timespec ts = jmg_clock_at(until);
    pthread_cond_timedwait(&mt->cv, &lock, &ts);
  }
}

static void wake_cv(jmg_sync* s) { pthread_cond_broadcast(&((meeting*)s)->cv); }

/* A thread cannot die on its own (its process goes with it): no probe. */
static const jmg_sync_ops thread_ops = {.wait = wait_cv, .wake = wake_cv};

uint64_t jmg_meet_hash(const char* s, size_t len) {
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3u;
  }
  return h;
}

static meeting* find(runrec* run, int64_t seq) {
  for (meeting* mt = run->meetings; mt; mt = mt->next)
    if (mt->seq == seq) return mt;
  return NULL;
}

static meeting* create(runrec* run, int64_t seq, int nparties) {
  pthread_condattr_t ca;
  int rc;
  meeting* mt = calloc(1, sizeof *mt + JMG_ROUND_BUF(nparties));
  if (!mt) return NULL;
  if (pthread_condattr_init(&ca)) {
    free(mt);
    return NULL;
  }
  /* Timed waits must not stretch or shrink when the wall clock is set. */
  rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (!rc) rc = pthread_cond_init(&mt->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (rc) {
    free(mt);
    return NULL;
  }
  mt->sync.ops = &thread_ops;
  mt->run = run;
  mt->seq = seq;
  jmg_round_init(&mt->round, nparties);
  for (int r = 0; r < nparties; r++) {
    mt->party[r].mt = mt;
    mt->party[r].rank = r;
  }
  mt->next = run->meetings;
  if (run->meetings) run->meetings->prev = mt;
  run->meetings = mt;
  return mt;
}

static void destroy(meeting* mt) {
  runrec* run = mt->run;
  if (mt->prev)
    mt->prev->next = mt->next;
  else
    run->meetings = mt->next;
  if (mt->next) mt->next->prev = mt->prev;
  pthread_cond_destroy(&mt->cv);
  free(mt);
  if (!run->meetings) drop_run(run);
}

int jmg_meet_join(const jmg_meet_key* key, int nparties, int rank, jmg_meet** out, char* err,
                  size_t errlen) {
  meeting* mt;
  int64_t seq;
  int rc;

  if (out) *out = NULL;
  rc = jmg_round_check_join(key, out, nparties, rank, err, errlen);
  if (rc) return rc;

  pthread_mutex_lock(&lock);
  /* The k-th call of a rank at a site within one run meets the k-th call
   * of every other rank. Keeping the count per rank, rather than per
   * meeting, lets the ranks drift apart by whole calls without mixing. */
  runrec* run = find_run(key, 1);
  mt = NULL;
  if (run) {
    seq = run->count[rank]++;
    mt = find(run, seq);
    if (!mt) mt = create(run, seq, nparties);
    if (!mt && !run->meetings) drop_run(run);
  }
  if (!mt) {
    pthread_mutex_unlock(&lock);
    jmg_put(err, errlen, "jaxmg rendezvous: out of host memory");
    return JMG_MEET_ENOMEM;
  }
  rc = jmg_round_admit(&mt->sync, &mt->round, nparties, rank, err, errlen);
  if (!rc) {
    jmg_round_joined(&mt->round, rank);
    *out = &mt->party[rank];
  }
  pthread_mutex_unlock(&lock);
  if (!rc) jmg_put(err, errlen, "%s", "");
  return rc;
}

int jmg_meet_exchange(jmg_meet* p, const void* mine, size_t size, void* all, const char* failure,
                      double timeout_s, char* err, size_t errlen) {
  int rc;
  if (!p) {
    jmg_put(err, errlen, "jaxmg rendezvous: NULL meeting");
    return JMG_MEET_EINVAL;
  }
  pthread_mutex_lock(&lock);
  rc = jmg_round_exchange(&p->mt->sync, &p->mt->round, p->mt->buf, p->rank, mine, size, all,
                          failure, timeout_s, err, errlen);
  pthread_mutex_unlock(&lock);
  return rc;
}

void jmg_meet_leave(jmg_meet* p) {
  if (!p) return;
  pthread_mutex_lock(&lock);
  /* -1: a second leave while the meeting lives. */
  if (jmg_round_leave(&p->mt->sync, &p->mt->round, p->rank) == 1) destroy(p->mt);
  pthread_mutex_unlock(&lock);
}
