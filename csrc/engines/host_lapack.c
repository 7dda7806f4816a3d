/* host_lapack.c - the registry of host_lapack.h: which LAPACK/BLAS routine
 * the Python layer handed over for each routine and type. */
#include "engines/host_lapack.h"

#include <stdio.h>
#include <string.h>

#include "engines/host.h"

/* Names without the type letter: real and complex, where they differ. */
static const char* const names[JMG_LA_COUNT][2] = {
    [JMG_LA_POTRF] = {"potrf", "potrf"}, [JMG_LA_POTRS] = {"potrs", "potrs"},
    [JMG_LA_POTRI] = {"potri", "potri"}, [JMG_LA_EVD] = {"syevd", "heevd"},
    [JMG_LA_GETRF] = {"getrf", "getrf"}, [JMG_LA_GETRS] = {"getrs", "getrs"},
    [JMG_LA_GELS] = {"gels", "gels"},    [JMG_LA_GEQRF] = {"geqrf", "geqrf"},
    [JMG_LA_ORGQR] = {"orgqr", "ungqr"}, [JMG_LA_GESDD] = {"gesdd", "gesdd"},
    [JMG_LA_GEMM] = {"gemm", "gemm"},   [JMG_LA_GVD] = {"sygvd", "hegvd"},
};

static jmg_la_fn* routines[JMG_LA_COUNT][4];

JMG_EXPORT int jaxmg_host_set_lapack(const char* name, uintptr_t fn) {
  static const char prefix[4] = {'s', 'd', 'c', 'z'};
  if (!name || !name[0]) return -1;
  for (int t = 0; t < 4; t++) {
    if (name[0] != prefix[t]) continue;
    for (int r = 0; r < JMG_LA_COUNT; r++) {
      if (strcmp(name + 1, names[r][t >= 2])) continue;
      /* An address as an integer converts to a function pointer in C11; a
       * void* would not. */
      routines[r][t] = (jmg_la_fn*)fn;
      return 0;
    }
  }
  return -1;
}

jmg_la_fn* jmg_la_get(jmg_la r, jmg_dtype t, char* err) {
  if (routines[r][t]) return routines[r][t];
  snprintf(err, JMG_ERRLEN,
           "LAPACK routine %c%s was not handed over by the Python layer (import jaxmg first)",
           "sdcz"[t], names[r][t >= 2]);
  return NULL;
}
