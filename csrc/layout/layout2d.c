/* layout2d.c - 2-D block-cyclic index math and the patch plans between
 * JAX's block layout and cuSOLVERMp's block-cyclic one.
 *
 * Rows and columns are independent in both layouts, so everything is done
 * per dimension: a dimension is cut wherever a block or a tile ends, runs
 * that stay adjacent locally in both layouts are merged, and a patch is a
 * row run times a column run. */
#include "layout/layout2d.h"

#include <stdlib.h>
#include <string.h>

#define JMG_L2D_MAX_PROCS 65536

int jmg_grid2d_rank(const jmg_grid2d* g, int r, int c) {
  if (r < 0 || c < 0 || r >= g->p || c >= g->q) return -1;
  return g->order == JMG_GRID_ROW_MAJOR ? r * g->q + c : c * g->p + r;
}

void jmg_grid2d_coords(const jmg_grid2d* g, int rank, int* r, int* c) {
  if (rank < 0 || rank >= g->p * g->q) {
    *r = *c = -1;
  } else if (g->order == JMG_GRID_ROW_MAJOR) {
    *r = rank / g->q;
    *c = rank % g->q;
  } else {
    *r = rank % g->p;
    *c = rank / g->p;
  }
}

/* ------------------------------------------------------------------------ */
/* One dimension of the block-cyclic layout. */

int64_t jmg_bc_count(int64_t n, int64_t nb, int iproc, int nprocs) {
  if (n < 1 || nb < 1 || iproc < 0 || iproc >= nprocs) return 0;
  int64_t ntiles = (n - 1) / nb + 1;
  if (iproc >= ntiles) return 0;
  int64_t mine = (ntiles - 1 - iproc) / nprocs + 1;
  /* The last (possibly partial) tile is on process (ntiles-1) % nprocs. */
  if ((ntiles - 1) % nprocs == iproc) return (mine - 1) * nb + (n - (ntiles - 1) * nb);
  return mine * nb;
}

int jmg_bc_owner(int64_t i, int64_t nb, int nprocs) { return (int)((i / nb) % nprocs); }

int64_t jmg_bc_local(int64_t i, int64_t nb, int nprocs) {
  return (i / nb) / nprocs * nb + i % nb;
}

int64_t jmg_bc_global(int64_t li, int64_t nb, int iproc, int nprocs) {
  return ((li / nb) * nprocs + iproc) * nb + li % nb;
}

/* ------------------------------------------------------------------------ */
/* Layouts. */

static int grid_ok(const jmg_grid2d* g) {
  if (g->p < 1 || g->q < 1 || g->p > JMG_L2D_MAX_PROCS || g->q > JMG_L2D_MAX_PROCS) return 0;
  if ((int64_t)g->p * g->q > JMG_L2D_MAX_PROCS) return 0;
  return g->order == JMG_GRID_ROW_MAJOR || g->order == JMG_GRID_COL_MAJOR;
}

int jmg_layout2d_check(const jmg_layout2d* l) {
  if (l == NULL || !grid_ok(&l->grid) || !grid_ok(&l->blocks)) return JMG_L2D_EINVAL;
  if (l->m < 1 || l->n < 1 || l->tile < 1) return JMG_L2D_EINVAL;
  /* Far below INT64_MAX so that i + tile and global offsets never overflow. */
  if (l->m > (INT64_C(1) << 48) || l->n > (INT64_C(1) << 48)) return JMG_L2D_EINVAL;
  if (l->blocks.p * l->blocks.q != l->grid.p * l->grid.q) return JMG_L2D_EINVAL;
  if (l->m % l->blocks.p != 0 || l->n % l->blocks.q != 0) return JMG_L2D_EINVAL;
  /* Local products: a local matrix never holds more than m*n elements. */
  if (l->m > INT64_MAX / l->n) return JMG_L2D_EINVAL;
  return JMG_L2D_OK;
}

jmg_where2d jmg_layout2d_block_at(const jmg_layout2d* l, int64_t i, int64_t j) {
  jmg_where2d w = {-1, -1, -1};
  if (i < 0 || j < 0 || i >= l->m || j >= l->n) return w;
  int64_t mb = l->m / l->blocks.p, nb = l->n / l->blocks.q;
  w.rank = jmg_grid2d_rank(&l->blocks, (int)(i / mb), (int)(j / nb));
  w.row = i % mb;
  w.col = j % nb;
  return w;
}

jmg_where2d jmg_layout2d_cyclic_at(const jmg_layout2d* l, int64_t i, int64_t j) {
  jmg_where2d w = {-1, -1, -1};
  if (i < 0 || j < 0 || i >= l->m || j >= l->n) return w;
  w.rank = jmg_grid2d_rank(&l->grid, jmg_bc_owner(i, l->tile, l->grid.p),
                           jmg_bc_owner(j, l->tile, l->grid.q));
  w.row = jmg_bc_local(i, l->tile, l->grid.p);
  w.col = jmg_bc_local(j, l->tile, l->grid.q);
  return w;
}

int jmg_layout2d_cyclic_global(const jmg_layout2d* l, jmg_where2d w, int64_t* i,
                               int64_t* j) {
  int pr, pc;
  jmg_grid2d_coords(&l->grid, w.rank, &pr, &pc);
  if (pr < 0 || w.row < 0 || w.col < 0) return -1;
  if (w.row >= jmg_bc_count(l->m, l->tile, pr, l->grid.p)) return -1;
  if (w.col >= jmg_bc_count(l->n, l->tile, pc, l->grid.q)) return -1;
  *i = jmg_bc_global(w.row, l->tile, pr, l->grid.p);
  *j = jmg_bc_global(w.col, l->tile, pc, l->grid.q);
  return 0;
}

int64_t jmg_layout2d_block_rows(const jmg_layout2d* l) { return l->m / l->blocks.p; }
int64_t jmg_layout2d_block_cols(const jmg_layout2d* l) { return l->n / l->blocks.q; }

int64_t jmg_layout2d_cyclic_rows(const jmg_layout2d* l, int rank) {
  int pr, pc;
  jmg_grid2d_coords(&l->grid, rank, &pr, &pc);
  return pr < 0 ? 0 : jmg_bc_count(l->m, l->tile, pr, l->grid.p);
}

int64_t jmg_layout2d_cyclic_cols(const jmg_layout2d* l, int rank) {
  int pr, pc;
  jmg_grid2d_coords(&l->grid, rank, &pr, &pc);
  return pc < 0 ? 0 : jmg_bc_count(l->n, l->tile, pc, l->grid.q);
}

int jmg_layout2d_from_jax(int64_t rows, int64_t cols, int kind, int a, int b,
                          int64_t tile, jmg_grid2d grid, jmg_layout2d* out) {
  if (out == NULL) return JMG_L2D_EINVAL;
  memset(out, 0, sizeof *out);
  out->m = cols; /* M = A^T */
  out->n = rows;
  out->tile = tile;
  out->grid = grid;
  switch (kind) {
    case JMG_SHARD_ROWS: out->blocks = (jmg_grid2d){1, a, JMG_GRID_ROW_MAJOR}; break;
    case JMG_SHARD_COLS: out->blocks = (jmg_grid2d){b, 1, JMG_GRID_ROW_MAJOR}; break;
    case JMG_SHARD_2D: out->blocks = (jmg_grid2d){b, a, JMG_GRID_COL_MAJOR}; break;
    default: return JMG_L2D_EINVAL;
  }
  return jmg_layout2d_check(out);
}

/* ------------------------------------------------------------------------ */
/* Plans. */

jmg_layout2d jmg_plan2d_cyclic_layout(const jmg_plan2d* p) {
  jmg_layout2d c = p->l;
  if (p->transpose) {
    c.m = p->l.n;
    c.n = p->l.m;
  }
  return c;
}

/* Cuts [0, n) where a block (of nb) or a tile (of T, dealt over nprocs)
 * ends and merges neighbours that stay adjacent in both layouts. Returns
 * the number of runs written to `runs` (room for n/T + n/nb + 2). */
static int64_t cut_dimension(int64_t n, int64_t nb, int64_t tile, int nprocs,
                             jmg_run* runs) {
  int64_t nr = 0;
  for (int64_t g = 0; g < n;) {
    int64_t end = (g / nb + 1) * nb;
    int64_t tend = (g / tile + 1) * tile;
    if (tend < end) end = tend;
    if (n < end) end = n;
    jmg_run r = {g, end - g, g % nb, jmg_bc_local(g, tile, nprocs), (int)(g / nb),
                 jmg_bc_owner(g, tile, nprocs)};
    jmg_run* last = nr > 0 ? &runs[nr - 1] : NULL;
    if (last && last->blk == r.blk && last->proc == r.proc &&
        last->cloc + last->len == r.cloc)
      last->len += r.len;
    else
      runs[nr++] = r;
    g = end;
  }
  return nr;
}

static jmg_run* alloc_runs(int64_t n, int64_t nb, int64_t tile) {
  int64_t room = n / tile + n / nb + 2;
  if ((uint64_t)room > SIZE_MAX / sizeof(jmg_run)) return NULL;
  return malloc((size_t)room * sizeof(jmg_run));
}

int jmg_plan2d_build(const jmg_layout2d* l, int transpose, int to_cyclic,
                     jmg_plan2d* out) {
  if (out == NULL) return JMG_L2D_EINVAL;
  memset(out, 0, sizeof *out);
  int rc = jmg_layout2d_check(l);
  if (rc != JMG_L2D_OK) return rc;
  out->l = *l;
  out->transpose = transpose != 0;
  out->to_cyclic = to_cyclic != 0;
  /* With transpose, M's rows are M^T's columns: dealt over Q, not P. */
  int prow = out->transpose ? l->grid.q : l->grid.p;
  int pcol = out->transpose ? l->grid.p : l->grid.q;
  int64_t mb = jmg_layout2d_block_rows(l), nb = jmg_layout2d_block_cols(l);
  out->row_runs = alloc_runs(l->m, mb, l->tile);
  out->col_runs = alloc_runs(l->n, nb, l->tile);
  if (!out->row_runs || !out->col_runs) {
    jmg_plan2d_free(out);
    return JMG_L2D_ENOMEM;
  }
  out->nrow_runs = cut_dimension(l->m, mb, l->tile, prow, out->row_runs);
  out->ncol_runs = cut_dimension(l->n, nb, l->tile, pcol, out->col_runs);
  return JMG_L2D_OK;
}

void jmg_plan2d_free(jmg_plan2d* p) {
  if (p == NULL) return;
  free(p->row_runs);
  free(p->col_runs);
  memset(p, 0, sizeof *p);
}

static jmg_patch make_patch(const jmg_plan2d* p, const jmg_run* rr, const jmg_run* cr) {
  jmg_patch b;
  int blk = jmg_grid2d_rank(&p->l.blocks, rr->blk, cr->blk);
  int cyc = p->transpose ? jmg_grid2d_rank(&p->l.grid, cr->proc, rr->proc)
                         : jmg_grid2d_rank(&p->l.grid, rr->proc, cr->proc);
  int64_t cyc_row = p->transpose ? cr->cloc : rr->cloc;
  int64_t cyc_col = p->transpose ? rr->cloc : cr->cloc;
  if (p->to_cyclic) {
    b = (jmg_patch){blk, cyc, rr->bloc, cr->bloc, cyc_row, cyc_col, rr->len, cr->len};
  } else {
    /* The source is the cyclic matrix: its patch is cols x rows when it
     * holds M^T. */
    int64_t rows = p->transpose ? cr->len : rr->len;
    int64_t cols = p->transpose ? rr->len : cr->len;
    b = (jmg_patch){cyc, blk, cyc_row, cyc_col, rr->bloc, cr->bloc, rows, cols};
  }
  return b;
}

jmg_patch jmg_plan2d_patch(const jmg_plan2d* p, int64_t k) {
  return make_patch(p, &p->row_runs[k % p->nrow_runs], &p->col_runs[k / p->nrow_runs]);
}

int jmg_plan2d_run(const jmg_plan2d* p, int rank, jmg_copy2d_fn copy, void* ctx) {
  if (p == NULL || copy == NULL || p->row_runs == NULL) return JMG_L2D_EINVAL;
  for (int64_t k = 0; k < jmg_plan2d_count(p); k++) {
    jmg_patch b = jmg_plan2d_patch(p, k);
    if (rank >= 0 && b.src != rank && b.dst != rank) continue;
    if (copy(ctx, &b, p->transpose) != 0) return JMG_L2D_ECOPY;
  }
  return JMG_L2D_OK;
}

int64_t jmg_plan2d_volume(const jmg_plan2d* p, int src, int dst) {
  int64_t v = 0;
  for (int64_t k = 0; k < jmg_plan2d_count(p); k++) {
    jmg_patch b = jmg_plan2d_patch(p, k);
    if (b.src == src && b.dst == dst) v += b.rows * b.cols;
  }
  return v;
}
