/* test_timeout.c - JAXMG_TIMEOUT_S's one parser (util/timeout.h): blanks
 * around a number do not matter, anything else that is not a finite
 * positive number is refused, and the environment's value falls back to
 * the default when it does not parse. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "util/timeout.h"

static void accepts(const char* text, double want) {
  double t = -1.0;
  CHECK(jmg_timeout_parse(text, &t) == 0 && t == want, "\"%s\" gave %g, want %g", text, t, want);
}

static void refuses(const char* text) {
  double t = 42.0;
  CHECK(jmg_timeout_parse(text, &t) == -1 && t == 42.0, "\"%s\" accepted as %g", text, t);
}

int main(void) {
  accepts("5", 5.0);
  accepts("5 ", 5.0);
  accepts(" 5", 5.0);
  accepts("\t0.25\n", 0.25);
  accepts("1e3", 1000.0);
  accepts("2.5", 2.5);
  accepts("1e-3", 1e-3);
  refuses(NULL);
  refuses("");
  refuses("   ");
  refuses("0");
  refuses("-3");
  refuses("5s");
  refuses("5 5");
  refuses("inf");
  refuses("nan");
  refuses("1e400");
  refuses("abc");

  unsetenv("JAXMG_TIMEOUT_S");
  CHECK(jmg_timeout_s() == JMG_TIMEOUT_DEFAULT_S, "unset: %g", jmg_timeout_s());
  setenv("JAXMG_TIMEOUT_S", "7 ", 1);
  CHECK(jmg_timeout_s() == 7.0, "\"7 \": %g", jmg_timeout_s());
  setenv("JAXMG_TIMEOUT_S", "soon", 1);
  CHECK(jmg_timeout_s() == JMG_TIMEOUT_DEFAULT_S, "\"soon\": %g", jmg_timeout_s());
  setenv("JAXMG_TIMEOUT_S", "", 1);
  CHECK(jmg_timeout_s() == JMG_TIMEOUT_DEFAULT_S, "empty: %g", jmg_timeout_s());
  return CHECK_DONE("test_timeout");
}
