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
 *    of exchange.h, which the thread rendezvous has no use for. Robust
 *    mutexes work across PID namespaces: the kernel, not a PID, marks them.
 *  - Nothing read from the segment is trusted beyond this user: it is opened
 *    only if it is ours with mode 0600 (shm_seg.h), made complete under a
 *    name of our own and linked into place, and its tables are read within
 *    their bounds whatever their counts say.
 */
#define _POSIX_C_SOURCE 200809L

#include "rendezvous/meet_shm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
#include "rendezvous/shm_seg.h"
#include "util/identity.h"

#define NP JMG_MEET_MAX_PARTIES
#define MAX_PROCS 256
#define BIT(r) ((uint64_t)1 << (r))
/* Changes whenever the segment layout does; with the struct size it refuses
 * a segment written by another build. */
#define MAGIC ((uint64_t)0x6a61786d67730003u)

typedef struct meeting {
  int32_t used;
  uint64_t site;
  int64_t group, seq;
  jmg_round round;
  uint64_t token[NP]; /* each party's process (identity.h) */
  int32_t pid[NP];    /* for messages only: PIDs repeat across namespaces */
  uint64_t dead;      /* token of a party found dead, 0: none */
  pthread_mutex_t life[NP];
  unsigned char buf[JMG_ROUND_BUF(NP)];
} meeting;

typedef struct header {
  _Atomic uint64_t magic; /* MAGIC once set up; written last */
  uint64_t bytes;         /* sizeof(header) of the creating build */
  uint64_t creator;       /* token */
  int32_t expected;
  int32_t unlinked;
  int32_t nprocs;
  uint64_t procs[MAX_PROCS]; /* tokens of the attached processes, 0: detached */
  pthread_mutex_t lock;
  pthread_cond_t cv;
  meeting mt[JMG_SHM_SLOTS];
} header;

struct jmg_shm_meet {
  header* h;
  int slot, rank;
  long nexch; /* exchanges entered, for the test hook */
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

/* A robust lock: the previous holder's death is survivable (see top). */
static int lock_robust(pthread_mutex_t* m) {
  int rc = pthread_mutex_lock(m);
  if (rc == EOWNERDEAD) rc = pthread_mutex_consistent(m);
  return rc;
}

/* The attached-process count, bounded by the table whatever the segment says. */
static int nprocs_of(const header* h) {
  return h->nprocs < 0 ? 0 : h->nprocs > MAX_PROCS ? MAX_PROCS : h->nprocs;
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
  h->creator = jmg_process_token();
  h->expected = expected;
  /* The creator is attached from the start, so that the segment is never
   * without a live process that the sweep could see. */
  h->procs[0] = h->creator;
  h->nprocs = 1;
  atomic_store_explicit(&h->magic, MAGIC, memory_order_release);
  return rc;
}

static int valid(const header* h) {
  return atomic_load_explicit(&h->magic, memory_order_acquire) == MAGIC &&
         h->bytes == sizeof(header);
}

/* Maps an existing segment after shm_seg's checks (ours, 0600, our size). */
static int open_existing(const char* name, header** out, char* err, size_t errlen) {
  int fd;
  if (jmg_seg_open(name, 0, 0, &fd, err, errlen)) return errno == ENOENT ? -2 : JMG_MEET_EINVAL;
  struct stat st;
  if (fstat(fd, &st) || (uint64_t)st.st_size != sizeof(header)) {
    jmg_put(err, errlen, "jaxmg rendezvous: %s was made by another jaxmg build (%lld bytes)",
            name, (long long)st.st_size);
    close(fd);
    return JMG_MEET_EINVAL;
  }
  header* h = mmap(NULL, sizeof(header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (h == MAP_FAILED) {
    jmg_put(err, errlen, "jaxmg rendezvous: mmap of %s failed: %s", name, strerror(errno));
    return JMG_MEET_ENOMEM;
  }
  if (!valid(h)) {
    jmg_put(err, errlen, "jaxmg rendezvous: %s was made by another jaxmg build", name);
    munmap(h, sizeof(header));
    return JMG_MEET_EINVAL;
  }
  *out = h;
  return JMG_MEET_OK;
}

/* Makes a set-up segment under a name of our own ("/jaxmg-new.<token>.<r>",
 * which the sweep removes if we die) and links it to `name`, so that
 * `name` only ever appears complete. 1: linked, -2: someone else's was
 * first, else an error. */
static int create_linked(const char* name, int expected, header** out, char* err,
                         size_t errlen) {
  char tmp[JMG_SHM_NAME_MAX], hex[17], from[160], to[160];
  jmg_token_hex(jmg_process_token(), hex);
  int fd = -1, rc = JMG_SEG_EXISTS;
  for (int i = 0; i < 4 && rc == JMG_SEG_EXISTS; i++) {
    snprintf(tmp, sizeof tmp, "/jaxmg-new.%s.%016llx", hex, (unsigned long long)jmg_random64());
    rc = jmg_seg_create(tmp, sizeof(header), &fd, err, errlen);
  }
  if (rc) {
    if (rc == JMG_SEG_EXISTS) jmg_put(err, errlen, "jaxmg rendezvous: no free name for %s", tmp);
    return rc == JMG_SEG_FAIL && strstr(err, "not enough room") ? JMG_MEET_ENOMEM : JMG_MEET_EINVAL;
  }
  header* h = mmap(NULL, sizeof(header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  int src = h == MAP_FAILED ? errno : init_header(h, expected);
  snprintf(from, sizeof from, "%s%s", JMG_SHM_DIR, tmp);
  snprintf(to, sizeof to, "%s%s", JMG_SHM_DIR, name);
  int linked = !src && link(from, to) == 0;
  int lerr = errno;
  shm_unlink(tmp);
  if (linked) {
    *out = h;
    return 1;
  }
  if (h != MAP_FAILED) munmap(h, sizeof(header));
  if (!src && lerr == EEXIST) return -2;
  jmg_put(err, errlen, "jaxmg rendezvous: cannot set up %s: %s", name,
          strerror(src ? src : lerr));
  return JMG_MEET_EINVAL;
}

/* Opens the segment, or creates it if it is the first process. */
static int map_segment(const char* name, int expected, header** out, char* err,
                       size_t errlen) {
  for (int attempt = 0; attempt < 8; attempt++) {
    int rc = open_existing(name, out, err, errlen);
    if (rc != -2) return rc;
    rc = create_linked(name, expected, out, err, errlen);
    if (rc == 1) return JMG_MEET_OK;
    if (rc == JMG_MEET_ENOMEM) {
      /* Room for one segment but not for two made at once: another
       * process may be linking its own right now, or both of us ran out
       * half-way and gave our halves back. Wait a random while for its
       * segment (the waits of two processes then differ), then try again;
       * only the last attempt's shortfall is the error. */
      char spare[JMG_MEET_ERRLEN];
      struct timespec ms = {0, 1000000};
      int waits = attempt == 7 ? 2000 : 20 + (int)(jmg_random64() % 200);
      for (int i = 0; i < waits; i++, nanosleep(&ms, NULL))
        if (open_existing(name, out, spare, sizeof spare) == JMG_MEET_OK) return JMG_MEET_OK;
      if (attempt == 7) return rc;
      continue;
    }
    if (rc != -2) return rc;
    /* Lost the race to another process: open its segment. */
  }
  jmg_put(err, errlen, "jaxmg rendezvous: %s keeps appearing and vanishing", name);
  return JMG_MEET_EINVAL;
}

static void on_exit_detach(void) { jmg_shm_detach_all(); }

/* Whether a rendezvous segment's processes are all dead. The token list is
 * read without the lock: a torn read can only add a live token (random
 * bits), which keeps the segment. */
static int segment_dead(const char* name) {
  int fd;
  char err[JMG_MEET_ERRLEN];
  if (jmg_seg_open(name, sizeof(header), 1, &fd, err, sizeof err)) return 0;
  header* h = mmap(NULL, sizeof(header), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (h == MAP_FAILED) return 0;
  int dead = valid(h);
  for (int i = 0; dead && i < nprocs_of(h); i++)
    dead = h->procs[i] == 0 || jmg_token_alive(h->procs[i]) == 0;
  munmap(h, sizeof(header));
  return dead;
}

/* Whether the name "<prefix><16 hex>[.rest]" belongs to a dead process
 * other than this one. */
static int owner_dead(const char* name, const char* prefix) {
  size_t n = strlen(prefix);
  uint64_t t;
  if (strncmp(name, prefix, n) || jmg_token_parse(name + n, &t)) return 0;
  return t != jmg_process_token() && jmg_token_alive(t) == 0;
}

/* Removes from /dev/shm what dead processes left behind, whatever its age:
 * their life files, per-call segments (host_share.c) and half-made
 * segments by their owner's token, rendezvous segments once every process
 * that attached is dead (except `keep`, the one being joined). Only this
 * user's files are touched. Names are unique, so a leftover never disturbs
 * a new job; this returns the memory. */
static void sweep(const char* keep) {
  DIR* dir = opendir(JMG_SHM_DIR);
  if (!dir) return;
  struct dirent* e;
  while ((e = readdir(dir))) {
    const char* d = e->d_name;
    char name[JMG_SHM_NAME_MAX + 8];
    if (strncmp(d, "jaxmg", 5) || strlen(d) + 2 > JMG_SHM_NAME_MAX) continue;
    snprintf(name, sizeof name, "/%s", d);
    if (keep && !strcmp(name, keep)) continue;
    int stale = owner_dead(d, "jaxmg-part.") || owner_dead(d, "jaxmg-new.") ||
                (!strncmp(d, "jaxmg.", 6) && segment_dead(name));
    if (stale) {
      jmg_seg_unlink_ours(name);
    } else if (owner_dead(d, "jaxmg-life.")) {
      /* Not shm_unlink's business, but the same folder. */
      char path[JMG_SHM_NAME_MAX + 16];
      snprintf(path, sizeof path, "%s/%s", JMG_SHM_DIR, d);
      unlink(path);
    }
  }
  closedir(dir);
}

void jmg_shm_sweep(void) { sweep(NULL); }

/* Records this process in the segment; the last expected one unlinks the
 * name, since every process that needs it has it mapped by then. */
static int register_process(header* h, const char* name) {
  uint64_t me = jmg_process_token();
  int rc = lock_robust(&h->lock);
  if (rc) return rc;
  int known = 0, n = nprocs_of(h);
  for (int i = 0; i < n; i++) known |= h->procs[i] == me;
  if (!known && n < MAX_PROCS) h->procs[n++] = me;
  h->nprocs = n;
  if (!h->unlinked && h->expected > 0 && n >= h->expected) {
    jmg_seg_unlink_ours(name);
    h->unlinked = 1;
  }
  pthread_mutex_unlock(&h->lock);
  return 0;
}

static int attach(const char* name, int expected, header** out, char* err, size_t errlen) {
  if (!name || name[0] != '/' || strlen(name) >= JMG_SHM_NAME_MAX || strchr(name + 1, '/') ||
      strncmp(name, "/jaxmg", 6)) {
    jmg_put(err, errlen, "jaxmg rendezvous: bad segment name (\"/jaxmg...\", under %d bytes)",
            JMG_SHM_NAME_MAX);
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
    /* Not the segment we are joining: if its processes so far are dead,
     * this job's meeting is where we learn it ("rank R died"). */
    sweep(name);
  }
  seg* s = calloc(1, sizeof *s);
  header* h = NULL;
  int rc = s ? map_segment(name, expected, &h, err, errlen) : JMG_MEET_ENOMEM;
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
  uint64_t me = jmg_process_token();
  pthread_mutex_lock(&local);
  while (segs) {
    seg* s = segs;
    header* h = s->h;
    segs = s->next;
    if (lock_robust(&h->lock) == 0) {
      int alive = 0;
      for (int i = 0; i < nprocs_of(h); i++) {
        if (h->procs[i] == me) h->procs[i] = 0;
        /* Killed processes never detach; they must not keep the name. */
        else if (h->procs[i] && jmg_token_alive(h->procs[i]) != 0) alive = 1;
      }
      if (!alive && !h->unlinked) {
        jmg_seg_unlink_ours(s->name);
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

/* The k-th call of a rank at a site meets the k-th call of every other
 * rank. Process-local and per site: sites are the program's call sites
 * (stable keys, see _shard.new_site), so the list stays short. */
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
    mt->dead = mt->token[r];
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
  memset(mt->token, 0, sizeof mt->token);
  memset(mt->pid, 0, sizeof mt->pid);
  mt->dead = 0;
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
  (void)timeout_s; /* a segment appears complete or not at all (create_linked) */
  jmg_test_point("attach");
  /* Before this process names anything shared: the survivors of a crash
   * tell by its life file that it is gone. */
  if (jmg_identity_live(err, errlen)) return JMG_MEET_EINVAL;
  jmg_shm_meet* p = calloc(1, sizeof *p);
  if (!p) {
    jmg_put(err, errlen, "jaxmg rendezvous: out of host memory");
    return JMG_MEET_ENOMEM;
  }
  rc = attach(name, expected, &h, err, errlen);
  if (!rc && (rc = next_seq(h, key, rank, &seq)))
    jmg_put(err, errlen, "jaxmg rendezvous: out of host memory");
  if (rc) {
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
  mt->token[rank] = jmg_process_token();
  mt->pid[rank] = (int32_t)getpid();
  pthread_mutex_unlock(&h->lock);
  jmg_test_point("join");
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
  jmg_test_point_n("exchange", p->nexch++);
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
  uint64_t dead = 0;
  int failed = 0;
  if (lock_robust(&p->h->lock) == 0) {
    int rc = jmg_round_leave(&s.base, &s.mt->round, p->rank);
    if (rc >= 0) pthread_mutex_unlock(&s.mt->life[p->rank]);
    failed = s.mt->round.failed == JMG_MEET_EPEER || s.mt->round.failed == JMG_MEET_ETIMEOUT;
    dead = s.mt->dead;
    /* A failed meeting may miss ranks that will never come. */
    if (rc == 1) s.mt->used = 0;
    pthread_mutex_unlock(&p->h->lock);
  }
  free(p);
  /* A party died or never came: what it left in /dev/shm (its shard's
   * segment, its life file) goes now, not at some later job's start. The
   * kernel drops a killed process's file lock a moment after its robust
   * mutexes, hence the short wait for it. */
  if (dead) jmg_token_wait_dead(dead, 1.0);
  if (failed) sweep(NULL);
}
