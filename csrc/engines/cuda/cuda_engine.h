/* cuda_engine.h - the cuSolverMg engine and its CUDA kernels (C linkage). */
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

/* Fills the strict upper triangle of the Hermitian matrix M, held in the
 * contiguous column layout (device r: columns [r*nloc, (r+1)*nloc), column
 * length n, at cols[r]), from its lower triangle, on device `dev` only:
 * M[i][j] = conj(M[j][i]) for i < j. Reads the other devices' columns
 * directly over peer access. Launches on `stream` (a cudaStream_t) of the
 * current device. Returns 0, or -1 with a message in err. */
int jmg_cuda_mirror_lower(int dtype, void* const* cols, int ndev, int64_t n, int64_t nloc,
                          int dev, void* stream, char* err);

#ifdef __cplusplus
}
#endif

#endif
