/* mp_comm.h - one rank's NCCL communicator for a jaxmg device set, and the
 * guard every collective of the cuSOLVERMp engine runs under.
 *
 * Faults, as every rank sees them:
 *   - a peer that never joins: ncclCommInitRank blocks without a timeout, so
 *     it runs on a helper thread; after timeout_s the rank returns
 *     JMG_MP_ETIMEOUT and abandons the helper (which aborts the
 *     communicator itself should the init complete later);
 *   - a peer that dies or never arrives at a collective: the watchdog
 *     aborts the communicator after timeout_s (ncclCommAbort), the blocked
 *     call returns, and the rank returns JMG_MP_ETIMEOUT;
 *   - an NCCL (or solver) failure on this rank: JMG_MP_ENCCL / the body's
 *     code, the message naming the rank.
 * After any of these the communicator is lost: every later guard fails at
 * once with JMG_MP_ELOST (no NCCL call), until the Python layer drops the
 * device set and builds a new one (new unique id, new communicator).
 */
#ifndef JAXMG_MP_COMM_H
#define JAXMG_MP_COMM_H

#include <pthread.h>

#include "engines/mp/mp_api.h"
#include "engines/mp/mp_watch.h"

#define JMG_MP_ERRLEN 512

enum {
  JMG_MP_OK = 0,
  JMG_MP_EINVAL = 1,   /* bad arguments, refused by every rank alike */
  JMG_MP_ENCCL = 2,    /* an NCCL call failed on this rank */
  JMG_MP_ETIMEOUT = 3, /* a peer did not arrive in time; communicator aborted */
  JMG_MP_ELOST = 4,    /* the communicator was lost by an earlier fault */
  JMG_MP_ESOLVER = 5,  /* cuSOLVERMp (or cuBLAS) returned an error status */
  JMG_MP_ECUDA = 6,    /* a CUDA runtime call failed */
  JMG_MP_ENOMEM = 7,
  JMG_MP_EVERSION = 8  /* the loaded NCCL is too old */
};

typedef struct jmg_mp_comm {
  const jmg_mp_api* api;
  void* nccl; /* the communicator, NULL until joined and after a loss */
  int rank, nranks, ordinal;
  double timeout_s;
  char tag[64];           /* the device set, for messages */
  char lost[JMG_MP_ERRLEN]; /* why the communicator was lost, "" while usable */
  pthread_mutex_t mu;     /* guards nccl against abort racing teardown */
  jmg_mp_watch watch;
} jmg_mp_comm;

/* Checks the NCCL version, then joins the communicator of the device set
 * `tag` as `rank` of `nranks` on device `ordinal`. On failure *c is left
 * closed (jmg_mp_comm_close is still safe) and err names the rank. */
int jmg_mp_comm_open(jmg_mp_comm* c, const jmg_mp_api* api, const char* tag,
                     const unsigned char id[JMG_MP_ID_BYTES], int nranks, int rank,
                     int ordinal, double timeout_s, char* err);
/* Destroys the communicator (aborts it if it was lost). */
void jmg_mp_comm_close(jmg_mp_comm* c);

/* The collective work of one call: returns JMG_MP_*, with a message in err
 * (the guard prefixes the rank). */
typedef int (*jmg_mp_body)(void* arg, char* err);

/* Runs body under the watchdog: JMG_MP_ELOST at once if the communicator is
 * lost; JMG_MP_ETIMEOUT if the watchdog fired; else body's result. Any
 * failure but EINVAL loses the communicator (its state is unknown). */
int jmg_mp_comm_guard(jmg_mp_comm* c, const char* what, jmg_mp_body body, void* arg,
                      char* err);

/* Formats "jaxmg: rank R of N (device D, set TAG): " + message into err. */
void jmg_mp_comm_errorf(const jmg_mp_comm* c, char* err, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
