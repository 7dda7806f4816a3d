/* op_table.c - the rows of op_table.h.
 *
 * Slots: 0 is A's shard, which every op takes and returns in place (the
 * result the engine writes there, or scratch), except chol_solve, which
 * only reads the factor there; 1 holds right-hand sides,
 * solutions and N x N results; 2 eigen/singular values; 3 what fits
 * nowhere else (gesvd's U, the least-squares right-hand sides). Square
 * results travel row-major when the engine's column-major view of them is
 * already the transpose the caller wants (R, Vh, H: engines work on A^T).
 */
#include "ops/op_table.h"

#include <stdio.h>
#include <string.h>

#define SQ JMG_SHAPE_SQUARE
#define TALL JMG_SHAPE_TALL
#define ANY JMG_SHAPE_ANY
#define IN JMG_BUF_IN
#define OUT JMG_BUF_OUT
#define OWN JMG_BUF_OWN
#define COL JMG_COL_MAJOR

/* The pieces every op has. */
#define A_ARG {"a", "LN", 'A', 0, -1, IN}
#define A_RET {"a", "LN", 'A', 0, 0, OUT}
/* A's shard as the engine's scratch (a factor, a destroyed input): returned,
 * aliased, but never copied back across processes, since no caller reads it. */
#define A_WORK {"a", "LN", 'A', 0, 0, 0}
#define WHERE {"where", "W", 'I', JMG_SLOT_WHERE, -1, 0}
#define STATUS {"status", "", 'I', JMG_SLOT_STATUS, -1, 0}
#define LOGDET {"logdet", "", 'R', JMG_SLOT_SCALAR, -1, 0}
/* A Cholesky factor made by chol_factor: A's shard shape and dtype, its
 * contents the engine's own (its layout, for the same tile, nparties and
 * dispatch only). The solve reads it and leaves it as it is, so that one
 * factor serves any number of solves. */
#define FACTOR_ARG {"factor", "LN", 'A', 0, -1, IN}
/* Right-hand sides and solutions of a Hermitian solve: conj(A) y =
 * conj(b), so both travel conjugated. */
#define RHS_C {"b", "NK", 'A', 1, -1, OWN | COL, 'c'}
#define X_C {"x", "NK", 'A', 1, 1, OUT | COL, 'c'}
#define BOTH (JMG_KIND_LEADER | JMG_KIND_COLLECTIVE)

const jmg_op_row jmg_op_rows[JMG_NOPS] = {
    /* The Hermitian ops work on conj(A) on every engine kind. */
    [JMG_POTRS] = {"potrs", SQ, 3, 4, {A_ARG, RHS_C, WHERE}, {A_WORK, X_C, STATUS, LOGDET},
                   {NULL}, BOTH},
    [JMG_POTRI] = {"potri", SQ, 2, 2, {A_ARG, WHERE}, {A_RET, STATUS}, {NULL}, BOTH},
    [JMG_SYEVD] = {"syevd", SQ, 2, 3, {A_ARG, WHERE},
                   {{"a", "LN", 'A', 0, 0, OUT, 'h'}, {"w", "N", 'R', 2, -1, OUT}, STATUS},
                   {"jobz"}, BOTH},
    /* No kind needs A transposed by the caller: the leader engines
     * transpose the A^T they see after the meeting (getrf's info is then
     * LAPACK's on A), the collective one moves A itself. (cuSolverMg's
     * getrs has no transpose and its layout move no transpose either: the
     * Python layer hands that one solver A^T's rows, ops/lu_solve.py.) */
    [JMG_LU_SOLVE] = {"lu_solve", SQ, 3, 3,
                      {A_ARG, {"b", "NK", 'A', 1, -1, OWN | COL}, WHERE},
                      {A_WORK, {"x", "NK", 'A', 1, 1, OUT | COL}, STATUS},
                      {NULL}, 0},
    [JMG_LSTSQ] = {"least_squares", TALL, 3, 3,
                   {A_ARG, {"b", "MK", 'A', 3, -1, OWN | COL}, WHERE},
                   {A_WORK, {"x", "NK", 'A', 1, -1, OUT | COL}, STATUS},
                   {"mrows"}, 0},
    [JMG_QR] = {"qr", TALL, 2, 3, {A_ARG, WHERE},
                {A_RET, {"r", "NN", 'A', 1, -1, OUT}, STATUS}, {"mrows"}, 0},
    /* attrs: U's columns (0, S or m) and Vh's rows (0, S or N). */
    [JMG_GESVD] = {"gesvd", ANY, 2, 5, {A_ARG, WHERE},
                   {A_WORK, {"u", "La", 'A', 3, -1, OUT}, {"s", "S", 'R', 2, -1, OUT},
                    {"vh", "bN", 'A', 1, -1, OUT}, STATUS},
                   {"ucols", "vrows", "mrows"}, 0},
    /* attr: H's rows (0 or N). */
    [JMG_POLAR] = {"polar", ANY, 2, 3, {A_ARG, WHERE},
                   {A_RET, {"h", "aN", 'A', 1, -1, OUT}, STATUS}, {"hrows", "mrows"}, 0},
    /* Factor reuse (a derivative's solves after the primal's factorization):
     * the factor in place of A (OUT: across processes it comes back), a
     * solve with it (x aliases b, as potrs's), and the inverse from it
     * (both triangles, as potri's) in the factor's buffer. */
    [JMG_CHOL_FACTOR] = {"chol_factor", SQ, 2, 3, {A_ARG, WHERE}, {A_RET, STATUS, LOGDET}, {NULL},
                         BOTH},
    [JMG_CHOL_SOLVE] = {"chol_solve", SQ, 3, 2, {FACTOR_ARG, RHS_C, WHERE}, {X_C, STATUS}, {NULL},
                        BOTH},
    [JMG_CHOL_INVERSE] = {"chol_inverse", SQ, 2, 2, {FACTOR_ARG, WHERE},
                          {{"inv", "LN", 'A', 0, 0, OUT}, STATUS}, {NULL}, BOTH},
    /* A x = lambda B x (B Hermitian positive definite): B's shard, shaped
     * like A's, is read only (the engines factor a copy). attrs: jobz as
     * syevd's, and nvalid, the order of the pencil solved: its leading
     * nvalid rows and columns; the rest is padding, which the host and
     * one-GPU engines leave out instead of giving it eigenvalues that would
     * have to sort apart from the pencil's (their bound needs ||B^-1||).
     * cuSOLVERMp takes nvalid = n only (its sub-pencil is wrong: mp_ops.c).
     * The status is LAPACK sygvd's info for that order. Every kind sees (conj(A),
     * conj(B)), whose eigenvectors come back as the rows of A's shards. */
    [JMG_SYGVD] = {"sygvd", SQ, 3, 3,
                   {A_ARG, {"b", "LN", 'A', 3, -1, IN}, WHERE},
                   {{"a", "LN", 'A', 0, 0, OUT, 'h'}, {"w", "N", 'R', 2, -1, OUT}, STATUS},
                   {"jobz", "nvalid"}, BOTH},
};

const jmg_op_row* jmg_op_row_of(jmg_op op) {
  return (op >= 0 && op < JMG_NOPS && jmg_op_rows[op].name) ? &jmg_op_rows[op] : NULL;
}

const char* jmg_op_name(jmg_op op) {
  const jmg_op_row* r = jmg_op_row_of(op);
  return r ? r->name : "?";
}

int jmg_engine_kind(const jmg_engine* eng) {
  return eng->collective ? JMG_KIND_COLLECTIVE : JMG_KIND_LEADER;
}

int64_t jmg_rule_dim(const jmg_buf_rule* r, int k, const jmg_party* p) {
  int64_t v = jmg_dim_value(r->dims[k], p);
  int split = p->col_split > 1 ? p->col_split : 1;
  return (k == 1 && r->dims[0] == 'L' && v >= 0) ? v / split : v;
}

int64_t jmg_dim_value(char d, const jmg_party* p) {
  switch (d) {
    case 'L': return p->nloc;
    case 'M': return p->mpad;
    case 'N': return p->n;
    case 'K': return p->nrhs;
    case 'S': return p->m < p->n ? p->m : p->n;
    case 'W': return JMG_WHERE_LEN;
    case 'a': return p->attr[0];
    case 'b': return p->attr[1];
    case 'c': return p->attr[2];
    default: return -1;
  }
}

/* Appends to buf at *at, keeping count of what would not fit. */
static void put(char* buf, size_t cap, size_t* at, const char* s) {
  size_t len = strlen(s);
  if (*at < cap) {
    size_t room = cap - *at;
    memcpy(buf + *at, s, len < room ? len : room);
  }
  *at += len;
}

static void put_rule(char* buf, size_t cap, size_t* at, const char* kind, const jmg_buf_rule* r) {
  char line[160], alias[8] = "-", view[2] = {r->view ? r->view : '-', 0};
  if (r->alias >= 0) snprintf(alias, sizeof alias, "%d", (int)r->alias);
  snprintf(line, sizeof line, "%s %s %s %c %s %s %s\n", kind, r->name,
           r->dims[0] ? r->dims : "-", r->type, (r->flags & JMG_COL_MAJOR) ? "col" : "row", alias,
           view);
  put(buf, cap, at, line);
}

size_t jmg_op_table_text(char* buf, size_t cap) {
  static const char* shape[3] = {"square", "tall", "any"};
  size_t at = 0;
  for (int op = 0; op < JMG_NOPS; op++) {
    const jmg_op_row* row = &jmg_op_rows[op];
    char line[160], attrs[80] = "";
    for (int k = 0; k < JMG_MAX_ATTRS && row->attrs[k]; k++) {
      if (k) strncat(attrs, ",", sizeof attrs - strlen(attrs) - 1);
      strncat(attrs, row->attrs[k], sizeof attrs - strlen(attrs) - 1);
    }
    static const char* kinds[4] = {"-", "leader", "collective", "leader,collective"};
    snprintf(line, sizeof line, "op %s %s %s %s\n", row->name, shape[row->shape],
             attrs[0] ? attrs : "-", kinds[row->sees_at & 3]);
    put(buf, cap, &at, line);
    for (int i = 0; i < row->nargs; i++) put_rule(buf, cap, &at, "arg", &row->args[i]);
    for (int i = 0; i < row->nrets; i++) put_rule(buf, cap, &at, "ret", &row->rets[i]);
  }
  if (cap) buf[at < cap ? at : cap - 1] = '\0';
  return at;
}
