/* layout2d.h - the 2-D block-cyclic layout of cuSOLVERMp and the move of
 * JAX's shards into it and back.
 *
 * All matrices here are column-major. A JAX array is row-major, so a JAX
 * shard read as column-major is a block of M = A^T; the helpers at the end
 * turn a JAX sharding into the block layout of M (for symmetric or
 * Hermitian A, M is A or conj(A); for general A the plan can transpose).
 *
 * Two layouts of one m x n matrix over the same R ranks (R = P*Q):
 *
 *   block   JAX's shards: a bp x bq grid of equal blocks, bp*bq == R; the
 *           rank at block coordinates (br, bc) holds rows [br*mb, (br+1)*mb)
 *           and columns [bc*nb, (bc+1)*nb), mb = m/bp, nb = n/bq, packed
 *           from local (0, 0).
 *   cyclic  ScaLAPACK / cuSOLVERMp's 2-D block-cyclic layout with square
 *           tiles T x T, first tile at process (0, 0) (RSRC = CSRC = 0): row
 *           i lives on process row (i/T) mod P at local row
 *           (i/(T*P))*T + i mod T, and the same for columns over Q. The
 *           rank at grid coordinates (pr, pc) holds LOCr(pr) x LOCc(pc).
 *
 * How a rank maps to coordinates is a jmg_grid2d: ROW_MAJOR, rank = r*q + c,
 * or COL_MAJOR, rank = c*p + r, with the values of cusolverMpGridMapping_t.
 *
 * The move is an explicit plan of rectangular copies ("patches"), out of
 * place: a patch is contiguous in both layouts (it never crosses a block or
 * a tile boundary) and as large as that allows. Rows and columns are
 * independent, so the plan is stored as its row runs and column runs
 * (O(m/T + n/T) memory); patch (i, k) is row run i times column run k. The
 * plan needs no scratch itself; an engine that moves patches between ranks
 * packs them (see csrc/engines/mp/mp_move.c for how much it takes).
 *
 * All sizes and offsets are int64_t.
 */
#ifndef JAXMG_LAYOUT2D_H
#define JAXMG_LAYOUT2D_H

#include <stdint.h>

/* The values of cusolverMpGridMapping_t. */
enum { JMG_GRID_COL_MAJOR = 0, JMG_GRID_ROW_MAJOR = 1 };

typedef struct jmg_grid2d {
  int p, q;  /* rows x columns of the grid */
  int order; /* JMG_GRID_ROW_MAJOR or JMG_GRID_COL_MAJOR */
} jmg_grid2d;

enum {
  JMG_L2D_OK = 0,
  JMG_L2D_EINVAL = 1, /* inconsistent layout */
  JMG_L2D_ENOMEM = 2,
  JMG_L2D_ECOPY = 3 /* the copy callback failed */
};

/* Rank <-> grid coordinates; -1 (or *r = *c = -1) when out of range. */
int jmg_grid2d_rank(const jmg_grid2d* g, int r, int c);
void jmg_grid2d_coords(const jmg_grid2d* g, int rank, int* r, int* c);

/* One dimension of the block-cyclic layout (source process 0): how many of
 * n indices process `iproc` of `nprocs` holds (ScaLAPACK's NUMROC), which
 * process holds index i, where locally, and the global index of local li. */
int64_t jmg_bc_count(int64_t n, int64_t nb, int iproc, int nprocs);
int jmg_bc_owner(int64_t i, int64_t nb, int nprocs);
int64_t jmg_bc_local(int64_t i, int64_t nb, int nprocs);
int64_t jmg_bc_global(int64_t li, int64_t nb, int iproc, int nprocs);

typedef struct jmg_layout2d {
  int64_t m, n;      /* global rows and columns */
  int64_t tile;      /* T: square tile of the cyclic layout */
  jmg_grid2d grid;   /* the cyclic layout's P x Q process grid */
  jmg_grid2d blocks; /* the block layout's bp x bq grid */
} jmg_layout2d;

/* Checks a layout: all positive, bp*bq == p*q, m % bp == 0, n % bq == 0,
 * orders valid, and every local size fits an int64 product. */
int jmg_layout2d_check(const jmg_layout2d* l);

/* A place in a layout: rank and local (row, column). */
typedef struct jmg_where2d {
  int rank;
  int64_t row, col;
} jmg_where2d;

/* Where global (i, j) lives; rank -1 when out of range. */
jmg_where2d jmg_layout2d_block_at(const jmg_layout2d* l, int64_t i, int64_t j);
jmg_where2d jmg_layout2d_cyclic_at(const jmg_layout2d* l, int64_t i, int64_t j);
/* The global (i, j) at a rank's local cyclic (row, col); 0, or -1 if that
 * place is outside the rank's local matrix. */
int jmg_layout2d_cyclic_global(const jmg_layout2d* l, jmg_where2d w, int64_t* i,
                               int64_t* j);
/* Local sizes: the block layout's mb x nb (equal on every rank) and the
 * cyclic layout's LOCr x LOCc of `rank`. */
int64_t jmg_layout2d_block_rows(const jmg_layout2d* l);
int64_t jmg_layout2d_block_cols(const jmg_layout2d* l);
int64_t jmg_layout2d_cyclic_rows(const jmg_layout2d* l, int rank);
int64_t jmg_layout2d_cyclic_cols(const jmg_layout2d* l, int rank);

/* A run of consecutive global indices along one dimension that stays in one
 * block and one tile-owner and is contiguous locally in both layouts. */
typedef struct jmg_run {
  int64_t g0, len; /* global start, length */
  int64_t bloc;    /* local start in the block layout */
  int64_t cloc;    /* local start in the cyclic layout */
  int blk;         /* block coordinate (br or bc) */
  int proc;        /* process coordinate (pr or pc) in the cyclic grid */
} jmg_run;

/* A copy of a rows x cols rectangle between two layouts, in the source's
 * orientation; with transpose the destination gets its cols x rows
 * transpose. */
typedef struct jmg_patch {
  int src, dst;
  int64_t src_row, src_col, dst_row, dst_col, rows, cols;
} jmg_patch;

typedef struct jmg_plan2d {
  jmg_layout2d l;
  int transpose;   /* the cyclic matrix is M^T (n x m) instead of M */
  int to_cyclic;   /* direction of the patches */
  int64_t nrow_runs, ncol_runs;
  jmg_run* row_runs; /* over M's rows */
  jmg_run* col_runs; /* over M's columns */
} jmg_plan2d;

/* The cyclic layout the plan moves to or from: l itself, or (transpose) the
 * n x m layout of M^T on the same process grid. */
jmg_layout2d jmg_plan2d_cyclic_layout(const jmg_plan2d* p);

/* Builds the plan from the block layout of M to the cyclic layout of M (or
 * of M^T with transpose != 0), to_cyclic != 0, or back. Returns JMG_L2D_*. */
int jmg_plan2d_build(const jmg_layout2d* l, int transpose, int to_cyclic,
                     jmg_plan2d* out);
void jmg_plan2d_free(jmg_plan2d* p);

static inline int64_t jmg_plan2d_count(const jmg_plan2d* p) {
  return p->nrow_runs * p->ncol_runs;
}
/* Patch k, 0 <= k < count; patches are ordered by column run, then row run. */
jmg_patch jmg_plan2d_patch(const jmg_plan2d* p, int64_t k);

/* Copies a rows x cols rectangle (transposed when the flag says so). */
typedef int (*jmg_copy2d_fn)(void* ctx, const jmg_patch* patch, int transpose);

/* Calls copy on every patch (rank == -1), or on those whose source or
 * destination is `rank` (the engine's own part). */
int jmg_plan2d_run(const jmg_plan2d* p, int rank, jmg_copy2d_fn copy, void* ctx);

/* Elements that move from rank `src` to rank `dst` under the plan. */
int64_t jmg_plan2d_volume(const jmg_plan2d* p, int src, int dst);

/* JAX's shardings of a row-major R x C array A, as the block layout of the
 * column-major M = A^T (C x R) over ranks numbered row-major in the mesh
 * (rank = i*b + j for mesh coordinate (i, j) on an a x b mesh):
 *   JMG_SHARD_ROWS  P(x, None) over a ranks: M is split in column blocks;
 *   JMG_SHARD_COLS  P(None, x) over b ranks: M is split in row blocks;
 *   JMG_SHARD_2D    P(x, y) on an a x b mesh: rank (i, j) holds M's block
 *                   (j, i), i.e. a b x a block grid in column-major order. */
enum { JMG_SHARD_ROWS = 0, JMG_SHARD_COLS = 1, JMG_SHARD_2D = 2 };
int jmg_layout2d_from_jax(int64_t rows, int64_t cols, int kind, int a, int b,
                          int64_t tile, jmg_grid2d grid, jmg_layout2d* out);

#endif
