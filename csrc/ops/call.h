/* call.h - one party's call in progress, shared by the phases of
 * handle.c and the decoder (decode.c). Internal to csrc/ops. */
#ifndef JAXMG_CALL_H
#define JAXMG_CALL_H

#include <stddef.h>

#include "engines/engine.h"
#include "ops/op_table.h"
#include "rendezvous/meeting.h"
#include "xla/ffi/api/c_api.h"

typedef struct jmg_call {
  XLA_FFI_CallFrame* cf;
  const jmg_op_row* row;
  const jmg_engine* eng;
  jmg_party me;
  int64_t nparties;
  const void* where_in; /* the `where` buffer (device memory on GPUs) */
  int64_t where_count;  /* int32 entries of `where`: JMG_WHERE_LEN per element */
  int32_t* where_all;   /* all of them, read by the engine's enter */
  int32_t where[JMG_WHERE_LEN]; /* the party's own: its first element's */
  uint8_t* bad;         /* per element: some party flagged it non-finite (agree) */
  int64_t nbad;
  const char* site;
  size_t site_len;
  char own[JMG_ERRLEN]; /* this party's own failure, reported at the next exchange */

  jmg_meeting m;
  int joined;
  double timeout;
  jmg_party* all; /* every party, after the first exchange */
  jmg_job job;
  int cross;      /* some party runs in another process */
  int shared;     /* this party shared its buffers (fetch owed) */
  int have_work;  /* this party holds workspace (release owed) */
  jmg_result* results; /* one per element of the batch: the leader's, then everyone's */
  /* Results XLA did not alias to their arguments (seen inside loops on
   * GPUs): the engine copies each argument into its result before the
   * meeting, and the op then works in the result (decode.c). */
  struct {
    void* dst;
    const void* src;
    int64_t bytes;
  } copies[JMG_MAX_RETS];
  int ncopies;
  char err[JMG_ERRLEN]; /* why the call fails, once it does */
} jmg_call;

/* Reads what a party must know to meet the others: nparties, site and the
 * `where` buffer. Returns -1 (message in c->err) when it cannot. */
int jmg_decode_identity(jmg_call* c);

/* Reads and checks the rest of the call against its row into c->me.
 * Returns -1 with the message in c->own: the call is bad, but the party
 * can still meet and report it. */
int jmg_decode_problem(jmg_call* c);

/* One line about a party's problem for messages: op, shapes, dtype, ... */
void jmg_describe(const jmg_party* p, char* out, size_t cap);

/* Whether two parties' calls agree (the fingerprint: op, shapes, dtype,
 * tile, attributes, site, dispatch). */
int jmg_same_call(const jmg_party* x, const jmg_party* y);
/* The same fingerprint as one number, for engines whose parties compare
 * it through their own collectives (handle.c's collective mode). */
uint64_t jmg_call_print(const jmg_party* p);

/* Writes a printf-style message into err (JMG_ERRLEN bytes) and returns -1. */
int jmg_call_fail(char* err, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
