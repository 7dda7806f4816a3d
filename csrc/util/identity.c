/* identity.c - the process token (identity.h). */
#include "util/identity.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

static _Atomic uint64_t token;
static _Atomic pid_t token_pid; /* the process that drew it: a fork draws anew */

/* 64 random bits from the kernel; a clock-and-pid mix only if /dev/urandom
 * cannot be read (it then still differs between live processes). */
static uint64_t draw(void) {
  uint64_t x = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t got = read(fd, &x, sizeof x);
    close(fd);
    if (got != (ssize_t)sizeof x) x = 0;
  }
  if (!x) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x = ((uint64_t)getpid() << 40) ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec;
  }
  return x ? x : 1;
}

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
