/* timeout.c - see timeout.h. */
#include "util/timeout.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

int jmg_timeout_parse(const char* text, double* out) {
  if (!text) return -1;
  while (isspace((unsigned char)*text)) text++;
  if (!*text) return -1;
  char* end;
  errno = 0;
  double t = strtod(text, &end);
  while (isspace((unsigned char)*end)) end++;
  if (errno || end == text || *end != '\0' || !isfinite(t) || t <= 0) return -1;
  *out = t;
  return 0;
}

double jmg_timeout_s(void) {
  static atomic_int warned;
  const char* v = getenv("JAXMG_TIMEOUT_S");
  double t = JMG_TIMEOUT_DEFAULT_S;
  if (!v || !*v || jmg_timeout_parse(v, &t) == 0) return t;
  if (!atomic_exchange(&warned, 1))
    fprintf(stderr, "jaxmg: JAXMG_TIMEOUT_S=\"%s\" is not a positive number of seconds; "
                    "waiting %g s instead\n", v, JMG_TIMEOUT_DEFAULT_S);
  return JMG_TIMEOUT_DEFAULT_S;
}
