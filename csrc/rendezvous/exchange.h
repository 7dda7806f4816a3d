/* exchange.h - the exchange round of a meeting, written once for both
 * rendezvous: threads of one process (meet.c) and processes of one node
 * (meet_shm.c).
 *
 * A meeting's shared state is a jmg_round plus a message buffer; how its
 * parties sleep, wake each other and notice a dead party is a jmg_sync that
 * each rendezvous supplies. Every jmg_round_* call below is made with the
 * meeting's lock held: the rendezvous takes it around the call, since it
 * also guards the rendezvous' own bookkeeping (registry, slots, liveness).
 */
#ifndef JAXMG_EXCHANGE_H
#define JAXMG_EXCHANGE_H

#include <stddef.h>
#include <stdint.h>

#include "rendezvous/meet.h"
#include "util/clock.h" /* the deadlines below are jmg_clock_now() times */

/* One of the two exchanges in flight (see exchange.c). */
typedef struct jmg_round_slot {
  uint64_t size; /* set by the first arrival, checked against the rest */
  int32_t arrived;
  uint64_t mask; /* ranks that arrived, for the timeout message */
} jmg_round_slot;

/* Plain data without pointers, so that it may live in shared memory. */
typedef struct jmg_round {
  int32_t nparties;
  int32_t njoined, nleft;
  uint64_t joined, gone; /* ranks, one bit each */
  int32_t failed;        /* JMG_MEET_* error once failed, 0 while healthy */
  char msg[JMG_MEET_ERRLEN];
  int64_t done; /* exchanges completed */
  int64_t entered[JMG_MEET_MAX_PARTIES];
  jmg_round_slot slot[2];
} jmg_round;

/* Bytes of the message buffer that goes with a round of n parties. */
#define JMG_ROUND_BUF(n) (2 * (size_t)(n) * JMG_MEET_MAX_MSG)

/* How the parties of one meeting wait for each other. A rendezvous puts a
 * jmg_sync first in a struct of its own and casts back in its hooks. */
typedef struct jmg_sync jmg_sync;
typedef struct jmg_sync_ops {
  /* Releases the lock, sleeps until woken or until the monotonic time
   * `until` (jmg_clock_now; < 0: no limit), takes the lock again. May
   * return early. */
  void (*wait)(jmg_sync* s, double until);
  /* Wakes every party waiting in this meeting. */
  void (*wake)(jmg_sync* s);
  /* NULL, or: finds a party of r that died, marks it gone, fails r with
   * JMG_MEET_EPEER and returns 1; else returns 0. Waiters call it every
   * probe_s seconds, so their `until` is never "no limit". */
  int (*dead)(jmg_sync* s, jmg_round* r);
  double probe_s;
  const char* timeout_note; /* appended to the timeout message */
} jmg_sync_ops;
struct jmg_sync {
  const jmg_sync_ops* ops;
};

/* Writes a message to dst (cap bytes) unless dst is NULL. */
void jmg_put(char* dst, size_t cap, const char* fmt, ...);

/* Checks the arguments of a join (no lock needed). */
int jmg_round_check_join(const jmg_meet_key* key, const void* out, int nparties, int rank,
                         char* err, size_t errlen);

/* A fresh round of n parties. */
void jmg_round_init(jmg_round* r, int nparties);

/* Fails the round and wakes its parties. The first failure wins: later ones
 * are usually its consequences, and every party must report one cause. */
void jmg_round_fail(jmg_sync* s, jmg_round* r, int code, const char* fmt, ...);

/* Whether `rank` of `nparties` may join r. If not, r fails (its parties
 * could never agree on an exchange) and this returns JMG_MEET_EINVAL with
 * r's message in err. A party admitted is then counted by
 * jmg_round_joined. */
int jmg_round_admit(jmg_sync* s, jmg_round* r, int nparties, int rank, char* err, size_t errlen);
void jmg_round_joined(jmg_round* r, int rank);

/* jmg_meet_exchange for `rank`, over r and its buffer buf
 * (JMG_ROUND_BUF(r->nparties) bytes). */
int jmg_round_exchange(jmg_sync* s, jmg_round* r, unsigned char* buf, int rank, const void* mine,
                       size_t size, void* all, const char* failure, double timeout_s, char* err,
                       size_t errlen);

/* Counts `rank` out. Returns -1 if it had already left (nothing done), 1 if
 * the meeting can now be freed, else 0. */
int jmg_round_leave(jmg_sync* s, jmg_round* r, int rank);

#endif
