/* mp_exchange.c - the cross-rank move of mp_exchange.h. */
#include "engines/mp/mp_exchange.h"

#include <stdio.h>
#include <stdlib.h>

#include "engines/mp/mp_comm.h"

typedef struct mover {
  const jmg_plan2d* p;
  int me, R;
  size_t esz;
  const char* src;
  int64_t sld;
  char* dst;
  int64_t dld;
  const jmg_mp_xfer* x;
} mover;

static const char* at(const char* base, int64_t r, int64_t c, int64_t ld, size_t esz) {
  return base + ((size_t)r + (size_t)c * (size_t)ld) * esz;
}

/* The destination shape of a patch: the source's, or its transpose. */
static int64_t dest_rows(const mover* m, const jmg_patch* b) {
  return m->p->transpose ? b->cols : b->rows;
}

static int copy_local(const mover* m, char* err) {
  for (int64_t k = 0; k < jmg_plan2d_count(m->p); k++) {
    jmg_patch b = jmg_plan2d_patch(m->p, k);
    if (b.src != m->me || b.dst != m->me) continue;
    int rc = m->x->copy(m->x->ctx, (char*)at(m->dst, b.dst_row, b.dst_col, m->dld, m->esz),
                        m->dld, at(m->src, b.src_row, b.src_col, m->sld, m->esz), m->sld, b.rows,
                        b.cols, m->p->transpose, err);
    if (rc) return rc;
  }
  return JMG_MP_OK;
}

/* Packs what me sends to `to` into sbuf, or (unpack) spreads what `from`
 * sent from rbuf, in plan order. */
static int pack(const mover* m, int peer, char* buf, int unpack, char* err) {
  size_t off = 0;
  for (int64_t k = 0; k < jmg_plan2d_count(m->p); k++) {
    jmg_patch b = jmg_plan2d_patch(m->p, k);
    int64_t dr = dest_rows(m, &b), dc = b.rows * b.cols / dr;
    int rc;
    if (!unpack && b.src == m->me && b.dst == peer)
      rc = m->x->copy(m->x->ctx, buf + off, dr, at(m->src, b.src_row, b.src_col, m->sld, m->esz),
                      m->sld, b.rows, b.cols, m->p->transpose, err);
    else if (unpack && b.src == peer && b.dst == m->me)
      rc = m->x->copy(m->x->ctx, (char*)at(m->dst, b.dst_row, b.dst_col, m->dld, m->esz), m->dld,
                      buf + off, dr, dr, dc, 0, err);
    else
      continue;
    if (rc) return rc;
    off += (size_t)(b.rows * b.cols) * m->esz;
  }
  return JMG_MP_OK;
}

int jmg_mp_exchange_run(const jmg_plan2d* p, int me, int nranks, size_t esz, const void* src,
                        int64_t src_ld, void* dst, int64_t dst_ld, const jmg_mp_xfer* x,
                        char* err) {
  mover m = {p, me, nranks, esz, src, src_ld, dst, dst_ld, x};
  int64_t* vol = calloc(2 * (size_t)nranks, sizeof *vol); /* to each peer, from each peer */
  if (vol == NULL) return JMG_MP_ENOMEM;
  for (int64_t k = 0; k < jmg_plan2d_count(p); k++) {
    jmg_patch b = jmg_plan2d_patch(p, k);
    if (b.src == me && b.dst != me) vol[b.dst] += b.rows * b.cols;
    if (b.dst == me && b.src != me) vol[nranks + b.src] += b.rows * b.cols;
  }
  int64_t smax = 0, rmax = 0;
  for (int r = 0; r < nranks; r++) {
    if (vol[r] > smax) smax = vol[r];
    if (vol[nranks + r] > rmax) rmax = vol[nranks + r];
  }
  char *sbuf = NULL, *rbuf = NULL;
  int rc = copy_local(&m, err);
  if (!rc && smax > 0 && !(sbuf = x->alloc(x->ctx, (size_t)smax * esz))) rc = JMG_MP_ENOMEM;
  if (!rc && rmax > 0 && !(rbuf = x->alloc(x->ctx, (size_t)rmax * esz))) rc = JMG_MP_ENOMEM;
  if (rc == JMG_MP_ENOMEM) snprintf(err, JMG_MP_ERRLEN, "cannot allocate the move's staging");
  for (int d = 1; d < nranks && !rc; d++) {
    int to = (me + d) % nranks, from = (me - d + nranks) % nranks;
    size_t sb = (size_t)vol[to] * esz, rb = (size_t)vol[nranks + from] * esz;
    if (sb == 0 && rb == 0) continue;
    rc = pack(&m, to, sbuf, 0, err);
    if (!rc) rc = x->exchange(x->ctx, sbuf, sb, to, rbuf, rb, from, err);
    if (!rc) rc = pack(&m, from, rbuf, 1, err);
  }
  if (sbuf) x->release(x->ctx, sbuf);
  if (rbuf) x->release(x->ctx, rbuf);
  free(vol);
  return rc;
}
