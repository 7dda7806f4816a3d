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
#include <time.h>

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
static int f_init(void** comm, int nranks, const unsigned char id[JMG_MP_ID_BYTES], int rank,
                  int ordinal) {
  (void)id;
  (void)ordinal;
  (void)nranks;
  if (rank == W.fail_rank) return 2;
  pthread_mutex_lock(&W.mu);
  W.joined++;
  pthread_cond_broadcast(&W.cv);
  while (W.joined < W.nranks && !W.release) pthread_cond_wait(&W.cv, &W.mu);
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

static const jmg_mp_api fake = {f_version, f_uid, f_init, f_abort, f_destroy, f_str};

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

int main(void) {
  pthread_mutex_init(&W.mu, NULL);
  pthread_cond_init(&W.cv, NULL);
  all_arrive();
  never_joins();
  skips_a_collective();
  init_fails();
  old_nccl();
  body_failures();
  for (int k = 0; k < W.ncomms; k++) free(W.comms[k]);
  return CHECK_DONE("test_mp_fault");
}
