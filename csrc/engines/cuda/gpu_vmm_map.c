/* gpu_vmm_map.c - the leader's mappings of other processes' allocations,
 * kept between calls (see gpu_vmm.h).
 *
 * A mapping stays until its owner exports another allocation at the same
 * base, its owner process is gone (checked whenever a new mapping is
 * made), or the table is full and it is the least recently used one not
 * in a running call. A mapping holds the owner's memory alive, hence the
 * check for dead owners: without it a long-lived leader would pin the
 * memory of every finished job's processes.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "engines/cuda/gpu_vmm.h"
#include "engines/engine.h"
#include "util/identity.h"

#define NMAPS 128 /* >= JMG_MAX_DEVICES parties x 4 buffers: a call always fits */

typedef struct mapping {
  uint64_t token; /* the owner process (identity.h): PIDs repeat across namespaces */
  uint64_t base, id, size;
  uint64_t va;     /* 0: free slot */
  uint64_t access; /* bit d: device d may use it (ordinals < 64) */
  int users;       /* calls running with it */
  uint64_t used_at;
} mapping;

static mapping maps[NMAPS];
static uint64_t clock_ticks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void drop(mapping* m) {
  gpu_vmm_unmap(m->va, m->size);
  memset(m, 0, sizeof *m);
}

static int owner_gone(uint64_t token) { return jmg_token_alive(token) == 0; }

/* The devices of devs as a bit mask; *wide: one of them does not fit in it. */
static uint64_t mask_of(const int32_t* devs, int ndev, int* wide) {
  uint64_t mask = 0;
  *wide = 0;
  for (int i = 0; i < ndev; i++) {
    if (devs[i] >= 0 && devs[i] < 64) mask |= 1ULL << devs[i];
    else *wide = 1;
  }
  return mask;
}

/* A free slot, or the least recently used idle one emptied; NULL if every
 * mapping is in a running call. */
static mapping* free_slot(void) {
  for (int i = 0; i < NMAPS; i++)
    if (maps[i].va && !maps[i].users && owner_gone(maps[i].token)) drop(&maps[i]);
  mapping* best = NULL;
  for (int i = 0; i < NMAPS; i++) {
    if (!maps[i].va) return &maps[i];
    if (!maps[i].users && (!best || maps[i].used_at < best->used_at)) best = &maps[i];
  }
  if (best) drop(best);
  return best;
}

int gpu_vmm_attach(uint64_t token, int pid, uint64_t base, uint64_t id, int fd, uint64_t size,
                   const int32_t* devs, int ndev, uint64_t* va, char* err) {
  int wide = 0;
  uint64_t want = mask_of(devs, ndev, &wide);
  int rc = 0;
  pthread_mutex_lock(&lock);
  mapping* m = NULL;
  for (int i = 0; i < NMAPS && !m; i++) {
    mapping* c = &maps[i];
    if (!c->va || c->token != token || c->base != base) continue;
    if (c->id == id && c->size == size) m = c;
    else if (!c->users) drop(c); /* the owner's memory there changed */
  }
  if (m && (wide || (want & ~m->access))) {
    rc = gpu_vmm_access(m->va, m->size, devs, ndev, err);
    if (!rc) m->access |= want;
  }
  if (!m && !rc) {
    m = free_slot();
    if (!m) {
      snprintf(err, JMG_ERRLEN, "more than %d buffers of other processes in use at once", NMAPS);
      rc = -1;
    } else if ((rc = gpu_vmm_import(token, pid, fd, size, devs, ndev, &m->va, err)) == 0) {
      m->token = token;
      m->base = base;
      m->id = id;
      m->size = size;
      m->access = want;
    } else {
      m->va = 0;
    }
  }
  if (!rc) {
    m->users++;
    m->used_at = ++clock_ticks;
    *va = m->va;
  }
  pthread_mutex_unlock(&lock);
  return rc;
}

void gpu_vmm_detach(uint64_t va) {
  pthread_mutex_lock(&lock);
  for (int i = 0; i < NMAPS; i++)
    if (maps[i].va == va && maps[i].users > 0) {
      maps[i].users--;
      break;
    }
  pthread_mutex_unlock(&lock);
}
