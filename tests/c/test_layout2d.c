/* test_layout2d.c - 2-D block-cyclic index math and patch plans.
 *
 * Every expectation comes from a reference written here without the
 * library's formulas: ranks are enumerated, rows and columns are dealt out
 * one by one, tile by tile, and plans are judged by what they leave in the
 * buffers (every element once in its place, nothing written elsewhere),
 * not by their own patch list. Every small (m, n, tile, P, Q, grid order,
 * block grid, block order, transpose) combination is swept.
 *
 * JMG_LAYOUT_QUICK=1 (or "quick") shrinks the sweep (for valgrind).
 */
#include "layout/layout2d.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

typedef uint64_t elem;
#define POISON 0xDEADBEEFCAFEF00DULL
#define GUARD 8 /* elements past every buffer that no copy may touch */

/* ------------------------------------------------------------------------ */
/* Reference. */

/* Rank of grid coordinates, by enumerating ranks in the order's sense. */
static int ref_rank(int p, int q, int order, int r, int c) {
  int rank = 0;
  if (order == JMG_GRID_ROW_MAJOR) {
    for (int i = 0; i < p; i++)
      for (int j = 0; j < q; j++, rank++)
        if (i == r && j == c) return rank;
  } else {
    for (int j = 0; j < q; j++)
      for (int i = 0; i < p; i++, rank++)
        if (i == r && j == c) return rank;
  }
  return -1;
}

/* Deals n indices tile by tile over nprocs: owner and local index of each. */
typedef struct dealt {
  int* owner;
  int64_t* local;
  int64_t* count; /* per process */
} dealt;

static void deal(int64_t n, int64_t tile, int nprocs, dealt* d) {
  d->owner = malloc(n * sizeof *d->owner);
  d->local = malloc(n * sizeof *d->local);
  d->count = calloc(nprocs, sizeof *d->count);
  int proc = 0;
  int64_t in_tile = 0;
  for (int64_t i = 0; i < n; i++) {
    d->owner[i] = proc;
    d->local[i] = d->count[proc]++;
    if (++in_tile == tile) {
      in_tile = 0;
      proc = (proc + 1) % nprocs;
    }
  }
}

static void dealt_free(dealt* d) {
  free(d->owner);
  free(d->local);
  free(d->count);
}

typedef struct refcase {
  int64_t m, n, tile;
  int p, q, gorder, bp, bq, border, transpose;
} refcase;

static elem code(const refcase* c, int64_t i, int64_t j) { return (elem)(i * c->n + j + 1); }

/* ------------------------------------------------------------------------ */
/* Buffers and the copy callback. */

typedef struct bufs {
  int nranks;
  int64_t* rows; /* local rows (the ld) of each rank's buffer */
  int64_t* cols;
  elem** data;       /* rows*cols + GUARD */
  unsigned** writes; /* per element: how many copies wrote it */
} bufs;

static void bufs_make(bufs* b, int nranks) {
  b->nranks = nranks;
  b->rows = calloc(nranks, sizeof *b->rows);
  b->cols = calloc(nranks, sizeof *b->cols);
  b->data = calloc(nranks, sizeof *b->data);
  b->writes = calloc(nranks, sizeof *b->writes);
}

static void bufs_alloc(bufs* b, int r, int64_t rows, int64_t cols) {
  b->rows[r] = rows;
  b->cols[r] = cols;
  int64_t n = rows * cols + GUARD;
  b->data[r] = malloc(n * sizeof(elem));
  b->writes[r] = calloc(n, sizeof(unsigned));
  for (int64_t k = 0; k < n; k++) b->data[r][k] = POISON;
}

static void bufs_free(bufs* b) {
  for (int r = 0; r < b->nranks; r++) {
    free(b->data[r]);
    free(b->writes[r]);
  }
  free(b->rows);
  free(b->cols);
  free(b->data);
  free(b->writes);
}

typedef struct copyctx {
  bufs *src, *dst;
  int bad; /* a patch outside a buffer */
  int64_t calls;
} copyctx;

static int in_buf(const bufs* b, int rank, int64_t r0, int64_t c0, int64_t rows,
                  int64_t cols) {
  return rank >= 0 && rank < b->nranks && r0 >= 0 && c0 >= 0 && rows > 0 && cols > 0 &&
         r0 + rows <= b->rows[rank] && c0 + cols <= b->cols[rank];
}

static int copy_cpu(void* vctx, const jmg_patch* p, int transpose) {
  copyctx* x = vctx;
  x->calls++;
  int64_t drows = transpose ? p->cols : p->rows, dcols = transpose ? p->rows : p->cols;
  if (!in_buf(x->src, p->src, p->src_row, p->src_col, p->rows, p->cols) ||
      !in_buf(x->dst, p->dst, p->dst_row, p->dst_col, drows, dcols)) {
    x->bad++;
    return 0;
  }
  int64_t sld = x->src->rows[p->src], dld = x->dst->rows[p->dst];
  for (int64_t c = 0; c < p->cols; c++)
    for (int64_t r = 0; r < p->rows; r++) {
      int64_t dr = transpose ? c : r, dc = transpose ? r : c;
      int64_t d = (p->dst_row + dr) + (p->dst_col + dc) * dld;
      x->dst->data[p->dst][d] = x->src->data[p->src][(p->src_row + r) + (p->src_col + c) * sld];
      x->dst->writes[p->dst][d]++;
    }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* One case. */

static void check_index_math(const refcase* c, const jmg_layout2d* l, const dealt* dr,
                             const dealt* dc) {
  int64_t mb = c->m / c->bp, nb = c->n / c->bq;
  CHECK(jmg_layout2d_block_rows(l) == mb && jmg_layout2d_block_cols(l) == nb, "block size");
  for (int pr = 0; pr < c->p; pr++)
    for (int pc = 0; pc < c->q; pc++) {
      int rank = ref_rank(c->p, c->q, c->gorder, pr, pc);
      int r2, c2;
      jmg_grid2d_coords(&l->grid, rank, &r2, &c2);
      CHECK(jmg_grid2d_rank(&l->grid, pr, pc) == rank && r2 == pr && c2 == pc, "grid rank");
      CHECK(jmg_layout2d_cyclic_rows(l, rank) == dr->count[pr], "LOCr");
      CHECK(jmg_layout2d_cyclic_cols(l, rank) == dc->count[pc], "LOCc");
      CHECK(jmg_bc_count(c->m, c->tile, pr, c->p) == dr->count[pr], "numroc");
      int64_t gi, gj;
      jmg_where2d past = {rank, dr->count[pr], 0};
      CHECK(jmg_layout2d_cyclic_global(l, past, &gi, &gj) == -1, "past LOCr");
    }
  for (int64_t i = 0; i < c->m; i++)
    for (int64_t j = 0; j < c->n; j++) {
      jmg_where2d w = jmg_layout2d_cyclic_at(l, i, j);
      int rank = ref_rank(c->p, c->q, c->gorder, dr->owner[i], dc->owner[j]);
      CHECK(w.rank == rank && w.row == dr->local[i] && w.col == dc->local[j],
            "cyclic_at(%lld,%lld)", (long long)i, (long long)j);
      int64_t gi = -1, gj = -1;
      CHECK(jmg_layout2d_cyclic_global(l, w, &gi, &gj) == 0 && gi == i && gj == j,
            "cyclic_global");
      jmg_where2d b = jmg_layout2d_block_at(l, i, j);
      int brank = ref_rank(c->bp, c->bq, c->border, (int)(i / mb), (int)(j / nb));
      CHECK(b.rank == brank && b.row == i - (i / mb) * mb && b.col == j - (j / nb) * nb,
            "block_at");
    }
  CHECK(jmg_layout2d_cyclic_at(l, c->m, 0).rank == -1, "out of range");
}

static void fill_blocks(const refcase* c, const jmg_layout2d* l, bufs* b) {
  int64_t mb = c->m / c->bp, nb = c->n / c->bq;
  for (int r = 0; r < c->p * c->q; r++) bufs_alloc(b, r, mb, nb);
  for (int64_t i = 0; i < c->m; i++)
    for (int64_t j = 0; j < c->n; j++) {
      jmg_where2d w = jmg_layout2d_block_at(l, i, j);
      b->data[w.rank][w.row + w.col * mb] = code(c, i, j);
    }
}

/* Every element of every buffer written once, with its value; the guard
 * after each buffer untouched. `expect(rank, k)` gives the wanted value. */
static void check_bufs(const bufs* b, const elem* const* want, const char* what) {
  for (int r = 0; r < b->nranks; r++) {
    int64_t n = b->rows[r] * b->cols[r];
    int64_t wrong = 0, once = 0;
    for (int64_t k = 0; k < n; k++) {
      wrong += b->data[r][k] != want[r][k];
      once += b->writes[r][k] == 1;
    }
    CHECK(wrong == 0 && once == n, "%s rank %d: %lld wrong, %lld of %lld written once", what,
          r, (long long)wrong, (long long)once, (long long)n);
    int guard_ok = 1;
    for (int64_t k = n; k < n + GUARD; k++) guard_ok &= b->data[r][k] == POISON;
    CHECK(guard_ok, "%s rank %d: guard overwritten", what, r);
  }
}

static void run_case(const refcase* c) {
  jmg_layout2d l = {c->m, c->n, c->tile, {c->p, c->q, c->gorder}, {c->bp, c->bq, c->border}};
  CHECK(jmg_layout2d_check(&l) == JMG_L2D_OK, "valid layout rejected");
  int nranks = c->p * c->q;

  dealt dr, dc; /* M's rows over P and columns over Q */
  deal(c->m, c->tile, c->p, &dr);
  deal(c->n, c->tile, c->q, &dc);
  if (!c->transpose) check_index_math(c, &l, &dr, &dc);

  jmg_plan2d to, back;
  CHECK(jmg_plan2d_build(&l, c->transpose, 1, &to) == JMG_L2D_OK, "build to");
  CHECK(jmg_plan2d_build(&l, c->transpose, 0, &back) == JMG_L2D_OK, "build back");
  jmg_layout2d cl = jmg_plan2d_cyclic_layout(&to);

  /* Source blocks, expected cyclic contents (from the reference deal of the
   * cyclic matrix's rows and columns). */
  bufs blk, cyc, ret;
  bufs_make(&blk, nranks);
  bufs_make(&cyc, nranks);
  bufs_make(&ret, nranks);
  fill_blocks(c, &l, &blk);
  dealt xr, xc;
  deal(cl.m, c->tile, c->p, &xr);
  deal(cl.n, c->tile, c->q, &xc);
  elem** want_cyc = calloc(nranks, sizeof *want_cyc);
  for (int pr = 0; pr < c->p; pr++)
    for (int pc = 0; pc < c->q; pc++) {
      int r = ref_rank(c->p, c->q, c->gorder, pr, pc);
      bufs_alloc(&cyc, r, xr.count[pr], xc.count[pc]);
      want_cyc[r] = malloc((xr.count[pr] * xc.count[pc] + 1) * sizeof(elem));
    }
  for (int64_t i = 0; i < cl.m; i++)
    for (int64_t j = 0; j < cl.n; j++) {
      int r = ref_rank(c->p, c->q, c->gorder, xr.owner[i], xc.owner[j]);
      elem v = c->transpose ? code(c, j, i) : code(c, i, j);
      want_cyc[r][xr.local[i] + xc.local[j] * cyc.rows[r]] = v;
    }

  copyctx x = {&blk, &cyc, 0, 0};
  CHECK(jmg_plan2d_run(&to, -1, copy_cpu, &x) == JMG_L2D_OK, "run to");
  CHECK(x.bad == 0, "patch outside a buffer");
  check_bufs(&cyc, (const elem* const*)want_cyc, "to cyclic");

  for (int r = 0; r < nranks; r++) bufs_alloc(&ret, r, blk.rows[r], blk.cols[r]);
  copyctx y = {&cyc, &ret, 0, 0};
  CHECK(jmg_plan2d_run(&back, -1, copy_cpu, &y) == JMG_L2D_OK, "run back");
  CHECK(y.bad == 0, "patch outside a buffer (back)");
  check_bufs(&ret, (const elem* const*)blk.data, "round trip");

  /* Each rank's own part: the patches it sends cover the whole plan once;
   * the volumes add up to the matrix; patches are no smaller than needed. */
  int64_t sent = 0, vol = 0;
  for (int r = 0; r < nranks; r++) {
    for (int64_t k = 0; k < jmg_plan2d_count(&to); k++) sent += jmg_plan2d_patch(&to, k).src == r;
    for (int d = 0; d < nranks; d++) vol += jmg_plan2d_volume(&to, r, d);
  }
  CHECK(sent == jmg_plan2d_count(&to) && vol == c->m * c->n, "per-rank split");
  int64_t bound = ((c->m - 1) / c->tile + 1 + c->bp) * ((c->n - 1) / c->tile + 1 + c->bq);
  CHECK(jmg_plan2d_count(&to) <= bound, "too many patches");

  for (int r = 0; r < nranks; r++) free(want_cyc[r]);
  free(want_cyc);
  dealt_free(&xr);
  dealt_free(&xc);
  dealt_free(&dr);
  dealt_free(&dc);
  bufs_free(&blk);
  bufs_free(&cyc);
  bufs_free(&ret);
  jmg_plan2d_free(&to);
  jmg_plan2d_free(&back);
}

/* ------------------------------------------------------------------------ */
/* JAX shardings and bad layouts. */

/* A row-major R x C array, sharded as `kind` on an a x b mesh (rank = i*b+j):
 * the shard read as column-major must be where block_at says. */
static void check_from_jax(int64_t R, int64_t C, int kind, int a, int b) {
  jmg_layout2d l;
  int ranks = kind == JMG_SHARD_ROWS ? a : kind == JMG_SHARD_COLS ? b : a * b;
  jmg_grid2d g = {ranks, 1, JMG_GRID_ROW_MAJOR};
  CHECK(jmg_layout2d_from_jax(R, C, kind, a, b, 2, g, &l) == JMG_L2D_OK, "from_jax");
  int ra = kind == JMG_SHARD_COLS ? 1 : a; /* mesh splits of A's rows */
  int cb = kind == JMG_SHARD_ROWS ? 1 : b; /* and of its columns */
  int64_t sr = R / ra, sc = C / cb;        /* shard shape, row-major */
  for (int64_t r = 0; r < R; r++)
    for (int64_t c = 0; c < C; c++) {
      int i = (int)(r / sr), j = (int)(c / sc);
      int rank = kind == JMG_SHARD_ROWS ? i : kind == JMG_SHARD_COLS ? j : i * b + j;
      int64_t flat = (r - i * sr) * sc + (c - j * sc); /* row-major in the shard */
      jmg_where2d w = jmg_layout2d_block_at(&l, c, r); /* M(c, r) = A(r, c) */
      CHECK(w.rank == rank && w.row + w.col * sc == flat, "jax shard kind %d", kind);
    }
}

static void check_invalid(void) {
  jmg_layout2d ok = {6, 4, 2, {2, 2, JMG_GRID_ROW_MAJOR}, {2, 2, JMG_GRID_COL_MAJOR}};
  CHECK(jmg_layout2d_check(&ok) == JMG_L2D_OK, "ok");
  jmg_layout2d b = ok;
  b.blocks.p = 4; /* 4*2 != 2*2 */
  CHECK(jmg_layout2d_check(&b) == JMG_L2D_EINVAL, "block count");
  b = ok;
  b.m = 5; /* not a multiple of bp */
  CHECK(jmg_layout2d_check(&b) == JMG_L2D_EINVAL, "m mod bp");
  b = ok;
  b.tile = 0;
  CHECK(jmg_layout2d_check(&b) == JMG_L2D_EINVAL, "tile");
  b = ok;
  b.grid.order = 7;
  CHECK(jmg_layout2d_check(&b) == JMG_L2D_EINVAL, "order");
  b = ok;
  b.m = INT64_C(1) << 40;
  b.n = INT64_C(1) << 40;
  CHECK(jmg_layout2d_check(&b) == JMG_L2D_EINVAL, "m*n overflow");
  jmg_plan2d p;
  CHECK(jmg_plan2d_build(&b, 0, 1, &p) == JMG_L2D_EINVAL && p.row_runs == NULL, "bad plan");
  CHECK(jmg_layout2d_from_jax(4, 4, 9, 2, 2, 2, ok.grid, &b) == JMG_L2D_EINVAL, "kind");
}

/* A plan beyond 32-bit sizes: 2^20 x 2^20 on 4 x 4, tile 1024. */
static void check_large(void) {
  int64_t n = INT64_C(1) << 20;
  jmg_layout2d l = {n, n, 1024, {4, 4, JMG_GRID_ROW_MAJOR}, {1, 16, JMG_GRID_ROW_MAJOR}};
  jmg_plan2d p;
  CHECK(jmg_plan2d_build(&l, 1, 1, &p) == JMG_L2D_OK, "large build");
  int64_t total = 0;
  for (int64_t k = 0; k < jmg_plan2d_count(&p); k++) {
    jmg_patch b = jmg_plan2d_patch(&p, k);
    total += b.rows * b.cols;
  }
  CHECK(total == n * n, "large volume %lld", (long long)total);
  CHECK(jmg_layout2d_cyclic_rows(&l, 5) == n / 4, "large LOCr");
  jmg_plan2d_free(&p);
}

static int factor_pairs(int r, int* fp, int* fq) {
  int k = 0;
  for (int d = 1; d <= r; d++)
    if (r % d == 0) {
      fp[k] = d;
      fq[k++] = r / d;
    }
  return k;
}

int main(int argc, char** argv) {
  const char* qenv = getenv("JMG_LAYOUT_QUICK");
  int quick = (qenv && *qenv == '1') || (argc > 1 && strcmp(argv[1], "quick") == 0);
  int maxloc = quick ? 3 : 5, maxtile = quick ? 3 : 7, maxproc = quick ? 2 : 4;
  long cases = 0;
  for (int p = 1; p <= maxproc; p++)
    for (int q = 1; q <= maxproc; q++) {
      int fp[16], fq[16];
      int nf = factor_pairs(p * q, fp, fq);
      for (int f = 0; f < nf; f++)
        for (int ml = 1; ml <= maxloc; ml++)
          for (int nl = 1; nl <= maxloc; nl++)
            for (int t = 1; t <= maxtile; t++)
              for (int go = 0; go < 2; go++)
                for (int bo = 0; bo < 2; bo++)
                  for (int tr = 0; tr < 2; tr++) {
                    refcase c = {fp[f] * ml, fq[f] * nl, t, p, q, go, fp[f], fq[f], bo, tr};
                    run_case(&c);
                    cases++;
                  }
    }
  for (int a = 1; a <= 3; a++)
    for (int b = 1; b <= 3; b++)
      for (int kind = 0; kind < 3; kind++) check_from_jax(a * b * 2, a * b * 3, kind, a, b);
  check_invalid();
  check_large();
  printf("test_layout2d: %ld layout cases\n", cases);
  return CHECK_DONE("test_layout2d");
}
