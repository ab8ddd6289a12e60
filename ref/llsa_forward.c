/* LLSA forward, reference (spec §1-§3): per (batch, head), pool and select,
 * then each query attends to its key list with z = scale·q·key + ln w. */
#include "llsa_internal.h"

#include <math.h>

/* Buffers of one call, reused for every (batch, head). */
typedef struct fwd_scratch {
  dt_llsa_head head;
  dt_llsa_key *keys;
  double *kmat, *vmat; /* max_keys × D */
  double *z;           /* max_keys */
} fwd_scratch;

static void scratch_free(fwd_scratch *s) {
  dt_llsa_head_free(&s->head);
  dt_free(s->keys);
  dt_free(s->kmat);
  dt_free(s->vmat);
  dt_free(s->z);
}

static ditattn_status scratch_alloc(ditattn_context *ctx, const dt_llsa_geom *g, fwd_scratch *s) {
  s->keys = dt_llsa_alloc(g->max_keys, 1, sizeof(dt_llsa_key));
  s->kmat = dt_llsa_alloc(g->max_keys, g->D, sizeof(double));
  s->vmat = dt_llsa_alloc(g->max_keys, g->D, sizeof(double));
  s->z = dt_llsa_alloc(g->max_keys, 1, sizeof(double));
  if (!s->keys || !s->kmat || !s->vmat || !s->z) {
    scratch_free(s);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "llsa_forward: out of memory for %lld keys of dimension %lld",
                   (long long)g->max_keys, (long long)g->D);
  }
  ditattn_status st = dt_llsa_head_alloc(ctx, g, &s->head);
  if (st != DITATTN_OK) scratch_free(s);
  return st;
}

/* One query: o = Σ softmax(z)·value over the gathered keys; returns LSE.
 * z is scratch (left holding the probabilities). */
static double attend_query(const float *q, const double *kmat, const double *vmat, int64_t nk,
                           const dt_llsa_key *keys, int64_t D, double scale, double *z,
                           float *out) {
  double zmax = -INFINITY;
  for (int64_t j = 0; j < nk; j++) {
    double s = 0.0;
    for (int64_t d = 0; d < D; d++) s += (double)q[d] * kmat[j * D + d];
    z[j] = scale * s + keys[j].log_w;
    if (z[j] > zmax) zmax = z[j];
  }
  double sum = 0.0;
  for (int64_t j = 0; j < nk; j++) sum += exp(z[j] - zmax);
  const double lse = zmax + log(sum);
  for (int64_t j = 0; j < nk; j++) z[j] = exp(z[j] - lse);
  for (int64_t d = 0; d < D; d++) {
    double acc = 0.0;
    for (int64_t j = 0; j < nk; j++) acc += z[j] * vmat[j * D + d];
    out[d] = (float)acc;
  }
  return lse;
}

ditattn_status dt_ref_llsa_forward(ditattn_context *ctx, const dt_llsa_fwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1];
  dt_llsa_geom g;
  dt_llsa_geom_init(&p->params, p->q->shape[2], p->q->shape[3], &g);
  /* out holds query rows [row0, row_end); pooling and selection still see
   * all N tokens, so each row is what the full call computes. */
  const int64_t M = p->out->shape[2], row0 = p->q_row0, row_end = row0 + M;
  if (M == 0) return DITATTN_OK;
  const int64_t g1_first = row0 / g.span[1], g1_end = (row_end - 1) / g.span[1] + 1;
  fwd_scratch s = {0};
  ditattn_status st = scratch_alloc(ctx, &g, &s);
  if (st != DITATTN_OK) return st;
  const double scale = (double)p->params.scale;

  for (int64_t bi = 0; bi < B; bi++) {
    for (int64_t hi = 0; hi < H; hi++) {
      dt_llsa_head_prepare(&g, &s.head, p->q, p->k, p->v, bi, hi);
      const int64_t *const *sel = (const int64_t *const *)s.head.sel;
      if (p->selection) dt_llsa_write_selection(&g, sel, p->selection, bi * H + hi);
      for (int64_t g1 = g1_first; g1 < g1_end; g1++) {
        const int64_t nk = dt_llsa_keys(&g, sel, g1, s.keys, s.head.cand);
        dt_llsa_gather(&g, &s.head, p->k, p->v, bi, hi, s.keys, nk, s.kmat, s.vmat);
        const int64_t start = dt_llsa_block_start(&g, 1, g1);
        const int64_t count = dt_llsa_block_count(&g, 1, g1);
        const int64_t first = start > row0 ? start : row0;
        const int64_t end = start + count < row_end ? start + count : row_end;
        for (int64_t i = first; i < end; i++) {
          const double lse = attend_query(dt_f32_at(p->q, bi, hi, i, 0), s.kmat, s.vmat, nk, s.keys,
                                          g.D, scale, s.z, dt_f32_at(p->out, bi, hi, i - row0, 0));
          if (p->lse) p->lse[(bi * H + hi) * M + (i - row0)] = (float)lse;
        }
      }
    }
  }
  scratch_free(&s);
  return DITATTN_OK;
}
