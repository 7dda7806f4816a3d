/* clock.h - time for the rendezvous tests: deadlines and naps. */
#ifndef JAXMG_TEST_CLOCK_H
#define JAXMG_TEST_CLOCK_H

#include <time.h>

static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void nap(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

#endif
