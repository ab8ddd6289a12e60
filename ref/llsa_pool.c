/* LLSA pooling (spec §1): exact means over each level's blocks, partial last
 * block included, accumulated in double from the original tokens. */
#include "llsa_internal.h"

void dt_llsa_pool_mean(const dt_llsa_geom *g, const ditattn_tensor *x, int64_t bi, int64_t hi,
                       int l, double *y) {
  for (int64_t c = 0; c < g->n[l]; c++) {
    const int64_t start = dt_llsa_block_start(g, l, c);
    const int64_t count = dt_llsa_block_count(g, l, c);
    double *yc = y + c * g->D;
    for (int64_t d = 0; d < g->D; d++) yc[d] = 0.0;
    for (int64_t t = start; t < start + count; t++) {
      const float *xt = dt_f32_at(x, bi, hi, t, 0);
      for (int64_t d = 0; d < g->D; d++) yc[d] += (double)xt[d];
    }
    for (int64_t d = 0; d < g->D; d++) yc[d] /= (double)count;
  }
}
