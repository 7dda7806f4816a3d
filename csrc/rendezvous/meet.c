/* meet.c - where the per-device calls of one collective op find each other.
 *
 * All state here sits behind one process-wide mutex. Meetings are few, short
 * and exchange small messages, so contention is not a concern, while a
 * single lock makes the lifetime rules (who frees a meeting, whether a late
 * joiner can still find it) free of ordering puzzles. Each meeting has its
 * own condition variable so that completing an exchange wakes only the
 * parties of that meeting.
 *
 * An exchange is a generation barrier over two message buffers. Exchange i
 * uses buffer i % 2: a party can enter exchange i + 1 only after exchange i
 * completed, and exchange i + 2 cannot complete before every party entered
 * i + 1, by which time each has copied out the result of exchange i. Two
 * buffers are therefore enough and no party ever waits for a slow reader.
 */
#define _POSIX_C_SOURCE 200809L

#include "meet.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct meeting meeting;

/* What a party holds. It lives inside its meeting, one per rank, so that
 * exchange and leave learn the caller's rank without another allocation. */
struct jmg_meet {
  meeting* mt;
  int rank;
};

typedef struct slot {
  size_t size; /* set by the first arrival, checked against the rest */
  int arrived;
  uint64_t mask; /* ranks that arrived, for the timeout message */
} slot;

struct meeting {
  jmg_meet_key key;
  int64_t seq;
  int nparties;
  int njoined, nleft;
  uint64_t joined, gone;
  int failed; /* JMG_MEET_* error once failed, 0 while healthy */
  char msg[JMG_MEET_ERRLEN];
  int64_t done; /* exchanges completed */
  int64_t entered[JMG_MEET_MAX_PARTIES];
  slot slots[2];
  pthread_cond_t cv;
  meeting *prev, *next;
  jmg_meet party[JMG_MEET_MAX_PARTIES];
  unsigned char buf[]; /* 2 buffers of nparties * JMG_MEET_MAX_MSG bytes */
};

/* Where the next call of one rank at one site falls within a run. */
typedef struct seqrec {
  uint64_t site;
  int64_t group;
  int rank;
  int64_t run_id;
  int64_t count;
  struct seqrec* next;
} seqrec;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static meeting* live;
static seqrec* seqs;

#define BIT(r) ((uint64_t)1 << (r))

static void vput(char* dst, size_t cap, const char* fmt, va_list ap) {
  if (!dst || cap == 0) return;
  vsnprintf(dst, cap, fmt, ap);
}

static void put(char* dst, size_t cap, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vput(dst, cap, fmt, ap);
  va_end(ap);
}

/* The first failure wins: later ones are usually its consequences, and every
 * party must report the same cause. */
static void fail(meeting* mt, int code, const char* fmt, ...) {
  va_list ap;
  if (mt->failed) return;
  mt->failed = code;
  va_start(ap, fmt);
  vput(mt->msg, sizeof mt->msg, fmt, ap);
  va_end(ap);
  pthread_cond_broadcast(&mt->cv);
}

/* Writes "0,1,3"; cap must hold 64 ranks (under 200 bytes). */
static int rank_list(char* dst, size_t cap, uint64_t mask, int n) {
  size_t len = 0;
  int count = 0;
  dst[0] = '\0';
  for (int r = 0; r < n; r++) {
    if (!(mask & BIT(r))) continue;
    int w = snprintf(dst + len, cap - len, "%s%d", count ? "," : "", r);
    count++;
    if (w < 0 || (size_t)w >= cap - len) break;
    len += (size_t)w;
  }
  return count;
}

static void fail_timeout(meeting* mt, const slot* s, double timeout_s) {
  char here[256], missing[256];
  int n = mt->nparties;
  uint64_t all = n == 64 ? ~(uint64_t)0 : BIT(n) - 1;
  int nhere = rank_list(here, sizeof here, s->mask, n);
  int nmissing = rank_list(missing, sizeof missing, all & ~s->mask, n);
  /* Sub-100 ms timeouts only appear in tests, but "0.0 s" would mislead. */
  int prec = timeout_s >= 0.1 ? 1 : 3;
  fail(mt, JMG_MEET_ETIMEOUT,
       "jaxmg rendezvous timed out after %.*f s: %d of %d parties arrived (rank%s %s); "
       "missing rank%s %s",
       prec, timeout_s, nhere, n, nhere == 1 ? "" : "s", here, nmissing == 1 ? "" : "s", missing);
}

uint64_t jmg_meet_hash(const char* s, size_t len) {
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3u;
  }
  return h;
}

double jmg_meet_default_timeout(void) {
  const char* v = getenv("JAXMG_TIMEOUT_S");
  char* end;
  double t;
  if (!v || !*v) return 180.0;
  errno = 0;
  t = strtod(v, &end);
  /* A typo must not turn into "wait forever" or "fail at once": anything
   * that is not a plain positive number falls back to the default. */
  if (errno || *end != '\0' || !isfinite(t) || t <= 0) return 180.0;
  return t;
}

/* The k-th call of a rank at a site within one run meets the k-th call of
 * every other rank. Keeping the count per rank, rather than per meeting,
 * lets the ranks drift apart by whole calls without mixing them up. */
static int next_seq(const jmg_meet_key* key, int rank, int64_t* seq) {
  seqrec* r;
  for (r = seqs; r; r = r->next)
    if (r->site == key->site && r->group == key->group && r->rank == rank) break;
  if (!r) {
    r = malloc(sizeof *r);
    if (!r) return JMG_MEET_ENOMEM;
    r->site = key->site;
    r->group = key->group;
    r->rank = rank;
    r->run_id = key->run_id;
    r->count = 0;
    r->next = seqs;
    seqs = r;
  } else if (r->run_id == key->run_id) {
    r->count++;
  } else {
    r->run_id = key->run_id;
    r->count = 0;
  }
  *seq = r->count;
  return JMG_MEET_OK;
}

static meeting* find(const jmg_meet_key* key, int64_t seq) {
  for (meeting* mt = live; mt; mt = mt->next)
    if (mt->key.run_id == key->run_id && mt->key.site == key->site && mt->key.group == key->group &&
        mt->seq == seq)
      return mt;
  return NULL;
}

static meeting* create(const jmg_meet_key* key, int64_t seq, int nparties) {
  pthread_condattr_t ca;
  int rc;
  meeting* mt = calloc(1, sizeof *mt + 2 * (size_t)nparties * JMG_MEET_MAX_MSG);
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
  mt->key = *key;
  mt->seq = seq;
  mt->nparties = nparties;
  for (int r = 0; r < nparties; r++) {
    mt->party[r].mt = mt;
    mt->party[r].rank = r;
  }
  mt->next = live;
  if (live) live->prev = mt;
  live = mt;
  return mt;
}

static void destroy(meeting* mt) {
  if (mt->prev)
    mt->prev->next = mt->next;
  else
    live = mt->next;
  if (mt->next) mt->next->prev = mt->prev;
  pthread_cond_destroy(&mt->cv);
  free(mt);
}

int jmg_meet_join(const jmg_meet_key* key, int nparties, int rank, jmg_meet** out, char* err,
                  size_t errlen) {
  meeting* mt;
  int64_t seq;
  int rc;

  if (out) *out = NULL;
  if (!key || !out) {
    put(err, errlen, "jaxmg rendezvous: NULL key or out");
    return JMG_MEET_EINVAL;
  }
  if (nparties < 1 || nparties > JMG_MEET_MAX_PARTIES) {
    put(err, errlen, "jaxmg rendezvous: %d parties, need 1..%d", nparties, JMG_MEET_MAX_PARTIES);
    return JMG_MEET_EINVAL;
  }
  /* No meeting is failed here: the sequence counters are per rank, so an
   * impossible rank has no meeting it could be matched with. The others
   * time out. */
  if (rank < 0 || rank >= nparties) {
    put(err, errlen, "jaxmg rendezvous: rank %d out of range for %d parties", rank, nparties);
    return JMG_MEET_EINVAL;
  }

  pthread_mutex_lock(&lock);
  rc = next_seq(key, rank, &seq);
  if (rc) {
    pthread_mutex_unlock(&lock);
    put(err, errlen, "jaxmg rendezvous: out of host memory");
    return rc;
  }
  mt = find(key, seq);
  if (mt) {
    /* Both mistakes mean the parties will never agree on one exchange, so
     * the meeting fails now instead of letting the others time out. */
    if (mt->nparties != nparties) {
      fail(mt, JMG_MEET_EINVAL,
           "jaxmg rendezvous: rank %d joined with %d parties, the others with %d", rank, nparties,
           mt->nparties);
      put(err, errlen, "%s", mt->msg);
      pthread_mutex_unlock(&lock);
      return JMG_MEET_EINVAL;
    }
    if (mt->joined & BIT(rank)) {
      fail(mt, JMG_MEET_EINVAL, "jaxmg rendezvous: rank %d joined twice", rank);
      put(err, errlen, "%s", mt->msg);
      pthread_mutex_unlock(&lock);
      return JMG_MEET_EINVAL;
    }
  } else {
    mt = create(key, seq, nparties);
    if (!mt) {
      pthread_mutex_unlock(&lock);
      put(err, errlen, "jaxmg rendezvous: out of host memory");
      return JMG_MEET_ENOMEM;
    }
  }
  mt->joined |= BIT(rank);
  mt->njoined++;
  *out = &mt->party[rank];
  pthread_mutex_unlock(&lock);
  put(err, errlen, "%s", "");
  return JMG_MEET_OK;
}

/* A party that left will never enter another exchange; anyone who waits for
 * it, or will, would otherwise sit out the whole timeout (or forever). */
static int someone_left_before(meeting* mt, int64_t i) {
  for (int r = 0; r < mt->nparties; r++) {
    if ((mt->gone & BIT(r)) && mt->entered[r] <= i) {
      fail(mt, JMG_MEET_EPEER,
           "rank %d: left the meeting after %lld exchanges, before exchange %lld", r,
           (long long)mt->entered[r], (long long)i);
      return 1;
    }
  }
  return 0;
}

static struct timespec deadline_after(double s) {
  struct timespec ts;
  time_t whole = (time_t)s;
  long ns = (long)((s - (double)whole) * 1e9);
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += whole;
  ts.tv_nsec += ns;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

int jmg_meet_exchange(jmg_meet* p, const void* mine, size_t size, void* all, const char* failure,
                      double timeout_s, char* err, size_t errlen) {
  meeting* mt;
  slot* s;
  unsigned char* buf;
  int64_t i;
  int rank, rc;

  if (!p) {
    put(err, errlen, "jaxmg rendezvous: NULL meeting");
    return JMG_MEET_EINVAL;
  }
  mt = p->mt;
  rank = p->rank;

  pthread_mutex_lock(&lock);
  if (mt->failed) goto failed;
  if (failure) {
    fail(mt, JMG_MEET_EPEER, "rank %d: %s", rank, failure);
    goto failed;
  }
  /* Bad arguments of one party fail everyone: the others would otherwise
   * wait for an exchange this party never enters. */
  if (size > JMG_MEET_MAX_MSG || (size && (!mine || !all)) || isnan(timeout_s)) {
    fail(mt, JMG_MEET_EINVAL,
         "jaxmg rendezvous: rank %d: bad exchange (%zu bytes, at most %d; timeout %g)", rank, size,
         JMG_MEET_MAX_MSG, timeout_s);
    goto failed;
  }
  i = mt->entered[rank]++;
  if (someone_left_before(mt, i)) goto failed;

  s = &mt->slots[i & 1];
  if (s->arrived == 0) {
    s->size = size;
  } else if (s->size != size) {
    int first = 0;
    while (!(s->mask & BIT(first))) first++;
    fail(mt, JMG_MEET_EINVAL,
         "jaxmg rendezvous: exchange %lld: rank %d sent %zu bytes, rank %d sent %zu", (long long)i,
         rank, size, first, s->size);
    goto failed;
  }
  buf = mt->buf + (size_t)(i & 1) * (size_t)mt->nparties * JMG_MEET_MAX_MSG;
  if (size) memcpy(buf + (size_t)rank * size, mine, size);
  s->arrived++;
  s->mask |= BIT(rank);

  if (s->arrived == mt->nparties) {
    s->arrived = 0;
    s->mask = 0;
    mt->done = i + 1;
    pthread_cond_broadcast(&mt->cv);
  } else {
    /* Past about 30 years the deadline arithmetic could overflow time_t;
     * such a wait is "forever" in all but name. */
    int forever = timeout_s < 0 || timeout_s > 1e9;
    struct timespec deadline;
    if (!forever) deadline = deadline_after(timeout_s);
    while (mt->done <= i && !mt->failed) {
      if (forever) {
        pthread_cond_wait(&mt->cv, &lock);
      } else if (pthread_cond_timedwait(&mt->cv, &lock, &deadline) == ETIMEDOUT && mt->done <= i &&
                 !mt->failed) {
        fail_timeout(mt, s, timeout_s);
      }
    }
    /* A completed exchange is good even if the meeting failed right after:
     * the data is intact, and the next exchange reports the failure. */
    if (mt->done <= i) goto failed;
  }
  if (size) memcpy(all, buf, (size_t)mt->nparties * size);
  pthread_mutex_unlock(&lock);
  put(err, errlen, "%s", "");
  return JMG_MEET_OK;

failed:
  rc = mt->failed;
  put(err, errlen, "%s", mt->msg);
  pthread_mutex_unlock(&lock);
  return rc;
}

void jmg_meet_leave(jmg_meet* p) {
  meeting* mt;
  int rank;
  if (!p) return;
  mt = p->mt;
  rank = p->rank;

  pthread_mutex_lock(&lock);
  if (mt->gone & BIT(rank)) { /* a second leave while the meeting lives */
    pthread_mutex_unlock(&lock);
    return;
  }
  mt->gone |= BIT(rank);
  mt->nleft++;
  if (!mt->failed) {
    for (int r = 0; r < mt->nparties; r++) {
      if ((mt->joined & ~mt->gone & BIT(r)) && mt->entered[r] > mt->entered[rank]) {
        someone_left_before(mt, mt->entered[rank]);
        break;
      }
    }
  }
  /* A failed meeting may miss ranks that will never come, or come only
   * after everyone else gave up; waiting for them would leak it. */
  if (mt->nleft == mt->nparties || (mt->failed && mt->nleft == mt->njoined)) destroy(mt);
  pthread_mutex_unlock(&lock);
}
