/* meet_shm.c - meetings in a POSIX shared memory segment, for parties in
 * several processes of one node.
 *
 * As in meet.c, one lock covers all meetings and the exchanges are
 * exchange.c's. What changes is where the state lives and how a party can
 * fail:
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
 *    zombie not yet reaped, and for a recycled pid. This is the `dead` hook
 *    of exchange.h, which the thread rendezvous has no use for.
 */
#define _POSIX_C_SOURCE 200809L

#include "rendezvous/meet_shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rendezvous/exchange.h"

#define NP JMG_MEET_MAX_PARTIES
#define MAX_PROCS 256
#define BIT(r) ((uint64_t)1 << (r))
/* Changes whenever the segment layout does; with the struct size it refuses
 * a segment written by another build. */
#define MAGIC ((uint64_t)0x6a61786d67730002u)

typedef struct meeting {
  int32_t used;
  uint64_t site;
  int64_t group, seq;
  jmg_round round;
  int32_t pid[NP];
  pthread_mutex_t life[NP];
  unsigned char buf[JMG_ROUND_BUF(NP)];
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

static void nap(double s) {
  struct timespec ts = jmg_clock_at(s);
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
  double give_up = jmg_clock_now() + (timeout_s > 0 ? timeout_s : 180.0);
  int created = 1;
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0 && errno == EEXIST) {
    created = 0;
    fd = shm_open(name, O_RDWR, 0600);
  }
  if (fd < 0) {
    jmg_put(err, errlen, "jaxmg rendezvous: shm_open(%s) failed: %s", name, strerror(errno));
    return JMG_MEET_EINVAL;
  }
  if (created && ftruncate(fd, (off_t)sizeof(header))) {
    jmg_put(err, errlen, "jaxmg rendezvous: cannot size %s: %s", name, strerror(errno));
    close(fd);
    shm_unlink(name);
    return JMG_MEET_ENOMEM;
  }
  /* A joiner may see the file before the creator sized it. */
  for (;;) {
    struct stat st;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= sizeof(header)) break;
    if (jmg_clock_now() > give_up) {
      jmg_put(err, errlen, "jaxmg rendezvous: %s was never set up by its creator", name);
      close(fd);
      return JMG_MEET_ETIMEOUT;
    }
    nap(0.001);
  }
  header* h = mmap(NULL, sizeof(header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (h == MAP_FAILED) {
    jmg_put(err, errlen, "jaxmg rendezvous: mmap of %s failed: %s", name, strerror(errno));
    if (created) shm_unlink(name);
    return JMG_MEET_ENOMEM;
  }
  if (created) {
    int rc = init_header(h, expected);
    if (rc) {
      jmg_put(err, errlen, "jaxmg rendezvous: cannot set up process-shared locks: %s",
              strerror(rc));
      munmap(h, sizeof(header));
      shm_unlink(name);
      return JMG_MEET_EINVAL;
    }
  }
  while (atomic_load_explicit(&h->magic, memory_order_acquire) != MAGIC) {
    if (jmg_clock_now() > give_up) {
      jmg_put(err, errlen, "jaxmg rendezvous: %s was never set up by its creator", name);
      munmap(h, sizeof(header));
      return JMG_MEET_ETIMEOUT;
    }
    nap(0.001);
  }
  if (h->bytes != sizeof(header)) {
    jmg_put(err, errlen, "jaxmg rendezvous: %s was made by another jaxmg build", name);
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
    jmg_put(err, errlen, "jaxmg rendezvous: bad segment name");
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
    jmg_put(err, errlen, "jaxmg rendezvous: the lock of %s is unusable", name);
    munmap(h, sizeof(header));
    rc = JMG_MEET_EINVAL;
  }
  if (rc) {
    if (!s) jmg_put(err, errlen, "jaxmg rendezvous: out of host memory");
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

/* The hooks of exchange.h for one meeting of a segment. */
typedef struct shm_sync {
  jmg_sync base;
  header* h;
  meeting* mt;
} shm_sync;

static void wait_cv(jmg_sync* s, double until) {
  header* h = ((shm_sync*)s)->h;
  struct timespec ts = jmg_clock_at(until); /* never "no limit": we probe */
  if (pthread_cond_timedwait(&h->cv, &h->lock, &ts) == EOWNERDEAD)
    pthread_mutex_consistent(&h->lock);
}

static void wake_cv(jmg_sync* s) { pthread_cond_broadcast(&((shm_sync*)s)->h->cv); }

/* Fails the meeting if a party that is in it has died; the dead party
 * counts as gone so that the slot can still be freed. */
static int probe(jmg_sync* s, jmg_round* rd) {
  meeting* mt = ((shm_sync*)s)->mt;
  for (int r = 0; r < rd->nparties; r++) {
    if (!(rd->joined & BIT(r)) || (rd->gone & BIT(r))) continue;
    int rc = pthread_mutex_trylock(&mt->life[r]);
    if (rc == EBUSY) continue;
    if (rc == EOWNERDEAD) pthread_mutex_consistent(&mt->life[r]);
    if (rc == 0 || rc == EOWNERDEAD) pthread_mutex_unlock(&mt->life[r]);
    rd->gone |= BIT(r);
    rd->nleft++;
    jmg_round_fail(s, rd, JMG_MEET_EPEER,
                   "rank %d (process %d) died during the call: its process was killed or exited",
                   r, (int)mt->pid[r]);
    return 1;
  }
  return 0;
}

static const jmg_sync_ops shm_ops = {
    .wait = wait_cv,
    .wake = wake_cv,
    .dead = probe,
    .probe_s = JMG_SHM_PROBE_S,
    .timeout_note = " (processes of this node only: a rank on another host never arrives here)"};

static shm_sync sync_of(header* h, int slot) {
  shm_sync s = {{&shm_ops}, h, &h->mt[slot]};
  return s;
}

static int find_or_create(header* h, const jmg_meet_key* key, int64_t seq, int nparties) {
  int free_slot = -1;
  for (int s = 0; s < JMG_SHM_SLOTS; s++) {
    meeting* mt = &h->mt[s];
    if (!mt->used) {
      if (free_slot < 0) free_slot = s;
      continue;
    }
    if (mt->site == key->site && mt->group == key->group && mt->seq == seq) return s;
  }
  if (free_slot < 0) return -1;
  meeting* mt = &h->mt[free_slot];
  mt->used = 1;
  mt->site = key->site;
  mt->group = key->group;
  mt->seq = seq;
  jmg_round_init(&mt->round, nparties);
  memset(mt->pid, 0, sizeof mt->pid);
  return free_slot;
}

int jmg_shm_join(const char* name, int expected, const jmg_meet_key* key, int nparties, int rank,
                 double timeout_s, jmg_shm_meet** out, char* err, size_t errlen) {
  header* h;
  int64_t seq;
  int rc, slot;
  if (out) *out = NULL;
  rc = jmg_round_check_join(key, out, nparties, rank, err, errlen);
  if (rc) return rc;
  jmg_shm_meet* p = malloc(sizeof *p);
  if (!p) {
    jmg_put(err, errlen, "jaxmg rendezvous: out of host memory");
    return JMG_MEET_ENOMEM;
  }
  rc = attach(name, expected, timeout_s, &h, err, errlen);
  if (!rc) rc = next_seq(h, key, rank, &seq);
  if (rc) {
    if (rc == JMG_MEET_ENOMEM) jmg_put(err, errlen, "jaxmg rendezvous: out of host memory");
    free(p);
    return rc;
  }
  if (lock_robust(&h->lock)) {
    jmg_put(err, errlen, "jaxmg rendezvous: the lock of %s is unusable", name);
    free(p);
    return JMG_MEET_EINVAL;
  }
  slot = find_or_create(h, key, seq, nparties);
  if (slot < 0) {
    pthread_mutex_unlock(&h->lock);
    jmg_put(err, errlen, "jaxmg rendezvous: more than %d meetings open at once on this node",
            JMG_SHM_SLOTS);
    free(p);
    return JMG_MEET_ENOMEM;
  }
  shm_sync s = sync_of(h, slot);
  meeting* mt = s.mt;
  rc = jmg_round_admit(&s.base, &mt->round, nparties, rank, err, errlen);
  if (!rc) {
    /* Held until leave: it is how the others tell that we are alive. A
     * previous holder of this slot's mutex that died left it "owner died". */
    int lrc = pthread_mutex_trylock(&mt->life[rank]);
    if (lrc == EOWNERDEAD) lrc = pthread_mutex_consistent(&mt->life[rank]);
    if (lrc) {
      jmg_round_fail(&s.base, &mt->round, JMG_MEET_EINVAL,
                     "jaxmg rendezvous: rank %d cannot take its liveness lock (%s)", rank,
                     strerror(lrc));
      jmg_put(err, errlen, "%s", mt->round.msg);
      rc = JMG_MEET_EINVAL;
    }
  }
  if (rc) {
    pthread_mutex_unlock(&h->lock);
    free(p);
    return rc;
  }
  jmg_round_joined(&mt->round, rank);
  mt->pid[rank] = (int32_t)getpid();
  pthread_mutex_unlock(&h->lock);
  p->h = h;
  p->slot = slot;
  p->rank = rank;
  *out = p;
  jmg_put(err, errlen, "%s", "");
  return JMG_MEET_OK;
}

int jmg_shm_exchange(jmg_shm_meet* p, const void* mine, size_t size, void* all,
                     const char* failure, double timeout_s, char* err, size_t errlen) {
  if (!p) {
    jmg_put(err, errlen, "jaxmg rendezvous: NULL meeting");
    return JMG_MEET_EINVAL;
  }
  shm_sync s = sync_of(p->h, p->slot);
  if (lock_robust(&p->h->lock)) {
    jmg_put(err, errlen, "jaxmg rendezvous: the shared lock is unusable");
    return JMG_MEET_EINVAL;
  }
  int rc = jmg_round_exchange(&s.base, &s.mt->round, s.mt->buf, p->rank, mine, size, all, failure,
                              timeout_s, err, errlen);
  pthread_mutex_unlock(&p->h->lock);
  return rc;
}

void jmg_shm_leave(jmg_shm_meet* p) {
  if (!p) return;
  shm_sync s = sync_of(p->h, p->slot);
  if (lock_robust(&p->h->lock) == 0) {
    int rc = jmg_round_leave(&s.base, &s.mt->round, p->rank);
    if (rc >= 0) pthread_mutex_unlock(&s.mt->life[p->rank]);
    /* A failed meeting may miss ranks that will never come. */
    if (rc == 1) s.mt->used = 0;
    pthread_mutex_unlock(&p->h->lock);
  }
  free(p);
}
