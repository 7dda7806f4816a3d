/* exchange.c - the exchange round: a generation barrier plus an all-gather.
 *
 * Exchange i uses slot and buffer i % 2: a party can enter exchange i + 1
 * only after exchange i completed, and exchange i + 2 cannot complete
 * before every party entered i + 1, by which time each has copied out the
 * result of exchange i. Two buffers are therefore enough and no party ever
 * waits for a slow reader. Buffer i % 2 holds nparties rows of at most
 * JMG_MEET_MAX_MSG bytes; rank r writes its `size` bytes at r * size, so the
 * gathered messages are one contiguous copy.
 *
 * A party that left (or died) will never enter another exchange; anyone who
 * waits for it, or will, fails at once instead of sitting out the timeout.
 */
#define _POSIX_C_SOURCE 200809L

#include "rendezvous/exchange.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define BIT(r) ((uint64_t)1 << (r))

void jmg_put(char* dst, size_t cap, const char* fmt, ...) {
  va_list ap;
  if (!dst || cap == 0) return;
  va_start(ap, fmt);
  vsnprintf(dst, cap, fmt, ap);
  va_end(ap);
}

int jmg_round_check_join(const jmg_meet_key* key, const void* out, int nparties, int rank,
                         char* err, size_t errlen) {
  if (!key || !out) {
    jmg_put(err, errlen, "jaxmg rendezvous: NULL key or out");
    return JMG_MEET_EINVAL;
  }
  if (nparties < 1 || nparties > JMG_MEET_MAX_PARTIES) {
    jmg_put(err, errlen, "jaxmg rendezvous: %d parties, need 1..%d", nparties,
            JMG_MEET_MAX_PARTIES);
    return JMG_MEET_EINVAL;
  }
  /* No meeting is failed here: the sequence counters are per rank, so an
   * impossible rank has no meeting it could be matched with. The others
   * time out. */
  if (rank < 0 || rank >= nparties) {
    jmg_put(err, errlen, "jaxmg rendezvous: rank %d out of range for %d parties", rank, nparties);
    return JMG_MEET_EINVAL;
  }
  return JMG_MEET_OK;
}

void jmg_round_init(jmg_round* r, int nparties) {
  memset(r, 0, sizeof *r);
  r->nparties = nparties;
}

void jmg_round_fail(jmg_sync* s, jmg_round* r, int code, const char* fmt, ...) {
  va_list ap;
  if (r->failed) return;
  r->failed = code;
  va_start(ap, fmt);
  vsnprintf(r->msg, sizeof r->msg, fmt, ap);
  va_end(ap);
  s->ops->wake(s);
}

int jmg_round_admit(jmg_sync* s, jmg_round* r, int nparties, int rank, char* err, size_t errlen) {
  if (r->nparties != nparties)
    jmg_round_fail(s, r, JMG_MEET_EINVAL,
                   "jaxmg rendezvous: rank %d joined with %d parties, the others with %d", rank,
                   nparties, (int)r->nparties);
  else if (r->joined & BIT(rank))
    jmg_round_fail(s, r, JMG_MEET_EINVAL, "jaxmg rendezvous: rank %d joined twice", rank);
  else
    return JMG_MEET_OK;
  jmg_put(err, errlen, "%s", r->msg);
  return JMG_MEET_EINVAL;
}

void jmg_round_joined(jmg_round* r, int rank) {
  r->joined |= BIT(rank);
  r->njoined++;
}

static int someone_left_before(jmg_sync* s, jmg_round* r, int64_t i) {
  for (int q = 0; q < r->nparties; q++) {
    if ((r->gone & BIT(q)) && r->entered[q] <= i) {
      jmg_round_fail(s, r, JMG_MEET_EPEER,
                     "rank %d: left the meeting after %lld exchanges, before exchange %lld", q,
                     (long long)r->entered[q], (long long)i);
      return 1;
    }
  }
  return 0;
}

/* Writes "0,1,3"; cap must hold 64 ranks (under 200 bytes). */
static int rank_list(char* dst, size_t cap, uint64_t mask, int n) {
  size_t len = 0;
  int count = 0;
  dst[0] = '\0';
  for (int q = 0; q < n; q++) {
    if (!(mask & BIT(q))) continue;
    int w = snprintf(dst + len, cap - len, "%s%d", count ? "," : "", q);
    count++;
    if (w < 0 || (size_t)w >= cap - len) break;
    len += (size_t)w;
  }
  return count;
}

static void fail_timeout(jmg_sync* s, jmg_round* r, uint64_t arrived, double timeout_s) {
  char here[256], missing[256];
  int n = r->nparties;
  uint64_t all = n == 64 ? ~(uint64_t)0 : BIT(n) - 1;
  int nhere = rank_list(here, sizeof here, arrived, n);
  int nmissing = rank_list(missing, sizeof missing, all & ~arrived, n);
  /* Sub-100 ms timeouts only appear in tests, but "0.0 s" would mislead. */
  int prec = timeout_s >= 0.1 ? 1 : 3;
  jmg_round_fail(s, r, JMG_MEET_ETIMEOUT,
                 "jaxmg rendezvous timed out after %.*f s: %d of %d parties arrived (rank%s %s); "
                 "missing rank%s %s%s",
                 prec, timeout_s, nhere, n, nhere == 1 ? "" : "s", here, nmissing == 1 ? "" : "s",
                 missing, s->ops->timeout_note ? s->ops->timeout_note : "");
}

/* Waits until exchange i completed; 0 if the round failed first. */
static int await(jmg_sync* s, jmg_round* r, int64_t i, double timeout_s) {
  const jmg_sync_ops* ops = s->ops;
  /* Past about 30 years the deadline arithmetic could overflow time_t;
   * such a wait is "forever" in all but name. */
  int forever = timeout_s < 0 || timeout_s > 1e9;
  double deadline = forever ? -1.0 : jmg_clock_now() + timeout_s;
  while (r->done <= i && !r->failed) {
    double until = deadline;
    if (ops->dead) {
      double probe = jmg_clock_now() + ops->probe_s;
      if (forever || probe < until) until = probe;
    }
    ops->wait(s, until);
    if (r->done > i || r->failed) break;
    if (ops->dead && ops->dead(s, r)) break;
    if (!forever && jmg_clock_now() >= deadline)
      fail_timeout(s, r, r->slot[i & 1].mask, timeout_s);
  }
  /* A completed exchange is good even if the meeting failed right after:
   * the data is intact, and the next exchange reports the failure. */
  return r->done > i;
}

int jmg_round_exchange(jmg_sync* s, jmg_round* r, unsigned char* buf, int rank, const void* mine,
                       size_t size, void* all, const char* failure, double timeout_s, char* err,
                       size_t errlen) {
  int64_t i;
  jmg_round_slot* sl;
  unsigned char* half;

  if (r->failed) goto failed;
  if (failure) {
    jmg_round_fail(s, r, JMG_MEET_EPEER, "rank %d: %s", rank, failure);
    goto failed;
  }
  /* Bad arguments of one party fail everyone: the others would otherwise
   * wait for an exchange this party never enters. */
  if (size > JMG_MEET_MAX_MSG || (size && (!mine || !all)) || isnan(timeout_s)) {
    jmg_round_fail(s, r, JMG_MEET_EINVAL,
                   "jaxmg rendezvous: rank %d: bad exchange (%zu bytes, at most %d; timeout %g)",
                   rank, size, JMG_MEET_MAX_MSG, timeout_s);
    goto failed;
  }
  i = r->entered[rank]++;
  if (someone_left_before(s, r, i)) goto failed;

  sl = &r->slot[i & 1];
  if (sl->arrived == 0) {
    sl->size = size;
  } else if (sl->size != size) {
    int first = 0;
    while (!(sl->mask & BIT(first))) first++;
    jmg_round_fail(s, r, JMG_MEET_EINVAL,
                   "jaxmg rendezvous: exchange %lld: rank %d sent %zu bytes, rank %d sent %llu",
                   (long long)i, rank, size, first, (unsigned long long)sl->size);
    goto failed;
  }
  half = buf + (size_t)(i & 1) * (size_t)r->nparties * JMG_MEET_MAX_MSG;
  if (size) memcpy(half + (size_t)rank * size, mine, size);
  sl->arrived++;
  sl->mask |= BIT(rank);

  if (sl->arrived == r->nparties) {
    sl->arrived = 0;
    sl->mask = 0;
    r->done = i + 1;
    s->ops->wake(s);
  } else if (!await(s, r, i, timeout_s)) {
    goto failed;
  }
  if (size) memcpy(all, half, (size_t)r->nparties * size);
  jmg_put(err, errlen, "%s", "");
  return JMG_MEET_OK;

failed:
  jmg_put(err, errlen, "%s", r->msg);
  return r->failed;
}

int jmg_round_leave(jmg_sync* s, jmg_round* r, int rank) {
  if (r->gone & BIT(rank)) return -1;
  r->gone |= BIT(rank);
  r->nleft++;
  /* Someone already waits in (or past) an exchange this rank never
   * enters. */
  if (!r->failed) {
    for (int q = 0; q < r->nparties; q++) {
      if ((r->joined & ~r->gone & BIT(q)) && r->entered[q] > r->entered[rank]) {
        someone_left_before(s, r, r->entered[rank]);
        break;
      }
    }
  }
  /* A failed meeting may miss ranks that will never come, or come only
   * after everyone else gave up; waiting for them would leak it. */
  return r->nleft == r->nparties || (r->failed && r->nleft == r->njoined);
}
