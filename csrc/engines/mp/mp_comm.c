/* mp_comm.c - joining, guarding and losing a communicator (mp_comm.h),
 * against the jmg_mp_api table only. */
#include "engines/mp/mp_comm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/clock.h"

void jmg_mp_comm_errorf(const jmg_mp_comm* c, char* err, const char* fmt, ...) {
  int k = snprintf(err, JMG_MP_ERRLEN, "jaxmg: rank %d of %d (device %d, set %s): ", c->rank,
                   c->nranks, c->ordinal, c->tag);
  if (k < 0 || k >= JMG_MP_ERRLEN) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + k, JMG_MP_ERRLEN - (size_t)k, fmt, ap);
  va_end(ap);
}

static const char* nccl_str(const jmg_mp_comm* c, int r) {
  const char* s = c->api->error_string ? c->api->error_string(r) : NULL;
  return s ? s : "unknown NCCL error";
}

/* ------------------------------------------------------------------------ */
/* Joining, on a helper thread that can be abandoned. A process that holds
 * several ranks joins them either from one thread each (jmg_mp_comm_open
 * per rank) or from one thread in an NCCL group (jmg_mp_comm_open_group). */

typedef struct joiner {
  const jmg_mp_api* api;
  unsigned char id[JMG_MP_ID_BYTES];
  int nranks, count, grouped;
  int ranks[JMG_MP_MAX_LOCAL], ordinals[JMG_MP_MAX_LOCAL];
  void* comms[JMG_MP_MAX_LOCAL];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, abandoned, result;
} joiner;

static void joiner_free(joiner* j) {
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j);
}

static void abort_all(const jmg_mp_api* api, void** comms, int count) {
  for (int k = 0; k < count; k++)
    if (comms[k]) api->comm_abort(comms[k]);
}

static void* join_main(void* vj) {
  joiner* j = vj;
  void* comms[JMG_MP_MAX_LOCAL] = {NULL};
  int r = j->grouped ? j->api->group_start() : 0;
  for (int k = 0; k < j->count && r == 0; k++)
    r = j->api->comm_init_rank(&comms[k], j->nranks, j->id, j->ranks[k], j->ordinals[k]);
  if (j->grouped) { /* a group once started must be ended, even after an error */
    int r2 = j->api->group_end();
    if (r == 0) r = r2;
  }
  pthread_mutex_lock(&j->mu);
  j->done = 1;
  j->result = r;
  memcpy(j->comms, comms, sizeof comms);
  int abandoned = j->abandoned;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  if (abandoned) { /* the ranks gave up on us: nobody else will free these */
    abort_all(j->api, comms, j->count);
    joiner_free(j);
  }
  return NULL;
}

/* 0 and comms[], an NCCL code (> 0), or -1 on timeout / -2 on no thread. */
static int join_with_timeout(jmg_mp_comm* const* cs, int count, int grouped,
                             const unsigned char* id, void** comms) {
  joiner* j = calloc(1, sizeof *j);
  if (j == NULL) return -2;
  j->api = cs[0]->api;
  memcpy(j->id, id, JMG_MP_ID_BYTES);
  j->nranks = cs[0]->nranks;
  j->count = count;
  j->grouped = grouped;
  for (int k = 0; k < count; k++) {
    j->ranks[k] = cs[k]->rank;
    j->ordinals[k] = cs[k]->ordinal;
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&j->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&j->mu, NULL);
  pthread_t t;
  if (pthread_create(&t, NULL, join_main, j) != 0) {
    joiner_free(j);
    return -2;
  }
  pthread_detach(t);
  struct timespec at = jmg_clock_at(jmg_clock_now() + cs[0]->timeout_s);
  pthread_mutex_lock(&j->mu);
  while (!j->done)
    if (pthread_cond_timedwait(&j->cv, &j->mu, &at) != 0 && !j->done) break;
  if (!j->done) {
    j->abandoned = 1;
    pthread_mutex_unlock(&j->mu);
    return -1;
  }
  int r = j->result;
  memcpy(comms, j->comms, sizeof j->comms);
  pthread_mutex_unlock(&j->mu);
  joiner_free(j);
  if (r != 0) abort_all(cs[0]->api, comms, count); /* a failed group may leave some */
  return r;
}

static void comm_init(jmg_mp_comm* c, const jmg_mp_api* api, const char* tag, int nranks,
                      int rank, int ordinal, double timeout_s) {
  memset(c, 0, sizeof *c);
  c->api = api;
  c->nranks = nranks;
  c->rank = rank;
  c->ordinal = ordinal;
  c->timeout_s = timeout_s > 0 ? timeout_s : 180.0;
  c->grace_s = 10.0;
  c->on_stuck = jmg_mp_comm_stuck_exit;
  snprintf(c->tag, sizeof c->tag, "%s", tag ? tag : "?");
  pthread_mutex_init(&c->mu, NULL);
  snprintf(c->lost, sizeof c->lost, "not joined");
}

static int check_version(jmg_mp_comm* c, char* err) {
  int version = 0, r = c->api->get_version(&version);
  if (r != 0) {
    jmg_mp_comm_errorf(c, err, "ncclGetVersion failed: %s", nccl_str(c, r));
    return JMG_MP_ENCCL;
  }
  if (version < JMG_MP_NCCL_MIN_VERSION) {
    jmg_mp_comm_errorf(c, err,
                       "the NCCL loaded in this process is %d.%d.%d; cuSOLVERMp 0.9.1 needs "
                       ">= 2.29.2 (pip install -U nvidia-nccl-cu13, and load JAX before jaxmg)",
                       version / 10000, version / 100 % 100, version % 100);
    return JMG_MP_EVERSION;
  }
  return JMG_MP_OK;
}

int jmg_mp_comm_open_group(jmg_mp_comm* const* cs, int count, const jmg_mp_api* api,
                           const char* tag, const unsigned char id[JMG_MP_ID_BYTES], int nranks,
                           const int* ranks, const int* ordinals, double timeout_s, char* err) {
  if (count < 1 || count > JMG_MP_MAX_LOCAL) {
    snprintf(err, JMG_MP_ERRLEN, "jaxmg: a process joins 1 to %d ranks at once, not %d",
             JMG_MP_MAX_LOCAL, count);
    return JMG_MP_EINVAL;
  }
  for (int k = 0; k < count; k++)
    comm_init(cs[k], api, tag, nranks, ranks[k], ordinals[k], timeout_s);
  char local[112] = ""; /* " (grouped) of local ranks 0,1,..." for several */
  for (int k = 0, at = 0; count > 1 && k < count && at < (int)sizeof local - 12; k++)
    at += snprintf(local + at, sizeof local - (size_t)at, "%s%d",
                   k ? "," : " (grouped) of local ranks ", ranks[k]);
  for (int k = 0; k < count; k++)
    if (nranks < 1 || ranks[k] < 0 || ranks[k] >= nranks) {
      jmg_mp_comm_errorf(cs[k], err, "rank outside the device set");
      return JMG_MP_EINVAL;
    }
  int rc = check_version(cs[0], err);
  if (rc) return rc;
  for (int k = 0; k < count; k++)
    if (jmg_mp_watch_start(&cs[k]->watch) != 0) {
      jmg_mp_comm_errorf(cs[k], err, "cannot start the watchdog thread");
      return JMG_MP_ENOMEM;
    }
  void* comms[JMG_MP_MAX_LOCAL] = {NULL};
  int r = join_with_timeout(cs, count, count > 1, id, comms);
  if (r == -1) {
    jmg_mp_comm_errorf(cs[0], err,
                       "ncclCommInitRank%s did not complete within %g s "
                       "(JAXMG_TIMEOUT_S): a peer process died or never joined",
                       local, cs[0]->timeout_s);
    return JMG_MP_ETIMEOUT;
  }
  if (r == -2) {
    jmg_mp_comm_errorf(cs[0], err, "cannot start a thread for ncclCommInitRank");
    return JMG_MP_ENOMEM;
  }
  if (r != 0) {
    jmg_mp_comm_errorf(cs[0], err, "ncclCommInitRank%s failed: %s", local,
                       nccl_str(cs[0], r));
    return JMG_MP_ENCCL;
  }
  for (int k = 0; k < count; k++) {
    cs[k]->nccl = comms[k];
    cs[k]->lost[0] = '\0';
  }
  return JMG_MP_OK;
}

int jmg_mp_comm_open(jmg_mp_comm* c, const jmg_mp_api* api, const char* tag,
                     const unsigned char id[JMG_MP_ID_BYTES], int nranks, int rank,
                     int ordinal, double timeout_s, char* err) {
  jmg_mp_comm* cs[1] = {c};
  return jmg_mp_comm_open_group(cs, 1, api, tag, id, nranks, &rank, &ordinal, timeout_s, err);
}

void jmg_mp_comm_close(jmg_mp_comm* c) {
  jmg_mp_watch_stop(&c->watch);
  pthread_mutex_lock(&c->mu);
  if (c->nccl) {
    if (c->lost[0])
      c->api->comm_abort(c->nccl);
    else
      c->api->comm_destroy(c->nccl);
    c->nccl = NULL;
  }
  pthread_mutex_unlock(&c->mu);
  pthread_mutex_destroy(&c->mu);
}

/* ------------------------------------------------------------------------ */
/* Guarding. */

static void abort_comm(void* vc) {
  jmg_mp_comm* c = vc;
  pthread_mutex_lock(&c->mu);
  if (c->nccl) c->api->comm_abort(c->nccl);
  /* The handle is dead after an abort; close() must not touch it again. */
  c->nccl = NULL;
  pthread_mutex_unlock(&c->mu);
}

void jmg_mp_comm_stuck_exit(jmg_mp_comm* c) {
  char err[JMG_MP_ERRLEN];
  jmg_mp_comm_errorf(c, err,
                     "%s is still blocked %g s after its communicator was aborted (a peer died "
                     "or never arrived; cuSOLVERMp's own communicators did not see the abort)",
                     c->what ? c->what : "a collective", c->grace_s);
  const char* keep = getenv("JAXMG_MP_STUCK_EXIT");
  int leave = !(keep && keep[0] == '0');
  fprintf(stderr, "%s; %s\n", err,
          leave ? "ending this process so that the job fails instead of hanging "
                  "(JAXMG_MP_STUCK_EXIT=0 keeps waiting)"
                : "still waiting (JAXMG_MP_STUCK_EXIT=0)");
  fflush(stderr);
  if (leave) _exit(75);
}

static void on_stuck(void* vc) {
  jmg_mp_comm* c = vc;
  if (c->on_stuck) c->on_stuck(c);
}

static void lose(jmg_mp_comm* c, const char* why) {
  snprintf(c->lost, sizeof c->lost, "%s", why);
}

int jmg_mp_comm_guard(jmg_mp_comm* c, const char* what, jmg_mp_body body, void* arg,
                      char* err) {
  if (c->lost[0] || c->nccl == NULL) {
    jmg_mp_comm_errorf(c, err,
                       "%s: the communicator of this device set is lost (%s); jaxmg builds a "
                       "new one on the next call",
                       what, c->lost[0] ? c->lost : "closed");
    return JMG_MP_ELOST;
  }
  char detail[JMG_MP_ERRLEN] = "";
  c->what = what;
  jmg_mp_watch_arm(&c->watch, c->timeout_s, abort_comm, on_stuck, c->grace_s, c);
  int rc = body(arg, detail);
  int fired = jmg_mp_watch_disarm(&c->watch);
  if (fired) {
    jmg_mp_comm_errorf(c, err,
                       "%s did not finish within %g s (JAXMG_TIMEOUT_S): a peer died or never "
                       "arrived; the communicator was aborted",
                       what, c->timeout_s);
    lose(c, "aborted after a timeout");
    return JMG_MP_ETIMEOUT;
  }
  if (rc != JMG_MP_OK) {
    jmg_mp_comm_errorf(c, err, "%s: %s", what, detail[0] ? detail : "failed");
    if (rc != JMG_MP_EINVAL) {
      lose(c, "an earlier call failed");
      abort_comm(c); /* peers blocked with us time out on their own watchdogs */
    }
  }
  return rc;
}
