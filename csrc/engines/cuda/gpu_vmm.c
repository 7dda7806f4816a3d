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
#include <unistd.h>

#include "engines/engine.h"

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

int gpu_vmm_export(const void* p, int reader, int* fd, char* err) {
  if (driver(err)) return -1;
  CUmemGenericAllocationHandle h;
  if (drv.retain(&h, (void*)(uintptr_t)p) != CUDA_SUCCESS) return 1;
  int out = -1;
  CUresult r = drv.export_fd(&out, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
  drv.release(h);
  if (r != CUDA_SUCCESS) {
    snprintf(err, JMG_ERRLEN,
             "XLA's device memory cannot be exported as a file descriptor (cuMemExport"
             "ToShareableHandle: %d), so no other process can reach it", (int)r);
    return -1;
  }
  /* Under Yama's ptrace_scope 1 only the processes we name may take our
   * descriptors (pidfd_getfd); elsewhere this call fails harmlessly. */
  prctl(PR_SET_PTRACER, (unsigned long)reader, 0, 0, 0);
  *fd = out;
  return 0;
}

int gpu_vmm_import(int pid, int fd, uint64_t size, const int32_t* devs, int ndev, uint64_t* va,
                   char* err) {
  if (driver(err)) return -1;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  int mine = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  int saved = errno;
  if (pidfd >= 0) close(pidfd);
  if (mine < 0) {
    snprintf(err, JMG_ERRLEN,
             "cannot take process %d's memory descriptor (pidfd_getfd: %s): the processes of a "
             "node must run as one user and may not forbid ptrace between them",
             pid, strerror(saved));
    return -1;
  }
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
    CUmemAccessDesc acc[JMG_MAX_DEVICES];
    int n = ndev < JMG_MAX_DEVICES ? ndev : JMG_MAX_DEVICES;
    for (int i = 0; i < n; i++) {
      memset(&acc[i], 0, sizeof acc[i]);
      acc[i].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
      acc[i].location.id = devs[i];
      acc[i].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    }
    what = "cuMemSetAccess";
    r = drv.set_access(p, (size_t)size, acc, (size_t)n);
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
