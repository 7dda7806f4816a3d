/* trace.c - see trace.h. */
#include "util/trace.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "util/clock.h"

static int level;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void read_level(void) {
  const char* v = getenv("JAXMG_VERBOSE");
  level = v && v[0] ? atoi(v) : 0;
  if (v && v[0] && level == 0 && v[0] != '0') level = 1; /* "yes", "true": on */
}

int jmg_trace_level(void) {
  pthread_once(&once, read_level);
  return level;
}

void jmg_trace(int at, const char* fmt, ...) {
  if (jmg_trace_level() < at) return;
  /* One buffer, one write: lines of several threads and processes do not
   * interleave mid-line. */
  char line[1024];
  int n = snprintf(line, sizeof line, "jaxmg[%d] %.3f ", (int)getpid(), jmg_clock_now());
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && (size_t)n < sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
  line[n++] = '\n';
  fwrite(line, 1, (size_t)n, stderr);
  fflush(stderr);
}
