/* LLSA key lists (spec §3): which keys, values and weights a query attends to. */
#include "llsa_internal.h"

#include <math.h>

int64_t dt_llsa_keys(const dt_llsa_geom *g, const int64_t *const *sel, int64_t g1,
                     dt_llsa_key *keys, int64_t *cand) {
  int64_t nk = 0;
  /* 1. fine tokens of the selected level-1 blocks, weight 1. */
  const int64_t *row = sel[1] + g1 * g->width[1];
  for (int64_t r = 0; r < g->width[1] && row[r] >= 0; r++) {
    const int64_t start = dt_llsa_block_start(g, 1, row[r]);
    const int64_t count = dt_llsa_block_count(g, 1, row[r]);
    for (int64_t j = start; j < start + count; j++) {
      keys[nk].level = 0;
      keys[nk].index = j;
      keys[nk].log_w = 0.0;
      nk++;
    }
  }
  /* 2.-3. pooled candidates of every level (all blocks at level L), each
   * weighted by the number of tokens it summarizes. */
  int64_t gl = g1; /* the query's level-l block */
  for (int l = 1; l <= g->L; l++) {
    const int64_t nc = dt_llsa_candidates(g, sel, l, gl, cand);
    for (int64_t i = 0; i < nc; i++) {
      keys[nk].level = l;
      keys[nk].index = cand[i];
      keys[nk].log_w = log((double)dt_llsa_block_count(g, l, cand[i]));
      nk++;
    }
    gl /= g->b;
  }
  return nk;
}

void dt_llsa_gather(const dt_llsa_geom *g, const dt_llsa_head *h, const ditattn_tensor *k,
                    const ditattn_tensor *v, int64_t bi, int64_t hi, const dt_llsa_key *keys,
                    int64_t nk, double *kmat, double *vmat) {
  const int64_t D = g->D;
  for (int64_t i = 0; i < nk; i++) {
    double *ki = kmat + i * D, *vi = vmat + i * D;
    if (keys[i].level == 0) {
      const float *kj = dt_f32_at(k, bi, hi, keys[i].index, 0);
      const float *vj = dt_f32_at(v, bi, hi, keys[i].index, 0);
      for (int64_t d = 0; d < D; d++) {
        ki[d] = (double)kj[d];
        vi[d] = (double)vj[d];
      }
    } else {
      const double *kc = h->pk[keys[i].level] + keys[i].index * D;
      const double *vc = h->pv[keys[i].level] + keys[i].index * D;
      for (int64_t d = 0; d < D; d++) {
        ki[d] = kc[d];
        vi[d] = vc[d];
      }
    }
  }
}
