/* LLSA hierarchical top-K selection (spec §2): dense at the coarsest level,
 * among the children of the parent's selection at finer levels. */
#include "llsa_internal.h"

#include <math.h>
#include <stdlib.h>

int dt_llsa_rank_before(const dt_llsa_scored *a, const dt_llsa_scored *b) {
  const int a_nan = isnan(a->score), b_nan = isnan(b->score);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a->score != b->score) return a->score > b->score;
  return a->index < b->index;
}

static int compare_rank(const void *pa, const void *pb) {
  const dt_llsa_scored *a = pa, *b = pb;
  if (dt_llsa_rank_before(a, b)) return -1;
  if (dt_llsa_rank_before(b, a)) return 1;
  return 0;
}

int64_t dt_llsa_topk(dt_llsa_scored *items, int64_t n, int64_t K) {
  /* The order is total (indices differ), so qsort's instability is harmless. */
  if (n > 1) qsort(items, (size_t)n, sizeof *items, compare_rank);
  return K < n ? K : n;
}

int64_t dt_llsa_candidates(const dt_llsa_geom *g, const int64_t *const *sel, int l, int64_t gq,
                           int64_t *cand) {
  int64_t count = 0;
  if (l == g->L) {
    for (int64_t c = 0; c < g->n[l]; c++) cand[count++] = c;
    return count;
  }
  const int64_t *parent_row = sel[l + 1] + (gq / g->b) * g->width[l + 1];
  for (int64_t r = 0; r < g->width[l + 1] && parent_row[r] >= 0; r++) {
    /* parent_row[r]·b <= n_l − 1 because the parent block exists. */
    for (int64_t t = 0; t < g->b; t++) {
      const int64_t child = parent_row[r] * g->b + t;
      if (child >= g->n[l]) break;
      cand[count++] = child;
    }
  }
  return count;
}

static double dot(const double *a, const double *b, int64_t D) {
  double s = 0.0;
  for (int64_t d = 0; d < D; d++) s += a[d] * b[d];
  return s;
}

void dt_llsa_select(const dt_llsa_geom *g, const double *const *pq, const double *const *pk,
                    int64_t *const *sel, int64_t *cand, dt_llsa_scored *scored) {
  /* Coarse to fine: each level needs its parent's selection. */
  for (int l = g->L; l >= 1; l--) {
    for (int64_t gq = 0; gq < g->n[l]; gq++) {
      const int64_t nc = dt_llsa_candidates(g, (const int64_t *const *)sel, l, gq, cand);
      for (int64_t i = 0; i < nc; i++) {
        scored[i].index = cand[i];
        scored[i].score = dot(pq[l] + gq * g->D, pk[l] + cand[i] * g->D, g->D);
      }
      const int64_t chosen = dt_llsa_topk(scored, nc, g->topk[l]);
      int64_t *row = sel[l] + gq * g->width[l];
      for (int64_t r = 0; r < g->width[l]; r++) row[r] = r < chosen ? scored[r].index : -1;
    }
  }
}

void dt_llsa_write_selection(const dt_llsa_geom *g, const int64_t *const *sel,
                             const ditattn_llsa_selection *out, int64_t bh) {
  for (int l = 1; l <= g->L; l++) {
    int32_t *dst = out->sel[l - 1];
    if (!dst) continue;
    for (int64_t gq = 0; gq < g->n[l]; gq++) {
      int32_t *row = dst + (bh * g->n[l] + gq) * g->topk[l];
      const int64_t *src = sel[l] + gq * g->width[l];
      for (int64_t r = 0; r < g->topk[l]; r++) row[r] = r < g->width[l] ? (int32_t)src[r] : -1;
    }
  }
}
