/* layout.h - 1-D column block-cyclic layout and in-place redistribution.
 *
 * A matrix of n columns (each column `ld` elements long, column-major) is
 * spread over `ndev` devices in one of two layouts:
 *
 *   contiguous  the JAX row-sharded layout read as column-major: device d
 *               holds global columns [d*nloc, min((d+1)*nloc, n)), packed
 *               from local column 0. n <= ndev * nloc: where n is shorter,
 *               the last devices hold fewer columns (or none), and the
 *               rest of their buffers is padding outside the matrix.
 *   cyclic      cuSolverMg's 1-D block-cyclic layout: global tile k (columns
 *               [k*tile, min((k+1)*tile, n))) lives on device k % ndev as that
 *               device's local tile k / ndev, packed (local columns
 *               [(k/ndev)*tile, ...)). The last tile may be partial.
 *
 * Every device buffer holds `cap` columns, cap >= nloc and cap >= the number
 * of columns any device holds in the cyclic layout, so both layouts fit in
 * the same buffers and the move between them is done in place.
 *
 * Columns move in units of `unit` = gcd(tile, nloc, n) columns: every tile
 * and shard boundary, and the matrix's end, is a multiple of it, so a unit is contiguous in both layouts
 * and the move is a permutation of units. It decomposes into chains:
 *   - a path  s0 -> s1 -> ... -> sL: the unit at s(i) goes to s(i+1); sL is a
 *     slot empty in the source layout, s0 one empty in the target layout.
 *     Run backwards (s(L-1)->sL first), it needs no staging.
 *   - a cycle s0 -> s1 -> ... -> s(L-1) -> s0: needs one staging unit.
 * Units already in place (fixed points) are not listed at all.
 *
 * All sizes and offsets are int64_t: n*ld exceeds 2^32 at n = 65536.
 */
#ifndef JAXMG_LAYOUT_H
#define JAXMG_LAYOUT_H

#include <stdint.h>

typedef struct jmg_layout {
  int64_t n;     /* global columns */
  int64_t nloc;  /* columns per device in the contiguous layout */
  int64_t tile;  /* T_A: columns per tile in the cyclic layout */
  int64_t cap;   /* columns each device buffer can hold */
  int ndev;      /* devices */
} jmg_layout;

/* A place for `unit` columns: device and local column offset. */
typedef struct jmg_slot {
  int dev;
  int64_t off;
} jmg_slot;

/* The staging unit a cycle is parked in, as a copy endpoint. */
#define JMG_STAGE_DEV (-1)

enum {
  JMG_LAYOUT_OK = 0,
  JMG_LAYOUT_EINVAL = 1, /* inconsistent layout (n > ndev*nloc, cap too small, ...) */
  JMG_LAYOUT_ENOMEM = 2,
  JMG_LAYOUT_ECOPY = 3   /* the copy callback failed */
};

/* Checks a layout: 0 < n <= ndev*nloc, all positive, cap large enough. */
int jmg_layout_check(const jmg_layout* l);

/* Where global column j lives in each layout. */
jmg_slot jmg_layout_contig_slot(const jmg_layout* l, int64_t j);
jmg_slot jmg_layout_cyclic_slot(const jmg_layout* l, int64_t j);

/* Columns device `dev` holds in the cyclic layout. */
int64_t jmg_layout_cyclic_count(const jmg_layout* l, int dev);

/* gcd(tile, nloc, n): the unit of every move. */
int64_t jmg_layout_unit(const jmg_layout* l);

/* The moves from one layout to the other, as chains of unit slots. */
typedef struct jmg_plan {
  int64_t unit;        /* columns per unit */
  int64_t nchains;
  int64_t nsteps;      /* total slots over all chains */
  int64_t* start;      /* nchains + 1 offsets into slots */
  uint8_t* is_cycle;   /* nchains flags */
  jmg_slot* slots;     /* chain c is slots[start[c] .. start[c+1]) */
} jmg_plan;

/* Builds the plan that moves a matrix from the contiguous layout to the
 * cyclic one (to_cyclic != 0) or back. Returns JMG_LAYOUT_*. */
int jmg_plan_build(const jmg_layout* l, int to_cyclic, jmg_plan* out);
void jmg_plan_free(jmg_plan* p);

/* Copies `ncols` columns from (src_dev, src_off) to (dst_dev, dst_off).
 * A device of JMG_STAGE_DEV means the staging buffer (offset 0). Returns 0
 * on success. */
typedef int (*jmg_copy_fn)(void* ctx, int dst_dev, int64_t dst_off, int src_dev,
                           int64_t src_off, int64_t ncols);

/* Runs a plan serially through `copy`: each path backwards; each cycle as
 * last -> stage, then backwards, then stage -> first. */
int jmg_plan_run(const jmg_plan* p, jmg_copy_fn copy, void* ctx);

/* Runs chain c alone. Chains touch disjoint slots, so an engine may run
 * different chains at the same time (one stream each, one staging unit per
 * stream); the copies within a chain must stay in order. */
int jmg_plan_run_chain(const jmg_plan* p, int64_t c, jmg_copy_fn copy, void* ctx);

#endif
