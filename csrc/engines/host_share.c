/* host_share.c - host buffers across processes: each party that the leader
 * cannot address copies its shard into a shared memory segment of its own,
 * the leader maps those segments and runs the unchanged engine on them, and
 * each party copies its results back.
 *
 * One segment per party and call, not one per call: that is the shape CUDA
 * IPC has (each process exports its own memory, the leader opens it), so
 * the GPU engine can fill the same four steps with IPC handles.
 *
 * Names are "/jaxmg-part.<owner token>.<64 random bits>": nobody can guess
 * one, and the token says whose it is. The leader unlinks a name as soon
 * as it has mapped it, and the owner again when it fetches, so a name
 * outlives its call only if its owner died in between; the survivors'
 * sweep (meet_shm.c) then removes it, since the owner's token is dead. The
 * segment's room is reserved before the copy (shm_seg.h): a full /dev/shm
 * is an error for every party, not a SIGBUS. The leader trusts nothing in
 * a record: the name must carry the party's token, the size and offsets
 * must be the ones this call needs, the file must be ours with mode 0600.
 */
#define _POSIX_C_SOURCE 200809L

#include "engines/host_share.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rendezvous/shm_seg.h"
#include "util/identity.h"

#define NAME_MAX_ 64

/* What jmg_party.share holds on the host. */
typedef struct record {
  char name[NAME_MAX_];
  uint64_t bytes;
  int64_t off_a, off_b, off_w; /* -1: absent */
  uint64_t base;               /* the mapping in the process that made it */
  int32_t opened;              /* set in the leader's copy by open */
} record;

_Static_assert(sizeof(record) <= JMG_SHARE_BYTES, "the record must fit jmg_party.share");

static size_t real_size(jmg_dtype t) { return (t == JMG_F32 || t == JMG_C64) ? 4 : 8; }

static int64_t align_up(int64_t x) { return (x + 63) / 64 * 64; }

/* The segment layout of one party in this call: A, then b (potrs), then w
 * (syevd), each 64-byte aligned. Both sides compute it from the job. */
static void layout(const jmg_job* job, int has_b, int has_w, record* rec) {
  int64_t esize = (int64_t)jmg_dtype_size(job->dtype);
  int64_t a_bytes = job->nloc * job->n * esize;
  int64_t b_bytes = has_b ? job->n * job->nrhs * esize : 0;
  int64_t w_bytes = has_w ? job->n * (int64_t)real_size(job->dtype) : 0;
  rec->off_a = 0;
  rec->off_b = has_b ? align_up(a_bytes) : -1;
  rec->off_w = has_w ? align_up(a_bytes) + align_up(b_bytes) : -1;
  rec->bytes = (uint64_t)(align_up(a_bytes) + align_up(b_bytes) + align_up(w_bytes));
  if (rec->bytes == 0) rec->bytes = 64;
}

static void part_prefix(uint64_t token, char* out, size_t cap) {
  char hex[17];
  jmg_token_hex(token, hex);
  snprintf(out, cap, "/jaxmg-part.%s.", hex);
}

/* Creates a fresh segment of rec->bytes under a random name; a name taken
 * already (64 random bits: practically never) is skipped, never removed. */
static int make_segment(record* rec, char* err) {
  char prefix[40];
  if (jmg_identity_live(err, JMG_ERRLEN)) return -1;
  part_prefix(jmg_process_token(), prefix, sizeof prefix);
  int fd = -1, rc = JMG_SEG_EXISTS;
  for (int attempt = 0; attempt < 4 && rc == JMG_SEG_EXISTS; attempt++) {
    snprintf(rec->name, sizeof rec->name, "%s%016llx", prefix,
             (unsigned long long)jmg_random64());
    rc = jmg_seg_create(rec->name, rec->bytes, &fd, err, JMG_ERRLEN);
  }
  if (rc == JMG_SEG_EXISTS) snprintf(err, JMG_ERRLEN, "no free shared memory name (%s...)", prefix);
  if (rc) return -1;
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

int jmg_host_share(const XLA_FFI_CallFrame* cf, const jmg_job* job, jmg_party* me, char* err) {
  (void)cf;
  record rec;
  memset(&rec, 0, sizeof rec);
  layout(job, me->b != NULL, me->w != NULL, &rec);
  if (make_segment(&rec, err)) return -1;
  /* Only A is input: the leader reads b from its own copy (b is
   * replicated) and writes x and w into every party's. */
  memcpy((char*)(uintptr_t)rec.base, me->a,
         (size_t)(job->nloc * job->n * (int64_t)jmg_dtype_size(job->dtype)));
  memcpy(me->share, &rec, sizeof rec);
  jmg_test_point("shared");
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

/* Whether party r's record describes exactly the segment this call needs
 * from it, under a name of its own process. */
static int check_record(const jmg_job* job, int r, record* rec, char* err) {
  const jmg_party* p = &job->parties[r];
  char prefix[40];
  record want;
  part_prefix(p->token, prefix, sizeof prefix);
  int has_b = rec->off_b >= 0, has_w = rec->off_w >= 0;
  layout(job, has_b, has_w, &want);
  if (!memchr(rec->name, '\0', sizeof rec->name) ||
      strncmp(rec->name, prefix, strlen(prefix)) || strchr(rec->name + 1, '/') ||
      has_b != (job->op == JMG_POTRS) || has_w != (job->op == JMG_SYEVD) ||
      rec->bytes != want.bytes || rec->off_a != want.off_a || rec->off_b != want.off_b ||
      rec->off_w != want.off_w) {
    snprintf(err, JMG_ERRLEN,
             "rank %d sent a malformed shared memory record (name, size or offsets do not "
             "match this call)",
             r);
    return -1;
  }
  return 0;
}

int jmg_host_open(jmg_job* job, char* err) {
  /* What the parties sent says nothing about the leader's mappings: close
   * must only undo what this open did. */
  for (int r = 0; r < job->nparties; r++) {
    record rec;
    memcpy(&rec, job->parties[r].share, sizeof rec);
    rec.opened = 0;
    memcpy(job->parties[r].share, &rec, sizeof rec);
  }
  for (int r = 0; r < job->nparties; r++) {
    jmg_party* p = &job->parties[r];
    record rec;
    memcpy(&rec, p->share, sizeof rec);
    if (!jmg_job_remote(job, r)) continue;
    char oerr[JMG_ERRLEN - 32];
    int fd = -1;
    if (check_record(job, r, &rec, err)) goto fail;
    if (jmg_seg_open(rec.name, rec.bytes, 0, &fd, oerr, sizeof oerr)) {
      snprintf(err, JMG_ERRLEN, "rank %d's shard: %s", r, oerr);
      goto fail;
    }
    void* base = mmap(NULL, rec.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
      snprintf(err, JMG_ERRLEN, "cannot map rank %d's shared memory %s: %s", r, rec.name,
               strerror(errno));
      goto fail;
    }
    shm_unlink(rec.name); /* both sides hold a mapping now */
    rec.base = (uint64_t)(uintptr_t)base;
    rec.opened = 1;
    memcpy(p->share, &rec, sizeof rec);
    p->a = (char*)base + rec.off_a;
    p->b = rec.off_b >= 0 ? (char*)base + rec.off_b : NULL;
    p->w = rec.off_w >= 0 ? (char*)base + rec.off_w : NULL;
  }
  jmg_test_point("opened");
  return 0;
fail:
  jmg_host_close(job);
  return -1;
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
