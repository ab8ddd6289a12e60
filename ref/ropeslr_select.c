/* RoPeSLR block selection (spec §2): pooled block means, scores without
 * scale, top-K by score desc / index asc, the own block optionally forced. */
#include "ropeslr_internal.h"

#include <string.h>

/* Exact mean of x over the tokens of block c (the last block may be partial). */
static void block_mean(const dt_slr_shape *s, const double *x, int64_t c, double *mean) {
  const int64_t first = c * s->block;
  const int64_t last = first + s->block < s->N ? first + s->block : s->N;
  for (int64_t d = 0; d < s->D; d++) mean[d] = 0.0;
  for (int64_t j = first; j < last; j++)
    for (int64_t d = 0; d < s->D; d++) mean[d] += x[j * s->D + d];
  for (int64_t d = 0; d < s->D; d++) mean[d] /= (double)(last - first);
}

int dt_slr_select_rounds(const double *score, int64_t n, int64_t K, int64_t G, unsigned char *taken,
                         int32_t *row) {
  int own_taken = 0;
  memset(taken, 0, (size_t)n);
  for (int64_t slot = 0; slot < K; slot++) {
    int64_t best = -1;
    for (int64_t c = 0; c < n; c++) {
      if (taken[c]) continue;
      if (best < 0 || dt_slr_ranks_before(score[c], c, score[best], best)) best = c;
    }
    row[slot] = (int32_t)best;
    taken[best] = 1;
    own_taken |= best == G;
  }
  return own_taken;
}

void dt_slr_select(const dt_slr_shape *s, const double *q, const double *k, int force_own,
                   double *scratch, int32_t *sel) {
  const int64_t n = s->n, D = s->D, K = s->K;
  double *pq = scratch, *pk = scratch + n * D, *score = scratch + 2 * n * D;
  unsigned char *taken = (unsigned char *)(score + n); /* n bytes in n doubles */
  for (int64_t c = 0; c < n; c++) {
    block_mean(s, q, c, pq + c * D);
    block_mean(s, k, c, pk + c * D);
  }
  for (int64_t g = 0; g < n; g++) {
    for (int64_t c = 0; c < n; c++) {
      double dot = 0.0;
      for (int64_t d = 0; d < D; d++) dot += pq[g * D + d] * pk[c * D + d];
      score[c] = dot;
    }
    int32_t *row = sel + g * K;
    const int own_taken = dt_slr_select_rounds(score, n, K, g, taken, row);
    if (force_own && !own_taken) row[K - 1] = (int32_t)g;
  }
}

int64_t dt_slr_mark_selected(const dt_slr_shape *s, const int32_t *sel, int64_t G,
                             unsigned char *in_sel) {
  memset(in_sel, 0, (size_t)s->n);
  int64_t count = 0;
  for (int64_t t = 0; t < s->K; t++) {
    int32_t c = sel[G * s->K + t];
    if (!in_sel[c]) count++;
    in_sel[c] = 1;
  }
  return count;
}
