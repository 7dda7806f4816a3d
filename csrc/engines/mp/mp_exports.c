/* mp_exports.c - what libjaxmg_mp.so exports: a small C API for the Python
 * layer (ctypes: unique ids, opening and closing a rank of a device set)
 * and one FFI handler per op.
 *
 * Sets are kept in a registry keyed by (tag, device ordinal): the Python
 * layer opens each local rank once per device set, and the FFI call of a
 * device finds its rank by the call's `tag` attribute and its ordinal. A
 * process that drives several devices opens its ranks either from one
 * Python thread each (jmg_mp_open; every rank's ncclCommInitRank blocks
 * until all have joined) or all at once from one thread in an NCCL group
 * (jmg_mp_open_local, JAXMG_MP_INIT=group).
 *
 * The FFI handlers are the op table's (ops/op_table.h: one per row the
 * engine runs, jaxmg_mp_<op>_cuda), run by the ops layer's collective mode
 * (ops/handle.c) with this engine: its join finds the rank's set from the
 * call's `tag` attribute and the device, its agree is one all-reduce over
 * the set's communicator, guarded like every collective of the engine.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "engines/cuda/gpu_party.h"
#include "engines/mp/mp_engine.h"
#include "ffi/seam.h"
#include "ops/op_table.h"
#include "ops/ops.h"

#define JMG_EXPORT __attribute__((visibility("default")))

typedef struct entry {
  char tag[64];
  int ordinal;
  jmg_mp_set set;
  pthread_mutex_t busy; /* one call at a time per rank */
  struct entry* next;
} entry;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static entry* reg_head;

static entry* find(const char* tag, size_t len, int ordinal) {
  for (entry* e = reg_head; e; e = e->next)
    if (e->ordinal == ordinal && strlen(e->tag) == len && memcmp(e->tag, tag, len) == 0)
      return e;
  return NULL;
}

JMG_EXPORT int jmg_mp_nccl_version(void) {
  int v = 0;
  return jmg_mp_nccl_api.get_version(&v) == 0 ? v : -1;
}

JMG_EXPORT int jmg_mp_unique_id(unsigned char out[JMG_MP_ID_BYTES]) {
  return jmg_mp_nccl_api.get_unique_id(out);
}

static void add(entry* e) {
  pthread_mutex_init(&e->busy, NULL);
  pthread_mutex_lock(&reg_mu);
  e->next = reg_head;
  reg_head = e;
  pthread_mutex_unlock(&reg_mu);
}

/* Joins `count` ranks (ranks[k] on device ordinals[k]) of the device set
 * `tag`: one rank alone, or several from this one thread in an NCCL group;
 * blocks until all ranks of the set have joined or timeout_s passes. 0 or
 * JMG_MP_*, with a message in err (JMG_MP_ERRLEN bytes). Ranks already open
 * are an error: close the set first. */
JMG_EXPORT int jmg_mp_open_local(const char* tag, const unsigned char* id, int nranks, int count,
                                 const int* ranks, const int* ordinals, int p, int q,
                                 double timeout_s, char* err) {
  if (tag == NULL || strlen(tag) >= sizeof(((entry*)0)->tag) || count < 1 ||
      count > JMG_MP_MAX_LOCAL) {
    snprintf(err, JMG_MP_ERRLEN, "jaxmg: bad device set tag or rank count");
    return JMG_MP_EINVAL;
  }
  entry* es[JMG_MP_MAX_LOCAL] = {NULL};
  jmg_mp_set* sets[JMG_MP_MAX_LOCAL];
  int rc = JMG_MP_OK;
  pthread_mutex_lock(&reg_mu);
  for (int k = 0; k < count; k++)
    if (find(tag, strlen(tag), ordinals[k])) rc = JMG_MP_EINVAL;
  pthread_mutex_unlock(&reg_mu);
  if (rc) {
    snprintf(err, JMG_MP_ERRLEN, "jaxmg: a rank of device set %s is already open here", tag);
    return rc;
  }
  for (int k = 0; k < count && !rc; k++) {
    es[k] = calloc(1, sizeof *es[k]);
    if (es[k] == NULL) rc = JMG_MP_ENOMEM;
    else {
      snprintf(es[k]->tag, sizeof es[k]->tag, "%s", tag);
      es[k]->ordinal = ordinals[k];
      sets[k] = &es[k]->set;
    }
  }
  if (!rc) rc = jmg_mp_sets_open(sets, count, tag, id, nranks, ranks, ordinals, p, q, timeout_s, err);
  for (int k = 0; k < count; k++) {
    if (es[k] == NULL) continue;
    if (rc) {
      jmg_mp_set_close(&es[k]->set);
      free(es[k]);
    } else {
      add(es[k]);
    }
  }
  return rc;
}

/* One rank: jmg_mp_open_local with count 1 (already open: nothing to do). */
JMG_EXPORT int jmg_mp_open(const char* tag, const unsigned char* id, int nranks, int rank,
                           int ordinal, int p, int q, double timeout_s, char* err) {
  if (tag == NULL) return JMG_MP_EINVAL;
  pthread_mutex_lock(&reg_mu);
  int exists = find(tag, strlen(tag), ordinal) != NULL;
  pthread_mutex_unlock(&reg_mu);
  if (exists) return JMG_MP_OK;
  return jmg_mp_open_local(tag, id, nranks, 1, &rank, &ordinal, p, q, timeout_s, err);
}

/* Closes a rank (the solver's teardown is collective: every rank of the
 * set closes together). Returns 0, or -1 if it was not open. */
JMG_EXPORT int jmg_mp_close(const char* tag, int ordinal) {
  pthread_mutex_lock(&reg_mu);
  entry** p = &reg_head;
  while (*p && !((*p)->ordinal == ordinal && strcmp((*p)->tag, tag) == 0)) p = &(*p)->next;
  entry* e = *p;
  if (e) *p = e->next;
  pthread_mutex_unlock(&reg_mu);
  if (e == NULL) return -1;
  pthread_mutex_lock(&e->busy);
  jmg_mp_set_close(&e->set);
  pthread_mutex_unlock(&e->busy);
  pthread_mutex_destroy(&e->busy);
  free(e);
  return 0;
}

/* Whether the rank's communicator was lost (the Python layer then closes
 * the set and bootstraps a new one). */
JMG_EXPORT int jmg_mp_lost(const char* tag, int ordinal) {
  pthread_mutex_lock(&reg_mu);
  entry* e = find(tag, strlen(tag), ordinal);
  int lost = e == NULL || e->set.comm.lost[0] != '\0';
  pthread_mutex_unlock(&reg_mu);
  return lost;
}

/* ------------------------------------------------------------------------ */
/* The engine. */

static int say(char* err, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int say(char* err, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, JMG_ERRLEN, fmt, ap);
  va_end(ap);
  return -1;
}

/* Waits for the rank's previous call to end, at most timeout_s (a call
 * that never ends would otherwise hold every later one for ever). */
static int lock_within(pthread_mutex_t* mu, double timeout_s) {
  struct timespec at;
  clock_gettime(CLOCK_REALTIME, &at);
  double t = (double)at.tv_sec + 1e-9 * (double)at.tv_nsec + timeout_s;
  at.tv_sec = (time_t)t;
  at.tv_nsec = (long)((t - (double)at.tv_sec) * 1e9);
  return pthread_mutex_timedlock(mu, &at);
}

static int mp_join(const XLA_FFI_CallFrame* cf, const jmg_party* me, double timeout_s, void** ctx,
                   char* err) {
  const char* tag = NULL;
  size_t tlen = 0;
  if (jmg_ffi_attr_str(cf, "tag", &tag, &tlen))
    return say(err, "the call names no device set (its `tag` attribute)");
  pthread_mutex_lock(&reg_mu);
  entry* en = find(tag, tlen, me->ordinal);
  pthread_mutex_unlock(&reg_mu);
  if (en == NULL)
    return say(err, "device %d holds no rank of the device set %.*s (call jaxmg's "
                            "mp initialisation first)", (int)me->ordinal, (int)tlen, tag);
  if (en->set.comm.rank != me->rank)
    return say(err, "device %d is rank %d of the set %.*s, but the call says rank %d",
                            (int)me->ordinal, en->set.comm.rank, (int)tlen, tag, (int)me->rank);
  if (lock_within(&en->busy, timeout_s))
    return say(err, "device %d: the set's previous call did not end within %g s",
                            (int)me->ordinal, timeout_s);
  *ctx = en;
  return 0;
}

static void mp_leave(void* ctx) {
  if (ctx) pthread_mutex_unlock(&((entry*)ctx)->busy);
}

jmg_mp_set* jmg_mp_job_set(const jmg_job* job) { return &((entry*)job->ctx)->set; }

/* One all-reduce (MAX) of (print, ~print, failing rank + 1, non-finite
 * flag): the same print everywhere iff both maxima are this rank's own. */
typedef struct agreement {
  jmg_mp_set* set;
  cudaStream_t stream;
  uint64_t v[4];
} agreement;

static int agree_body(void* va, char* err) {
  agreement* a = va;
  int rc = jmg_mp_set_ready(a->set, a->stream, err);
  return rc ? rc : jmg_mp_set_allmax_u64(a->set, a->stream, a->v, 4, err);
}

static int mp_agree(void* ctx, const jmg_party* me, uint64_t print, const char* mine,
                    uint64_t* flag, char* err) {
  jmg_mp_set* s = &((entry*)ctx)->set;
  agreement a = {s, (cudaStream_t)me->stream,
                 {print, ~print, mine ? (uint64_t)me->rank + 1 : 0, *flag}};
  char merr[JMG_MP_ERRLEN] = "";
  if (jmg_mp_comm_guard(&s->comm, "agree", agree_body, &a, merr)) return say(err, "%s", merr);
  *flag = a.v[3];
  if (a.v[2])
    return say(err, "rank %d failed (its own error says why)", (int)a.v[2] - 1);
  if (a.v[0] != print || a.v[1] != ~print)
    return say(err, "the ranks make different calls (op, shapes, dtype, tile, "
                            "attributes or call site differ; %s)", jmg_op_name(me->op));
  return 0;
}

static const jmg_collective mp_collective = {mp_join, mp_agree, mp_leave};

#define MP_OP(name, op) [op] = {NULL, jmg_mp_run_##name},

const jmg_engine jmg_cusolvermp_engine = {
    .name = "cusolvermp",
    .collective = &mp_collective,
    .ops = {JMG_MP_OPS(MP_OP)},
    .enter = gpu_party_enter,
    .copy_in = gpu_party_copy_in,
    .fill_nan = gpu_party_fill_nan,
    .finish = gpu_party_finish,
};

#define MP_HANDLER(name, op)                                              \
  JMG_EXPORT XLA_FFI_Error* jaxmg_mp_##name##_cuda(XLA_FFI_CallFrame* cf) { \
    return jmg_op_handle(cf, op, &jmg_cusolvermp_engine);                 \
  }
JMG_OP_LIST(MP_HANDLER)
