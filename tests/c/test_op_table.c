/* test_op_table.c - the op table (ops/op_table.h) is consistent, its text
 * export is what the Python layer parses, and the call fingerprint tells
 * different calls apart. */
#include "ops/op_table.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ops/call.h"

static int nattrs(const jmg_op_row* row) {
  int k = 0;
  while (k < JMG_MAX_ATTRS && row->attrs[k]) k++;
  return k;
}

static void check_dims(const jmg_op_row* row, const jmg_buf_rule* r) {
  jmg_party p;
  memset(&p, 0, sizeof p);
  p.nloc = 3;
  p.mpad = 12;
  p.m = 11;
  p.n = 5;
  p.nrhs = 2;
  p.attr[0] = p.attr[1] = p.attr[2] = 4;
  for (const char* d = r->dims; *d; d++) {
    CHECK(jmg_dim_value(*d, &p) >= 0, "%s.%s: unknown dimension letter %c", row->name, r->name, *d);
    if (*d >= 'a' && *d <= 'c')
      CHECK(*d - 'a' < nattrs(row), "%s.%s: letter %c names a missing attribute", row->name,
            r->name, *d);
  }
  CHECK(strchr("ARI", r->type) != NULL, "%s.%s: type %c", row->name, r->name, r->type);
}

static void check_row(jmg_op op) {
  const jmg_op_row* row = jmg_op_row_of(op);
  CHECK(row != NULL && row->name != NULL, "op %d has no row", op);
  if (!row) return;
  CHECK(row->nargs >= 2 && row->nargs <= JMG_MAX_ARGS, "%s: %d args", row->name, row->nargs);
  CHECK(row->nrets >= 2 && row->nrets <= JMG_MAX_RETS, "%s: %d rets", row->name, row->nrets);
  const jmg_buf_rule* a = &row->args[0];
  CHECK(a->slot == 0 && !strcmp(a->dims, "LN") && a->type == 'A' && (a->flags & JMG_BUF_IN),
        "%s: argument 0 must be A's shard in slot 0", row->name);
  /* An op works in place in A's slot, or (chol_solve) only reads it. */
  int reads_only = a->flags == JMG_BUF_IN && row->rets[0].slot != 0;
  CHECK((row->rets[0].alias == 0 && row->rets[0].slot == 0) || reads_only,
        "%s: result 0 must alias A (the op works in place)", row->name);
  for (int i = 0; reads_only && i < row->nrets; i++)
    CHECK(row->rets[i].slot != 0, "%s: an op that only reads A returns nothing there", row->name);
  int wheres = 0, statuses = 0, used[JMG_MAX_BUFS] = {0};
  for (int i = 0; i < row->nargs; i++) {
    const jmg_buf_rule* r = &row->args[i];
    check_dims(row, r);
    CHECK(r->alias == -1, "%s.%s: an argument aliases nothing", row->name, r->name);
    if (r->slot == JMG_SLOT_WHERE) {
      wheres++;
      CHECK(!strcmp(r->dims, "W") && r->type == 'I', "%s: where is int32[W]", row->name);
    }
    if (r->slot >= 0) {
      CHECK(r->slot < JMG_MAX_BUFS && !used[r->slot]++, "%s.%s: slot %d reused", row->name,
            r->name, r->slot);
      CHECK(r->flags & (JMG_BUF_IN | JMG_BUF_OWN), "%s.%s: an input must be read", row->name,
            r->name);
    }
  }
  for (int i = 0; i < row->nrets; i++) {
    const jmg_buf_rule* r = &row->rets[i];
    check_dims(row, r);
    if (r->slot == JMG_SLOT_STATUS) {
      statuses++;
      CHECK(!r->dims[0] && r->type == 'I', "%s: status is a scalar int32", row->name);
    }
    if (r->slot <= JMG_SLOT_SCALAR)
      CHECK(JMG_SLOT_SCALAR - r->slot < JMG_MAX_SCALARS && !r->dims[0] && r->type == 'R',
            "%s.%s: a scalar result is one real", row->name, r->name);
    if (r->alias >= 0) {
      const jmg_buf_rule* x = r->alias < row->nargs ? &row->args[r->alias] : NULL;
      CHECK(x && x->slot == r->slot && !strcmp(x->dims, r->dims) && x->type == r->type &&
                (x->flags & JMG_COL_MAJOR) == (r->flags & JMG_COL_MAJOR),
            "%s.%s: an aliased result has its argument's slot, shape, type and layout",
            row->name, r->name);
    } else if (r->slot >= 0) {
      CHECK(r->slot < JMG_MAX_BUFS && !used[r->slot]++, "%s.%s: slot %d reused", row->name,
            r->name, r->slot);
    }
    /* A result not written back is its argument's scratch (A_WORK): it must be aliased. */
    if (r->slot >= 0)
      CHECK((r->flags & JMG_BUF_OUT) || r->alias >= 0, "%s.%s: a result is written or is scratch",
            row->name, r->name);
  }
  CHECK(wheres == 1 && statuses == 1, "%s: %d where, %d status", row->name, wheres, statuses);
}

/* The export names are the rows' names, in op order. */
#define NAME_OF(name, op) CHECK(!strcmp(jmg_op_name(op), #name), "%s vs %s", jmg_op_name(op), #name);

static void check_text(void) {
  size_t need = jmg_op_table_text(NULL, 0);
  char* buf = malloc(need + 1);
  CHECK(jmg_op_table_text(buf, need + 1) == need && strlen(buf) == need, "length %zu", need);
  int lines = 0, expect = 0;
  for (const char* p = buf; *p; p++) lines += *p == '\n';
  for (int op = 0; op < JMG_NOPS; op++) expect += 1 + jmg_op_rows[op].nargs + jmg_op_rows[op].nrets;
  CHECK(lines == expect, "%d lines, expected %d", lines, expect);
  CHECK(strstr(buf, "op gesvd any ucols,vrows,mrows -\n") != NULL, "gesvd's line");
  CHECK(strstr(buf, "ret x NK A col 1 c\n") != NULL, "potrs's aliased, conjugated x");
  CHECK(strstr(buf, "ret logdet - R row - -\n") != NULL, "potrs's logdet");
  CHECK(strstr(buf, "op chol_solve square - leader,collective\narg factor LN A row - -\n"
                    "arg b NK A col - c\n") != NULL,
        "chol_solve reads the factor and b");
  CHECK(strstr(buf, "op chol_inverse square - leader,collective\narg factor LN A row - -\n"
                    "arg where W I row - -\nret inv LN A row 0 -\n") != NULL,
        "chol_inverse writes the inverse in the factor's buffer");
  /* The view: who sees A^T, and what that does to each buffer. */
  CHECK(strstr(buf, "op lu_solve square - -\narg a LN A row - -\n") != NULL,
        "lu_solve: every engine undoes A^T itself, the caller moves nothing");
  CHECK(strstr(buf, "op syevd square jobz leader,collective\narg a LN A row - -\n"
                    "arg where W I row - -\nret a LN A row 0 h\n") != NULL,
        "syevd: eigenvectors as rows of conj(A)'s");
  CHECK(strstr(buf, "op qr tall mrows -\n") != NULL, "qr: every engine undoes A^T itself");
  /* A short buffer is cut, NUL-terminated, and nothing past it is touched. */
  char small[12];
  memset(small, 'Z', sizeof small);
  CHECK(jmg_op_table_text(small, 10) == need && small[9] == '\0' && small[10] == 'Z',
        "a short buffer");
  CHECK(!strncmp(small, buf, 9), "a short buffer holds the start");
  free(buf);
}

static void check_fingerprint(void) {
  jmg_party x, y;
  memset(&x, 0, sizeof x);
  x.op = JMG_QR;
  x.dtype = JMG_F64;
  x.m = 10;
  x.mpad = 12;
  x.n = 4;
  x.nloc = 3;
  x.tile = 3;
  x.site = 0xABCDEF;
  x.buf_bytes[0] = 96;
  y = x;
  y.ordinal = 3; /* where a party runs is not part of the call */
  y.rank = 1;
  y.token = 7;
  CHECK(jmg_same_call(&x, &y), "the same call");
  y = x;
  y.op = JMG_LSTSQ;
  CHECK(!jmg_same_call(&x, &y), "another op");
  y = x;
  y.m = 9;
  CHECK(!jmg_same_call(&x, &y), "other rows");
  y = x;
  y.attr[2] = 1;
  CHECK(!jmg_same_call(&x, &y), "another attribute");
  y = x;
  y.site = 1;
  CHECK(!jmg_same_call(&x, &y), "another call site");
  y = x;
  y.dispatch = JMG_DISPATCH_SINGLE;
  CHECK(!jmg_same_call(&x, &y), "another dispatch");
  y = x;
  y.dtype = JMG_C64;
  CHECK(!jmg_same_call(&x, &y), "another dtype");
  char d[JMG_ERRLEN];
  y.rank = 2;
  jmg_describe(&y, d, sizeof d);
  CHECK(strstr(d, "rank 2") && strstr(d, "qr") && strstr(d, "10 x 4") && strstr(d, "complex64"),
        "%s", d);
}

int main(void) {
  for (jmg_op op = 0; op < JMG_NOPS; op++) check_row(op);
  CHECK(jmg_op_row_of(JMG_NOPS) == NULL && jmg_op_row_of(-1) == NULL, "out of range");
  JMG_OP_LIST(NAME_OF)
  check_text();
  check_fingerprint();
  return CHECK_DONE("op_table");
}
