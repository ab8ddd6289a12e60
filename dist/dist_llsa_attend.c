/* Online-softmax key folding for distributed LLSA. */
#include "dist_llsa_attend.h"

#include <math.h>

/* Readable scalar version of dt_cpu_attend_tile: scores and sums in double,
 * the running state in float (shared layout with the CPU kernel). */
static void ref_attend(int64_t rows, int64_t n, int64_t D, const float *q, const float *k,
                       int64_t k_ld, const float *v, int64_t v_ld, const float *lnw,
                       const dt_cpu_softmax_state *st) {
  double z[DT_CPU_KEY_CHUNK];
  for (int64_t r = 0; r < rows; r++) {
    const float *qr = q + r * D;
    double zmax = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
      double s = 0.0;
      for (int64_t d = 0; d < D; d++) s += (double)qr[d] * (double)k[j * k_ld + d];
      z[j] = s + (lnw ? (double)lnw[j] : 0.0);
      if (z[j] > zmax) zmax = z[j];
    }
    const double old_max = st->row_max[r];
    /* The state keeps the max in float: shift by exactly that value. */
    const double new_max = (double)(float)(zmax > old_max ? zmax : old_max);
    const double keep = old_max == -INFINITY ? 0.0 : exp(old_max - new_max);
    double sum = (double)st->row_sum[r] * keep;
    for (int64_t j = 0; j < n; j++) sum += (z[j] = exp(z[j] - new_max));
    float *acc = st->acc + r * D;
    for (int64_t d = 0; d < D; d++) {
      double a = (double)acc[d] * keep;
      for (int64_t j = 0; j < n; j++) a += z[j] * (double)v[j * v_ld + d];
      acc[d] = (float)a;
    }
    st->row_max[r] = (float)new_max;
    st->row_sum[r] = (float)sum;
  }
}

void dt_dist_attend(int use_cpu, int64_t rows, int64_t n, int64_t D, const float *q, const float *k,
                    int64_t k_ld, const float *v, int64_t v_ld, const float *lnw, float *scratch,
                    const dt_cpu_softmax_state *st) {
  for (int64_t j0 = 0; j0 < n; j0 += DT_CPU_KEY_CHUNK) {
    const int64_t nj = n - j0 < DT_CPU_KEY_CHUNK ? n - j0 : DT_CPU_KEY_CHUNK;
    const float *lw = lnw ? lnw + j0 : NULL;
    if (use_cpu)
      dt_cpu_attend_tile(rows, nj, D, q, k + j0 * k_ld, k_ld, v + j0 * v_ld, v_ld, lw, scratch, st);
    else
      ref_attend(rows, nj, D, q, k + j0 * k_ld, k_ld, v + j0 * v_ld, v_ld, lw, st);
  }
}
