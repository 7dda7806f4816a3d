/* mp_exports.c - what libjaxmg_mp.so exports: a small C API for the Python
 * layer (ctypes: unique ids, opening and closing a rank of a device set)
 * and one FFI handler per op.
 *
 * Sets are kept in a registry keyed by (tag, device ordinal): the Python
 * layer opens each local rank once per device set (jmg_mp_open, one Python
 * thread per local device when a process drives several, since every rank's
 * ncclCommInitRank blocks until all have joined), and the FFI call of a
 * device finds its rank by the call's `tag` attribute and its ordinal.
 *
 * FFI interface, per device (rets alias args a -> a, b -> b):
 *   args (a[, b])    rets (a[, b], outs..., status int32[])
 *   attributes: tag (string), m, n, nrhs, tile, kind, mesh_a, mesh_b, jobz
 * with the outs of each op as listed in mp_ops.c.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "engines/mp/mp_engine.h"
#include "ffi/seam.h"

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

/* Joins rank `rank` of the device set `tag` on device `ordinal`; blocks
 * until all ranks have joined or timeout_s passes. 0 or JMG_MP_*, with a
 * message in err (JMG_MP_ERRLEN bytes). */
JMG_EXPORT int jmg_mp_open(const char* tag, const unsigned char* id, int nranks, int rank,
                           int ordinal, int p, int q, double timeout_s, char* err) {
  if (tag == NULL || strlen(tag) >= sizeof(((entry*)0)->tag)) {
    snprintf(err, JMG_MP_ERRLEN, "jaxmg: a device set tag has at most 63 characters");
    return JMG_MP_EINVAL;
  }
  pthread_mutex_lock(&reg_mu);
  int exists = find(tag, strlen(tag), ordinal) != NULL;
  pthread_mutex_unlock(&reg_mu);
  if (exists) return JMG_MP_OK;
  entry* e = calloc(1, sizeof *e);
  if (e == NULL) return JMG_MP_ENOMEM;
  snprintf(e->tag, sizeof e->tag, "%s", tag);
  e->ordinal = ordinal;
  int rc = jmg_mp_set_open(&e->set, tag, id, nranks, rank, ordinal, p, q, timeout_s, err);
  if (rc != JMG_MP_OK) {
    jmg_mp_set_close(&e->set);
    free(e);
    return rc;
  }
  pthread_mutex_init(&e->busy, NULL);
  pthread_mutex_lock(&reg_mu);
  e->next = reg_head;
  reg_head = e;
  pthread_mutex_unlock(&reg_mu);
  return JMG_MP_OK;
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
/* FFI handlers. */

typedef struct ffi_row {
  int has_b, nouts;
} ffi_row;

static const ffi_row ffi_rows[JMG_MP_NOPS] = {
    [JMG_MP_POTRS] = {1, 1},    [JMG_MP_POTRI] = {0, 0}, [JMG_MP_SYEVD] = {0, 1},
    [JMG_MP_LU_SOLVE] = {1, 0}, [JMG_MP_LSTSQ] = {1, 0}, [JMG_MP_QR] = {0, 1},
    [JMG_MP_GESVD] = {0, 2},    [JMG_MP_POLAR] = {0, 1},
};

static int dtype_of(XLA_FFI_DataType t, jmg_dtype* out) {
  switch (t) {
    case XLA_FFI_DataType_F32: *out = JMG_F32; return 0;
    case XLA_FFI_DataType_F64: *out = JMG_F64; return 0;
    case XLA_FFI_DataType_C64: *out = JMG_C64; return 0;
    case XLA_FFI_DataType_C128: *out = JMG_C128; return 0;
    default: return -1;
  }
}

static int attr(const XLA_FFI_CallFrame* cf, const char* name, int64_t dflt, int64_t* out) {
  *out = dflt;
  return jmg_ffi_attr_int(cf, name, out) == 0 || dflt >= 0 ? 0 : -1;
}

static XLA_FFI_Error* decode(XLA_FFI_CallFrame* cf, jmg_mp_op op, jmg_mp_job* j,
                             const char** tag, size_t* tlen) {
  memset(j, 0, sizeof *j);
  j->op = op;
  const ffi_row* fr = &ffi_rows[op];
  int64_t v[8];
  static const char* names[8] = {"m", "n", "nrhs", "tile", "kind", "mesh_a", "mesh_b", "jobz"};
  static const int64_t dflt[8] = {-1, -1, 0, -1, -1, -1, -1, 0};
  for (int k = 0; k < 8; k++)
    if (attr(cf, names[k], dflt[k], &v[k]))
      return jmg_ffi_error(cf, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                           "jaxmg: the mp %s call lacks attribute %s", jmg_mp_ops[op].name,
                           names[k]);
  if (jmg_ffi_attr_str(cf, "tag", tag, tlen) != 0)
    return jmg_ffi_error(cf, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                         "jaxmg: the mp call lacks its device set tag");
  j->m = v[0], j->n = v[1], j->nrhs = v[2], j->tile = v[3];
  j->kind = (int)v[4], j->mesh_a = (int)v[5], j->mesh_b = (int)v[6], j->jobz = (int)v[7];
  XLA_FFI_Buffer* a = jmg_ffi_ret(cf, 0);
  XLA_FFI_Buffer* b = fr->has_b ? jmg_ffi_ret(cf, 1) : NULL;
  int first_out = 1 + fr->has_b;
  XLA_FFI_Buffer* st = jmg_ffi_ret(cf, first_out + fr->nouts);
  if (a == NULL || st == NULL || (fr->has_b && b == NULL) || dtype_of(a->dtype, &j->dtype))
    return jmg_ffi_error(cf, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                         "jaxmg: the mp %s call has the wrong buffers or dtype",
                         jmg_mp_ops[op].name);
  j->a = a->data;
  j->b = b ? b->data : NULL;
  for (int k = 0; k < fr->nouts; k++) {
    XLA_FFI_Buffer* o = jmg_ffi_ret(cf, first_out + k);
    j->out[k] = o ? o->data : NULL;
  }
  j->status = st->data;
  void* stream = NULL;
  XLA_FFI_Error* e = jmg_ffi_stream(cf, &stream);
  j->stream = stream;
  return e;
}

static XLA_FFI_Error* handle(XLA_FFI_CallFrame* cf, jmg_mp_op op) {
  if (jmg_ffi_answer_metadata(cf, 0)) return NULL;
  jmg_mp_job j;
  const char* tag;
  size_t tlen;
  XLA_FFI_Error* e = decode(cf, op, &j, &tag, &tlen);
  if (e) return e;
  int32_t ordinal = -1;
  if ((e = jmg_ffi_device_ordinal(cf, &ordinal))) return e;
  pthread_mutex_lock(&reg_mu);
  entry* en = find(tag, tlen, ordinal);
  pthread_mutex_unlock(&reg_mu);
  if (en == NULL)
    return jmg_ffi_error(cf, XLA_FFI_Error_Code_FAILED_PRECONDITION,
                         "jaxmg: device %d holds no rank of the device set %.*s (call "
                         "jaxmg's mp initialisation first)",
                         ordinal, (int)tlen, tag);
  char err[JMG_MP_ERRLEN] = "";
  int32_t info = 0;
  pthread_mutex_lock(&en->busy);
  int rc = jmg_mp_ops[op].fn(&en->set, &j, &info, err);
  pthread_mutex_unlock(&en->busy);
  if (rc == JMG_MP_OK) return NULL;
  return jmg_ffi_error(cf,
                       rc == JMG_MP_EINVAL ? XLA_FFI_Error_Code_INVALID_ARGUMENT
                       : rc == JMG_MP_ETIMEOUT ? XLA_FFI_Error_Code_DEADLINE_EXCEEDED
                                               : XLA_FFI_Error_Code_INTERNAL,
                       "%s", err);
}

#define HANDLER(name, op) \
  JMG_EXPORT XLA_FFI_Error* jaxmg_mp_##name##_cuda(XLA_FFI_CallFrame* cf) { return handle(cf, op); }
HANDLER(potrs, JMG_MP_POTRS)
HANDLER(potri, JMG_MP_POTRI)
HANDLER(syevd, JMG_MP_SYEVD)
HANDLER(lu_solve, JMG_MP_LU_SOLVE)
HANDLER(least_squares, JMG_MP_LSTSQ)
HANDLER(qr, JMG_MP_QR)
HANDLER(gesvd, JMG_MP_GESVD)
HANDLER(polar, JMG_MP_POLAR)
