/* mp_comm.c - joining, guarding and losing a communicator (mp_comm.h),
 * against the jmg_mp_api table only. */
#include "engines/mp/mp_comm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
/* Joining, on a helper thread that can be abandoned. */

typedef struct joiner {
  const jmg_mp_api* api;
  unsigned char id[JMG_MP_ID_BYTES];
  int nranks, rank, ordinal;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, abandoned, result;
  void* comm;
} joiner;

static void joiner_free(joiner* j) {
  pthread_mutex_destroy(&j->mu);
  pthread_cond_destroy(&j->cv);
  free(j);
}

static void* join_main(void* vj) {
  joiner* j = vj;
  void* comm = NULL;
  int r = j->api->comm_init_rank(&comm, j->nranks, j->id, j->rank, j->ordinal);
  pthread_mutex_lock(&j->mu);
  j->done = 1;
  j->result = r;
  j->comm = comm;
  int abandoned = j->abandoned;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  if (abandoned) { /* the rank gave up on us: nobody else will free these */
    if (r == 0 && comm) j->api->comm_abort(comm);
    joiner_free(j);
  }
  return NULL;
}

/* 0 and *comm, an NCCL code (> 0), or -1 on timeout / -2 on no thread. */
static int join_with_timeout(const jmg_mp_comm* c, const unsigned char* id, void** comm) {
  joiner* j = calloc(1, sizeof *j);
  if (j == NULL) return -2;
  j->api = c->api;
  memcpy(j->id, id, JMG_MP_ID_BYTES);
  j->nranks = c->nranks;
  j->rank = c->rank;
  j->ordinal = c->ordinal;
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
  struct timespec at = jmg_clock_at(jmg_clock_now() + c->timeout_s);
  pthread_mutex_lock(&j->mu);
  while (!j->done)
    if (pthread_cond_timedwait(&j->cv, &j->mu, &at) != 0 && !j->done) break;
  if (!j->done) {
    j->abandoned = 1;
    pthread_mutex_unlock(&j->mu);
    return -1;
  }
  int r = j->result;
  *comm = j->comm;
  pthread_mutex_unlock(&j->mu);
  joiner_free(j);
  return r;
}

int jmg_mp_comm_open(jmg_mp_comm* c, const jmg_mp_api* api, const char* tag,
                     const unsigned char id[JMG_MP_ID_BYTES], int nranks, int rank,
                     int ordinal, double timeout_s, char* err) {
  memset(c, 0, sizeof *c);
  c->api = api;
  c->nranks = nranks;
  c->rank = rank;
  c->ordinal = ordinal;
  c->timeout_s = timeout_s > 0 ? timeout_s : 180.0;
  snprintf(c->tag, sizeof c->tag, "%s", tag ? tag : "?");
  pthread_mutex_init(&c->mu, NULL);
  snprintf(c->lost, sizeof c->lost, "not joined");
  if (nranks < 1 || rank < 0 || rank >= nranks) {
    jmg_mp_comm_errorf(c, err, "rank outside the device set");
    return JMG_MP_EINVAL;
  }
  int version = 0, r = api->get_version(&version);
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
  if (jmg_mp_watch_start(&c->watch) != 0) {
    jmg_mp_comm_errorf(c, err, "cannot start the watchdog thread");
    return JMG_MP_ENOMEM;
  }
  void* comm = NULL;
  r = join_with_timeout(c, id, &comm);
  if (r == -1) {
    jmg_mp_comm_errorf(c, err,
                       "ncclCommInitRank did not complete within %g s (JAXMG_TIMEOUT_S): a "
                       "peer process died or never joined",
                       c->timeout_s);
    return JMG_MP_ETIMEOUT;
  }
  if (r != 0) {
    if (r == -2)
      jmg_mp_comm_errorf(c, err, "cannot start a thread for ncclCommInitRank");
    else
      jmg_mp_comm_errorf(c, err, "ncclCommInitRank failed: %s", nccl_str(c, r));
    return r == -2 ? JMG_MP_ENOMEM : JMG_MP_ENCCL;
  }
  c->nccl = comm;
  c->lost[0] = '\0';
  return JMG_MP_OK;
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
  jmg_mp_watch_arm(&c->watch, c->timeout_s, abort_comm, c);
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
