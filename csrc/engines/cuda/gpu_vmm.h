/* gpu_vmm.h - GPU memory of another process, for gpu_share.c.
 *
 * XLA allocates device memory in one of two ways, and each is shared
 * differently: cudaMalloc-style memory with cudaIpcGetMemHandle (legacy
 * IPC), and CUDA virtual memory (cuMemCreate, what newer XLA allocates)
 * by exporting the physical allocation as a POSIX file descriptor, which
 * the leader takes from the owner's process with pidfd_getfd and maps at
 * an address of its own (the owner's PID checked first, see below). The
 * driver calls come through the runtime's entry
 * points, so jaxmg links no libcuda.
 *
 * Mapping a pool allocation of XLA (often most of a GPU) costs tens of
 * milliseconds, so the leader keeps its mappings between calls
 * (gpu_vmm_map.c): an allocation is named by (owner process, owner's base
 * address, id), and the owner gives an allocation a new id whenever the
 * memory at a base address is not the allocation it exported before.
 */
#ifndef JAXMG_GPU_VMM_H
#define JAXMG_GPU_VMM_H

#include <stdint.h>

/* The allocation holding p: its base address and size. */
int gpu_vmm_range(const void* p, uint64_t* base, uint64_t* size, char* err);

/* Owner: the virtual-memory allocation at base as a file descriptor of
 * this process that the process `reader_pid` (token reader_token, the
 * call's leader) may take, and which allocation it is
 * (*id: the same for as long as that allocation lives at base, unique
 * otherwise). The descriptor stays open for later calls; each export is
 * paired with an unexport once the call is over. Returns 1 when base is
 * not virtual memory (use legacy IPC), 0 with *fd and *id set, -1 on an
 * error. The reader's PID came through shared memory: it is checked to be
 * the live process of reader_token, of this user, in this PID namespace
 * (identity.h) before ptrace is granted to it. */
int gpu_vmm_export(uint64_t base, uint64_t reader_token, int reader_pid, int* fd, uint64_t* id,
                   char* err);
void gpu_vmm_unexport(uint64_t id);

/* Leader: the address where the allocation (owner, base, id) of size
 * bytes is mapped in this process, readable and writable from devs[ndev];
 * mapped from the owner's descriptor fd if it is not mapped yet. The owner
 * is the process with `token`; its `pid` (read from shared memory) is
 * checked against the token before any descriptor is taken. Each attach
 * is paired with a detach once the call is over. */
int gpu_vmm_attach(uint64_t token, int pid, uint64_t base, uint64_t id, int fd, uint64_t size,
                   const int32_t* devs, int ndev, uint64_t* va, char* err);
void gpu_vmm_detach(uint64_t va);

/* For gpu_vmm_map.c: one mapping made or undone (driver calls). */
int gpu_vmm_import(uint64_t token, int pid, int fd, uint64_t size, const int32_t* devs, int ndev,
                   uint64_t* va, char* err);
int gpu_vmm_access(uint64_t va, uint64_t size, const int32_t* devs, int ndev, char* err);
void gpu_vmm_unmap(uint64_t va, uint64_t size);

#endif
