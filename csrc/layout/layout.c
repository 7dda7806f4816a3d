/* layout.c - 1-D column block-cyclic layout and in-place redistribution.
 *
 * The plan is built without any table indexed by slot: a slot's occupant in
 * either layout is found by inverting the layout arithmetically, so the only
 * working memory is one "done" byte per unit and the plan itself, both
 * O(n/unit), and every unit is looked at a constant number of times.
 */
#include "layout/layout.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Far beyond any real machine; it keeps dev fitting an int with room to
 * spare and makes per-device loops cheap. */
#define JMG_MAX_DEV 65536

static const jmg_slot no_slot = {-1, -1};

static int64_t gcd64(int64_t a, int64_t b) {
  while (b != 0) {
    int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

static int64_t ntiles(const jmg_layout* l) { return (l->n - 1) / l->tile + 1; }

/* ------------------------------------------------------------------------ */
/* Layout arithmetic. These assume a layout that passed jmg_layout_check. */

int64_t jmg_layout_cyclic_count(const jmg_layout* l, int dev) {
  if (dev < 0 || dev >= l->ndev) return 0;
  int64_t nt = ntiles(l);
  if (dev >= nt) return 0;
  int64_t mine = (nt - 1 - dev) / l->ndev + 1;
  /* Written so that no product reaches n + tile, which may overflow when
   * tile is absurdly large. */
  if ((nt - 1) % l->ndev == dev)
    return (mine - 1) * l->tile + (l->n - (nt - 1) * l->tile);
  return mine * l->tile;
}

int64_t jmg_layout_unit(const jmg_layout* l) {
  if (l->tile < 1 || l->nloc < 1 || l->n < 1) return 0;
  return gcd64(gcd64(l->tile, l->nloc), l->n);
}

jmg_slot jmg_layout_contig_slot(const jmg_layout* l, int64_t j) {
  if (j < 0 || j >= l->n) return no_slot;
  jmg_slot s = {(int)(j / l->nloc), j % l->nloc};
  return s;
}

jmg_slot jmg_layout_cyclic_slot(const jmg_layout* l, int64_t j) {
  if (j < 0 || j >= l->n) return no_slot;
  int64_t k = j / l->tile;
  jmg_slot s = {(int)(k % l->ndev), (k / l->ndev) * l->tile + j % l->tile};
  return s;
}

/* The global column held at local column `off` of `dev`, or -1 if that
 * place is empty in the layout. */
static int64_t contig_col_at(const jmg_layout* l, int dev, int64_t off) {
  if (off >= l->nloc) return -1;
  int64_t j = (int64_t)dev * l->nloc + off;
  return j < l->n ? j : -1;
}

static int64_t cyclic_col_at(const jmg_layout* l, int dev, int64_t off) {
  int64_t k = (off / l->tile) * l->ndev + dev;
  /* The plan only asks about slots of the contiguous layout here (off <
   * nloc), so k stays below n/tile + ndev and nothing overflows; k*tile is
   * formed only once k is known to name a real tile. */
  if (k >= ntiles(l)) return -1;
  int64_t j = k * l->tile + off % l->tile;
  return j < l->n ? j : -1;
}

int jmg_layout_check(const jmg_layout* l) {
  if (l == NULL) return JMG_LAYOUT_EINVAL;
  if (l->ndev < 1 || l->ndev > JMG_MAX_DEV) return JMG_LAYOUT_EINVAL;
  if (l->n < 1 || l->nloc < 1 || l->tile < 1) return JMG_LAYOUT_EINVAL;
  if (l->nloc > INT64_MAX / l->ndev) return JMG_LAYOUT_EINVAL;
  if (l->n > (int64_t)l->ndev * l->nloc) return JMG_LAYOUT_EINVAL;
  if (l->cap < l->nloc) return JMG_LAYOUT_EINVAL;
  for (int d = 0; d < l->ndev; d++)
    if (l->cap < jmg_layout_cyclic_count(l, d)) return JMG_LAYOUT_EINVAL;
  return JMG_LAYOUT_OK;
}

/* ------------------------------------------------------------------------ */
/* Plan building.
 *
 * The move is a map from source slots to target slots, one entry per unit.
 * Following it from a unit whose source slot is empty in the target walks a
 * whole path (it must end in a slot empty in the source, since the map is
 * injective); what is left once all paths are walked, fixed points aside, is
 * a union of cycles. Both walks visit each unit once. */

typedef struct builder {
  const jmg_layout* l;
  int to_cyclic;
  int64_t unit;
  int64_t nunits;
  uint8_t* done; /* per unit: already placed in a chain or fixed */
  jmg_plan* p;
} builder;

static jmg_slot src_slot(const builder* b, int64_t u) {
  int64_t j = u * b->unit;
  return b->to_cyclic ? jmg_layout_contig_slot(b->l, j)
                      : jmg_layout_cyclic_slot(b->l, j);
}

static jmg_slot dst_slot(const builder* b, int64_t u) {
  int64_t j = u * b->unit;
  return b->to_cyclic ? jmg_layout_cyclic_slot(b->l, j)
                      : jmg_layout_contig_slot(b->l, j);
}

/* The unit a slot holds before the move, or -1. A unit starts at a multiple
 * of `unit` in both layouts, so dividing the column is exact. */
static int64_t src_unit_at(const builder* b, jmg_slot s) {
  int64_t j = b->to_cyclic ? contig_col_at(b->l, s.dev, s.off)
                           : cyclic_col_at(b->l, s.dev, s.off);
  return j < 0 ? -1 : j / b->unit;
}

/* The unit a slot holds after the move, or -1. */
static int64_t dst_unit_at(const builder* b, jmg_slot s) {
  int64_t j = b->to_cyclic ? cyclic_col_at(b->l, s.dev, s.off)
                           : contig_col_at(b->l, s.dev, s.off);
  return j < 0 ? -1 : j / b->unit;
}

static int same_slot(jmg_slot a, jmg_slot b) {
  return a.dev == b.dev && a.off == b.off;
}

static void push_slot(builder* b, jmg_slot s) { b->p->slots[b->p->nsteps++] = s; }

static void close_chain(builder* b, int is_cycle) {
  jmg_plan* p = b->p;
  p->is_cycle[p->nchains] = (uint8_t)is_cycle;
  p->nchains++;
  p->start[p->nchains] = p->nsteps;
}

/* Walks the path whose first mover is unit u (its slot is empty in the
 * target). Stops at the first slot nobody occupies in the source. */
static void walk_path(builder* b, int64_t u) {
  push_slot(b, src_slot(b, u));
  while (u >= 0) {
    jmg_slot next = dst_slot(b, u);
    b->done[u] = 1;
    push_slot(b, next);
    u = src_unit_at(b, next);
  }
  close_chain(b, 0);
}

/* Walks the cycle through unit u; the slot that closes it is not repeated. */
static void walk_cycle(builder* b, int64_t u) {
  while (!b->done[u]) {
    b->done[u] = 1;
    push_slot(b, src_slot(b, u));
    u = src_unit_at(b, dst_slot(b, u));
  }
  close_chain(b, 1);
}

/* Counts the units that move and the paths, so that every array is sized
 * exactly once: moved units fill all slots but path ends, and a cycle has at
 * least two units, which bounds the number of chains. */
static void count_moves(const builder* b, int64_t* nmoved, int64_t* npaths) {
  *nmoved = *npaths = 0;
  for (int64_t u = 0; u < b->nunits; u++) {
    jmg_slot s = src_slot(b, u);
    if (same_slot(s, dst_slot(b, u))) continue;
    (*nmoved)++;
    if (dst_unit_at(b, s) < 0) (*npaths)++;
  }
}

static void* alloc_array(int64_t count, size_t size) {
  if (count < 1) count = 1; /* malloc(0) may return NULL on success */
  if ((uint64_t)count > SIZE_MAX / size) return NULL;
  return malloc((size_t)count * size);
}

static int alloc_plan(jmg_plan* p, int64_t nsteps, int64_t maxchains) {
  p->slots = alloc_array(nsteps, sizeof *p->slots);
  p->start = alloc_array(maxchains + 1, sizeof *p->start);
  p->is_cycle = alloc_array(maxchains, sizeof *p->is_cycle);
  if (!p->slots || !p->start || !p->is_cycle) return JMG_LAYOUT_ENOMEM;
  return JMG_LAYOUT_OK;
}

int jmg_plan_build(const jmg_layout* l, int to_cyclic, jmg_plan* out) {
  if (out == NULL) return JMG_LAYOUT_EINVAL;
  memset(out, 0, sizeof *out);
  int rc = jmg_layout_check(l);
  if (rc != JMG_LAYOUT_OK) return rc;

  builder b = {l, to_cyclic != 0, jmg_layout_unit(l), 0, NULL, out};
  b.nunits = l->n / b.unit;
  out->unit = b.unit;

  /* Allocated before any O(n/unit) work so that an absurd n fails fast. */
  b.done = alloc_array(b.nunits, 1);
  if (b.done == NULL) return JMG_LAYOUT_ENOMEM;
  memset(b.done, 0, (size_t)b.nunits);

  int64_t nmoved, npaths;
  count_moves(&b, &nmoved, &npaths);
  rc = alloc_plan(out, nmoved + npaths, npaths + nmoved / 2);
  if (rc != JMG_LAYOUT_OK) {
    free(b.done);
    jmg_plan_free(out);
    return rc;
  }
  out->start[0] = 0;

  /* Paths first: a cycle walk must not wander into a path's units. */
  for (int64_t u = 0; u < b.nunits; u++) {
    jmg_slot s = src_slot(&b, u);
    if (same_slot(s, dst_slot(&b, u)))
      b.done[u] = 1;
    else if (dst_unit_at(&b, s) < 0)
      walk_path(&b, u);
  }
  for (int64_t u = 0; u < b.nunits; u++)
    if (!b.done[u]) walk_cycle(&b, u);

  free(b.done);
  return JMG_LAYOUT_OK;
}

void jmg_plan_free(jmg_plan* p) {
  if (p == NULL) return;
  free(p->start);
  free(p->is_cycle);
  free(p->slots);
  memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------------------ */
/* Running a plan. */

static int move(jmg_copy_fn copy, void* ctx, jmg_slot to, jmg_slot from,
                int64_t unit) {
  return copy(ctx, to.dev, to.off, from.dev, from.off, unit) ? JMG_LAYOUT_ECOPY
                                                             : JMG_LAYOUT_OK;
}

/* Backwards, so each slot is emptied (copied onward) before it is filled. */
static int run_backwards(const jmg_slot* s, int64_t len, jmg_copy_fn copy,
                         void* ctx, int64_t unit) {
  for (int64_t i = len - 1; i > 0; i--) {
    int rc = move(copy, ctx, s[i], s[i - 1], unit);
    if (rc != JMG_LAYOUT_OK) return rc;
  }
  return JMG_LAYOUT_OK;
}

/* A cycle has no empty slot to start from, so its last unit is parked in
 * the staging buffer, which turns the rest into a path. */
static int run_cycle(const jmg_slot* s, int64_t len, jmg_copy_fn copy,
                     void* ctx, int64_t unit) {
  const jmg_slot stage = {JMG_STAGE_DEV, 0};
  int rc = move(copy, ctx, stage, s[len - 1], unit);
  if (rc == JMG_LAYOUT_OK) rc = run_backwards(s, len, copy, ctx, unit);
  if (rc == JMG_LAYOUT_OK) rc = move(copy, ctx, s[0], stage, unit);
  return rc;
}

int jmg_plan_run_chain(const jmg_plan* p, int64_t c, jmg_copy_fn copy, void* ctx) {
  if (p == NULL || copy == NULL || c < 0 || c >= p->nchains) return JMG_LAYOUT_EINVAL;
  const jmg_slot* s = p->slots + p->start[c];
  int64_t len = p->start[c + 1] - p->start[c];
  return p->is_cycle[c] ? run_cycle(s, len, copy, ctx, p->unit)
                        : run_backwards(s, len, copy, ctx, p->unit);
}

int jmg_plan_run(const jmg_plan* p, jmg_copy_fn copy, void* ctx) {
  if (p == NULL || copy == NULL) return JMG_LAYOUT_EINVAL;
  for (int64_t c = 0; c < p->nchains; c++) {
    int rc = jmg_plan_run_chain(p, c, copy, ctx);
    if (rc != JMG_LAYOUT_OK) return rc;
  }
  return JMG_LAYOUT_OK;
}
