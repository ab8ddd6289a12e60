/* RoPeSLR sparse branch (spec §2): exact softmax attention of each query over
 * all tokens of the key blocks selected for its block. */
#include "ropeslr_internal.h"

#include <math.h>

/* Token range [first, last) of block c. */
static void block_range(const dt_slr_shape *s, int64_t c, int64_t *first, int64_t *last) {
  *first = c * s->block;
  *last = *first + s->block < s->N ? *first + s->block : s->N;
}

void dt_slr_sparse(const dt_slr_shape *s, const int32_t *sel, double scale, const double *q,
                   const double *k, const double *v, double *os, double *lse) {
  const int64_t D = s->D, K = s->K;
  for (int64_t i = 0; i < s->N; i++) {
    const int32_t *row = sel + (i / s->block) * K;
    const double *qi = q + i * D;
    double *oi = os + i * D;
    /* Two passes: the max for a stable exp, then the weighted sum. */
    double zmax = -INFINITY;
    for (int64_t t = 0; t < K; t++) {
      int64_t first, last;
      block_range(s, row[t], &first, &last);
      for (int64_t j = first; j < last; j++) {
        double z = 0.0;
        for (int64_t d = 0; d < D; d++) z += qi[d] * k[j * D + d];
        z *= scale;
        if (z > zmax) zmax = z;
      }
    }
    double sum = 0.0;
    for (int64_t d = 0; d < D; d++) oi[d] = 0.0;
    for (int64_t t = 0; t < K; t++) {
      int64_t first, last;
      block_range(s, row[t], &first, &last);
      for (int64_t j = first; j < last; j++) {
        double z = 0.0;
        for (int64_t d = 0; d < D; d++) z += qi[d] * k[j * D + d];
        double e = exp(z * scale - zmax);
        sum += e;
        for (int64_t d = 0; d < D; d++) oi[d] += e * v[j * D + d];
      }
    }
    for (int64_t d = 0; d < D; d++) oi[d] /= sum;
    lse[i] = zmax + log(sum);
  }
}
