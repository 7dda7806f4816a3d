/* host_share.c - host buffers across processes: each party that the leader
 * cannot address copies its shard into a shared memory segment of its own,
 * the leader maps those segments and runs the unchanged engine on them, and
 * each party copies its results back.
 *
 * Every data slot of the party travels by its size and flags (engine.h):
 * an IN slot is copied into the segment, an OUT slot is copied back from
 * it after the run, and a slot that is only the leader's own (OWN) has no
 * place in it: the leader never touches another party's copy of it.
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
#include <stdint.h>
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
  int64_t off[JMG_MAX_BUFS]; /* where slot k starts in the segment; -1: not carried */
  int64_t len[JMG_MAX_BUFS]; /* its bytes (0 when not carried) */
  uint64_t base;             /* the mapping in the process that made it */
  int32_t opened;            /* set in the leader's copy by open */
} record;

_Static_assert(sizeof(record) <= JMG_SHARE_BYTES, "the record must fit jmg_party.share");

static int64_t align_up(int64_t x) { return (x + 63) / 64 * 64; }

/* A slot travels if the leader reads every party's copy (IN) or writes it
 * (OUT); a replicated input that only the leader's own copy feeds (OWN
 * alone) stays home. */
static int carried(uint8_t flags) { return (flags & (JMG_BUF_IN | JMG_BUF_OUT)) != 0; }

/* The segment layout of one party's buffers: the carried slots in order,
 * each 64-byte aligned. The owner computes it from its own slots, the
 * leader from its own (the meeting checked that every party's sizes and
 * flags are the leader's), so a record is right only if both agree.
 * Non-zero when the sizes are impossible (negative, or their sum would
 * not fit 64 bits). */
static int layout(const int64_t bytes[JMG_MAX_BUFS], const uint8_t flags[JMG_MAX_BUFS],
                  record* rec) {
  const int64_t cap = INT64_MAX / 2;
  int64_t at = 0;
  for (int k = 0; k < JMG_MAX_BUFS; k++) {
    rec->off[k] = -1;
    rec->len[k] = 0;
    if (!carried(flags[k])) continue;
    if (bytes[k] < 0 || bytes[k] > cap - at - 64) return -1;
    rec->off[k] = at;
    rec->len[k] = bytes[k];
    at += align_up(bytes[k]);
  }
  rec->bytes = (uint64_t)(at ? at : 64);
  return 0;
}

static int bad_sizes(char* err) {
  snprintf(err, JMG_ERRLEN, "buffer sizes of this call do not fit a shared memory segment");
  return -1;
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
  (void)job;
  record rec;
  memset(&rec, 0, sizeof rec);
  if (layout(me->buf_bytes, me->buf_flags, &rec)) return bad_sizes(err);
  if (make_segment(&rec, err)) return -1;
  /* Inputs only (IN): results (OUT) are the leader's to write. */
  char* base = (char*)(uintptr_t)rec.base;
  for (int k = 0; k < JMG_MAX_BUFS; k++)
    if ((me->buf_flags[k] & JMG_BUF_IN) && rec.len[k] > 0)
      memcpy(base + rec.off[k], me->buf[k], (size_t)rec.len[k]);
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
 * from it (the leader's own slot sizes and flags), under a name of its own
 * process. */
static int check_record(const jmg_job* job, int r, const record* rec, char* err) {
  const jmg_party* p = &job->parties[r];
  const jmg_party* lead = &job->parties[0];
  char prefix[40];
  record want;
  part_prefix(p->token, prefix, sizeof prefix);
  int same = layout(lead->buf_bytes, lead->buf_flags, &want) == 0 && rec->bytes == want.bytes;
  for (int k = 0; k < JMG_MAX_BUFS; k++)
    same = same && rec->off[k] == want.off[k] && rec->len[k] == want.len[k];
  if (!memchr(rec->name, '\0', sizeof rec->name) ||
      strncmp(rec->name, prefix, strlen(prefix)) || strchr(rec->name + 1, '/') || !same) {
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
    /* A slot that stays home is nothing the leader may touch. */
    for (int k = 0; k < JMG_MAX_BUFS; k++)
      p->buf[k] = rec.off[k] >= 0 ? (char*)base + rec.off[k] : NULL;
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
    /* Every result slot, A's included where the op returns a matrix in
     * it (for potrs it holds the factor). */
    for (int k = 0; k < JMG_MAX_BUFS; k++)
      if ((me->buf_flags[k] & JMG_BUF_OUT) && rec.len[k] > 0 && me->buf[k])
        memcpy(me->buf[k], base + rec.off[k], (size_t)rec.len[k]);
  }
  munmap(base, rec.bytes);
  shm_unlink(rec.name); /* normally gone already: the leader unlinked it */
  memset(me->share, 0, sizeof me->share);
  return 0;
}
