/* gpu_vmm.h - GPU memory of another process, for gpu_share.c.
 *
 * XLA allocates device memory in one of two ways, and each is shared
 * differently: cudaMalloc-style memory with cudaIpcGetMemHandle (legacy
 * IPC), and CUDA virtual memory (cuMemCreate, what newer XLA allocates)
 * by exporting the physical allocation as a POSIX file descriptor, which
 * the leader takes from the owner's process with pidfd_getfd and maps at
 * an address of its own. The driver calls come through the runtime's entry
 * points, so jaxmg links no libcuda.
 */
#ifndef JAXMG_GPU_VMM_H
#define JAXMG_GPU_VMM_H

#include <stdint.h>

/* The allocation holding p: its base address and size. */
int gpu_vmm_range(const void* p, uint64_t* base, uint64_t* size, char* err);

/* Exports the virtual-memory allocation holding p as a file descriptor of
 * this process, readable by process `reader`. Returns 1 when p is not
 * virtual memory (use legacy IPC), 0 with *fd set, -1 on an error. */
int gpu_vmm_export(const void* p, int reader, int* fd, char* err);

/* Leader: maps the allocation that process `pid` exported as `fd` (size
 * bytes), readable and writable from the devs[ndev]. */
int gpu_vmm_import(int pid, int fd, uint64_t size, const int32_t* devs, int ndev, uint64_t* va,
                   char* err);
void gpu_vmm_unmap(uint64_t va, uint64_t size);

#endif
