/* cuda_engine.h - the cuSolverMg engine. */
#ifndef JAXMG_CUDA_ENGINE_H
#define JAXMG_CUDA_ENGINE_H

#include <stdint.h>

#include "engines/engine.h"

#if defined(__GNUC__)
#define JMG_EXPORT __attribute__((visibility("default")))
#else
#define JMG_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

extern const jmg_engine jmg_cusolvermg_engine;

#ifdef __cplusplus
}
#endif

#endif
