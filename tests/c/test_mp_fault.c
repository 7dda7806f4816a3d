/* test_mp_fault.c - the cuSOLVERMp engine's fault logic (mp_comm.c, mp_watch.c)
 * over a test double of NCCL.
 *
 * The double behaves as NCCL does where it matters here: init blocks until
 * every rank of the communicator has joined; a collective blocks until
 * every rank has entered it or the communicator is aborted (ncclCommAbort
 * from another thread), and then fails. Ranks are threads. Honest limits:
 * this proves the timeouts, aborts, messages and the lost state; that the
 * real ncclCommAbort releases a rank blocked inside a cuSOLVERMp call (and
 * the GPU kernels behind it) only the GPU run shows.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "engines/mp/mp_comm.h"
#include "util/clock.h"

/* ------------------------------------------------------------------------ */
/* The double. */

typedef struct world {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int nranks, joined, release, fail_rank, version;
  int in_coll[8]; /* per collective generation */
  int aborts, destroys;
  void* comms[64]; /* every fake comm, freed at the end (an aborted one may still be read) */
  int ncomms;
} world;

static world W;

typedef struct fcomm {
  int rank, aborted, gen;
} fcomm;

static void world_reset(int nranks, int fail_rank, int version) {
  pthread_mutex_lock(&W.mu);
  W.nranks = nranks;
  W.joined = W.release = 0;
  W.fail_rank = fail_rank;
  W.version = version;
  memset(W.in_coll, 0, sizeof W.in_coll);
  W.aborts = W.destroys = 0;
  pthread_mutex_unlock(&W.mu);
}

static int f_version(int* v) {
  *v = W.version;
  return 0;
}
static int f_uid(unsigned char id[JMG_MP_ID_BYTES]) {
  memset(id, 7, JMG_MP_ID_BYTES);
  return 0;
}
/* Inside a group (this thread's), inits only register; the group's end
 * waits for everyone, as NCCL's does. */
static _Thread_local int in_group;

static void wait_all_joined(void) {
  while (W.joined < W.nranks && !W.release) pthread_cond_wait(&W.cv, &W.mu);
}

static int f_group_start(void) {
  in_group = 1;
  return 0;
}

static int f_group_end(void) {
  in_group = 0;
  pthread_mutex_lock(&W.mu);
  wait_all_joined();
  pthread_mutex_unlock(&W.mu);
  return 0;
}

static int f_init(void** comm, int nranks, const unsigned char id[JMG_MP_ID_BYTES], int rank,
                  int ordinal) {
  (void)id;
  (void)ordinal;
  (void)nranks;
  if (rank == W.fail_rank) return 2;
  pthread_mutex_lock(&W.mu);
  W.joined++;
  pthread_cond_broadcast(&W.cv);
  if (!in_group) wait_all_joined();
  pthread_mutex_unlock(&W.mu);
  fcomm* f = calloc(1, sizeof *f);
  f->rank = rank;
  *comm = f;
  pthread_mutex_lock(&W.mu);
  if (W.ncomms < 64) W.comms[W.ncomms++] = f;
  pthread_mutex_unlock(&W.mu);
  return 0;
}
static int f_abort(void* comm) {
  pthread_mutex_lock(&W.mu);
  ((fcomm*)comm)->aborted = 1;
  W.aborts++;
  pthread_cond_broadcast(&W.cv);
  pthread_mutex_unlock(&W.mu);
  return 0;
}
static int f_destroy(void* comm) {
  pthread_mutex_lock(&W.mu);
  W.destroys++;
  pthread_mutex_unlock(&W.mu);
  (void)comm;
  return 0;
}
static const char* f_str(int r) { return r == 2 ? "fake system error" : "fake error"; }

static const jmg_mp_api fake = {f_version,     f_uid,       f_init,    f_abort,
                                f_group_start, f_group_end, f_destroy, f_str};

/* A collective: all ranks in, or aborted. */
static int collective(void* vcomm, char* err) {
  fcomm* f = vcomm;
  int gen = f->gen++;
  pthread_mutex_lock(&W.mu);
  W.in_coll[gen]++;
  pthread_cond_broadcast(&W.cv);
  while (W.in_coll[gen] < W.nranks && !f->aborted) pthread_cond_wait(&W.cv, &W.mu);
  int aborted = f->aborted;
  pthread_mutex_unlock(&W.mu);
  if (aborted) snprintf(err, JMG_MP_ERRLEN, "ncclAllReduce: communicator aborted");
  return aborted ? JMG_MP_ENCCL : JMG_MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Ranks as threads. */

typedef struct rankjob {
  int rank, nranks, colls; /* colls: collectives to enter after joining */
  double timeout;
  jmg_mp_comm comm;
  int open_rc, coll_rc, again_rc;
  double open_s, coll_s;
  char open_err[JMG_MP_ERRLEN], coll_err[JMG_MP_ERRLEN], again_err[JMG_MP_ERRLEN];
  int body_calls;
} rankjob;

static int counting_collective(void* vj, char* err) {
  rankjob* j = vj;
  j->body_calls++;
  return collective(j->comm.nccl, err);
}

static void* rank_main(void* vj) {
  rankjob* j = vj;
  unsigned char id[JMG_MP_ID_BYTES];
  f_uid(id);
  double t0 = jmg_clock_now();
  j->open_rc = jmg_mp_comm_open(&j->comm, &fake, "t", id, j->nranks, j->rank, j->rank,
                                j->timeout, j->open_err);
  j->open_s = jmg_clock_now() - t0;
  if (j->open_rc != JMG_MP_OK) return NULL;
  for (int k = 0; k < j->colls; k++) {
    t0 = jmg_clock_now();
    j->coll_rc = jmg_mp_comm_guard(&j->comm, "potrs", counting_collective, j, j->coll_err);
    j->coll_s = jmg_clock_now() - t0;
    if (j->coll_rc != JMG_MP_OK) {
      j->again_rc = jmg_mp_comm_guard(&j->comm, "potrs", counting_collective, j, j->again_err);
      break;
    }
  }
  return NULL;
}

static void run_ranks(rankjob* jobs, int n) {
  pthread_t t[8];
  for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, rank_main, &jobs[i]);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

static void init_jobs(rankjob* jobs, int n, int nranks, int colls, double timeout) {
  memset(jobs, 0, n * sizeof *jobs);
  for (int i = 0; i < n; i++) {
    jobs[i].rank = i;
    jobs[i].nranks = nranks;
    jobs[i].colls = colls;
    jobs[i].timeout = timeout;
  }
}

/* Waits (a second at most) until `want` aborts were seen; returns the count. */
static int aborts_reach(int want) {
  struct timespec ts = {0, 5000000};
  for (int k = 0;; k++) {
    pthread_mutex_lock(&W.mu);
    int n = W.aborts;
    pthread_mutex_unlock(&W.mu);
    if (n >= want || k == 200) return n;
    nanosleep(&ts, NULL);
  }
}

static int has(const char* s, const char* sub) { return strstr(s, sub) != NULL; }

/* ------------------------------------------------------------------------ */

static void all_arrive(void) {
  rankjob j[3];
  world_reset(3, -1, 23203);
  init_jobs(j, 3, 3, 3, 5.0);
  run_ranks(j, 3);
  for (int i = 0; i < 3; i++) {
    CHECK(j[i].open_rc == JMG_MP_OK && j[i].coll_rc == JMG_MP_OK, "rank %d: %s %s", i,
          j[i].open_err, j[i].coll_err);
    CHECK(j[i].body_calls == 3, "three collectives");
    jmg_mp_comm_close(&j[i].comm);
  }
  CHECK(W.destroys == 3 && W.aborts == 0, "clean close: %d destroys %d aborts", W.destroys,
        W.aborts);
}

static void never_joins(void) {
  rankjob j[2];
  world_reset(3, -1, 23203); /* rank 2 of 3 never starts */
  init_jobs(j, 2, 3, 1, 0.3);
  run_ranks(j, 2);
  for (int i = 0; i < 2; i++) {
    char want[64];
    snprintf(want, sizeof want, "rank %d of 3", i);
    CHECK(j[i].open_rc == JMG_MP_ETIMEOUT, "rank %d: rc %d", i, j[i].open_rc);
    CHECK(has(j[i].open_err, want) && has(j[i].open_err, "ncclCommInitRank did not complete"),
          "%s", j[i].open_err);
    CHECK(j[i].open_s >= 0.29 && j[i].open_s < 2.0, "timed out after %.2f s", j[i].open_s);
    jmg_mp_comm_close(&j[i].comm);
  }
  /* The abandoned inits complete late: their helpers abort what they got. */
  pthread_mutex_lock(&W.mu);
  W.release = 1;
  pthread_cond_broadcast(&W.cv);
  pthread_mutex_unlock(&W.mu);
  int n = aborts_reach(2);
  CHECK(n == 2, "late comms aborted: %d", n);
}

static void skips_a_collective(void) {
  rankjob j[3];
  world_reset(3, -1, 23203);
  init_jobs(j, 3, 3, 1, 0.3);
  j[2].colls = 0; /* joins, then never enters the collective (dies) */
  run_ranks(j, 3);
  for (int i = 0; i < 2; i++) {
    CHECK(j[i].coll_rc == JMG_MP_ETIMEOUT, "rank %d: rc %d", i, j[i].coll_rc);
    CHECK(has(j[i].coll_err, "potrs did not finish within 0.3 s") &&
              has(j[i].coll_err, "aborted"),
          "%s", j[i].coll_err);
    CHECK(j[i].coll_s >= 0.29 && j[i].coll_s < 2.0, "released after %.2f s", j[i].coll_s);
    CHECK(j[i].again_rc == JMG_MP_ELOST && has(j[i].again_err, "is lost") &&
              j[i].body_calls == 1,
          "later call fails fast: %s", j[i].again_err);
  }
  CHECK(W.aborts == 2, "two aborts: %d", W.aborts);
  for (int i = 0; i < 3; i++) jmg_mp_comm_close(&j[i].comm);
  CHECK(W.destroys == 1 && W.aborts == 2, "rank 2 destroyed, others not again: %d %d",
        W.destroys, W.aborts);
}

static void init_fails(void) {
  rankjob j[2];
  world_reset(2, 1, 23203);
  init_jobs(j, 2, 2, 1, 0.3);
  run_ranks(j, 2);
  CHECK(j[1].open_rc == JMG_MP_ENCCL && has(j[1].open_err, "rank 1 of 2") &&
            has(j[1].open_err, "ncclCommInitRank failed: fake system error"),
        "%s", j[1].open_err);
  CHECK(j[0].open_rc == JMG_MP_ETIMEOUT, "the other rank times out: %d", j[0].open_rc);
  for (int i = 0; i < 2; i++) jmg_mp_comm_close(&j[i].comm);
  pthread_mutex_lock(&W.mu);
  W.release = 1;
  pthread_cond_broadcast(&W.cv);
  pthread_mutex_unlock(&W.mu);
  aborts_reach(1);
}

static void old_nccl(void) {
  rankjob j[1];
  world_reset(1, -1, 22805);
  init_jobs(j, 1, 1, 0, 1.0);
  run_ranks(j, 1);
  CHECK(j[0].open_rc == JMG_MP_EVERSION && has(j[0].open_err, "2.28.5") &&
            has(j[0].open_err, ">= 2.29.2"),
        "%s", j[0].open_err);
  jmg_mp_comm_close(&j[0].comm);
}

static int body_solver_fails(void* arg, char* err) {
  (void)arg;
  snprintf(err, JMG_MP_ERRLEN, "cusolverMpPotrf returned status 7");
  return JMG_MP_ESOLVER;
}
static int body_bad_args(void* arg, char* err) {
  (void)arg;
  snprintf(err, JMG_MP_ERRLEN, "tile 0");
  return JMG_MP_EINVAL;
}

static void body_failures(void) {
  rankjob j[1];
  world_reset(1, -1, 23203);
  init_jobs(j, 1, 1, 0, 1.0);
  run_ranks(j, 1);
  char err[JMG_MP_ERRLEN];
  CHECK(jmg_mp_comm_guard(&j[0].comm, "qr", body_bad_args, NULL, err) == JMG_MP_EINVAL &&
            has(err, "rank 0 of 1") && has(err, "qr: tile 0"),
        "%s", err);
  CHECK(j[0].comm.lost[0] == '\0', "bad arguments keep the communicator");
  CHECK(jmg_mp_comm_guard(&j[0].comm, "potrs", body_solver_fails, NULL, err) == JMG_MP_ESOLVER &&
            has(err, "status 7"),
        "%s", err);
  CHECK(jmg_mp_comm_guard(&j[0].comm, "potrs", body_bad_args, NULL, err) == JMG_MP_ELOST,
        "lost after a solver failure");
  jmg_mp_comm_close(&j[0].comm);
}

/* A collective that cuSOLVERMp runs on a communicator of its own: our
 * abort does not reach it, it returns only when released. */
static pthread_mutex_t deaf_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t deaf_cv = PTHREAD_COND_INITIALIZER;
static int deaf_released, stuck_calls;
static double stuck_at;

static int body_deaf(void* arg, char* err) {
  (void)arg;
  (void)err;
  pthread_mutex_lock(&deaf_mu);
  while (!deaf_released) pthread_cond_wait(&deaf_cv, &deaf_mu);
  pthread_mutex_unlock(&deaf_mu);
  return JMG_MP_OK;
}

static void stuck_hook(jmg_mp_comm* c) {
  (void)c;
  stuck_at = jmg_clock_now();
  pthread_mutex_lock(&deaf_mu);
  stuck_calls++;
  deaf_released = 1;
  pthread_cond_broadcast(&deaf_cv);
  pthread_mutex_unlock(&deaf_mu);
}

static void stuck_after_abort(void) {
  rankjob j[1];
  world_reset(1, -1, 23203);
  init_jobs(j, 1, 1, 0, 0.3);
  run_ranks(j, 1);
  j[0].comm.grace_s = 0.2;
  j[0].comm.on_stuck = stuck_hook;
  char err[JMG_MP_ERRLEN];
  double t0 = jmg_clock_now();
  int rc = jmg_mp_comm_guard(&j[0].comm, "syevd", body_deaf, NULL, err);
  CHECK(rc == JMG_MP_ETIMEOUT && has(err, "syevd did not finish"), "%d %s", rc, err);
  CHECK(stuck_calls == 1 && stuck_at - t0 >= 0.49 && stuck_at - t0 < 2.0,
        "on_stuck once, after timeout + grace: %d calls at %.2f s", stuck_calls, stuck_at - t0);
  jmg_mp_comm_close(&j[0].comm);
}

/* The default last resort, in a child process: it must end with status 75
 * and say why on stderr. */
static void stuck_exits(void) {
  int fds[2];
  if (pipe(fds) != 0) return;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    rankjob j[1];
    world_reset(1, -1, 23203);
    init_jobs(j, 1, 1, 0, 0.2);
    run_ranks(j, 1);
    j[0].comm.grace_s = 0.2;
    char err[JMG_MP_ERRLEN];
    jmg_mp_comm_guard(&j[0].comm, "potrs", body_deaf, NULL, err);
    _exit(0); /* not reached: on_stuck ends the process */
  }
  close(fds[1]);
  char buf[2048] = "";
  size_t got = 0;
  ssize_t k;
  while (got < sizeof buf - 1 && (k = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0)
    got += (size_t)k;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 75, "child status %d", status);
  CHECK(has(buf, "rank 0 of 1") && has(buf, "potrs is still blocked") &&
            has(buf, "ending this process"),
        "stderr: %s", buf);
}

/* One thread opens ranks 0 and 1 in a group while another opens rank 2
 * alone; then ranks 0 and 1 grouped while rank 2 never comes. */
typedef struct group_job {
  jmg_mp_comm comm[2];
  int rc;
  double secs;
  char err[JMG_MP_ERRLEN];
} group_job;

static void* group_main(void* vg) {
  group_job* g = vg;
  unsigned char id[JMG_MP_ID_BYTES];
  f_uid(id);
  jmg_mp_comm* cs[2] = {&g->comm[0], &g->comm[1]};
  int ranks[2] = {0, 1}, ords[2] = {0, 1};
  double t0 = jmg_clock_now();
  g->rc = jmg_mp_comm_open_group(cs, 2, &fake, "g", id, 3, ranks, ords, 0.3, g->err);
  g->secs = jmg_clock_now() - t0;
  return NULL;
}

static void grouped_open(void) {
  world_reset(3, -1, 23203);
  group_job g;
  memset(&g, 0, sizeof g);
  rankjob single[3];
  init_jobs(single, 3, 3, 1, 1.0);
  pthread_t t, u;
  pthread_create(&t, NULL, group_main, &g);
  pthread_create(&u, NULL, rank_main, &single[2]);
  pthread_join(t, NULL);
  pthread_join(u, NULL);
  CHECK(g.rc == JMG_MP_OK && single[2].open_rc == JMG_MP_OK, "grouped: %s / %s", g.err,
        single[2].open_err);
  CHECK(g.comm[0].rank == 0 && g.comm[1].rank == 1 && g.comm[0].nccl && g.comm[1].nccl,
        "two local ranks");
  jmg_mp_comm_close(&g.comm[0]);
  jmg_mp_comm_close(&g.comm[1]);
  jmg_mp_comm_close(&single[2].comm);

  world_reset(3, -1, 23203);
  memset(&g, 0, sizeof g);
  pthread_create(&t, NULL, group_main, &g);
  pthread_join(t, NULL);
  CHECK(g.rc == JMG_MP_ETIMEOUT && has(g.err, "(grouped) of local ranks 0,1 did not complete") &&
            g.secs < 2.0,
        "%d %s", g.rc, g.err);
  jmg_mp_comm_close(&g.comm[0]);
  jmg_mp_comm_close(&g.comm[1]);
  pthread_mutex_lock(&W.mu);
  W.release = 1;
  pthread_cond_broadcast(&W.cv);
  pthread_mutex_unlock(&W.mu);
  int n = aborts_reach(2);
  CHECK(n == 2, "late grouped comms aborted: %d", n);
}

int main(void) {
  pthread_mutex_init(&W.mu, NULL);
  pthread_cond_init(&W.cv, NULL);
  stuck_exits(); /* first: fork before this process has other threads */
  all_arrive();
  never_joins();
  skips_a_collective();
  init_fails();
  old_nccl();
  body_failures();
  stuck_after_abort();
  grouped_open();
  for (int k = 0; k < W.ncomms; k++) free(W.comms[k]);
  return CHECK_DONE("test_mp_fault");
}
