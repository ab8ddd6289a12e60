/* Per-(batch, head) LLSA state: pooled q, k, v of every level and the
 * selection, computed once and shared by the forward and backward. */
#include "llsa_internal.h"

#include <string.h>

ditattn_status dt_llsa_head_alloc(ditattn_context *ctx, const dt_llsa_geom *g, dt_llsa_head *h) {
  memset(h, 0, sizeof *h);
  int ok = 1;
  for (int l = 1; l <= g->L && ok; l++) {
    h->pq[l] = dt_llsa_alloc(g->n[l], g->D, sizeof(double));
    h->pk[l] = dt_llsa_alloc(g->n[l], g->D, sizeof(double));
    h->pv[l] = dt_llsa_alloc(g->n[l], g->D, sizeof(double));
    h->sel[l] = dt_llsa_alloc(g->n[l], g->width[l], sizeof(int64_t));
    ok = h->pq[l] && h->pk[l] && h->pv[l] && h->sel[l];
  }
  if (ok) {
    h->cand = dt_llsa_alloc(g->max_cand, 1, sizeof(int64_t));
    h->scored = dt_llsa_alloc(g->max_cand, 1, sizeof(dt_llsa_scored));
    ok = h->cand && h->scored;
  }
  if (!ok) {
    dt_llsa_head_free(h);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "llsa: out of memory for pooled q/k/v and "
                   "selection (N = %lld, D = %lld)",
                   (long long)g->N, (long long)g->D);
  }
  return DITATTN_OK;
}

void dt_llsa_head_free(dt_llsa_head *h) {
  for (int l = 0; l < DT_LLSA_LEVEL_SLOTS; l++) {
    dt_free(h->pq[l]);
    dt_free(h->pk[l]);
    dt_free(h->pv[l]);
    dt_free(h->sel[l]);
  }
  dt_free(h->cand);
  dt_free(h->scored);
  memset(h, 0, sizeof *h);
}

void dt_llsa_head_prepare(const dt_llsa_geom *g, dt_llsa_head *h, const ditattn_tensor *q,
                          const ditattn_tensor *k, const ditattn_tensor *v, int64_t bi,
                          int64_t hi) {
  for (int l = 1; l <= g->L; l++) {
    dt_llsa_pool_mean(g, q, bi, hi, l, h->pq[l]);
    dt_llsa_pool_mean(g, k, bi, hi, l, h->pk[l]);
    dt_llsa_pool_mean(g, v, bi, hi, l, h->pv[l]);
  }
  dt_llsa_select(g, (const double *const *)h->pq, (const double *const *)h->pk, h->sel, h->cand,
                 h->scored);
}
