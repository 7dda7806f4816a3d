/* mp_nccl.c - the real NCCL behind jmg_mp_api (mp_api.h). The engine's
 * other files call NCCL directly only for data movement (send/recv,
 * all-reduce), always inside a guard whose watchdog aborts through here. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <string.h>

#include "engines/mp/mp_engine.h"

static int r_version(int* v) { return (int)ncclGetVersion(v); }

static int r_uid(unsigned char id[JMG_MP_ID_BYTES]) {
  ncclUniqueId u;
  ncclResult_t r = ncclGetUniqueId(&u);
  if (r == ncclSuccess) memcpy(id, u.internal, JMG_MP_ID_BYTES);
  return (int)r;
}

static int r_init(void** comm, int nranks, const unsigned char id[JMG_MP_ID_BYTES], int rank,
                  int ordinal) {
  /* The communicator binds to the calling thread's current device. */
  if (cudaSetDevice(ordinal) != cudaSuccess) return (int)ncclUnhandledCudaError;
  ncclUniqueId u;
  memcpy(u.internal, id, JMG_MP_ID_BYTES);
  ncclComm_t c = NULL;
  ncclResult_t r = ncclCommInitRank(&c, nranks, u, rank);
  *comm = c;
  return (int)r;
}

static int r_abort(void* comm) { return (int)ncclCommAbort((ncclComm_t)comm); }
static int r_destroy(void* comm) { return (int)ncclCommDestroy((ncclComm_t)comm); }
static const char* r_str(int r) { return ncclGetErrorString((ncclResult_t)r); }

const jmg_mp_api jmg_mp_nccl_api = {r_version, r_uid, r_init, r_abort, r_destroy, r_str};
