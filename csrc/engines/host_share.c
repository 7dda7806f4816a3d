/* host_share.c - host buffers across processes: each party that the leader
 * cannot address copies its shard into a shared memory segment of its own,
 * the leader maps those segments and runs the unchanged engine on them, and
 * each party copies its results back.
 *
 * One segment per party and call, not one per call: that is the shape CUDA
 * IPC has (each process exports its own memory, the leader opens it), so
 * the GPU engine can fill the same four steps with IPC handles.
 *
 * The names ("/jaxmg-part.<pid>.<k>") are unique on the node while their
 * process lives. The leader unlinks a name as soon as it has mapped it, and
 * the owner again when it fetches, so a name outlives its call only if
 * both died in between. Such a leftover is removed by the sweep of
 * meet_shm.c (its owner's pid is dead), or by a later process that gets the
 * same pid, since the owner who had that pid must be dead.
 */
#define _POSIX_C_SOURCE 200809L

#include "engines/host_share.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* What jmg_party.share holds on the host. */
typedef struct record {
  char name[64];
  uint64_t bytes;
  int64_t off_a, off_b, off_w; /* -1: absent */
  uint64_t base;               /* the mapping in the process that made it */
  int32_t opened;              /* set in the leader's copy by open */
} record;

_Static_assert(sizeof(record) <= JMG_SHARE_BYTES, "the record must fit jmg_party.share");

static atomic_uint_fast64_t counter;

static size_t real_size(jmg_dtype t) { return (t == JMG_F32 || t == JMG_C64) ? 4 : 8; }

static int64_t align_up(int64_t x) { return (x + 63) / 64 * 64; }

static int make_segment(record* rec, char* err) {
  for (int attempt = 0; attempt < 2; attempt++) {
    snprintf(rec->name, sizeof rec->name, "/jaxmg-part.%d.%llu", (int)getpid(),
             (unsigned long long)atomic_fetch_add(&counter, 1));
    int fd = shm_open(rec->name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 && errno == EEXIST) {
      shm_unlink(rec->name); /* a dead process's leftover, see top */
      continue;
    }
    if (fd < 0) break;
    if (ftruncate(fd, (off_t)rec->bytes)) {
      snprintf(err, JMG_ERRLEN, "cannot size shared memory %s to %llu bytes: %s", rec->name,
               (unsigned long long)rec->bytes, strerror(errno));
      close(fd);
      shm_unlink(rec->name);
      return -1;
    }
    void* p = mmap(NULL, rec->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
      snprintf(err, JMG_ERRLEN, "cannot map shared memory %s: %s", rec->name, strerror(errno));
      shm_unlink(rec->name);
      return -1;
    }
    rec->base = (uint64_t)(uintptr_t)p;
    return 0;
  }
  snprintf(err, JMG_ERRLEN, "cannot create shared memory %s: %s", rec->name, strerror(errno));
  return -1;
}

int jmg_host_share(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, char* err) {
  (void)cf;
  record rec;
  memset(&rec, 0, sizeof rec);
  int64_t esize = (int64_t)jmg_dtype_size(job->dtype);
  int64_t a_bytes = job->nloc * job->n * esize;
  int64_t b_bytes = me->b ? job->n * job->nrhs * esize : 0;
  int64_t w_bytes = me->w ? job->n * (int64_t)real_size(job->dtype) : 0;
  rec.off_a = 0;
  rec.off_b = me->b ? align_up(a_bytes) : -1;
  rec.off_w = me->w ? align_up(a_bytes) + align_up(b_bytes) : -1;
  rec.bytes = (uint64_t)(align_up(a_bytes) + align_up(b_bytes) + align_up(w_bytes));
  if (rec.bytes == 0) rec.bytes = 64;
  if (make_segment(&rec, err)) return -1;
  /* Only A is input: the leader reads b from its own copy (b is
   * replicated) and writes x and w into every party's. */
  memcpy((char*)(uintptr_t)rec.base, me->a, (size_t)a_bytes);
  memcpy(me->share, &rec, sizeof rec);
  return 0;
}

void jmg_host_close(jmg_job* job) {
  for (int r = 0; r < job->nparties; r++) {
    record rec;
    memcpy(&rec, job->parties[r].share, sizeof rec);
    if (!jmg_job_remote(job, r) || !rec.opened) continue;
    munmap((void*)(uintptr_t)rec.base, rec.bytes);
    rec.opened = 0;
    memcpy(job->parties[r].share, &rec, sizeof rec);
  }
}

int jmg_host_open(jmg_job* job, char* err) {
  for (int r = 0; r < job->nparties; r++) {
    jmg_party* p = &job->parties[r];
    record rec;
    memcpy(&rec, p->share, sizeof rec);
    if (!jmg_job_remote(job, r)) continue;
    rec.name[sizeof rec.name - 1] = '\0';
    int fd = shm_open(rec.name, O_RDWR, 0600);
    void* base = MAP_FAILED;
    if (fd >= 0) {
      base = mmap(NULL, rec.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      close(fd);
    }
    if (base == MAP_FAILED) {
      snprintf(err, JMG_ERRLEN, "cannot map rank %d's shared memory %s: %s", r, rec.name,
               strerror(errno));
      jmg_host_close(job);
      return -1;
    }
    shm_unlink(rec.name); /* both sides hold a mapping now */
    rec.base = (uint64_t)(uintptr_t)base;
    rec.opened = 1;
    memcpy(p->share, &rec, sizeof rec);
    p->a = (char*)base + rec.off_a;
    p->b = rec.off_b >= 0 ? (char*)base + rec.off_b : NULL;
    p->w = rec.off_w >= 0 ? (char*)base + rec.off_w : NULL;
  }
  return 0;
}

int jmg_host_fetch(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, int ok,
                   char* err) {
  (void)cf;
  (void)err;
  record rec;
  memcpy(&rec, me->share, sizeof rec);
  char* base = (char*)(uintptr_t)rec.base;
  if (ok && job) {
    int64_t esize = (int64_t)jmg_dtype_size(job->dtype);
    /* potrs leaves A as scratch; the other ops return a matrix in it. */
    if (job->op != JMG_POTRS) memcpy(me->a, base + rec.off_a, (size_t)(job->nloc * job->n * esize));
    if (me->b && rec.off_b >= 0)
      memcpy(me->b, base + rec.off_b, (size_t)(job->n * job->nrhs * esize));
    if (me->w && rec.off_w >= 0)
      memcpy(me->w, base + rec.off_w, (size_t)(job->n * (int64_t)real_size(job->dtype)));
  }
  munmap(base, rec.bytes);
  shm_unlink(rec.name); /* normally gone already: the leader unlinked it */
  memset(me->share, 0, sizeof me->share);
  return 0;
}
