/* meet.h - the per-device calls of one collective op meet here.
 *
 * XLA runs an FFI handler once per device, each on its own host thread. The
 * calls that belong together (same launch, same call site, same device group)
 * join one meeting and then exchange fixed-size messages: each exchange is a
 * barrier plus an all-gather, so rank 0 can act as the leader and broadcast
 * its results in the next exchange.
 *
 * Failure is symmetric: a party that reports a failure, or a timeout while
 * waiting for the others, fails the meeting, and every party's current and
 * later exchanges return the same error at once. A missing party therefore
 * produces an error on every party that did arrive, never a hang.
 *
 * Meetings are keyed by (run id, call site, group) plus a sequence number
 * kept per (call site, group, rank) within one run id, so a call site inside
 * a loop meets once per iteration and two call sites never mix.
 */
#ifndef JAXMG_MEET_H
#define JAXMG_MEET_H

#include <stddef.h>
#include <stdint.h>

#define JMG_MEET_MAX_PARTIES 64
#define JMG_MEET_MAX_MSG 1024 /* bytes one party contributes to one exchange */
#define JMG_MEET_ERRLEN 512

typedef struct jmg_meet_key {
  int64_t run_id; /* XLA run id: one per launch */
  uint64_t site;  /* hash of the call-site string */
  int64_t group;  /* which group of devices (other mesh axes) */
} jmg_meet_key;

enum {
  JMG_MEET_OK = 0,
  JMG_MEET_EINVAL = 1,   /* bad arguments, or parties disagree on nparties/size */
  JMG_MEET_ETIMEOUT = 2, /* some party did not arrive in time */
  JMG_MEET_EPEER = 3,    /* some party reported a failure */
  JMG_MEET_ENOMEM = 4
};

typedef struct jmg_meet jmg_meet;

/* 64-bit FNV-1a of a byte string, for jmg_meet_key.site. */
uint64_t jmg_meet_hash(const char* s, size_t len);

/* Joins the meeting for `key` as `rank` of `nparties` (creating it if this
 * is the first party). Does not wait for the others. On error returns
 * JMG_MEET_* and writes a message to err (errlen bytes). */
int jmg_meet_join(const jmg_meet_key* key, int nparties, int rank, jmg_meet** out,
                  char* err, size_t errlen);

/* Barrier and all-gather. Every party passes `size` bytes at `mine` (size
 * <= JMG_MEET_MAX_MSG, equal across parties); on success `all` (nparties *
 * size bytes) holds them in rank order. With `failure` non-NULL this party
 * reports a failure instead: the meeting fails and every party gets
 * JMG_MEET_EPEER with "rank R: <failure>". Waits at most timeout_s seconds
 * for the others (timeout_s < 0: no limit); on timeout the meeting fails with
 * JMG_MEET_ETIMEOUT and a message naming the ranks that arrived and those
 * missing. Once failed, a meeting fails every later exchange at once. */
int jmg_meet_exchange(jmg_meet* m, const void* mine, size_t size, void* all,
                      const char* failure, double timeout_s, char* err, size_t errlen);

/* Leaves the meeting; the last party out frees it. A failed meeting that some
 * party never joined is freed once every party that did join has left; a late
 * joiner then meets nobody and times out. */
void jmg_meet_leave(jmg_meet* m);

#endif
