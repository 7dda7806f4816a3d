/* clock.h - the one clock of the C core: the rendezvous's deadlines and
 * the trace's times (CLOCK_MONOTONIC, as Python's time.monotonic()). */
#ifndef JAXMG_CLOCK_H
#define JAXMG_CLOCK_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC, and such a time back as a timespec. */
double jmg_clock_now(void);
struct timespec jmg_clock_at(double t);

#endif
