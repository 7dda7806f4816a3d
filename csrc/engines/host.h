/* host.h - the host (LAPACK) engine and the symbols the host library exports. */
#ifndef JAXMG_HOST_H
#define JAXMG_HOST_H

#include <stdint.h>

#include "engines/engine.h"

#if defined(__GNUC__)
#define JMG_EXPORT __attribute__((visibility("default")))
#else
#define JMG_EXPORT
#endif

extern const jmg_engine jmg_host_engine;

/* Hands over one LAPACK routine ("dpotrf", "zheevd", ...) by function
 * address, with the signature of scipy.linalg.cython_lapack. 0 if known. */
JMG_EXPORT int jaxmg_host_set_lapack(const char* name, uintptr_t fn);

#endif
