/* meet_shm.c - meetings in a POSIX shared memory segment, for parties in
 * several processes of one node.
 *
 * The algorithm is meet.c's: one lock over all meetings, and each exchange a
 * generation barrier over two message buffers (see meet.c for why two are
 * enough). What changes is where the state lives and how a party can fail:
 *
 *  - Everything sits in one fixed-size segment, addressed by indices, never
 *    by pointers, since every process maps it at its own address. Meetings
 *    take a slot out of a fixed table.
 *  - The lock is a robust, process-shared mutex: a process killed while
 *    holding it makes the next locker get EOWNERDEAD instead of a deadlock.
 *    The state it may have left half-written belongs to a meeting that the
 *    liveness probe fails anyway.
 *  - One process-shared condition variable serves all meetings; a broadcast
 *    wakes parties of other meetings too, which only costs a spurious wakeup.
 *  - A party holds its own robust mutex ("life") from join to leave. A waiter
 *    wakes every JMG_SHM_PROBE_S and try-locks the life mutex of every party
 *    that joined and did not leave: anything but EBUSY means its thread is
 *    gone. Unlike a pid check this also holds for a killed process that is a
 *    zombie not yet reaped, and for a recycled pid.
 */
#define _POSIX_C_SOURCE 200809L

#include "rendezvous/meet_shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NP JMG_MEET_MAX_PARTIES
#define MAX_PROCS 256
#define BIT(r) ((uint64_t)1 << (r))
/* Changes whenever the segment layout does; with the struct size it refuses
 * a segment written by another build. */
#define MAGIC ((uint64_t)0x6a61786d67730001u)

typedef struct xslot {
  uint64_t size;
  int32_t arrived;
  uint64_t mask;
} xslot;

typedef struct meeting {
  int32_t used;
  uint64_t site;
  int64_t group, seq;
  int32_t nparties, njoined, nleft;
  uint64_t joined, gone;
  int32_t failed;
  char msg[JMG_MEET_ERRLEN];
  int64_t done;
  int64_t entered[NP];
  int32_t pid[NP];
  xslot slots[2];
  pthread_mutex_t life[NP];
  unsigned char buf[2][NP][JMG_MEET_MAX_MSG];
} meeting;

typedef struct header {
  _Atomic uint64_t magic; /* MAGIC once set up; written last */
  uint64_t bytes;         /* sizeof(header) of the creating build */
  int32_t creator;
  int32_t expected;
  int32_t unlinked;
  int32_t nprocs;
  int32_t procs[MAX_PROCS]; /* attached processes, for the last-out unlink */
  pthread_mutex_t lock;
  pthread_cond_t cv;
  meeting mt[JMG_SHM_SLOTS];
} header;

struct jmg_shm_meet {
  header* h;
  int slot, rank;
};

/* ---- process-local state: attached segments and sequence counters ---- */

typedef struct seg {
  char name[JMG_SHM_NAME_MAX];
  header* h;
  struct seg* next;
} seg;

typedef struct seqrec {
  header* h;
  uint64_t site;
  int64_t group;
  int rank;
  int64_t count;
  struct seqrec* next;
} seqrec;

static pthread_mutex_t local = PTHREAD_MUTEX_INITIALIZER;
static seg* segs;
static seqrec* seqs;
static int exit_hook;

static void put(char* dst, size_t cap, const char* fmt, ...) {
  va_list ap;
  if (!dst || cap == 0) return;
  va_start(ap, fmt);
  vsnprintf(dst, cap, fmt, ap);
  va_end(ap);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static struct timespec at(double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

static void nap(double s) {
  struct timespec ts = at(s);
  nanosleep(&ts, NULL);
}

/* A robust lock: the previous holder's death is survivable (see top). */
static int lock_robust(pthread_mutex_t* m) {
  int rc = pthread_mutex_lock(m);
  if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(m);
  return rc;
}

/* ---- segment set-up ---- */

static int init_header(header* h, int expected) {
  pthread_mutexattr_t ma;
  pthread_condattr_t ca;
  int rc = pthread_mutexattr_init(&ma);
  if (rc) return rc;
  rc = pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  if (!rc) rc = pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  if (!rc) rc = pthread_mutex_init(&h->lock, &ma);
  for (int s = 0; !rc && s < JMG_SHM_SLOTS; s++)
    for (int r = 0; !rc && r < NP; r++) rc = pthread_mutex_init(&h->mt[s].life[r], &ma);
  pthread_mutexattr_destroy(&ma);
  if (rc) return rc;
  rc = pthread_condattr_init(&ca);
  if (rc) return rc;
  rc = pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
  /* Timed waits must not stretch or shrink when the wall clock is set. */
  if (!rc) rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (!rc) rc = pthread_cond_init(&h->cv, &ca);
  pthread_condattr_destroy(&ca);
  h->bytes = sizeof(header);
  h->creator = (int32_t)getpid();
  h->expected = expected;
  atomic_store_explicit(&h->magic, MAGIC, memory_order_release);
  return rc;
}

/* Opens or creates the segment and waits until its creator has set it up. */
static int map_segment(const char* name, int expected, double timeout_s, header** out, char* err,
                       size_t errlen) {
  double give_up = now() + (timeout_s > 0 ? timeout_s : 180.0);
  int created = 1;
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0 && errno == EEXIST) {
    created = 0;
    fd = shm_open(name, O_RDWR, 0600);
  }
  if (fd < 0) {
    put(err, errlen, "jaxmg rendezvous: shm_open(%s) failed: %s", name, strerror(errno));
    return JMG_MEET_EINVAL;
  }
  if (created && ftruncate(fd, (off_t)sizeof(header))) {
    put(err, errlen, "jaxmg rendezvous: cannot size %s: %s", name, strerror(errno));
    close(fd);
    shm_unlink(name);
    return JMG_MEET_ENOMEM;
  }
  /* A joiner may see the file before the creator sized it. */
  for (;;) {
    struct stat st;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= sizeof(header)) break;
    if (now() > give_up) {
      put(err, errlen, "jaxmg rendezvous: %s was never set up by its creator", name);
      close(fd);
      return JMG_MEET_ETIMEOUT;
    }
    nap(0.001);
  }
  header* h = mmap(NULL, sizeof(header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (h == MAP_FAILED) {
    put(err, errlen, "jaxmg rendezvous: mmap of %s failed: %s", name, strerror(errno));
    if (created) shm_unlink(name);
    return JMG_MEET_ENOMEM;
  }
  if (created) {
    int rc = init_header(h, expected);
    if (rc) {
      put(err, errlen, "jaxmg rendezvous: cannot set up process-shared locks: %s", strerror(rc));
      munmap(h, sizeof(header));
      shm_unlink(name);
      return JMG_MEET_EINVAL;
    }
  }
  while (atomic_load_explicit(&h->magic, memory_order_acquire) != MAGIC) {
    if (now() > give_up) {
      put(err, errlen, "jaxmg rendezvous: %s was never set up by its creator", name);
      munmap(h, sizeof(header));
      return JMG_MEET_ETIMEOUT;
    }
    nap(0.001);
  }
  if (h->bytes != sizeof(header)) {
    put(err, errlen, "jaxmg rendezvous: %s was made by another jaxmg build", name);
    munmap(h, sizeof(header));
    return JMG_MEET_EINVAL;
  }
  *out = h;
  return JMG_MEET_OK;
}

static void on_exit_detach(void) { jmg_shm_detach_all(); }

static int pid_dead(int32_t pid) { return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH; }

/* A leftover is only touched once it is this old: pids are only meaningful
 * in our own pid namespace, and a young segment may belong to a job in
 * another one (sharing /dev/shm) that is still setting up. */
#define SWEEP_AGE_S 60

/* Whether a rendezvous segment's processes are all dead. The pid list is
 * read without the lock: a torn read can only add a live pid, which keeps
 * the segment. */
static int segment_dead(int fd) {
  header* h = mmap(NULL, sizeof(header), PROT_READ, MAP_SHARED, fd, 0);
  if (h == MAP_FAILED) return 0;
  int dead = atomic_load_explicit(&h->magic, memory_order_acquire) == MAGIC &&
             h->bytes == sizeof(header) && h->nprocs > 0 && h->nprocs <= MAX_PROCS;
  for (int i = 0; dead && i < h->nprocs; i++) dead = h->procs[i] == 0 || pid_dead(h->procs[i]);
  munmap(h, sizeof(header));
  return dead;
}

/* Removes from /dev/shm what killed jobs left behind: rendezvous segments
 * that never reached their expected processes and whose processes are all
 * dead, and per-call segments (host_share.c) whose owner is dead. Names are
 * job-unique, so a leftover never disturbs a new job; this only returns the
 * memory. */
static void sweep(void) {
  DIR* dir = opendir("/dev/shm");
  if (!dir) return;
  time_t t = time(NULL);
  struct dirent* e;
  while ((e = readdir(dir))) {
    char name[JMG_SHM_NAME_MAX];
    int pid = 0, part = sscanf(e->d_name, "jaxmg-part.%d.", &pid) == 1;
    if (!part && strncmp(e->d_name, "jaxmg.", 6)) continue;
    if (strlen(e->d_name) + 2 > sizeof name) continue;
    snprintf(name, sizeof name, "/%s", e->d_name);
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0) continue;
    struct stat st;
    int stale = fstat(fd, &st) == 0 && t - st.st_mtime > SWEEP_AGE_S &&
                (part ? pid_dead(pid)
                      : (uint64_t)st.st_size == sizeof(header) && segment_dead(fd));
    close(fd);
    if (stale) shm_unlink(name);
  }
  closedir(dir);
}

/* Records this process in the segment; the last expected one unlinks the
 * name, since every process that needs it has it mapped by then. */
static int register_process(header* h, const char* name) {
  int32_t me = (int32_t)getpid();
  int rc = lock_robust(&h->lock);
  if (rc) return rc;
  int known = 0;
  for (int i = 0; i < h->nprocs; i++) known |= h->procs[i] == me;
  if (!known && h->nprocs < MAX_PROCS) h->procs[h->nprocs++] = me;
  if (!h->unlinked && h->expected > 0 && h->nprocs >= h->expected) {
    shm_unlink(name);
    h->unlinked = 1;
  }
  pthread_mutex_unlock(&h->lock);
  return 0;
}

static int attach(const char* name, int expected, double timeout_s, header** out, char* err,
                  size_t errlen) {
  if (!name || name[0] != '/' || strlen(name) >= JMG_SHM_NAME_MAX || strchr(name + 1, '/')) {
    put(err, errlen, "jaxmg rendezvous: bad segment name");
    return JMG_MEET_EINVAL;
  }
  pthread_mutex_lock(&local);
  for (seg* s = segs; s; s = s->next) {
    if (!strcmp(s->name, name)) {
      *out = s->h;
      pthread_mutex_unlock(&local);
      return JMG_MEET_OK;
    }
  }
  static pid_t swept_by; /* once per process, forked children included */
  if (swept_by != getpid()) {
    swept_by = getpid();
    sweep();
  }
  seg* s = calloc(1, sizeof *s);
  header* h = NULL;
  int rc = s ? map_segment(name, expected, timeout_s, &h, err, errlen) : JMG_MEET_ENOMEM;
  if (!rc && register_process(h, name)) {
    put(err, errlen, "jaxmg rendezvous: the lock of %s is unusable", name);
    munmap(h, sizeof(header));
    rc = JMG_MEET_EINVAL;
  }
  if (rc) {
    if (!s) put(err, errlen, "jaxmg rendezvous: out of host memory");
    free(s);
    pthread_mutex_unlock(&local);
    return rc;
  }
  snprintf(s->name, sizeof s->name, "%s", name);
  s->h = h;
  s->next = segs;
  segs = s;
  if (!exit_hook) exit_hook = atexit(on_exit_detach) == 0;
  *out = h;
  pthread_mutex_unlock(&local);
  return JMG_MEET_OK;
}

void jmg_shm_detach_all(void) {
  int32_t me = (int32_t)getpid();
  pthread_mutex_lock(&local);
  while (segs) {
    seg* s = segs;
    header* h = s->h;
    segs = s->next;
    if (lock_robust(&h->lock) == 0) {
      int alive = 0;
      for (int i = 0; i < h->nprocs; i++) {
        if (h->procs[i] == me) h->procs[i] = 0;
        /* Killed processes never detach; they must not keep the name. */
        else if (h->procs[i] > 0 && (kill(h->procs[i], 0) == 0 || errno != ESRCH)) alive = 1;
      }
      if (!alive && !h->unlinked) {
        shm_unlink(s->name);
        h->unlinked = 1;
      }
      pthread_mutex_unlock(&h->lock);
    }
    /* Not unmapped: at exit another thread may still be inside a meeting,
     * and the mapping goes with the process anyway. */
    free(s);
  }
  for (seqrec* r = seqs; r;) {
    seqrec* next = r->next;
    free(r);
    r = next;
  }
  seqs = NULL;
  pthread_mutex_unlock(&local);
}

static int next_seq(header* h, const jmg_meet_key* key, int rank, int64_t* seq) {
  seqrec* r;
  pthread_mutex_lock(&local);
  for (r = seqs; r; r = r->next)
    if (r->h == h && r->site == key->site && r->group == key->group && r->rank == rank) break;
  if (!r) {
    r = calloc(1, sizeof *r);
    if (!r) {
      pthread_mutex_unlock(&local);
      return JMG_MEET_ENOMEM;
    }
    r->h = h;
    r->site = key->site;
    r->group = key->group;
    r->rank = rank;
    r->count = -1;
    r->next = seqs;
    seqs = r;
  }
  *seq = ++r->count;
  pthread_mutex_unlock(&local);
  return JMG_MEET_OK;
}

/* ---- meetings (all under h->lock) ---- */

static void fail(header* h, meeting* mt, int code, const char* fmt, ...) {
  va_list ap;
  if (mt->failed) return;
  mt->failed = code;
  va_start(ap, fmt);
  vsnprintf(mt->msg, sizeof mt->msg, fmt, ap);
  va_end(ap);
  pthread_cond_broadcast(&h->cv);
}

static void release_slot(meeting* mt) {
  mt->used = 0;
  mt->joined = mt->gone = 0;
}

static void maybe_free(meeting* mt) {
  /* A failed meeting may miss ranks that will never come. */
  if (mt->nleft == mt->nparties || (mt->failed && mt->nleft == mt->njoined)) release_slot(mt);
}

/* Fails the meeting if a party that is in it has died; the dead party
 * counts as gone so that the slot can still be freed. */
static int probe(header* h, meeting* mt) {
  for (int r = 0; r < mt->nparties; r++) {
    if (!(mt->joined & BIT(r)) || (mt->gone & BIT(r))) continue;
    int rc = pthread_mutex_trylock(&mt->life[r]);
    if (rc == EBUSY) continue;
    if (rc == EOWNERDEAD) pthread_mutex_consistent(&mt->life[r]);
    if (rc == 0 || rc == EOWNERDEAD) pthread_mutex_unlock(&mt->life[r]);
    mt->gone |= BIT(r);
    mt->nleft++;
    fail(h, mt, JMG_MEET_EPEER,
         "rank %d (process %d) died during the call: its process was killed or exited", r,
         (int)mt->pid[r]);
    return 1;
  }
  return 0;
}

static int rank_list(char* dst, size_t cap, uint64_t mask, int n) {
  size_t len = 0;
  int count = 0;
  dst[0] = '\0';
  for (int r = 0; r < n; r++) {
    if (!(mask & BIT(r))) continue;
    int w = snprintf(dst + len, cap - len, "%s%d", count ? "," : "", r);
    count++;
    if (w < 0 || (size_t)w >= cap - len) break;
    len += (size_t)w;
  }
  return count;
}

static void fail_timeout(header* h, meeting* mt, const xslot* s, double timeout_s) {
  char here[256], missing[256];
  int n = mt->nparties;
  uint64_t all = n == 64 ? ~(uint64_t)0 : BIT(n) - 1;
  int nhere = rank_list(here, sizeof here, s->mask, n);
  int nmissing = rank_list(missing, sizeof missing, all & ~s->mask, n);
  int prec = timeout_s >= 0.1 ? 1 : 3;
  fail(h, mt, JMG_MEET_ETIMEOUT,
       "jaxmg rendezvous timed out after %.*f s: %d of %d parties arrived (rank%s %s); missing "
       "rank%s %s (processes of this node only: a rank on another host never arrives here)",
       prec, timeout_s, nhere, n, nhere == 1 ? "" : "s", here, nmissing == 1 ? "" : "s", missing);
}

static meeting* find_or_create(header* h, const jmg_meet_key* key, int64_t seq, int nparties,
                               int* slot) {
  int free_slot = -1;
  for (int s = 0; s < JMG_SHM_SLOTS; s++) {
    meeting* mt = &h->mt[s];
    if (!mt->used) {
      if (free_slot < 0) free_slot = s;
      continue;
    }
    if (mt->site == key->site && mt->group == key->group && mt->seq == seq) {
      *slot = s;
      return mt;
    }
  }
  if (free_slot < 0) return NULL;
  meeting* mt = &h->mt[free_slot];
  mt->used = 1;
  mt->site = key->site;
  mt->group = key->group;
  mt->seq = seq;
  mt->nparties = nparties;
  mt->njoined = mt->nleft = 0;
  mt->joined = mt->gone = 0;
  mt->failed = 0;
  mt->msg[0] = '\0';
  mt->done = 0;
  memset(mt->entered, 0, sizeof mt->entered);
  memset(mt->pid, 0, sizeof mt->pid);
  memset(mt->slots, 0, sizeof mt->slots);
  *slot = free_slot;
  return mt;
}

int jmg_shm_join(const char* name, int expected, const jmg_meet_key* key, int nparties, int rank,
                 double timeout_s, jmg_shm_meet** out, char* err, size_t errlen) {
  header* h;
  int64_t seq;
  int rc, slot = -1;
  if (out) *out = NULL;
  if (!key || !out) {
    put(err, errlen, "jaxmg rendezvous: NULL key or out");
    return JMG_MEET_EINVAL;
  }
  if (nparties < 1 || nparties > NP) {
    put(err, errlen, "jaxmg rendezvous: %d parties, need 1..%d", nparties, NP);
    return JMG_MEET_EINVAL;
  }
  if (rank < 0 || rank >= nparties) {
    put(err, errlen, "jaxmg rendezvous: rank %d out of range for %d parties", rank, nparties);
    return JMG_MEET_EINVAL;
  }
  jmg_shm_meet* p = malloc(sizeof *p);
  if (!p) {
    put(err, errlen, "jaxmg rendezvous: out of host memory");
    return JMG_MEET_ENOMEM;
  }
  rc = attach(name, expected, timeout_s, &h, err, errlen);
  if (!rc) rc = next_seq(h, key, rank, &seq);
  if (rc) {
    if (rc == JMG_MEET_ENOMEM) put(err, errlen, "jaxmg rendezvous: out of host memory");
    free(p);
    return rc;
  }
  if (lock_robust(&h->lock)) {
    put(err, errlen, "jaxmg rendezvous: the lock of %s is unusable", name);
    free(p);
    return JMG_MEET_EINVAL;
  }
  meeting* mt = find_or_create(h, key, seq, nparties, &slot);
  if (!mt) {
    pthread_mutex_unlock(&h->lock);
    put(err, errlen, "jaxmg rendezvous: more than %d meetings open at once on this node",
        JMG_SHM_SLOTS);
    free(p);
    return JMG_MEET_ENOMEM;
  }
  if (mt->nparties != nparties || (mt->joined & BIT(rank))) {
    if (mt->nparties != nparties)
      fail(h, mt, JMG_MEET_EINVAL,
           "jaxmg rendezvous: rank %d joined with %d parties, the others with %d", rank, nparties,
           mt->nparties);
    else
      fail(h, mt, JMG_MEET_EINVAL, "jaxmg rendezvous: rank %d joined twice", rank);
    put(err, errlen, "%s", mt->msg);
    pthread_mutex_unlock(&h->lock);
    free(p);
    return JMG_MEET_EINVAL;
  }
  /* Held until leave: it is how the others tell that we are alive. A
   * previous holder of this slot's mutex that died left it "owner died". */
  rc = pthread_mutex_trylock(&mt->life[rank]);
  if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(&mt->life[rank]);
  if (rc) {
    fail(h, mt, JMG_MEET_EINVAL, "jaxmg rendezvous: rank %d cannot take its liveness lock (%s)",
         rank, strerror(rc));
    put(err, errlen, "%s", mt->msg);
    pthread_mutex_unlock(&h->lock);
    free(p);
    return JMG_MEET_EINVAL;
  }
  mt->joined |= BIT(rank);
  mt->njoined++;
  mt->pid[rank] = (int32_t)getpid();
  pthread_mutex_unlock(&h->lock);
  p->h = h;
  p->slot = slot;
  p->rank = rank;
  *out = p;
  put(err, errlen, "%s", "");
  return JMG_MEET_OK;
}

static int someone_left_before(header* h, meeting* mt, int64_t i) {
  for (int r = 0; r < mt->nparties; r++) {
    if ((mt->gone & BIT(r)) && mt->entered[r] <= i) {
      fail(h, mt, JMG_MEET_EPEER,
           "rank %d: left the meeting after %lld exchanges, before exchange %lld", r,
           (long long)mt->entered[r], (long long)i);
      return 1;
    }
  }
  return 0;
}

int jmg_shm_exchange(jmg_shm_meet* p, const void* mine, size_t size, void* all,
                     const char* failure, double timeout_s, char* err, size_t errlen) {
  if (!p) {
    put(err, errlen, "jaxmg rendezvous: NULL meeting");
    return JMG_MEET_EINVAL;
  }
  header* h = p->h;
  meeting* mt = &h->mt[p->slot];
  int rank = p->rank, rc;
  int64_t i;
  if (lock_robust(&h->lock)) {
    put(err, errlen, "jaxmg rendezvous: the shared lock is unusable");
    return JMG_MEET_EINVAL;
  }
  if (mt->failed) goto failed;
  if (failure) {
    fail(h, mt, JMG_MEET_EPEER, "rank %d: %s", rank, failure);
    goto failed;
  }
  if (size > JMG_MEET_MAX_MSG || (size && (!mine || !all)) || isnan(timeout_s)) {
    fail(h, mt, JMG_MEET_EINVAL,
         "jaxmg rendezvous: rank %d: bad exchange (%zu bytes, at most %d; timeout %g)", rank, size,
         JMG_MEET_MAX_MSG, timeout_s);
    goto failed;
  }
  i = mt->entered[rank]++;
  if (someone_left_before(h, mt, i)) goto failed;
  xslot* s = &mt->slots[i & 1];
  if (s->arrived == 0) {
    s->size = size;
  } else if (s->size != size) {
    fail(h, mt, JMG_MEET_EINVAL, "jaxmg rendezvous: exchange %lld: rank %d sent %zu bytes, not %llu",
         (long long)i, rank, size, (unsigned long long)s->size);
    goto failed;
  }
  if (size) memcpy(mt->buf[i & 1][rank], mine, size);
  s->arrived++;
  s->mask |= BIT(rank);
  if (s->arrived == mt->nparties) {
    s->arrived = 0;
    s->mask = 0;
    mt->done = i + 1;
    pthread_cond_broadcast(&h->cv);
  } else {
    int forever = timeout_s < 0 || timeout_s > 1e9;
    double deadline = forever ? 0 : now() + timeout_s;
    while (mt->done <= i && !mt->failed) {
      double wake = now() + JMG_SHM_PROBE_S;
      if (!forever && wake > deadline) wake = deadline;
      struct timespec ts = at(wake);
      if (pthread_cond_timedwait(&h->cv, &h->lock, &ts) == EOWNERDEAD)
        pthread_mutex_consistent(&h->lock);
      if (mt->done > i || mt->failed) break;
      if (probe(h, mt)) break;
      if (!forever && now() >= deadline) fail_timeout(h, mt, s, timeout_s);
    }
    if (mt->done <= i) goto failed;
  }
  /* Rank order: the buffer holds one JMG_MEET_MAX_MSG row per rank. */
  for (int r = 0; r < mt->nparties; r++)
    if (size) memcpy((unsigned char*)all + (size_t)r * size, mt->buf[i & 1][r], size);
  pthread_mutex_unlock(&h->lock);
  put(err, errlen, "%s", "");
  return JMG_MEET_OK;

failed:
  rc = mt->failed;
  put(err, errlen, "%s", mt->msg);
  pthread_mutex_unlock(&h->lock);
  return rc;
}

void jmg_shm_leave(jmg_shm_meet* p) {
  if (!p) return;
  header* h = p->h;
  meeting* mt = &h->mt[p->slot];
  int rank = p->rank;
  if (lock_robust(&h->lock) == 0) {
    if (!(mt->gone & BIT(rank))) {
      mt->gone |= BIT(rank);
      mt->nleft++;
      if (!mt->failed) {
        for (int r = 0; r < mt->nparties; r++) {
          if ((mt->joined & ~mt->gone & BIT(r)) && mt->entered[r] > mt->entered[rank]) {
            someone_left_before(h, mt, mt->entered[rank]);
            break;
          }
        }
      }
      pthread_mutex_unlock(&mt->life[rank]);
      maybe_free(mt);
    }
    pthread_mutex_unlock(&h->lock);
  }
  free(p);
}
