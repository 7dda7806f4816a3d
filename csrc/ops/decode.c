/* decode.c - one device's FFI call frame, checked against its op's row
 * (op_table.h) and read into a jmg_party. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ffi/seam.h"
#include "ops/call.h"

/* call.h: a message into err (JMG_ERRLEN), and -1. */
int jmg_call_fail(char* err, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, JMG_ERRLEN, fmt, ap);
  va_end(ap);
  return -1;
}

static int to_dtype(XLA_FFI_DataType t, jmg_dtype* out) {
  switch (t) {
    case XLA_FFI_DataType_F32: *out = JMG_F32; return 0;
    case XLA_FFI_DataType_F64: *out = JMG_F64; return 0;
    case XLA_FFI_DataType_C64: *out = JMG_C64; return 0;
    case XLA_FFI_DataType_C128: *out = JMG_C128; return 0;
    default: return -1;
  }
}

static XLA_FFI_DataType ffi_type(char type, XLA_FFI_DataType a) {
  if (type == 'I') return XLA_FFI_DataType_S32;
  if (type == 'R' && a == XLA_FFI_DataType_C64) return XLA_FFI_DataType_F32;
  if (type == 'R' && a == XLA_FFI_DataType_C128) return XLA_FFI_DataType_F64;
  return a;
}

static const jmg_buf_rule* where_rule(const jmg_op_row* row, int64_t* index) {
  for (int i = 0; i < row->nargs; i++)
    if (row->args[i].slot == JMG_SLOT_WHERE) {
      *index = i;
      return &row->args[i];
    }
  return NULL;
}

int jmg_decode_identity(jmg_call* c) {
  const jmg_op_row* row = c->row;
  const XLA_FFI_CallFrame* cf = c->cf;
  int64_t wi = -1;
  where_rule(row, &wi);
  const XLA_FFI_Buffer* where = wi >= 0 ? jmg_ffi_arg(cf, wi) : NULL;
  /* A batched call (leading dimensions on every buffer) repeats `where`
   * once per element (engine.h: JMG_WHERE_LEN); the first is the party's. */
  if (cf->args.size != row->nargs || cf->rets.size != row->nrets || !where ||
      where->dtype != XLA_FFI_DataType_S32 || where->rank < 1 ||
      where->dims[where->rank - 1] != JMG_WHERE_LEN ||
      jmg_ffi_attr_str(cf, "site", &c->site, &c->site_len) ||
      jmg_ffi_attr_int(cf, "nparties", &c->nparties) || c->nparties < 1 ||
      c->nparties > JMG_MAX_DEVICES)
    return jmg_call_fail(c->err,
                "malformed %s call: %lld args, %lld results (expected %d, %d), or a bad "
                "where/site/nparties (at most %d devices); without them it cannot find its "
                "peers, which will time out",
                row->name, (long long)cf->args.size, (long long)cf->rets.size, row->nargs,
                row->nrets, JMG_MAX_DEVICES);
  c->where_in = where->data;
  c->where_count = jmg_ffi_numel(where);
  c->me.site = jmg_meet_hash(c->site, c->site_len);
  return 0;
}

/* The batch: A's dimensions before its last two (jax.vmap of the call,
 * vmap_method "broadcast_all", puts the same ones on every buffer). */
static int batch_of(jmg_call* c, jmg_party* p, const XLA_FFI_Buffer* a, char* err) {
  p->nbatch = (int32_t)(a->rank - 2);
  if (p->nbatch > JMG_MAX_BATCH_DIMS)
    return jmg_call_fail(err, "%s: %d batch dimensions; at most %d", c->row->name, (int)p->nbatch,
                         JMG_MAX_BATCH_DIMS);
  p->batch = 1;
  for (int d = 0; d < p->nbatch; d++) {
    if (a->dims[d] > 0 && p->batch > INT64_MAX / a->dims[d])
      return jmg_call_fail(err, "%s: the batch size overflows", c->row->name);
    p->batch_dims[d] = a->dims[d];
    p->batch *= a->dims[d];
  }
  return 0;
}

/* The problem's sizes, from A and (where the row has one) the K of b. */
static int sizes(jmg_call* c, jmg_party* p, const XLA_FFI_Buffer* a, char* err) {
  const jmg_op_row* row = c->row;
  if (!a || a->rank < 2) return jmg_call_fail(err, "%s: A must be a matrix", row->name);
  jmg_dtype dt;
  if (to_dtype(a->dtype, &dt))
    return jmg_call_fail(err, "%s: unsupported dtype %s", row->name, jmg_ffi_dtype_name(a->dtype));
  if (batch_of(c, p, a, err)) return -1;
  /* Optional: A's columns split too (2-D blocks, collective engines). */
  int64_t split = 1;
  jmg_ffi_attr_int(c->cf, "col_split", &split);
  if (split < 1 || c->nparties % split)
    return jmg_call_fail(err, "%s: col_split = %lld does not divide %lld parties", row->name,
                         (long long)split, (long long)c->nparties);
  p->col_split = (int32_t)split;
  p->dtype = dt;
  p->nloc = a->dims[p->nbatch];
  p->n = a->dims[p->nbatch + 1] * split;
  p->mpad = c->nparties / split * p->nloc;
  p->m = p->mpad;
  p->nrhs = 0;
  for (int i = 0; i < row->nargs; i++) {
    const char* k = strchr(row->args[i].dims, 'K');
    const XLA_FFI_Buffer* b = jmg_ffi_arg(c->cf, i);
    int64_t rank = (int64_t)strlen(row->args[i].dims) + p->nbatch;
    if (!k) continue;
    if (!b || b->rank != rank)
      return jmg_call_fail(err, "%s: %s must have rank %lld", row->name, row->args[i].name,
                           (long long)rank);
    p->nrhs = b->dims[p->nbatch + (k - row->args[i].dims)];
  }
  return 0;
}

/* A's rows: the mrows attribute where the row has one. */
static int shape_rule(jmg_call* c, jmg_party* p, char* err) {
  const jmg_op_row* row = c->row;
  for (int k = 0; k < JMG_MAX_ATTRS && row->attrs[k]; k++) {
    if (strcmp(row->attrs[k], "mrows")) continue;
    if (p->attr[k] < 1 || p->attr[k] > p->mpad)
      return jmg_call_fail(err, "%s: mrows = %lld is not in [1, %lld]", row->name, (long long)p->attr[k],
                  (long long)p->mpad);
    p->m = p->attr[k];
  }
  /* A square A (n x n) has its rows at the head of the shards (engine.h):
   * ceil(n / row shards) of each shard's nloc (2-D blocks: the shards along
   * A's rows are nparties / col_split). */
  if (row->shape == JMG_SHAPE_SQUARE) {
    int64_t shards = c->nparties / p->col_split;
    int64_t need = p->n < 1 ? 0 : (p->n - 1) / shards + 1;
    p->m = p->n;
    if (p->n < 1 || need > p->nloc)
      return jmg_call_fail(err, "%s: A of %lld columns needs %lld rows in each of %lld shards, "
                           "which hold %lld (A must be square)", row->name, (long long)p->n,
                           (long long)need, (long long)shards, (long long)p->nloc);
  }
  if (row->shape == JMG_SHAPE_TALL && p->m < p->n)
    return jmg_call_fail(err, "%s: A is %lld x %lld; it must have at least as many rows as columns",
                row->name, (long long)p->m, (long long)p->n);
  return 0;
}

static int attributes(jmg_call* c, jmg_party* p, char* err) {
  const jmg_op_row* row = c->row;
  if (jmg_ffi_attr_int(c->cf, "tile", &p->tile) || p->tile < 1)
    return jmg_call_fail(err, "%s: the tile attribute is missing or < 1", row->name);
  for (int k = 0; k < JMG_MAX_ATTRS && row->attrs[k]; k++)
    if (jmg_ffi_attr_int(c->cf, row->attrs[k], &p->attr[k]) || p->attr[k] < 0)
      return jmg_call_fail(err, "%s: the %s attribute is missing or negative", row->name, row->attrs[k]);
  int64_t dispatch = JMG_DISPATCH_AUTO; /* optional: absent means auto */
  jmg_ffi_attr_int(c->cf, "dispatch", &dispatch);
  if (dispatch < JMG_DISPATCH_AUTO || dispatch > JMG_DISPATCH_SINGLE)
    return jmg_call_fail(err, "%s: bad dispatch attribute %lld", row->name, (long long)dispatch);
  p->dispatch = (int32_t)dispatch;
  if (p->nloc % p->tile)
    return jmg_call_fail(err, "%s: shard height %lld is not a multiple of the tile %lld", row->name,
                (long long)p->nloc, (long long)p->tile);
  return 0;
}

/* Checks one buffer against its rule (rank, dims, dtype). */
static int check_buf(const jmg_call* c, const XLA_FFI_Buffer* b, const jmg_buf_rule* r,
                     XLA_FFI_DataType a_type, const char* kind, char* err) {
  const jmg_party* p = &c->me;
  const char* op = c->row->name;
  if (!b) return jmg_call_fail(err, "%s: %s %s is missing", op, kind, r->name);
  XLA_FFI_DataType want = ffi_type(r->type, a_type);
  if (b->dtype != want)
    return jmg_call_fail(err, "%s: %s %s has dtype %s, expected %s", op, kind, r->name,
                jmg_ffi_dtype_name(b->dtype), jmg_ffi_dtype_name(want));
  int64_t nb = p->nbatch, rank = (int64_t)strlen(r->dims) + nb;
  if (b->rank != rank)
    return jmg_call_fail(err, "%s: %s %s has rank %lld, expected %lld", op, kind, r->name,
                (long long)b->rank, (long long)rank);
  for (int64_t d = 0; d < rank; d++) {
    int64_t v = d < nb ? p->batch_dims[d] : jmg_rule_dim(r, (int)(d - nb), p);
    if (b->dims[d] != v)
      return jmg_call_fail(err, "%s: %s %s has %lld in dimension %lld, expected %lld", op, kind, r->name,
                  (long long)b->dims[d], (long long)d, (long long)v);
  }
  return 0;
}

/* Puts a checked buffer where its rule says. */
static void place(jmg_party* p, const jmg_buf_rule* r, XLA_FFI_Buffer* b) {
  if (r->slot >= 0) {
    int64_t numel = jmg_ffi_numel(b);
    size_t es = r->type == 'R' ? jmg_dtype_real_size((jmg_dtype)p->dtype)
                               : jmg_dtype_size((jmg_dtype)p->dtype);
    p->buf[r->slot] = b->data;
    p->buf_bytes[r->slot] = numel * (int64_t)es;
    p->buf_flags[r->slot] |= (uint8_t)(r->flags & (JMG_BUF_IN | JMG_BUF_OUT | JMG_BUF_OWN));
  } else if (r->slot == JMG_SLOT_STATUS) {
    p->status = b->data;
  } else if (r->slot <= JMG_SLOT_SCALAR) {
    p->scalar[JMG_SLOT_SCALAR - r->slot] = b->data;
  }
}

int jmg_decode_problem(jmg_call* c) {
  const jmg_op_row* row = c->row;
  jmg_party* p = &c->me;
  char* err = c->own;
  XLA_FFI_Buffer* a = jmg_ffi_arg(c->cf, 0);
  if (sizes(c, p, a, err) || attributes(c, p, err) || shape_rule(c, p, err)) return -1;
  for (int i = 0; i < row->nargs; i++) {
    const jmg_buf_rule* r = &row->args[i];
    XLA_FFI_Buffer* b = jmg_ffi_arg(c->cf, i);
    if (check_buf(c, b, r, a->dtype, "argument", err)) return -1;
    place(p, r, b);
  }
  for (int i = 0; i < row->nrets; i++) {
    const jmg_buf_rule* r = &row->rets[i];
    XLA_FFI_Buffer* b = jmg_ffi_ret(c->cf, i);
    if (check_buf(c, b, r, a->dtype, "result", err)) return -1;
    /* An op works in place: in the argument's buffer when XLA aliased the
     * result to it, else in the result, into which the engine first copies
     * the argument (XLA on GPUs can leave a result unaliased inside a loop). */
    if (r->alias >= 0 && b->data != jmg_ffi_arg(c->cf, r->alias)->data) {
      const XLA_FFI_Buffer* src = jmg_ffi_arg(c->cf, r->alias);
      c->copies[c->ncopies].dst = b->data;
      c->copies[c->ncopies].src = src->data;
      c->copies[c->ncopies].bytes = jmg_ffi_numel(b) * (int64_t)jmg_dtype_size((jmg_dtype)p->dtype);
      c->ncopies++;
    }
    place(p, r, b);
  }
  if (!p->status) return jmg_call_fail(err, "%s: no status result", row->name);
  return 0;
}

void jmg_describe(const jmg_party* p, char* out, size_t cap) {
  snprintf(out, cap,
           "rank %d: %s of %lld %lld x %lld %s matrices (shard %lld rows, tile %lld, nrhs %lld, "
           "attributes %lld %lld %lld, dispatch %d, site %016llx)",
           (int)p->rank, jmg_op_name(p->op), (long long)p->batch, (long long)p->m, (long long)p->n,
           jmg_dtype_name((jmg_dtype)p->dtype), (long long)p->nloc, (long long)p->tile,
           (long long)p->nrhs, (long long)p->attr[0], (long long)p->attr[1],
           (long long)p->attr[2], (int)p->dispatch, (unsigned long long)p->site);
}

int jmg_same_call(const jmg_party* x, const jmg_party* y) {
  int same = x->op == y->op && x->dtype == y->dtype && x->m == y->m && x->n == y->n &&
             x->mpad == y->mpad && x->col_split == y->col_split &&
             x->nloc == y->nloc && x->nrhs == y->nrhs && x->tile == y->tile &&
             x->dispatch == y->dispatch && x->site == y->site && x->nbatch == y->nbatch &&
             x->batch == y->batch;
  for (int d = 0; d < x->nbatch && d < JMG_MAX_BATCH_DIMS; d++)
    same = same && x->batch_dims[d] == y->batch_dims[d];
  for (int k = 0; k < JMG_MAX_ATTRS; k++) same = same && x->attr[k] == y->attr[k];
  for (int k = 0; k < JMG_MAX_BUFS; k++)
    same = same && x->buf_bytes[k] == y->buf_bytes[k] && x->buf_flags[k] == y->buf_flags[k];
  return same;
}

/* FNV-1a over the fields jmg_same_call compares (bytes of each value, so
 * padding never enters it). */
static uint64_t mix(uint64_t h, const void* v, size_t n) {
  const unsigned char* b = v;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
#define MIX(h, x) mix((h), &(x), sizeof(x))

uint64_t jmg_call_print(const jmg_party* p) {
  uint64_t h = 14695981039346656037ull;
  h = MIX(h, p->op), h = MIX(h, p->dtype), h = MIX(h, p->m), h = MIX(h, p->n);
  h = MIX(h, p->mpad), h = MIX(h, p->col_split), h = MIX(h, p->nloc), h = MIX(h, p->nrhs);
  h = MIX(h, p->tile), h = MIX(h, p->dispatch), h = MIX(h, p->site), h = MIX(h, p->nbatch);
  h = MIX(h, p->batch);
  for (int d = 0; d < p->nbatch && d < JMG_MAX_BATCH_DIMS; d++) h = MIX(h, p->batch_dims[d]);
  for (int k = 0; k < JMG_MAX_ATTRS; k++) h = MIX(h, p->attr[k]);
  for (int k = 0; k < JMG_MAX_BUFS; k++) h = MIX(h, p->buf_bytes[k]), h = MIX(h, p->buf_flags[k]);
  return h;
}
