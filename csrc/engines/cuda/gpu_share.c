/* gpu_share.c - see gpu_share.h.
 *
 * A party publishes a, b, w and its workspace as (allocation, offset),
 * each allocation by legacy IPC handle or as virtual memory (gpu_vmm.h):
 * both name a whole allocation, and XLA hands out pieces of a few large
 * ones (its memory pool), so the four buffers usually share one. The
 * leader maps each allocation (and keeps virtual-memory mappings for later
 * calls, gpu_vmm.h) and the engine writes the owner's memory in place, so
 * fetch has nothing to copy back. Ordering needs nothing more: the owner
 * synced its stream before the meeting, and the leader syncs every device
 * before it announces the result.
 */
#include "engines/cuda/gpu_share.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "engines/cuda/gpu_vmm.h"

#define NBUF 4 /* a, b, w, work */

/* One allocation published by its owner. */
typedef struct mem_ref {
  int32_t vmm;                /* 1: virtual memory, shared as fd; 0: legacy IPC */
  int32_t fd;                 /* vmm: the owner's descriptor (gpu_vmm_export) */
  uint64_t size;              /* vmm: bytes to map */
  uint64_t base, id;          /* vmm: which allocation (gpu_vmm_export) */
  cudaIpcMemHandle_t legacy;
} mem_ref;

typedef struct ipc_record {
  char bus[16];               /* PCI bus id of the party's device */
  int32_t nmem;               /* allocations published */
  int8_t mem_of[NBUF];        /* the allocation holding buffer k, -1: none */
  int64_t off[NBUF];          /* buffer k's offset in it */
  mem_ref mem[NBUF];
  uint64_t mapped[NBUF];      /* leader's copy: where mem[i] is mapped, 0: not */
} ipc_record;

_Static_assert(sizeof(ipc_record) <= JMG_SHARE_BYTES, "the record must fit jmg_party.share");

static void get(const jmg_party* p, ipc_record* rec) { memcpy(rec, p->share, sizeof *rec); }
static void put(jmg_party* p, const ipc_record* rec) { memcpy(p->share, rec, sizeof *rec); }

static void** buffer(jmg_party* p, int k) {
  switch (k) {
    case 0: return &p->a;
    case 1: return &p->b;
    case 2: return &p->w;
    default: return &p->work;
  }
}

/* The owner's call is over: its exports may be reused or dropped. */
static void unexport(ipc_record* rec) {
  for (int i = 0; i < rec->nmem && i < NBUF; i++)
    if (rec->mem[i].vmm && rec->mem[i].fd >= 0) {
      gpu_vmm_unexport(rec->mem[i].id);
      rec->mem[i].fd = -1;
    }
}

int gpu_share_mark(jmg_party* me, char* err) {
  ipc_record rec;
  memset(&rec, 0, sizeof rec);
  cudaError_t e = cudaDeviceGetPCIBusId(rec.bus, (int)sizeof rec.bus, me->ordinal);
  if (e != cudaSuccess) {
    snprintf(err, JMG_ERRLEN, "no PCI bus id for device %d: %s", me->ordinal, cudaGetErrorString(e));
    return -1;
  }
  put(me, &rec);
  return 0;
}

int gpu_share_device(const jmg_job* job, int r, int32_t* dev, char* err) {
  const jmg_party* p = &job->parties[r];
  if (!jmg_job_remote(job, r)) {
    *dev = p->ordinal;
    return 0;
  }
  ipc_record rec;
  get(p, &rec);
  rec.bus[sizeof rec.bus - 1] = '\0';
  int d = -1;
  if (!rec.bus[0] || cudaDeviceGetByPCIBusId(&d, rec.bus) != cudaSuccess) {
    cudaGetLastError(); /* clear it: the call goes on to report */
    snprintf(err, JMG_ERRLEN,
             "rank %d's GPU (PCI %s, process %d) is not visible to the leader's process %d: with "
             "one process per GPU every process must see every GPU of its node (do not narrow "
             "CUDA_VISIBLE_DEVICES per process; pick each process's GPU with "
             "jax.distributed.initialize(local_device_ids=[...]))",
             r, rec.bus[0] ? rec.bus : "?", (int)p->pid, (int)job->parties[0].pid);
    return -1;
  }
  *dev = d;
  return 0;
}

int gpu_share(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, char* err) {
  (void)cf;
  ipc_record rec;
  get(me, &rec); /* keeps the bus id from enter */
  rec.nmem = 0;
  uint64_t bases[NBUF];
  cudaError_t e = cudaSetDevice(me->ordinal);
  for (int k = 0; k < NBUF && e == cudaSuccess; k++) {
    rec.mem_of[k] = -1;
    rec.off[k] = 0;
    rec.mapped[k] = 0;
    void* p = *buffer(me, k);
    if (!p) continue;
    uint64_t base = 0, size = 0;
    if (gpu_vmm_range(p, &base, &size, err)) goto fail;
    int i = 0;
    while (i < rec.nmem && bases[i] != base) i++;
    if (i == rec.nmem) {
      mem_ref* m = &rec.mem[i];
      memset(m, 0, sizeof *m);
      m->fd = -1;
      m->size = size;
      bases[rec.nmem++] = base;
      m->base = base;
      int rc = gpu_vmm_export(base, job->parties[0].token, job->parties[0].pid, &m->fd, &m->id,
                              err);
      if (rc < 0) goto fail;
      m->vmm = rc == 0;
      if (!m->vmm) e = cudaIpcGetMemHandle(&m->legacy, (void*)(uintptr_t)base);
    }
    rec.mem_of[k] = (int8_t)i;
    rec.off[k] = (int64_t)((uintptr_t)p - (uintptr_t)base);
  }
  if (e != cudaSuccess) {
    snprintf(err, JMG_ERRLEN, "cannot export device %d's buffers with CUDA IPC: %s", me->ordinal,
             cudaGetErrorString(e));
    goto fail;
  }
  put(me, &rec);
  return 0;
fail:
  unexport(&rec);
  return -1;
}

void gpu_share_close(jmg_job* job) {
  for (int r = 0; r < job->nparties; r++) {
    if (!jmg_job_remote(job, r)) continue;
    ipc_record rec;
    get(&job->parties[r], &rec);
    for (int i = 0; i < rec.nmem && i < NBUF; i++) {
      if (rec.mapped[i] && rec.mem[i].vmm) gpu_vmm_detach(rec.mapped[i]);
      else if (rec.mapped[i]) cudaIpcCloseMemHandle((void*)(uintptr_t)rec.mapped[i]);
      rec.mapped[i] = 0;
    }
    put(&job->parties[r], &rec);
  }
}

int gpu_share_open(jmg_job* job, char* err) {
  int32_t devs[JMG_MAX_DEVICES]; /* every device may touch every buffer */
  /* What the parties sent says nothing about the leader's mappings: close
   * must only undo what this open did. */
  for (int r = 0; r < job->nparties; r++) {
    ipc_record rec;
    get(&job->parties[r], &rec);
    memset(rec.mapped, 0, sizeof rec.mapped);
    put(&job->parties[r], &rec);
  }
  for (int r = 0; r < job->nparties; r++)
    if (gpu_share_device(job, r, &devs[r], err)) return -1;
  for (int r = 0; r < job->nparties; r++) {
    if (!jmg_job_remote(job, r)) continue;
    jmg_party* p = &job->parties[r];
    ipc_record rec;
    get(p, &rec);
    int bad = rec.nmem < 0 || rec.nmem > NBUF;
    for (int k = 0; k < NBUF && !bad; k++) {
      int i = rec.mem_of[k];
      if (i < 0) continue;
      /* Every buffer must lie inside an allocation the record names. */
      bad = i >= rec.nmem || rec.off[k] < 0 ||
            (rec.mem[i].vmm && (uint64_t)rec.off[k] >= rec.mem[i].size);
    }
    if (bad) {
      snprintf(err, JMG_ERRLEN, "rank %d sent a malformed IPC record", r);
      goto fail;
    }
    cudaError_t e = cudaSetDevice(devs[r]);
    for (int i = 0; i < rec.nmem && e == cudaSuccess; i++) {
      const mem_ref* m = &rec.mem[i];
      if (m->vmm) {
        if (gpu_vmm_attach(p->token, p->pid, m->base, m->id, m->fd, m->size, devs, job->nparties,
                           &rec.mapped[i], err))
          goto fail;
      } else {
        void* v = NULL;
        e = cudaIpcOpenMemHandle(&v, m->legacy, cudaIpcMemLazyEnablePeerAccess);
        rec.mapped[i] = e == cudaSuccess ? (uint64_t)(uintptr_t)v : 0;
      }
      put(p, &rec); /* so that close undoes a partial open */
    }
    if (e != cudaSuccess) {
      snprintf(err, JMG_ERRLEN, "cannot open rank %d's GPU buffers (device %d) by CUDA IPC: %s", r,
               devs[r], cudaGetErrorString(e));
      goto fail;
    }
    for (int k = 0; k < NBUF; k++)
      if (rec.mem_of[k] >= 0 && rec.mem_of[k] < rec.nmem)
        *buffer(p, k) = (char*)(uintptr_t)rec.mapped[rec.mem_of[k]] + rec.off[k];
  }
  return 0;
fail:
  gpu_share_close(job);
  return -1;
}

int gpu_share_fetch(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, int ok,
                    char* err) {
  /* The results are in place already: the exports are only released. */
  (void)cf;
  (void)job;
  (void)ok;
  (void)err;
  ipc_record rec;
  get(me, &rec);
  unexport(&rec);
  put(me, &rec);
  return 0;
}
