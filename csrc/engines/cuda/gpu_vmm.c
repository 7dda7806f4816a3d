/* gpu_vmm.c - see gpu_vmm.h. */
#define _GNU_SOURCE

#include "engines/cuda/gpu_vmm.h"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engines/engine.h"
#include "util/identity.h"

static struct {
  PFN_cuMemGetAddressRange_v3020 range;
  PFN_cuMemRetainAllocationHandle_v11000 retain;
  PFN_cuMemExportToShareableHandle_v10020 export_fd;
  PFN_cuMemImportFromShareableHandle_v10020 import_fd;
  PFN_cuMemRelease_v10020 release;
  PFN_cuMemAddressReserve_v10020 reserve;
  PFN_cuMemAddressFree_v10020 address_free;
  PFN_cuMemMap_v10020 map;
  PFN_cuMemUnmap_v10020 unmap;
  PFN_cuMemSetAccess_v10020 set_access;
  int ok;
} drv;
static pthread_once_t drv_once = PTHREAD_ONCE_INIT;

/* ISO C has no cast from object to function pointer: copy the bytes. */
static int entry(const char* name, unsigned version, void* fn_out) {
  void* fn = NULL;
  enum cudaDriverEntryPointQueryResult q;
  if (cudaGetDriverEntryPointByVersion(name, &fn, version, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess || !fn)
    return 0;
  memcpy(fn_out, &fn, sizeof fn);
  return 1;
}

static void find_driver(void) {
  drv.ok = entry("cuMemGetAddressRange", 3020, &drv.range) &&
           entry("cuMemRetainAllocationHandle", 11000, &drv.retain) &&
           entry("cuMemExportToShareableHandle", 10020, &drv.export_fd) &&
           entry("cuMemImportFromShareableHandle", 10020, &drv.import_fd) &&
           entry("cuMemRelease", 10020, &drv.release) &&
           entry("cuMemAddressReserve", 10020, &drv.reserve) &&
           entry("cuMemAddressFree", 10020, &drv.address_free) &&
           entry("cuMemMap", 10020, &drv.map) && entry("cuMemUnmap", 10020, &drv.unmap) &&
           entry("cuMemSetAccess", 10020, &drv.set_access);
}

static int driver(char* err) {
  pthread_once(&drv_once, find_driver);
  if (!drv.ok) snprintf(err, JMG_ERRLEN, "the CUDA driver lacks the virtual memory calls jaxmg needs");
  return drv.ok ? 0 : -1;
}

int gpu_vmm_range(const void* p, uint64_t* base, uint64_t* size, char* err) {
  if (driver(err)) return -1;
  CUdeviceptr b = 0;
  size_t s = 0;
  CUresult r = drv.range(&b, &s, (CUdeviceptr)(uintptr_t)p);
  if (r != CUDA_SUCCESS) {
    snprintf(err, JMG_ERRLEN, "cuMemGetAddressRange failed (%d)", (int)r);
    return -1;
  }
  *base = (uint64_t)b;
  *size = (uint64_t)s;
  return 0;
}

/* The owner's side: the allocations it has exported, each with its
 * descriptor kept open for the leader to take again in later calls, and
 * its handle retained, which holds the allocation alive so that the handle
 * value (the same for every retain of one allocation) keeps naming it. */
#define NKNOWN 32
typedef struct exported {
  uint64_t base, id; /* id 0: free slot */
  CUmemGenericAllocationHandle h;
  int fd;
  int users; /* calls that published it and have not fetched yet */
} exported;
static exported known[NKNOWN];
static uint64_t next_id;
static pthread_mutex_t known_lock = PTHREAD_MUTEX_INITIALIZER;

/* A new id, unique across the processes the leader may meet: ids of two
 * processes differ by their random start. */
static uint64_t new_id(void) {
  if (!next_id) next_id = jmg_random64() | 1;
  return next_id++;
}

static void forget(exported* e) {
  close(e->fd);
  drv.release(e->h);
  memset(e, 0, sizeof *e);
}

/* Under known_lock: the entry for h at base, made if needed (takes over
 * the reference h), or NULL with err set. */
static exported* entry_for(uint64_t base, CUmemGenericAllocationHandle h, char* err) {
  exported* spare = NULL;
  for (int i = 0; i < NKNOWN; i++) {
    exported* e = &known[i];
    if (e->id && e->base == base && e->h == h) {
      drv.release(h); /* held already */
      return e;
    }
    if (e->id && e->base == base && !e->users) forget(e); /* a former allocation there */
    if (!e->id && !spare) spare = e;
  }
  for (int i = 0; i < NKNOWN && !spare; i++)
    if (!known[i].users) {
      forget(&known[i]);
      spare = &known[i];
    }
  int fd = -1;
  CUresult r = spare ? drv.export_fd(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0)
                     : CUDA_ERROR_OUT_OF_MEMORY;
  if (!spare || r != CUDA_SUCCESS) {
    drv.release(h);
    if (!spare)
      snprintf(err, JMG_ERRLEN, "more than %d device allocations shared at once", NKNOWN);
    else
      snprintf(err, JMG_ERRLEN,
               "XLA's device memory cannot be exported as a file descriptor (cuMemExport"
               "ToShareableHandle: %d), so no other process can reach it", (int)r);
    return NULL;
  }
  spare->base = base;
  spare->h = h;
  spare->fd = fd;
  spare->id = new_id();
  spare->users = 0;
  return spare;
}

int gpu_vmm_export(uint64_t base, uint64_t reader_token, int reader_pid, int* fd, uint64_t* id,
                   char* err) {
  if (driver(err)) return -1;
  char why[JMG_ERRLEN - 64];
  if (jmg_token_pid(reader_token, reader_pid, why, sizeof why)) {
    snprintf(err, JMG_ERRLEN, "the leader cannot be granted this GPU's memory: %s", why);
    return -1;
  }
  CUmemGenericAllocationHandle h;
  if (drv.retain(&h, (void*)(uintptr_t)base) != CUDA_SUCCESS) return 1;
  pthread_mutex_lock(&known_lock);
  exported* e = entry_for(base, h, err);
  if (e) {
    e->users++;
    *fd = e->fd;
    *id = e->id;
  }
  pthread_mutex_unlock(&known_lock);
  if (!e) return -1;
  /* Under Yama's ptrace_scope 1 only the processes we name may take our
   * descriptors (pidfd_getfd); elsewhere this call fails harmlessly. */
  prctl(PR_SET_PTRACER, (unsigned long)reader_pid, 0, 0, 0);
  return 0;
}

void gpu_vmm_unexport(uint64_t id) {
  pthread_mutex_lock(&known_lock);
  for (int i = 0; i < NKNOWN; i++)
    if (known[i].id == id && known[i].users > 0) {
      known[i].users--;
      break;
    }
  pthread_mutex_unlock(&known_lock);
}

static CUresult set_access(CUdeviceptr p, uint64_t size, const int32_t* devs, int ndev) {
  CUmemAccessDesc acc[JMG_MAX_DEVICES];
  int n = ndev < JMG_MAX_DEVICES ? ndev : JMG_MAX_DEVICES;
  for (int i = 0; i < n; i++) {
    memset(&acc[i], 0, sizeof acc[i]);
    acc[i].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    acc[i].location.id = devs[i];
    acc[i].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  }
  return drv.set_access(p, (size_t)size, acc, (size_t)n);
}

int gpu_vmm_access(uint64_t va, uint64_t size, const int32_t* devs, int ndev, char* err) {
  if (driver(err)) return -1;
  CUresult r = set_access((CUdeviceptr)va, size, devs, ndev);
  if (r != CUDA_SUCCESS) {
    snprintf(err, JMG_ERRLEN, "cuMemSetAccess on another process's memory failed (%d)", (int)r);
    return -1;
  }
  return 0;
}

/* A descriptor of the process with `token` at `pid`: the PID is checked
 * before pidfd_open and again after, since a live owner keeps its PID and
 * so the pidfd then names the owner, not a process that reused the PID. */
static int take_fd(uint64_t token, int pid, int fd, char* err) {
  char why[JMG_ERRLEN - 64];
  if (jmg_token_pid(token, pid, why, sizeof why)) {
    snprintf(err, JMG_ERRLEN, "will not take a GPU memory descriptor: %s", why);
    return -1;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd >= 0 && jmg_token_pid(token, pid, why, sizeof why)) {
    close(pidfd);
    snprintf(err, JMG_ERRLEN, "will not take a GPU memory descriptor: %s", why);
    return -1;
  }
  int mine = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  int saved = errno;
  if (pidfd >= 0) close(pidfd);
  if (mine < 0)
    snprintf(err, JMG_ERRLEN,
             "cannot take process %d's memory descriptor (pidfd_getfd: %s): the processes of a "
             "node must run as one user and may not forbid ptrace between them",
             pid, strerror(saved));
  return mine;
}

int gpu_vmm_import(uint64_t token, int pid, int fd, uint64_t size, const int32_t* devs, int ndev,
                   uint64_t* va, char* err) {
  if (driver(err)) return -1;
  int mine = take_fd(token, pid, fd, err);
  if (mine < 0) return -1;
  CUmemGenericAllocationHandle h;
  CUdeviceptr p = 0;
  int reserved = 0, mapped = 0;
  CUresult r = drv.import_fd(&h, (void*)(uintptr_t)mine, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
  close(mine);
  const char* what = "cuMemImportFromShareableHandle";
  if (r == CUDA_SUCCESS) {
    what = "cuMemAddressReserve";
    r = drv.reserve(&p, (size_t)size, 0, 0, 0);
    reserved = r == CUDA_SUCCESS;
    if (reserved) {
      what = "cuMemMap";
      r = drv.map(p, (size_t)size, 0, h, 0);
      mapped = r == CUDA_SUCCESS;
    }
    drv.release(h); /* the mapping keeps the memory */
  }
  if (mapped) {
    what = "cuMemSetAccess";
    r = set_access(p, size, devs, ndev);
  }
  if (r != CUDA_SUCCESS) {
    if (mapped) drv.unmap(p, (size_t)size);
    if (reserved) drv.address_free(p, (size_t)size);
    snprintf(err, JMG_ERRLEN, "cannot map process %d's device memory: %s failed (%d)", pid, what,
             (int)r);
    return -1;
  }
  *va = (uint64_t)p;
  return 0;
}

void gpu_vmm_unmap(uint64_t va, uint64_t size) {
  if (!drv.ok || !va) return;
  drv.unmap((CUdeviceptr)va, (size_t)size);
  drv.address_free((CUdeviceptr)va, (size_t)size);
}
