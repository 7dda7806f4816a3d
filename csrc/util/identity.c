/* identity.c - the process token and the life file (identity.h). */
#define _GNU_SOURCE /* F_OFD_SETLK, getrandom */

#include "util/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Atomic uint64_t token;
static _Atomic pid_t token_pid; /* the process that drew it: a fork draws anew */

/* A life file left empty is one whose maker died between creating and
 * writing it (microseconds); it is dead once this old. */
#define EMPTY_LIFE_S 60

/* 64 random bits from the kernel; a clock-and-pid mix only if it cannot
 * give any (it then still differs between live processes). */
static uint64_t draw(void) {
  uint64_t x = 0;
  if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x) x = 0;
  if (!x) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x = ((uint64_t)getpid() << 40) ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec;
  }
  return x ? x : 1;
}

uint64_t jmg_random64(void) { return draw(); }

uint64_t jmg_process_token(void) {
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  pid_t me = getpid();
  if (atomic_load(&token_pid) == me && atomic_load(&token)) return atomic_load(&token);
  pthread_mutex_lock(&lock);
  if (atomic_load(&token_pid) != me || !atomic_load(&token)) {
    atomic_store(&token, draw());
    atomic_store(&token_pid, me);
  }
  pthread_mutex_unlock(&lock);
  return atomic_load(&token);
}

void jmg_token_hex(uint64_t t, char out[17]) {
  snprintf(out, 17, "%016llx", (unsigned long long)t);
}

int jmg_token_parse(const char* s, uint64_t* t) {
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v << 4 | (uint64_t)d;
  }
  if ((s[16] != '\0' && s[16] != '.') || !v) return -1;
  *t = v;
  return 0;
}

static void life_path(uint64_t t, char* out, size_t cap) {
  char hex[17];
  jmg_token_hex(t, hex);
  snprintf(out, cap, "%s/jaxmg-life.%s", JMG_SHM_DIR, hex);
}

/* ---- this process's life file ---- */

static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;
static int life_fd = -1;
static pid_t life_pid;
static uint64_t life_token;

/* A forked child shares the parent's open file description, and with it
 * the lock: it must let go, or a dead parent would look alive. */
static void child_after_fork(void) {
  if (life_fd >= 0) close(life_fd);
  life_fd = -1;
  life_pid = 0;
}

static void remove_life(void) {
  pthread_mutex_lock(&life_lock);
  if (life_fd >= 0 && life_pid == getpid()) {
    char path[128];
    life_path(life_token, path, sizeof path);
    unlink(path);
    close(life_fd);
    life_fd = -1;
  }
  pthread_mutex_unlock(&life_lock);
}

static unsigned long long pidns_of(const char* proc_pid) {
  char path[64];
  struct stat st;
  snprintf(path, sizeof path, "/proc/%s/ns/pid", proc_pid);
  return stat(path, &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

static int make_life(char* err, size_t errlen) {
  static int hooks;
  char path[128];
  uint64_t t = jmg_process_token();
  life_path(t, path, sizeof path);
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    snprintf(err, errlen, "jaxmg: cannot create %s (this process's liveness file): %s", path,
             strerror(errno));
    return -1;
  }
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  char line[96];
  int n = snprintf(line, sizeof line, "pid %d pidns %llu\n", (int)getpid(), pidns_of("self"));
  if (fchmod(fd, 0600) || fcntl(fd, F_OFD_SETLK, &fl) || write(fd, line, (size_t)n) != n) {
    snprintf(err, errlen, "jaxmg: cannot lock or write %s: %s", path, strerror(errno));
    close(fd);
    unlink(path);
    return -1;
  }
  if (!hooks) hooks = !pthread_atfork(NULL, NULL, child_after_fork) && !atexit(remove_life);
  life_fd = fd;
  life_pid = getpid();
  life_token = t;
  return 0;
}

int jmg_identity_live(char* err, size_t errlen) {
  pthread_mutex_lock(&life_lock);
  int rc = life_fd >= 0 && life_pid == getpid() ? 0 : make_life(err, errlen);
  pthread_mutex_unlock(&life_lock);
  return rc;
}

/* ---- other processes ---- */

/* Opens t's life file if it is ours: 1 with *fd and *st, 0 if missing,
 * -1 if it is not ours (another user's, a link, not a plain file). */
static int open_life(uint64_t t, int* fd, struct stat* st) {
  char path[128];
  life_path(t, path, sizeof path);
  *fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (*fd < 0) return errno == ENOENT ? 0 : -1;
  if (fstat(*fd, st) || !S_ISREG(st->st_mode) || st->st_uid != geteuid() ||
      (st->st_mode & 07777) != 0600) {
    close(*fd);
    return -1;
  }
  return 1;
}

/* Whether a lock is held on fd's file by another open file description. */
static int locked(int fd) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  if (fcntl(fd, F_OFD_GETLK, &fl)) return 1; /* cannot tell: assume alive */
  return fl.l_type != F_UNLCK;
}

int jmg_token_alive(uint64_t t) {
  int fd;
  struct stat st;
  int rc = open_life(t, &fd, &st);
  if (rc <= 0) return rc;
  /* Size first, then the lock: the owner locks before it writes, so a
   * written file without a lock is one whose owner has died. */
  int alive = st.st_size == 0 ? time(NULL) - st.st_mtime < EMPTY_LIFE_S : locked(fd);
  close(fd);
  return alive;
}

int jmg_token_wait_dead(uint64_t t, double wait_s) {
  struct timespec nap = {0, 1000000};
  for (double waited = 0; waited < wait_s; waited += 1e-3) {
    if (jmg_token_alive(t) == 0) return 1;
    nanosleep(&nap, NULL);
  }
  return jmg_token_alive(t) == 0;
}

int jmg_token_pid(uint64_t t, int32_t pid, char* err, size_t errlen) {
  int fd;
  struct stat st;
  char hex[17], buf[96] = "";
  jmg_token_hex(t, hex);
  int rc = open_life(t, &fd, &st);
  if (rc <= 0) {
    snprintf(err, errlen, "process %s has no liveness file of this user in %s: %s", hex,
             JMG_SHM_DIR, rc ? "it belongs to someone else" : "it is gone");
    return -1;
  }
  ssize_t got = pread(fd, buf, sizeof buf - 1, 0);
  int alive = locked(fd);
  close(fd);
  int owner_pid = 0;
  unsigned long long ns = 0;
  if (got <= 0 || sscanf(buf, "pid %d pidns %llu", &owner_pid, &ns) != 2 || !alive) {
    snprintf(err, errlen, "process %s is not alive", hex);
    return -1;
  }
  unsigned long long mine = pidns_of("self");
  if (ns && mine && ns != mine) {
    snprintf(err, errlen,
             "process %s runs in another PID namespace: GPU buffers cross processes by PID "
             "(pidfd_getfd), which needs one PID namespace for the processes of a node",
             hex);
    return -1;
  }
  char proc[32];
  struct stat pst;
  snprintf(proc, sizeof proc, "/proc/%d", (int)pid);
  if (pid <= 0 || owner_pid != pid || stat(proc, &pst) || pst.st_uid != geteuid()) {
    snprintf(err, errlen,
             "PID %d given for process %s is not that process of this user (it says PID %d)",
             (int)pid, hex, owner_pid);
    return -1;
  }
  return 0;
}

/* ---- test hooks ---- */

/* Read at every point, not once: a test sets it between two calls of one
 * process (Python's os.environ writes through to the C environment). A
 * handful of getenv calls per call cost nothing next to the call. */
static int kill_here(const char* name) {
  const char* at = getenv("JAXMG_TEST_KILL_AT");
  return at && *at && !strcmp(at, name);
}

void jmg_test_point(const char* point) {
  if (kill_here(point)) raise(SIGKILL);
}

void jmg_test_point_n(const char* point, long n) {
  const char* at = getenv("JAXMG_TEST_KILL_AT");
  if (!at || strncmp(at, point, strlen(point))) return;
  char name[64];
  snprintf(name, sizeof name, "%s%ld", point, n);
  if (kill_here(name)) raise(SIGKILL);
}
