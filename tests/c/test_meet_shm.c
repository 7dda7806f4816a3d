/* test_meet_shm.c - the shared-memory rendezvous with real processes (fork).
 *
 * Each child is one rank; it checks what it saw and exits with the number of
 * failed checks (or a distinct code for an unexpected outcome), which the
 * parent checks. Segment names carry the parent's pid, so parallel runs of
 * this test never share one. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "rendezvous/meet_shm.h"
#include "rendezvous/meeting.h"
#include "util/identity.h"

enum { MSG = 40 };

static void seg_name(char* out, size_t cap, const char* what) {
  snprintf(out, cap, "/jaxmg-test.%d.%s", (int)getpid(), what);
}

static int exists(const char* name) {
  int fd = shm_open(name, O_RDONLY, 0);
  if (fd >= 0) close(fd);
  return fd >= 0;
}

static unsigned char pattern(int rank, int x, int j) {
  return (unsigned char)(rank * 31 + x * 7 + j);
}

/* Forks n children running fn(rank) and returns their exit codes in rc
 * (-signal for a child killed by a signal). */
static void run_ranks(int n, int (*fn)(int rank, const char* name), const char* name, int* rc) {
  pid_t pid[16];
  for (int r = 0; r < n; r++) {
    pid[r] = fork();
    if (pid[r] == 0) {
      int code = fn(r, name);
      fflush(NULL);
      exit(code); /* runs the atexit detach, as a normal exit does */
    }
  }
  for (int r = 0; r < n; r++) {
    int st = 0;
    waitpid(pid[r], &st, 0);
    rc[r] = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
  }
}

/* ---- 4 processes, 3 exchanges, a leader broadcast, 2 calls at one site ---- */

static int success_rank(int rank, const char* name) {
  int bad = 0;
  const int np = 4;
  jmg_meet_key key = {0, 77, 0};
  char err[JMG_MEET_ERRLEN];
  for (int call = 0; call < 2; call++) {
    jmg_shm_meet* m;
    int rc = jmg_shm_join(name, np, &key, np, rank, 10.0, &m, err, sizeof err);
    if (rc) {
      fprintf(stderr, "rank %d join: %s\n", rank, err);
      return 100;
    }
    unsigned char mine[MSG], all[4 * MSG];
    for (int x = 0; x < 3; x++) {
      /* Stagger the ranks so that every one of them waits at some point. */
      nap(0.002 * (double)((rank + x) % np));
      for (int j = 0; j < MSG; j++) mine[j] = pattern(rank, x + call, j);
      rc = jmg_shm_exchange(m, mine, MSG, all, NULL, x == 2 ? -1.0 : 10.0, err, sizeof err);
      if (rc) {
        fprintf(stderr, "rank %d exchange %d: %s\n", rank, x, err);
        return 101;
      }
      for (int r = 0; r < np; r++)
        for (int j = 0; j < MSG; j++) bad += all[r * MSG + j] != pattern(r, x + call, j);
    }
    jmg_shm_leave(m);
  }
  return bad ? 1 : 0;
}

static void test_success(void) {
  char name[64];
  int rc[4];
  seg_name(name, sizeof name, "ok");
  run_ranks(4, success_rank, name, rc);
  for (int r = 0; r < 4; r++) CHECK(rc[r] == 0, "success: rank %d exited with %d", r, rc[r]);
  /* All 4 expected processes attached, so the name went away at once. */
  CHECK(!exists(name), "success: %s still exists", name);
}

/* ---- a rank that never comes: timeout naming it ---- */

static int timeout_rank(int rank, const char* name) {
  jmg_meet_key key = {0, 5, 1};
  jmg_shm_meet* m;
  char err[JMG_MEET_ERRLEN];
  int x = 1, all[3];
  if (rank == 2) return 0; /* never joins */
  if (jmg_shm_join(name, 0, &key, 3, rank, 10.0, &m, err, sizeof err)) return 100;
  double t0 = now();
  int rc = jmg_shm_exchange(m, &x, sizeof x, all, NULL, 0.3, err, sizeof err);
  double dt = now() - t0;
  jmg_shm_leave(m);
  if (rc != JMG_MEET_ETIMEOUT) return 10;
  if (dt < 0.25 || dt > 3.0) return 11;
  if (!strstr(err, "timed out") || !strstr(err, "missing rank 2")) {
    fprintf(stderr, "timeout message: %s\n", err);
    return 12;
  }
  return 0;
}

static void test_timeout(void) {
  char name[64];
  int rc[3];
  seg_name(name, sizeof name, "timeout");
  run_ranks(3, timeout_rank, name, rc);
  for (int r = 0; r < 3; r++) CHECK(rc[r] == 0, "timeout: rank %d exited with %d", r, rc[r]);
  /* expected = 0: the last process to exit normally unlinks the name. */
  CHECK(!exists(name), "timeout: %s still exists", name);
}

/* ---- a rank killed inside the meeting: the others fail fast, even in an
 * exchange without a time limit ---- */

static int killed_rank(int rank, const char* name) {
  jmg_meet_key key = {0, 9, 0};
  jmg_shm_meet* m;
  char err[JMG_MEET_ERRLEN];
  int x = rank, all[3];
  if (jmg_shm_join(name, 3, &key, 3, rank, 10.0, &m, err, sizeof err)) return 100;
  if (jmg_shm_exchange(m, &x, sizeof x, all, NULL, 10.0, err, sizeof err)) return 101;
  if (rank == 1) {
    nap(0.2);
    raise(SIGKILL); /* dies holding its place in the meeting */
  }
  double t0 = now();
  int rc = jmg_shm_exchange(m, &x, sizeof x, all, NULL, -1.0, err, sizeof err);
  double dt = now() - t0;
  /* Later exchanges fail at once with the same message. */
  char err2[JMG_MEET_ERRLEN];
  int rc2 = jmg_shm_exchange(m, &x, sizeof x, all, NULL, 10.0, err2, sizeof err2);
  jmg_shm_leave(m);
  if (rc != JMG_MEET_EPEER || rc2 != JMG_MEET_EPEER) return 10;
  if (dt > 2.0) return 11;
  if (!strstr(err, "rank 1") || !strstr(err, "died") || strcmp(err, err2)) {
    fprintf(stderr, "killed message: %s / %s\n", err, err2);
    return 12;
  }
  return 0;
}

static void test_killed(void) {
  char name[64];
  int rc[3];
  seg_name(name, sizeof name, "killed");
  run_ranks(3, killed_rank, name, rc);
  CHECK(rc[0] == 0 && rc[2] == 0, "killed: survivors exited with %d, %d", rc[0], rc[2]);
  CHECK(rc[1] == -SIGKILL, "killed: rank 1 exited with %d", rc[1]);
  CHECK(!exists(name), "killed: %s still exists", name);
}

/* ---- a segment that saw a rank die stays usable: the slot of the failed
 * meeting is freed and every slot is recycled many times over ---- */

static int die_pair(int rank, const char* name) {
  jmg_meet_key key = {0, 11, 0};
  jmg_shm_meet* m;
  char err[JMG_MEET_ERRLEN];
  int x = rank, all[2];
  if (jmg_shm_join(name, 0, &key, 2, rank, 10.0, &m, err, sizeof err)) return 100;
  if (rank == 1) raise(SIGKILL);
  int rc = jmg_shm_exchange(m, &x, sizeof x, all, NULL, 10.0, err, sizeof err);
  jmg_shm_leave(m);
  return rc == JMG_MEET_EPEER ? 0 : 10;
}

static int reuse_rank(int rank, const char* name) {
  jmg_meet_key key = {0, 11, 0};
  char err[JMG_MEET_ERRLEN];
  for (int call = 0; call < 3 * JMG_SHM_SLOTS; call++) {
    jmg_shm_meet* m;
    int x = rank + call, all[2];
    if (jmg_shm_join(name, 0, &key, 2, rank, 10.0, &m, err, sizeof err)) {
      fprintf(stderr, "reuse rank %d call %d: %s\n", rank, call, err);
      return 100;
    }
    int rc = jmg_shm_exchange(m, &x, sizeof x, all, NULL, 10.0, err, sizeof err);
    jmg_shm_leave(m);
    if (rc || all[0] != call || all[1] != call + 1) {
      fprintf(stderr, "reuse rank %d call %d: %d %s\n", rank, call, rc, err);
      return 10;
    }
  }
  return 0;
}

static void test_dead_slot_reused(void) {
  char name[64];
  int rc[2];
  seg_name(name, sizeof name, "reuse");
  /* The parent attaches too, so the segment outlives its children. */
  jmg_meet_key other = {0, 12, 0};
  jmg_shm_meet* keep;
  char err[JMG_MEET_ERRLEN];
  CHECK(jmg_shm_join(name, 0, &other, 1, 0, 10.0, &keep, err, sizeof err) == 0, "%s", err);
  run_ranks(2, die_pair, name, rc);
  CHECK(rc[0] == 0 && rc[1] == -SIGKILL, "reuse: the dying pair exited with %d, %d", rc[0], rc[1]);
  run_ranks(2, reuse_rank, name, rc);
  CHECK(rc[0] == 0 && rc[1] == 0, "reuse: %d %d", rc[0], rc[1]);
  jmg_shm_leave(keep);
  jmg_shm_detach_all();
  CHECK(!exists(name), "reuse: %s still exists", name);
}

/* ---- two jobs on one host, with different names, never mix ---- */

static int job_rank(int rank, const char* name) {
  jmg_meet_key key = {0, 1, 0};
  jmg_shm_meet* m;
  char err[JMG_MEET_ERRLEN];
  int x = (int)name[strlen(name) - 1] * 100 + rank % 2, all[2];
  if (jmg_shm_join(name, 2, &key, 2, rank % 2, 10.0, &m, err, sizeof err)) return 100;
  int rc = jmg_shm_exchange(m, &x, sizeof x, all, NULL, 10.0, err, sizeof err);
  jmg_shm_leave(m);
  int base = (int)name[strlen(name) - 1] * 100;
  return rc || all[0] != base || all[1] != base + 1 ? 10 : 0;
}

static void test_two_jobs(void) {
  char a[64], b[64];
  seg_name(a, sizeof a, "jobA");
  seg_name(b, sizeof b, "jobB");
  pid_t pa = fork();
  if (pa == 0) {
    int rc[2];
    run_ranks(2, job_rank, a, rc);
    exit(rc[0] || rc[1]);
  }
  int rc[2], st = 0;
  run_ranks(2, job_rank, b, rc);
  waitpid(pa, &st, 0);
  CHECK(rc[0] == 0 && rc[1] == 0, "job B: %d %d", rc[0], rc[1]);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "job A: status %d", st);
}

/* ---- leftovers of killed processes are swept from /dev/shm by the next
 * process that attaches anywhere, whatever their age; another user's
 * segment is neither joined nor removed ---- */

static int attach_and_die(int rank, const char* name) {
  jmg_meet_key key = {0, 3, 0};
  jmg_shm_meet* m;
  char err[JMG_MEET_ERRLEN];
  (void)rank;
  if (jmg_shm_join(name, 0, &key, 2, 0, 10.0, &m, err, sizeof err)) return 100;
  raise(SIGKILL); /* no atexit: the name stays */
  return 0;
}

static int attach_elsewhere(int rank, const char* name) {
  jmg_meet_key key = {0, 4, 0};
  jmg_shm_meet* m;
  char err[JMG_MEET_ERRLEN];
  (void)rank;
  if (jmg_shm_join(name, 1, &key, 1, 0, 10.0, &m, err, sizeof err)) return 100;
  jmg_shm_leave(m);
  return 0;
}

/* A child that makes its life file, tells its token and is killed. */
static uint64_t dead_token(void) {
  int fds[2];
  uint64_t t = 0;
  if (pipe(fds)) return 0;
  pid_t c = fork();
  if (c == 0) {
    char err[256];
    uint64_t mine = jmg_identity_live(err, sizeof err) ? 0 : jmg_process_token();
    if (write(fds[1], &mine, sizeof mine) != (ssize_t)sizeof mine) _exit(1);
    raise(SIGKILL);
  }
  close(fds[1]);
  if (read(fds[0], &t, sizeof t) != (ssize_t)sizeof t) t = 0;
  close(fds[0]);
  waitpid(c, NULL, 0);
  return t;
}

static void make_file(const char* name) {
  int fd = shm_open(name, O_RDWR | O_CREAT, 0600);
  if (fd >= 0) close(fd);
}

static int life_exists(uint64_t t) {
  char hex[17], path[96];
  jmg_token_hex(t, hex);
  snprintf(path, sizeof path, "%s/jaxmg-life.%s", JMG_SHM_DIR, hex);
  return access(path, F_OK) == 0;
}

static void test_sweep(void) {
  char dead_job[64], fresh[64], part_dead[96], part_gone[96], part_live[96], hex[17];
  char err[256];
  int rc[1];
  snprintf(dead_job, sizeof dead_job, "/jaxmg.test%d.dead", (int)getpid());
  seg_name(fresh, sizeof fresh, "fresh");
  run_ranks(1, attach_and_die, dead_job, rc);
  CHECK(rc[0] == -SIGKILL && exists(dead_job), "the killed job's segment should remain");
  /* Shard segments: of a killed process (life file left, unlocked), of a
   * process without a life file, and of this live process. */
  uint64_t dead = dead_token();
  CHECK(dead && life_exists(dead), "the killed process's life file should remain");
  CHECK(jmg_token_alive(dead) == 0, "a killed process is dead");
  jmg_token_hex(dead, hex);
  snprintf(part_dead, sizeof part_dead, "/jaxmg-part.%s.1", hex);
  jmg_token_hex(jmg_random64(), hex);
  snprintf(part_gone, sizeof part_gone, "/jaxmg-part.%s.2", hex);
  CHECK(jmg_identity_live(err, sizeof err) == 0, "%s", err);
  CHECK(jmg_token_alive(jmg_process_token()) == 1, "this process is alive");
  jmg_token_hex(jmg_process_token(), hex);
  snprintf(part_live, sizeof part_live, "/jaxmg-part.%s.3", hex);
  make_file(part_dead);
  make_file(part_gone);
  make_file(part_live);
  run_ranks(1, attach_elsewhere, fresh, rc);
  CHECK(rc[0] == 0, "sweep: attach exited with %d", rc[0]);
  CHECK(!exists(dead_job), "sweep: %s (all its processes dead) remains", dead_job);
  CHECK(!exists(part_dead), "sweep: %s (owner killed) remains", part_dead);
  CHECK(!life_exists(dead), "sweep: the killed process's life file remains");
  CHECK(!exists(part_gone), "sweep: %s (owner unknown) remains", part_gone);
  CHECK(exists(part_live), "sweep: %s (owner alive) was removed", part_live);
  CHECK(!exists(fresh), "sweep: %s remains", fresh);
  shm_unlink(dead_job);
  shm_unlink(part_dead);
  shm_unlink(part_gone);
  shm_unlink(part_live);
}

static void test_foreign_segment(void) {
  char name[64];
  jmg_meet_key key = {0, 1, 0};
  jmg_shm_meet* m = NULL;
  char err[JMG_MEET_ERRLEN];
  snprintf(name, sizeof name, "/jaxmg.test%d.foreign", (int)getpid());
  /* Mode 0666 is refused by anyone; another owner needs root to make. */
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  CHECK(fd >= 0, "cannot create %s", name);
  if (fd < 0) return;
  CHECK(ftruncate(fd, 1 << 20) == 0, "ftruncate");
  int chowned = geteuid() == 0 && fchown(fd, 12345, 12345) == 0;
  CHECK(fchmod(fd, 0666) == 0, "fchmod");
  close(fd);
  int rc = jmg_shm_join(name, 2, &key, 2, 0, 1.0, &m, err, sizeof err);
  CHECK(rc == JMG_MEET_EINVAL && !m, "a foreign segment was joined (%d)", rc);
  CHECK(strstr(err, "refusing") && strstr(err, "mode 666"), "message: %s", err);
  if (chowned) CHECK(strstr(err, "uid 12345"), "message: %s", err);
  else printf("test_meet_shm: another owner needs root: checked mode 0666 only\n");
  jmg_shm_sweep();
  CHECK(exists(name), "the sweep removed a segment that is not ours");
  shm_unlink(name);
}

static void test_bad_args(void) {
  jmg_meet_key key = {0, 1, 0};
  jmg_shm_meet* m;
  char err[JMG_MEET_ERRLEN];
  CHECK(jmg_shm_join("no-slash", 0, &key, 2, 0, 1.0, &m, err, sizeof err) == JMG_MEET_EINVAL,
        "a name without a leading slash");
  CHECK(jmg_shm_join("/x", 0, &key, 2, 2, 1.0, &m, err, sizeof err) == JMG_MEET_EINVAL,
        "rank out of range");
  CHECK(jmg_shm_join("/x", 0, &key, 65, 0, 1.0, &m, err, sizeof err) == JMG_MEET_EINVAL,
        "too many parties");
}

/* A meet name that does not fit is an error, never a silent fall-back
 * to the thread rendezvous (which would pair nobody across processes). */
static void test_long_name(void) {
  jmg_meet_key key = {0, 1, 0};
  jmg_meeting m;
  char err[JMG_MEET_ERRLEN], name[200];
  memset(name, 'x', sizeof name);
  memcpy(name, "/jaxmg.", 7);
  CHECK(jmg_meeting_join_n(name, 96, 2, &key, 2, 0, 1.0, &m, err, sizeof err) ==
                JMG_MEET_EINVAL &&
            !m.shm && !m.thr,
        "a 96-byte meet name was accepted");
  CHECK(strstr(err, "96 bytes") != NULL, "message: %s", err);
  name[96] = '\0';
  CHECK(jmg_meeting_join(name, 2, &key, 2, 0, 1.0, &m, err, sizeof err) == JMG_MEET_EINVAL &&
            !m.shm && !m.thr,
        "a 96-byte meet name (NUL-terminated) was accepted");
  CHECK(jmg_meeting_join_n("/jaxmg.a\0b", 10, 2, &key, 2, 0, 1.0, &m, err, sizeof err) ==
            JMG_MEET_EINVAL,
        "a meet name with a NUL inside was accepted");
}

int main(void) {
  test_bad_args();
  test_success();
  test_timeout();
  test_killed();
  test_dead_slot_reused();
  test_two_jobs();
  test_sweep();
  test_foreign_segment();
  test_long_name();
  return CHECK_DONE("test_meet_shm");
}
