/* test_meet_share.c - the host engine's shard segments (host_share.c) as
 * the leader sees them: a record is used only if it describes exactly this
 * call's segment under its owner's name, the segment must be ours with
 * mode 0600, and a shard that does not fit /dev/shm is an error naming the
 * bytes and the folder. Owner and leader are the same process here, with
 * the leader given another token so that the owner counts as remote. */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "engines/host_share.h"
#include "util/identity.h"

enum { N = 8, NLOC = 4 };

static double a_mine[NLOC * N], b_mine[N];

/* A slot as the decoder would fill it, in the leader's and the owner's party. */
static void slot(jmg_party parties[2], int k, void* mine, int64_t bytes, uint8_t flags) {
  for (int r = 0; r < 2; r++) {
    parties[r].buf_bytes[k] = bytes;
    parties[r].buf_flags[k] = flags;
  }
  parties[1].buf[k] = mine;
}

static void setup(jmg_job* job, jmg_party parties[2], int64_t n, int64_t nloc) {
  memset(job, 0, sizeof *job);
  memset(parties, 0, 2 * sizeof *parties);
  job->op = JMG_POTRS;
  job->dtype = JMG_F64;
  job->nparties = 2;
  job->n = n;
  job->nloc = nloc;
  job->nrhs = 1;
  job->tile = nloc;
  job->parties = parties;
  parties[0].token = 0x1111111111111111u; /* the leader, "elsewhere" */
  parties[1].token = jmg_process_token();
  parties[1].rank = 1;
  /* potrs: A in and out, b the leader's own, x written everywhere. */
  slot(parties, 0, a_mine, nloc * n * 8, JMG_BUF_IN | JMG_BUF_OUT);
  slot(parties, 1, b_mine, n * 8, JMG_BUF_OWN | JMG_BUF_OUT);
}

static int exists(const char* name) {
  int fd = shm_open(name, O_RDONLY, 0);
  if (fd >= 0) close(fd);
  return fd >= 0;
}

/* Shares rank 1's shard; returns its segment name (the record's first field). */
static const char* share(jmg_job* job, jmg_party parties[2], jmg_party* owner, char* err) {
  *owner = parties[1];
  if (jmg_host_share(NULL, job, owner, err)) return NULL;
  parties[1] = *owner; /* what the meeting would deliver to the leader */
  return (const char*)owner->share;
}

static void test_good_record(void) {
  jmg_job job;
  jmg_party parties[2], owner;
  char err[JMG_ERRLEN] = "", hex[17], prefix[64];
  for (int i = 0; i < NLOC * N; i++) a_mine[i] = i + 0.5;
  setup(&job, parties, N, NLOC);
  const char* name = share(&job, parties, &owner, err);
  CHECK(name != NULL, "share: %s", err);
  if (!name) return;
  jmg_token_hex(jmg_process_token(), hex);
  snprintf(prefix, sizeof prefix, "/jaxmg-part.%s.", hex);
  CHECK(!strncmp(name, prefix, strlen(prefix)) && strlen(name) == strlen(prefix) + 16,
        "name %s: not <prefix><16 random hex>", name);
  char path[128];
  struct stat st;
  snprintf(path, sizeof path, "/dev/shm%s", name);
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_uid == geteuid(),
        "segment %s: mode %o", path, (unsigned)(st.st_mode & 0777));
  CHECK(jmg_host_open(&job, err) == 0, "open: %s", err);
  CHECK(parties[1].a && ((double*)parties[1].a)[5] == 5.5, "the leader does not see the shard");
  CHECK(!exists(name), "the leader did not unlink %s", name);
  jmg_host_close(&job);
  jmg_host_fetch(NULL, &job, &owner, 0, err);
}

/* One field of a record changed: the leader refuses it, touching nothing. */
static void test_tampered(const char* what, size_t off, const void* val, size_t len) {
  jmg_job job;
  jmg_party parties[2], owner;
  char err[JMG_ERRLEN] = "", name[64];
  setup(&job, parties, N, NLOC);
  if (!share(&job, parties, &owner, err)) return;
  memcpy(name, owner.share, sizeof name - 1);
  name[sizeof name - 1] = '\0';
  memcpy(parties[1].share + off, val, len);
  CHECK(jmg_host_open(&job, err) != 0, "%s: the leader took the record", what);
  CHECK(strstr(err, "malformed") != NULL, "%s: message %s", what, err);
  CHECK(exists(name), "%s: the leader unlinked a segment it refused", what);
  jmg_host_fetch(NULL, &job, &owner, 0, err);
  CHECK(!exists(name), "%s: the owner did not remove %s", what, name);
}

static void test_not_ours(void) {
  jmg_job job;
  jmg_party parties[2], owner;
  char err[JMG_ERRLEN] = "", name[64];
  setup(&job, parties, N, NLOC);
  if (!share(&job, parties, &owner, err)) return;
  memcpy(name, owner.share, sizeof name - 1);
  name[sizeof name - 1] = '\0';
  int fd = shm_open(name, O_RDWR, 0);
  CHECK(fd >= 0 && fchmod(fd, 0666) == 0, "chmod");
  if (fd >= 0) close(fd);
  CHECK(jmg_host_open(&job, err) != 0 && strstr(err, "refusing"), "mode 666 taken: %s", err);
  jmg_host_fetch(NULL, &job, &owner, 0, err);
}

static void test_no_room(void) {
  jmg_job job;
  jmg_party parties[2], owner;
  char err[JMG_ERRLEN] = "";
  /* 2^23 x 2^24 doubles: 2^50 bytes, more than any /dev/shm (plus b). */
  setup(&job, parties, (int64_t)1 << 24, (int64_t)1 << 23);
  owner = parties[1];
  CHECK(jmg_host_share(NULL, &job, &owner, err) != 0, "a 1 PiB shard was shared");
  CHECK(strstr(err, "not enough room in /dev/shm") && strstr(err, "1125900041060352 bytes"),
        "message: %s", err);
}

/* Six slots of different sizes and flags (gesvd-like: A in and out, a
 * result U, a replicated s and Vh, a rhs only the leader reads, an empty
 * result): the leader sees every carried slot at its place, the OWN-only
 * slot not at all; inputs arrive, results come back and nothing else is
 * written into the owner's buffers. */
enum { S0 = 40, S1 = 24, S2 = 5, S3 = 33, S4 = 16 };
static double m0[S0], m1[S1], m2[S2], m3[S3], m4[S4];
static double m5[1] = {-7.0};

static void setup_slots(jmg_job* job, jmg_party parties[2]) {
  setup(job, parties, N, NLOC);
  job->op = JMG_GESVD;
  slot(parties, 0, m0, S0 * 8, JMG_BUF_IN | JMG_BUF_OUT);
  slot(parties, 1, m1, S1 * 8, JMG_BUF_OUT);
  slot(parties, 2, m2, S2 * 8, JMG_BUF_OUT);
  slot(parties, 3, m3, S3 * 8, JMG_BUF_IN);
  slot(parties, 4, m4, S4 * 8, JMG_BUF_OWN);
  slot(parties, 5, m5, 0, JMG_BUF_OUT);
}

static void fill(double* x, int n, double v) {
  for (int i = 0; i < n; i++) x[i] = v + i;
}

static void test_slots(void) {
  jmg_job job;
  jmg_party parties[2], owner;
  char err[JMG_ERRLEN] = "";
  setup_slots(&job, parties);
  fill(m0, S0, 100), fill(m1, S1, 200), fill(m2, S2, 300), fill(m3, S3, 400), fill(m4, S4, 500);
  const char* name = share(&job, parties, &owner, err);
  CHECK(name != NULL, "share: %s", err);
  if (!name) return;
  CHECK(jmg_host_open(&job, err) == 0, "open: %s", err);
  double** v = (double**)parties[1].buf;
  CHECK(v[0] && v[0] != m0 && v[0][S0 - 1] == 100 + S0 - 1, "slot 0 (in) not seen");
  CHECK(v[3] && v[3] != m3 && v[3][0] == 400 && v[3][S3 - 1] == 400 + S3 - 1, "slot 3 (in) not seen");
  CHECK(v[4] == NULL, "slot 4 (the leader's own) is in the segment");
  CHECK(v[1] && v[2] && v[5], "a result slot has no place");
  for (int k = 0; k < 4; k++)
    CHECK(((uintptr_t)v[k] & 63) == 0, "slot %d not 64-byte aligned", k);
  CHECK((char*)v[2] >= (char*)v[1] + S1 * 8 && (char*)v[3] >= (char*)v[2] + S2 * 8,
        "slots overlap");
  /* The leader's run: results into 0, 1, 2; scribbles into the input slot
   * 3, which must not come back. */
  for (int i = 0; i < S0; i++) v[0][i] = -1.0 - i;
  for (int i = 0; i < S1; i++) v[1][i] = -2.0 - i;
  for (int i = 0; i < S2; i++) v[2][i] = -3.0 - i;
  v[3][0] = 9999;
  jmg_host_close(&job);
  CHECK(jmg_host_fetch(NULL, &job, &owner, 1, err) == 0, "fetch: %s", err);
  CHECK(m0[0] == -1.0 && m0[S0 - 1] == -1.0 - (S0 - 1), "slot 0 did not come back");
  CHECK(m1[0] == -2.0 && m1[S1 - 1] == -2.0 - (S1 - 1), "slot 1 did not come back");
  CHECK(m2[0] == -3.0 && m2[S2 - 1] == -3.0 - (S2 - 1), "slot 2 did not come back");
  CHECK(m3[0] == 400, "an input slot was copied back");
  CHECK(m4[0] == 500 && m5[0] == -7.0, "a slot that does not travel was written");
  CHECK(!exists(name), "%s left in /dev/shm", name);
}

/* The owner shares slots that differ from the leader's call (a bigger
 * result, an extra slot, one kept home): refused, like a tampered record.
 * (Flags that differ but give the same segment are the meeting's to refuse:
 * jmg_same_call.) */
static void test_slots_differ(const char* what, int k, int64_t bytes, uint8_t flags) {
  jmg_job job;
  jmg_party parties[2], owner;
  char err[JMG_ERRLEN] = "", name[64];
  setup_slots(&job, parties);
  parties[1].buf_bytes[k] = bytes;
  parties[1].buf_flags[k] = flags;
  if (!parties[1].buf[k]) parties[1].buf[k] = m4;
  if (!share(&job, parties, &owner, err)) return;
  memcpy(name, owner.share, sizeof name - 1);
  name[sizeof name - 1] = '\0';
  CHECK(jmg_host_open(&job, err) != 0 && strstr(err, "malformed"), "%s: taken (%s)", what, err);
  CHECK(parties[1].buf[k] == owner.buf[k], "%s: the leader remapped a refused party", what);
  jmg_host_fetch(NULL, &job, &owner, 0, err);
  CHECK(!exists(name), "%s: %s left in /dev/shm", what, name);
}

int main(void) {
  test_good_record();
  test_slots();
  test_slots_differ("a bigger result slot", 1, (S1 + 8) * 8, JMG_BUF_OUT);
  test_slots_differ("an extra slot", 4, S4 * 8, JMG_BUF_IN);
  test_slots_differ("a result kept home", 2, S2 * 8, JMG_BUF_OWN);
  test_slots_differ("an empty slot given bytes", 5, 64, JMG_BUF_OUT);
  int64_t big = 1 << 20, neg = -64;
  char other[64] = "/jaxmg-part.2222222222222222.0123456789abcdef";
  test_tampered("size", 64, &big, sizeof big);
  test_tampered("offset of b", 80, &neg, sizeof neg);
  /* record: name[64], bytes at 64, off[6] at 72, len[6] at 120. */
  int64_t shifted = 128, longer = N * 8 + 8;
  test_tampered("offset of A", 72, &shifted, sizeof shifted);
  test_tampered("length of x", 128, &longer, sizeof longer);
  test_tampered("a slot that stays home given a place", 88, &shifted, sizeof shifted);
  test_tampered("name of another process", 0, other, sizeof other);
  test_not_ours();
  test_no_room();
  return CHECK_DONE("test_meet_share");
}
