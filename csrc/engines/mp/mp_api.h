/* mp_api.h - the few NCCL and CUDA calls the cuSOLVERMp engine's
 * communicator logic makes, as a table of functions.
 *
 * The fault logic (timeouts, aborts, errors naming the rank: mp_comm.c) is
 * written against this table only, with opaque types, so that it compiles
 * and is tested on any machine: tests/c/test_mp_fault.c runs it over a test
 * double of NCCL whose collectives block until every rank arrives or the
 * communicator is aborted, as NCCL's do. mp_nccl.c fills the table with the
 * real NCCL; what only a GPU run shows (that ncclCommAbort from another
 * thread does release a rank blocked inside cuSOLVERMp) is not proved here.
 */
#ifndef JAXMG_MP_API_H
#define JAXMG_MP_API_H

#define JMG_MP_ID_BYTES 128           /* NCCL_UNIQUE_ID_BYTES */
#define JMG_MP_NCCL_MIN_VERSION 22902 /* cuBLASMp 0.10 / cuSOLVERMp 0.9.1 need NCCL >= 2.29.2 */

typedef struct jmg_mp_api {
  /* Each returns 0 (ncclSuccess) or an NCCL result code. */
  int (*get_version)(int* version);
  int (*get_unique_id)(unsigned char id[JMG_MP_ID_BYTES]);
  /* Blocks until all nranks ranks have joined (NCCL's own bootstrap has no
   * timeout: mp_comm.c runs it on a helper thread). */
  int (*comm_init_rank)(void** comm, int nranks, const unsigned char id[JMG_MP_ID_BYTES],
                        int rank, int ordinal);
  /* Safe from another thread while a collective on comm is blocked: it
   * makes that collective return with an error. */
  int (*comm_abort)(void* comm);
  int (*comm_destroy)(void* comm);
  const char* (*error_string)(int result);
} jmg_mp_api;

#endif
