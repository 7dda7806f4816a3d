/* trace.h - what a call is doing, on stderr, for finding where a job waits.
 *
 * JAXMG_VERBOSE=1: the leader prints each call's problem and workspace
 * (bench/memory.py reads it). JAXMG_VERBOSE=2: every party also prints each
 * step it reaches, with its process id and a clock, so that the last line
 * of each process says where a stuck job stopped.
 */
#ifndef JAXMG_TRACE_H
#define JAXMG_TRACE_H

/* 0, 1 or 2, read from the environment once. */
int jmg_trace_level(void);

/* One line "jaxmg[pid] <clock> <text>" on stderr, at or above level `level`. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void jmg_trace(int level, const char* fmt, ...);

#endif
