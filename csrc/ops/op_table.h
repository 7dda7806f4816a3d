/* op_table.h - every jaxmg op described once, as data.
 *
 * A row says what the op's FFI call carries (arguments and results, their
 * shapes, types and layouts, which result aliases which argument), which
 * integer attributes it takes, and its shape rule. The decoder
 * (ops/decode.c) checks each call frame against its row and fills the
 * party's buffer slots from it; the Python layer builds its ffi_call from
 * the same rows (jaxmg_op_table, read by src/jaxmg/pipeline/ffi.py); each engine
 * has one function per row (engine.h, jmg_engine.ops). Adding an op is a
 * row here, a name in JMG_OP_LIST and an engine function.
 *
 * Shapes are strings of one letter per dimension ("" is a scalar):
 *   L  the shard's rows (nloc)          M  all shards' rows (nparties * nloc)
 *   N  A's columns                      K  right-hand-side columns
 *   S  min(m, N), m = A's rows          W  JMG_WHERE_LEN (engine.h)
 *   a, b, c  the value of the op's first / second / third attribute
 * An op with an attribute `mrows` takes A's rows m from it (m <= M: rows
 * past m are padding, which the engine ignores); otherwise m = M.
 * A buffer whose first letter is L is sharded like A: where A's columns
 * are split too (the call's `col_split` attribute, for engines that take
 * 2-D blocks), its columns are split the same way, so "LN" is a block of
 * L x N / col_split.
 *
 * The engines' view. Every engine reads a row-major shard as column-major,
 * so it sees A^T; for symmetric or Hermitian A that is conj(A). Where a row
 * says that an engine kind (JMG_KIND_*) sees A^T (sees_at), the Python
 * layer undoes it with each buffer's `view`: 'c' the buffer is conjugated
 * (right-hand sides in, solutions out), 'h' the global result is
 * conjugate-transposed (syevd's eigenvectors come back as rows). Where it
 * does not, the engine undoes the transpose itself (a transposing layout
 * move, a transpose after the meeting, or LAPACK's transposed routines).
 */
#ifndef JAXMG_OP_TABLE_H
#define JAXMG_OP_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "engines/engine.h"

#define JMG_MAX_ARGS 4
#define JMG_MAX_RETS 6

/* Where a buffer goes in the party (jmg_party): a data slot 0..5, or one
 * of these. */
enum { JMG_SLOT_WHERE = -1, JMG_SLOT_STATUS = -2, JMG_SLOT_SCALAR = -3 /* - k */ };

/* Layout flag beside the JMG_BUF_* flags of engine.h. */
enum { JMG_COL_MAJOR = 16 };

typedef struct jmg_buf_rule {
  const char* name;
  const char* dims;
  char type;       /* 'A': A's dtype, 'R': its real type, 'I': int32 */
  int8_t slot;     /* data slot, or JMG_SLOT_* (scalar k: JMG_SLOT_SCALAR - k) */
  int8_t alias;    /* results: the argument it aliases (in place), -1: none */
  uint8_t flags;   /* JMG_BUF_* for data slots, | JMG_COL_MAJOR */
  char view;       /* 'c', 'h' or 0: see "The engines' view" above */
} jmg_buf_rule;

/* Engine kinds (engine.h): a leader runs the op for every party, or every
 * party calls the library itself (jmg_engine.collective). */
enum { JMG_KIND_LEADER = 1, JMG_KIND_COLLECTIVE = 2 };

typedef enum {
  JMG_SHAPE_SQUARE = 0, /* M == N */
  JMG_SHAPE_TALL = 1,   /* M >= N */
  JMG_SHAPE_ANY = 2
} jmg_shape;

typedef struct jmg_op_row {
  const char* name;
  jmg_shape shape;
  int nargs, nrets;
  jmg_buf_rule args[JMG_MAX_ARGS];
  jmg_buf_rule rets[JMG_MAX_RETS];
  const char* attrs[JMG_MAX_ATTRS]; /* NULL-padded */
  uint8_t sees_at; /* JMG_KIND_* bits: the engine kinds that see A^T */
} jmg_op_row;

/* The export names, in jmg_op order (exports_*.c make one handler each). */
#define JMG_OP_LIST(X)                                                                  \
  X(potrs, JMG_POTRS) X(potri, JMG_POTRI) X(syevd, JMG_SYEVD) X(lu_solve, JMG_LU_SOLVE) \
  X(least_squares, JMG_LSTSQ) X(qr, JMG_QR) X(gesvd, JMG_GESVD) X(polar, JMG_POLAR)     \
  X(chol_factor, JMG_CHOL_FACTOR) X(chol_solve, JMG_CHOL_SOLVE)                         \
  X(chol_inverse, JMG_CHOL_INVERSE) X(sygvd, JMG_SYGVD)

extern const jmg_op_row jmg_op_rows[JMG_NOPS];

/* The row of op, or NULL. */
const jmg_op_row* jmg_op_row_of(jmg_op op);
const char* jmg_op_name(jmg_op op);

/* The value of a dimension letter for a problem (-1: unknown letter). */
int64_t jmg_dim_value(char d, const jmg_party* p);
/* The size of dimension k of a buffer with rule r (split like A's columns
 * where r is sharded like A). */
int64_t jmg_rule_dim(const jmg_buf_rule* r, int k, const jmg_party* p);
/* The kind (JMG_KIND_*) of an engine. */
int jmg_engine_kind(const jmg_engine* eng);

/* Writes the whole table as text into buf (cap bytes, NUL-terminated when
 * it fits) and returns the length it needs (without the NUL):
 *   op <name> <square|tall|any> <attr,attr|-> <kinds that see A^T: leader,collective|->
 *   arg <name> <dims|-> <A|R|I> <row|col> - <view|->
 *   ret <name> <dims|-> <A|R|I> <row|col> <aliased argument index|-> <view|->
 * one line each, the args and rets of an op after its op line. */
size_t jmg_op_table_text(char* buf, size_t cap);

#endif
