/* test_mp_exchange.c - the cuSOLVERMp engine's cross-rank layout move
 * (mp_exchange.c) with ranks as threads and mailboxes for NCCL.
 *
 * Each rank holds its JAX block; all ranks run the protocol at once; the
 * cyclic buffers must then hold every element where the (separately
 * tested) layout2d index math puts it, nothing else written, and the move
 * back must restore the blocks. The staging the protocol asks for must not
 * exceed the rank's block or cyclic part. The GPU transport (mp_move.c) is
 * only compiled here; its copies are the same calls with CUDA behind them.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engines/mp/mp_comm.h"
#include "engines/mp/mp_exchange.h"

typedef uint64_t elem;
#define POISON 0xDEADBEEFCAFEF00DULL
#define MAXR 9

/* ------------------------------------------------------------------------ */
/* Mailboxes: box[from][to] holds one message at a time. */

typedef struct post {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  void* data[MAXR][MAXR];
  size_t bytes[MAXR][MAXR];
  int full[MAXR][MAXR];
} post;

typedef struct rank_ctx {
  post* po;
  int me;
  size_t max_alloc;
  int exchanges, zero_posts;
} rank_ctx;

static int t_copy(void* ctx, void* dst, int64_t dld, const void* src, int64_t sld, int64_t rows,
                  int64_t cols, int transpose, char* err) {
  (void)ctx;
  (void)err;
  elem* d = dst;
  const elem* s = src;
  for (int64_t c = 0; c < cols; c++)
    for (int64_t r = 0; r < rows; r++) {
      if (transpose)
        d[c + r * dld] = s[r + c * sld];
      else
        d[r + c * dld] = s[r + c * sld];
    }
  return 0;
}

static int t_exchange(void* vctx, const void* sbuf, size_t sb, int to, void* rbuf, size_t rb,
                      int from, char* err) {
  rank_ctx* x = vctx;
  post* po = x->po;
  x->exchanges++;
  if (sb == 0 || rb == 0) x->zero_posts++;
  pthread_mutex_lock(&po->mu);
  if (sb) {
    while (po->full[x->me][to]) pthread_cond_wait(&po->cv, &po->mu);
    po->data[x->me][to] = malloc(sb);
    memcpy(po->data[x->me][to], sbuf, sb);
    po->bytes[x->me][to] = sb;
    po->full[x->me][to] = 1;
    pthread_cond_broadcast(&po->cv);
  }
  int rc = 0;
  if (rb) {
    while (!po->full[from][x->me]) pthread_cond_wait(&po->cv, &po->mu);
    if (po->bytes[from][x->me] != rb) {
      snprintf(err, JMG_MP_ERRLEN, "rank %d expected %zu bytes from %d, got %zu", x->me, rb, from,
               po->bytes[from][x->me]);
      rc = JMG_MP_ENCCL;
    } else {
      memcpy(rbuf, po->data[from][x->me], rb);
    }
    free(po->data[from][x->me]);
    po->full[from][x->me] = 0;
    pthread_cond_broadcast(&po->cv);
  }
  pthread_mutex_unlock(&po->mu);
  return rc;
}

static void* t_alloc(void* vctx, size_t bytes) {
  rank_ctx* x = vctx;
  if (bytes > x->max_alloc) x->max_alloc = bytes;
  return malloc(bytes);
}
static void t_release(void* ctx, void* p) {
  (void)ctx;
  free(p);
}

/* ------------------------------------------------------------------------ */

typedef struct job {
  const jmg_plan2d* plan;
  int me, nranks;
  const elem* src;
  int64_t sld;
  elem* dst;
  int64_t dld;
  rank_ctx x;
  int rc;
  char err[JMG_MP_ERRLEN];
} job;

static void* rank_main(void* vj) {
  job* j = vj;
  jmg_mp_xfer xf = {&j->x, t_copy, t_exchange, t_alloc, t_release};
  j->rc = jmg_mp_exchange_run(j->plan, j->me, j->nranks, sizeof(elem), j->src, j->sld, j->dst,
                              j->dld, &xf, j->err);
  return NULL;
}

/* Runs plan on all ranks at once; returns the largest staging asked. */
static size_t run_all(const jmg_plan2d* plan, int R, elem** src, const int64_t* sld,
                      elem** dst, const int64_t* dld, int* failed) {
  static post po;
  pthread_mutex_init(&po.mu, NULL);
  pthread_cond_init(&po.cv, NULL);
  memset(po.full, 0, sizeof po.full);
  job jobs[MAXR];
  pthread_t t[MAXR];
  for (int r = 0; r < R; r++) {
    jobs[r] = (job){plan, r, R, src[r], sld[r], dst[r], dld[r], {&po, r, 0, 0, 0}, 0, ""};
    pthread_create(&t[r], NULL, rank_main, &jobs[r]);
  }
  size_t most = 0;
  *failed = 0;
  for (int r = 0; r < R; r++) {
    pthread_join(t[r], NULL);
    if (jobs[r].rc) {
      *failed = 1;
      CHECK(0, "rank %d: %s", r, jobs[r].err);
    }
    if (jobs[r].x.max_alloc > most) most = jobs[r].x.max_alloc;
  }
  pthread_mutex_destroy(&po.mu);
  pthread_cond_destroy(&po.cv);
  return most;
}

static void one_case(jmg_layout2d l, int transpose) {
  int R = l.grid.p * l.grid.q;
  jmg_plan2d to, back;
  CHECK(jmg_plan2d_build(&l, transpose, 1, &to) == 0 && jmg_plan2d_build(&l, transpose, 0, &back) == 0,
        "plans");
  jmg_layout2d cl = jmg_plan2d_cyclic_layout(&to);
  int64_t mb = jmg_layout2d_block_rows(&l), nb = jmg_layout2d_block_cols(&l);
  elem *blk[MAXR], *cyc[MAXR], *ret[MAXR];
  int64_t bld[MAXR], cld[MAXR], csize[MAXR];
  for (int r = 0; r < R; r++) {
    bld[r] = mb;
    cld[r] = jmg_layout2d_cyclic_rows(&cl, r);
    csize[r] = cld[r] * jmg_layout2d_cyclic_cols(&cl, r);
    blk[r] = malloc((mb * nb) * sizeof(elem));
    ret[r] = malloc((mb * nb) * sizeof(elem));
    cyc[r] = malloc((csize[r] + 1) * sizeof(elem));
    for (int64_t k = 0; k < mb * nb; k++) ret[r][k] = POISON;
    for (int64_t k = 0; k <= csize[r]; k++) cyc[r][k] = POISON;
  }
  for (int64_t i = 0; i < l.m; i++)
    for (int64_t j = 0; j < l.n; j++) {
      jmg_where2d w = jmg_layout2d_block_at(&l, i, j);
      blk[w.rank][w.row + w.col * mb] = (elem)(i * l.n + j + 1);
    }
  int failed;
  size_t most = run_all(&to, R, blk, bld, cyc, cld, &failed);
  int64_t wrong = 0;
  for (int64_t i = 0; i < cl.m; i++)
    for (int64_t j = 0; j < cl.n; j++) {
      jmg_where2d w = jmg_layout2d_cyclic_at(&cl, i, j);
      elem want = transpose ? (elem)(j * l.n + i + 1) : (elem)(i * l.n + j + 1);
      wrong += cyc[w.rank][w.row + w.col * cld[w.rank]] != want;
    }
  int guards = 1;
  for (int r = 0; r < R; r++) guards &= cyc[r][csize[r]] == POISON;
  CHECK(!failed && wrong == 0 && guards, "to cyclic: %lld wrong (m=%lld n=%lld T=%lld %dx%d tr=%d)",
        (long long)wrong, (long long)l.m, (long long)l.n, (long long)l.tile, l.grid.p, l.grid.q,
        transpose);
  int64_t bound = mb * nb;
  for (int r = 0; r < R; r++)
    if (csize[r] > bound) bound = csize[r];
  CHECK(most <= (size_t)bound * sizeof(elem), "staging %zu > %lld elements", most,
        (long long)bound);
  run_all(&back, R, cyc, cld, ret, bld, &failed);
  int same = !failed;
  for (int r = 0; r < R; r++) same &= memcmp(ret[r], blk[r], mb * nb * sizeof(elem)) == 0;
  CHECK(same, "round trip (m=%lld n=%lld T=%lld %dx%d tr=%d)", (long long)l.m, (long long)l.n,
        (long long)l.tile, l.grid.p, l.grid.q, transpose);
  for (int r = 0; r < R; r++) {
    free(blk[r]);
    free(ret[r]);
    free(cyc[r]);
  }
  jmg_plan2d_free(&to);
  jmg_plan2d_free(&back);
}

int main(void) {
  long cases = 0;
  const int locs[] = {1, 2, 3, 5};
  for (int p = 1; p <= 3; p++)
    for (int q = 1; q <= 3; q++)
      for (int bp = 1; bp <= p * q; bp++) {
        if ((p * q) % bp) continue;
        int bq = p * q / bp;
        for (int a = 0; a < 4; a++)
          for (int b = 0; b < 4; b++)
            for (int64_t t = 1; t <= 4; t++)
              for (int o = 0; o < 2; o++)
                for (int tr = 0; tr < 2; tr++) {
                  jmg_layout2d l = {bp * locs[a], bq * locs[b], t, {p, q, o},
                                    {bp, bq, 1 - o}};
                  one_case(l, tr);
                  cases++;
                }
      }
  printf("test_mp_exchange: %ld moves\n", cases);
  return CHECK_DONE("test_mp_exchange");
}
