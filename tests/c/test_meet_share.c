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
  parties[1].a = a_mine;
  parties[1].b = b_mine;
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

int main(void) {
  test_good_record();
  int64_t big = 1 << 20, neg = -64;
  char other[64] = "/jaxmg-part.2222222222222222.0123456789abcdef";
  test_tampered("size", 64, &big, sizeof big);
  test_tampered("offset of b", 80, &neg, sizeof neg);
  test_tampered("name of another process", 0, other, sizeof other);
  test_not_ours();
  test_no_room();
  return CHECK_DONE("test_meet_share");
}
