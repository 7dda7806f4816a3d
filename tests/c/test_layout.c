/* test_layout.c - layout arithmetic and in-place redistribution plans.
 *
 * Every expectation comes from a reference written here without the
 * library's formulas: layouts are built by dealing columns out one by one,
 * and plans are judged against slot tables, not against their own walk.
 *
 * Under valgrind, set JMG_LAYOUT_UNTIMED=1 (or pass "untimed") to drop the
 * wall-clock bound on the large cases; JMG_LAYOUT_QUICK=1 (or "quick") also
 * shrinks the sweep.
 */
#include "layout/layout.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

typedef uint64_t elem;

#define POISON 0xDEADBEEFCAFEF00DULL
#define GUARD 0x6A6A6A6A6A6A6A6AULL
#define GUARD_COLS 2 /* columns past cap that no copy may touch */

/* ------------------------------------------------------------------------ */
/* Reference layouts, dealt column by column. */

typedef struct ref {
  int ndev;
  int64_t n, nloc, tile, unit, maxcyc;
  int *cdev, *ydev;     /* contiguous / cyclic device of column j */
  int64_t *coff, *yoff; /* contiguous / cyclic local column of column j */
  int64_t* count;       /* cyclic columns per device */
} ref;

static void ref_free(ref* r) {
  free(r->cdev);
  free(r->ydev);
  free(r->coff);
  free(r->yoff);
  free(r->count);
}

/* n <= ndev * nloc columns: the last devices may hold fewer (or none). */
static int ref_build(ref* r, int ndev, int64_t nloc, int64_t tile, int64_t n) {
  memset(r, 0, sizeof *r);
  r->ndev = ndev;
  r->nloc = nloc;
  r->tile = tile;
  r->n = n;
  r->cdev = malloc(r->n * sizeof *r->cdev);
  r->ydev = malloc(r->n * sizeof *r->ydev);
  r->coff = malloc(r->n * sizeof *r->coff);
  r->yoff = malloc(r->n * sizeof *r->yoff);
  r->count = calloc(ndev, sizeof *r->count);
  if (!r->cdev || !r->ydev || !r->coff || !r->yoff || !r->count) {
    ref_free(r);
    return 0;
  }
  int64_t j = 0;
  for (int d = 0; d < ndev; d++)
    for (int64_t c = 0; c < nloc && j < n; c++, j++) {
      r->cdev[j] = d;
      r->coff[j] = c;
    }
  int dev = 0;
  int64_t intile = 0;
  for (j = 0; j < r->n; j++) {
    r->ydev[j] = dev;
    r->yoff[j] = r->count[dev]++;
    if (++intile == tile) {
      intile = 0;
      dev = (dev + 1) % ndev;
    }
  }
  r->maxcyc = 0;
  for (int d = 0; d < ndev; d++)
    if (r->count[d] > r->maxcyc) r->maxcyc = r->count[d];
  for (r->unit = tile < nloc ? tile : nloc; r->unit > 1; r->unit--)
    if (tile % r->unit == 0 && nloc % r->unit == 0 && n % r->unit == 0) break;
  return 1;
}

static int64_t ref_mincap(const ref* r) {
  return r->maxcyc > r->nloc ? r->maxcyc : r->nloc;
}

static jmg_layout ref_layout(const ref* r, int64_t cap) {
  jmg_layout l = {r->n, r->nloc, r->tile, cap, r->ndev};
  return l;
}

/* ------------------------------------------------------------------------ */
/* Host "devices" and the copy callback. */

typedef struct devs {
  int ndev;
  int64_t cap, ld, unit;
  elem** buf;  /* ndev buffers of cap + GUARD_COLS columns */
  elem* stage; /* unit + GUARD_COLS columns */
  long ncopies;
  long fail_at; /* the copy number that fails, 0 for none */
  long bad;     /* copies with an out-of-range endpoint */
} devs;

static void devs_free(devs* v) {
  if (v->buf)
    for (int d = 0; d < v->ndev; d++) free(v->buf[d]);
  free(v->buf);
  free(v->stage);
}

static int devs_init(devs* v, int ndev, int64_t cap, int64_t ld, int64_t unit) {
  memset(v, 0, sizeof *v);
  v->ndev = ndev;
  v->cap = cap;
  v->ld = ld;
  v->unit = unit;
  v->buf = calloc(ndev, sizeof *v->buf);
  v->stage = malloc((unit + GUARD_COLS) * ld * sizeof *v->stage);
  if (!v->buf || !v->stage) return devs_free(v), 0;
  for (int d = 0; d < ndev; d++) {
    v->buf[d] = malloc((cap + GUARD_COLS) * ld * sizeof *v->buf[d]);
    if (!v->buf[d]) return devs_free(v), 0;
  }
  return 1;
}

static elem* col_ptr(devs* v, int dev, int64_t off) {
  return (dev == JMG_STAGE_DEV ? v->stage : v->buf[dev]) + off * v->ld;
}

static int endpoint_ok(const devs* v, int dev, int64_t off, int64_t ncols) {
  if (ncols != v->unit) return 0;
  if (dev == JMG_STAGE_DEV) return off == 0;
  return dev >= 0 && dev < v->ndev && off >= 0 && off % v->unit == 0 &&
         off + ncols <= v->cap;
}

static int copy_cb(void* ctx, int dst_dev, int64_t dst_off, int src_dev,
                   int64_t src_off, int64_t ncols) {
  devs* v = ctx;
  v->ncopies++;
  if (v->fail_at && v->ncopies == v->fail_at) return 1;
  if (!endpoint_ok(v, dst_dev, dst_off, ncols) ||
      !endpoint_ok(v, src_dev, src_off, ncols) ||
      (dst_dev == src_dev && dst_off == src_off)) {
    v->bad++;
    return 1;
  }
  memcpy(col_ptr(v, dst_dev, dst_off), col_ptr(v, src_dev, src_off),
         (size_t)(ncols * v->ld) * sizeof(elem));
  return 0;
}

static elem value(const devs* v, int64_t j, int64_t r) {
  return (elem)(j * v->ld + r + 1);
}

static void fill(devs* v, const ref* r, int cyclic) {
  for (int d = 0; d < v->ndev; d++) {
    elem* b = v->buf[d];
    for (int64_t i = 0; i < v->cap * v->ld; i++) b[i] = POISON;
    for (int64_t i = v->cap * v->ld; i < (v->cap + GUARD_COLS) * v->ld; i++)
      b[i] = GUARD;
  }
  for (int64_t i = 0; i < (v->unit + GUARD_COLS) * v->ld; i++)
    v->stage[i] = i < v->unit * v->ld ? POISON : GUARD;
  for (int64_t j = 0; j < r->n; j++) {
    elem* c = col_ptr(v, cyclic ? r->ydev[j] : r->cdev[j],
                      cyclic ? r->yoff[j] : r->coff[j]);
    for (int64_t k = 0; k < v->ld; k++) c[k] = value(v, j, k);
  }
}

/* A column no layout claims may hold poison or a leftover copy of some
 * column, but never a mix: that would mean a torn or misdirected copy. */
static int column_is_whole(const devs* v, const elem* c, int64_t n) {
  int all_poison = 1;
  for (int64_t k = 0; k < v->ld; k++) all_poison &= c[k] == POISON;
  if (all_poison) return 1;
  if (c[0] < 1 || (int64_t)(c[0] - 1) % v->ld != 0) return 0;
  int64_t j = (int64_t)(c[0] - 1) / v->ld;
  if (j >= n) return 0;
  for (int64_t k = 0; k < v->ld; k++)
    if (c[k] != value(v, j, k)) return 0;
  return 1;
}

/* Counts columns that are not where the reference puts them, stray columns
 * that are not whole, and damaged guards. */
static long verify(devs* v, const ref* r, int cyclic) {
  long bad = 0;
  for (int d = 0; d < v->ndev; d++) {
    for (int64_t off = 0; off < v->cap; off++)
      bad += !column_is_whole(v, col_ptr(v, d, off), r->n);
    for (int64_t i = v->cap * v->ld; i < (v->cap + GUARD_COLS) * v->ld; i++)
      bad += v->buf[d][i] != GUARD;
  }
  for (int64_t i = v->unit * v->ld; i < (v->unit + GUARD_COLS) * v->ld; i++)
    bad += v->stage[i] != GUARD;
  for (int64_t j = 0; j < r->n; j++) {
    const elem* c = col_ptr(v, cyclic ? r->ydev[j] : r->cdev[j],
                            cyclic ? r->yoff[j] : r->coff[j]);
    for (int64_t k = 0; k < v->ld; k++) bad += c[k] != value(v, j, k);
  }
  return bad;
}

/* ------------------------------------------------------------------------ */
/* Reference moves: units indexed by slot. */

typedef struct moves {
  int64_t per_dev;   /* unit slots per device */
  int64_t nunits;
  int64_t *src, *dst; /* per slot: unit held before / after, or -1 */
  int64_t* dst_slot;  /* per unit: slot index after */
  int64_t nmoved, ncycles;
} moves;

static void moves_free(moves* m) {
  free(m->src);
  free(m->dst);
  free(m->dst_slot);
}

static int64_t slot_index(const moves* m, int64_t unit, int dev, int64_t off) {
  return dev * m->per_dev + off / unit;
}

/* ncycles is counted by brute force (quadratic), so only for small plans. */
static int moves_build(moves* m, const ref* r, int64_t cap, int to_cyclic) {
  memset(m, 0, sizeof *m);
  int64_t u = r->unit, nslots;
  m->per_dev = cap / u + 1;
  m->nunits = r->n / u;
  nslots = r->ndev * m->per_dev;
  m->src = malloc(nslots * sizeof *m->src);
  m->dst = malloc(nslots * sizeof *m->dst);
  m->dst_slot = malloc(m->nunits * sizeof *m->dst_slot);
  if (!m->src || !m->dst || !m->dst_slot) return moves_free(m), 0;
  for (int64_t s = 0; s < nslots; s++) m->src[s] = m->dst[s] = -1;
  for (int64_t g = 0; g < m->nunits; g++) {
    int64_t j = g * u;
    int64_t cs = slot_index(m, u, r->cdev[j], r->coff[j]);
    int64_t ys = slot_index(m, u, r->ydev[j], r->yoff[j]);
    m->src[to_cyclic ? cs : ys] = g;
    m->dst[to_cyclic ? ys : cs] = g;
    m->dst_slot[g] = to_cyclic ? ys : cs;
    m->nmoved += cs != ys;
  }
  m->ncycles = -1;
  if (m->nunits > 4096) return 1;
  m->ncycles = 0;
  for (int64_t g = 0; g < m->nunits; g++) {
    int64_t cur = g, lowest = g;
    do {
      cur = m->src[m->dst_slot[cur]];
      if (cur >= 0 && cur < lowest) lowest = cur;
    } while (cur >= 0 && cur != g);
    m->ncycles += cur == g && lowest == g && m->src[m->dst_slot[g]] != g;
  }
  return 1;
}

/* Checks the plan's shape and that every step moves a unit to where the
 * reference wants it; returns the number of cycles in the plan. */
static int64_t check_plan(const jmg_plan* p, const ref* r, const moves* m,
                          int64_t cap, const char* what) {
  CHECK(p->unit == r->unit, "%s: unit %lld want %lld", what,
        (long long)p->unit, (long long)r->unit);
  CHECK(p->start[0] == 0 && p->start[p->nchains] == p->nsteps,
        "%s: chain offsets", what);
  char* seen = calloc(m->nunits, 1);
  int64_t* idx = malloc((p->nsteps ? p->nsteps : 1) * sizeof *idx);
  if (!seen || !idx) {
    CHECK(0, "%s: out of memory in test", what);
    free(seen);
    free(idx);
    return 0;
  }
  int64_t ncycles = 0, nmoves = 0, broken = 0, fixed_listed = 0;
  for (int64_t c = 0; c < p->nchains; c++) {
    const jmg_slot* s = p->slots + p->start[c];
    int64_t len = p->start[c + 1] - p->start[c];
    int cyc = p->is_cycle[c];
    ncycles += cyc;
    if (len < 2) {
      broken++;
      continue;
    }
    for (int64_t i = 0; i < len; i++) {
      if (s[i].dev < 0 || s[i].dev >= r->ndev || s[i].off < 0 ||
          s[i].off % p->unit != 0 || s[i].off + p->unit > cap) {
        broken++;
        idx[i] = -1;
        continue;
      }
      idx[i] = slot_index(m, p->unit, s[i].dev, s[i].off);
      fixed_listed += m->src[idx[i]] >= 0 && m->src[idx[i]] == m->dst[idx[i]];
    }
    int64_t nstep = cyc ? len : len - 1;
    for (int64_t i = 0; i < nstep; i++) {
      int64_t a = idx[i], b = idx[(i + 1) % len];
      if (a < 0 || b < 0) continue;
      int64_t g = m->src[a];
      if (g < 0 || m->dst[b] != g || seen[g]) {
        broken++;
        continue;
      }
      seen[g] = 1;
      nmoves++;
    }
    if (!cyc && idx[0] >= 0 && idx[len - 1] >= 0)
      broken += m->dst[idx[0]] != -1 || m->src[idx[len - 1]] != -1;
  }
  free(seen);
  free(idx);
  CHECK(broken == 0, "%s: %lld broken steps", what, (long long)broken);
  CHECK(fixed_listed == 0, "%s: %lld fixed points listed", what,
        (long long)fixed_listed);
  CHECK(nmoves == m->nmoved, "%s: %lld moves want %lld", what,
        (long long)nmoves, (long long)m->nmoved);
  if (m->ncycles >= 0)
    CHECK(ncycles == m->ncycles, "%s: %lld cycles want %lld", what,
          (long long)ncycles, (long long)m->ncycles);
  return ncycles;
}

/* ------------------------------------------------------------------------ */
/* The sweep. */

static long n_layouts, n_plans, n_copies;

static void check_slots(const ref* r, const jmg_layout* l, const char* what) {
  long bad = 0;
  for (int64_t j = 0; j < r->n; j++) {
    jmg_slot c = jmg_layout_contig_slot(l, j), y = jmg_layout_cyclic_slot(l, j);
    bad += c.dev != r->cdev[j] || c.off != r->coff[j];
    bad += y.dev != r->ydev[j] || y.off != r->yoff[j];
  }
  CHECK(bad == 0, "%s: %ld slot mismatches", what, bad);
  bad = 0;
  for (int d = 0; d < r->ndev; d++)
    bad += jmg_layout_cyclic_count(l, d) != r->count[d];
  CHECK(bad == 0, "%s: cyclic counts", what);
  CHECK(jmg_layout_unit(l) == r->unit, "%s: unit", what);
}

/* Builds and runs one direction on buffers already holding the source
 * layout; leaves the target layout in them. */
static void run_direction(devs* v, const ref* r, const jmg_layout* l,
                          int to_cyclic, const char* what) {
  jmg_plan p;
  moves m;
  int rc = jmg_plan_build(l, to_cyclic, &p);
  CHECK(rc == JMG_LAYOUT_OK, "%s: build rc %d", what, rc);
  if (rc != JMG_LAYOUT_OK) return;
  if (!moves_build(&m, r, l->cap, to_cyclic)) {
    CHECK(0, "%s: out of memory in test", what);
    jmg_plan_free(&p);
    return;
  }
  int64_t ncycles = check_plan(&p, r, &m, l->cap, what);
  v->ncopies = v->bad = 0;
  rc = jmg_plan_run(&p, copy_cb, v);
  CHECK(rc == JMG_LAYOUT_OK && v->bad == 0, "%s: run rc %d, %ld bad copies",
        what, rc, v->bad);
  CHECK(v->ncopies == m.nmoved + ncycles, "%s: %ld copies want %lld", what,
        v->ncopies, (long long)(m.nmoved + ncycles));
  long bad = verify(v, r, to_cyclic);
  CHECK(bad == 0, "%s: %ld misplaced after run", what, bad);
  n_plans++;
  n_copies += v->ncopies;
  moves_free(&m);
  jmg_plan_free(&p);
}

static void test_case(int ndev, int64_t nloc, int64_t tile, int64_t extra, int64_t n) {
  char what[112];
  ref r;
  devs v;
  if (!ref_build(&r, ndev, nloc, tile, n)) {
    CHECK(0, "out of memory in test");
    return;
  }
  int64_t cap = ref_mincap(&r) + extra;
  jmg_layout l = ref_layout(&r, cap);
  snprintf(what, sizeof what, "ndev=%d nloc=%lld tile=%lld cap=%lld n=%lld", ndev,
           (long long)nloc, (long long)tile, (long long)cap, (long long)n);
  CHECK(jmg_layout_check(&l) == JMG_LAYOUT_OK, "%s: check", what);
  check_slots(&r, &l, what);
  if (extra == 0) {
    jmg_layout small = ref_layout(&r, cap - 1);
    CHECK(jmg_layout_check(&small) == JMG_LAYOUT_EINVAL, "%s: cap-1", what);
  }
  if (!devs_init(&v, ndev, cap, 3, r.unit)) {
    CHECK(0, "out of memory in test");
    ref_free(&r);
    return;
  }
  fill(&v, &r, 0);
  run_direction(&v, &r, &l, 1, what);
  run_direction(&v, &r, &l, 0, what); /* round trip: back to contiguous */
  fill(&v, &r, 1);
  run_direction(&v, &r, &l, 0, what);
  n_layouts++;
  devs_free(&v);
  ref_free(&r);
}

static void test_sweep(int quick) {
  int maxdev = quick ? 4 : 6;
  int64_t maxloc = quick ? 8 : 12;
  for (int ndev = 1; ndev <= maxdev; ndev++)
    for (int64_t nloc = 1; nloc <= maxloc; nloc++)
      for (int64_t tile = 1; tile <= nloc * ndev + 2; tile++) {
        test_case(ndev, nloc, tile, 0, ndev * nloc);
        test_case(ndev, nloc, tile, 3, ndev * nloc);
        /* A shorter than the shards (jaxmg's even sharding of an n that
         * the device count does not divide: ceil(n / ndev) rows a shard). */
        for (int64_t n = ndev * (nloc - 1) + 1; n < ndev * nloc; n++) test_case(ndev, nloc, tile, 0, n);
      }
}

/* ------------------------------------------------------------------------ */
/* Validation, failure and scale. */

static void test_reject(void) {
  const jmg_layout good = {8, 4, 3, 5, 2}; /* device 0 holds 5 cyclic cols */
  jmg_layout l;
  jmg_plan p;
  CHECK(jmg_layout_check(&good) == JMG_LAYOUT_OK, "good layout");
  const jmg_layout short_n = {7, 4, 3, 5, 2}; /* the last device holds 3 of its 4 */
  CHECK(jmg_layout_check(&short_n) == JMG_LAYOUT_OK, "n below ndev * nloc");
  CHECK(jmg_layout_check(NULL) == JMG_LAYOUT_EINVAL, "NULL layout");
#define REJECT(field, val)                                               \
  do {                                                                   \
    l = good;                                                            \
    l.field = (val);                                                     \
    CHECK(jmg_layout_check(&l) == JMG_LAYOUT_EINVAL, "%s = %lld", #field, \
          (long long)(val));                                             \
    CHECK(jmg_plan_build(&l, 1, &p) == JMG_LAYOUT_EINVAL && !p.slots,    \
          "build %s = %lld", #field, (long long)(val));                  \
  } while (0)
  REJECT(ndev, 0);
  REJECT(ndev, -3);
  REJECT(ndev, 65537);
  REJECT(n, 0);
  REJECT(n, -8);
  REJECT(n, 9);     /* more than ndev * nloc */
  REJECT(nloc, 0);
  REJECT(nloc, -4);
  REJECT(nloc, 3);   /* n > ndev * nloc */
  REJECT(tile, 0);
  REJECT(tile, -3);
  REJECT(cap, 3);   /* below nloc */
  REJECT(cap, 4);   /* nloc fits, cyclic device 0 does not */
  REJECT(cap, -1);
#undef REJECT
  /* ndev*nloc overflows int64 and must not wrap to a "matching" n. */
  jmg_layout big = {4, (INT64_C(1) << 62) + 1, 1, INT64_MAX, 4};
  CHECK(jmg_layout_check(&big) == JMG_LAYOUT_EINVAL, "ndev*nloc overflow");
  /* 65536 devices is still allowed. */
  jmg_layout many = {65536, 1, 1, 1, 65536};
  CHECK(jmg_layout_check(&many) == JMG_LAYOUT_OK, "65536 devices");
  CHECK(jmg_plan_build(&good, 1, NULL) == JMG_LAYOUT_EINVAL, "NULL plan");
  CHECK(jmg_plan_run(NULL, copy_cb, NULL) == JMG_LAYOUT_EINVAL, "NULL run");
}

/* An n no host can index: must fail cleanly, not loop or crash. */
static void test_enomem(void) {
  jmg_layout l = {INT64_C(1) << 62, INT64_C(1) << 62, 1, INT64_C(1) << 62, 1};
  jmg_plan p;
  CHECK(jmg_layout_check(&l) == JMG_LAYOUT_OK, "huge layout is consistent");
  int rc = jmg_plan_build(&l, 1, &p);
  CHECK(rc == JMG_LAYOUT_ENOMEM, "huge plan rc %d", rc);
  CHECK(!p.slots && !p.start && !p.is_cycle && p.nchains == 0,
        "failed plan is empty");
  jmg_plan_free(&p);
}

/* A failing copy stops the run at once, at every position in the plan. */
static void test_copy_failure(void) {
  ref r;
  devs v;
  jmg_plan p;
  if (!ref_build(&r, 3, 4, 2, 12)) return;
  jmg_layout l = ref_layout(&r, ref_mincap(&r));
  int ok = jmg_plan_build(&l, 1, &p) == JMG_LAYOUT_OK &&
           devs_init(&v, 3, l.cap, 3, r.unit);
  CHECK(ok, "copy failure setup");
  if (!ok) {
    ref_free(&r);
    return;
  }
  int64_t ncycles = 0;
  for (int64_t c = 0; c < p.nchains; c++) ncycles += p.is_cycle[c];
  CHECK(ncycles > 0, "copy failure case should contain a cycle");
  fill(&v, &r, 0);
  CHECK(jmg_plan_run(&p, copy_cb, &v) == JMG_LAYOUT_OK, "clean run");
  long total = v.ncopies;
  for (long k = 1; k <= total; k++) {
    fill(&v, &r, 0);
    v.ncopies = 0;
    v.fail_at = k;
    int rc = jmg_plan_run(&p, copy_cb, &v);
    CHECK(rc == JMG_LAYOUT_ECOPY && v.ncopies == k,
          "fail at %ld: rc %d after %ld copies", k, rc, v.ncopies);
  }
  jmg_plan_free(&p);
  devs_free(&v);
  ref_free(&r);
}

static void test_large(int ndev, int64_t nloc, int64_t tile, int timed) {
  char what[96];
  ref r;
  devs v;
  if (!ref_build(&r, ndev, nloc, tile, (int64_t)ndev * nloc)) {
    CHECK(0, "out of memory in test");
    return;
  }
  int64_t cap = ref_mincap(&r);
  jmg_layout l = ref_layout(&r, cap);
  snprintf(what, sizeof what, "large ndev=%d nloc=%lld tile=%lld unit=%lld",
           ndev, (long long)nloc, (long long)tile, (long long)r.unit);
  if (!devs_init(&v, ndev, cap, 1, r.unit)) {
    CHECK(0, "out of memory in test");
    ref_free(&r);
    return;
  }
  check_slots(&r, &l, what);
  fill(&v, &r, 0);

  clock_t t0 = clock();
  jmg_plan to, back;
  int rc = jmg_plan_build(&l, 1, &to);
  int rc2 = jmg_plan_build(&l, 0, &back);
  CHECK(rc == JMG_LAYOUT_OK && rc2 == JMG_LAYOUT_OK, "%s: build", what);
  if (rc == JMG_LAYOUT_OK) rc = jmg_plan_run(&to, copy_cb, &v);
  long bad_to = verify(&v, &r, 1);
  if (rc2 == JMG_LAYOUT_OK) rc2 = jmg_plan_run(&back, copy_cb, &v);
  double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;

  CHECK(rc == JMG_LAYOUT_OK && rc2 == JMG_LAYOUT_OK && v.bad == 0,
        "%s: run", what);
  CHECK(bad_to == 0, "%s: %ld misplaced in cyclic layout", what, bad_to);
  long bad = verify(&v, &r, 0);
  CHECK(bad == 0, "%s: %ld misplaced after round trip", what, bad);
  printf("%s: %lld + %lld steps, %ld copies, %.3f s\n", what,
         (long long)to.nsteps, (long long)back.nsteps, v.ncopies, secs);
  if (timed) CHECK(secs < 1.0, "%s: took %.3f s", what, secs);

  moves m;
  if (moves_build(&m, &r, cap, 1)) {
    check_plan(&to, &r, &m, cap, what);
    moves_free(&m);
  }
  jmg_plan_free(&to);
  jmg_plan_free(&back);
  devs_free(&v);
  ref_free(&r);
}

static int option(int argc, char** argv, const char* env, const char* arg) {
  const char* e = getenv(env);
  if (e && *e && strcmp(e, "0") != 0) return 1;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], arg) == 0) return 1;
  return 0;
}

int main(int argc, char** argv) {
  int quick = option(argc, argv, "JMG_LAYOUT_QUICK", "quick");
  int timed = !quick && !option(argc, argv, "JMG_LAYOUT_UNTIMED", "untimed");
  test_reject();
  test_enomem();
  test_copy_failure();
  test_sweep(quick);
  printf("sweep%s: %ld layouts, %ld plans run, %ld unit copies\n",
         quick ? " (quick)" : "", n_layouts, n_plans, n_copies);
  test_large(4, INT64_C(1) << 18, 1024, timed);
  test_large(4, INT64_C(1) << 18, 1023, timed); /* unit 1: 2^20 units */
  return CHECK_DONE("test_layout");
}
