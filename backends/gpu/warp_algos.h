/* Warp-width-generic pieces of the GPU kernels, written once for the device
 * (included by the .cu files) and for the host (tests/test_warp_generic.c
 * emulates warps of 32 and 64 lanes with the same functions).
 *
 * Lane exchange is always the xor butterfly
 *     for (off = width / 2; off > 0; off /= 2) v = combine(v, shfl_xor(v, off));
 * which leaves combine(all lanes) in every lane for any power-of-two width,
 * provided combine is associative and commutative. Everything below is such a
 * combine, or a per-lane scan whose results are then butterflied. */
#ifndef DITATTN_GPU_WARP_ALGOS_H
#define DITATTN_GPU_WARP_ALGOS_H

#include <math.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define DT_WA_FN __host__ __device__ inline
#else
#define DT_WA_FN static inline
#endif

/* Sentinel index of "no candidate": ranks after every real candidate. */
#define DT_WA_NO_INDEX 2147483647

/* Total order of selection candidates (spec §2, as ref/llsa_select.c):
 * larger score first, NaN scores after every number, then smaller index.
 * Returns nonzero if (s1, i1) ranks strictly before (s2, i2). Scores are
 * doubles: the GPU reproduces ref/'s double scores bit for bit. */
DT_WA_FN int dt_wa_ranks_before(double s1, int i1, double s2, int i2) {
  if (i1 == DT_WA_NO_INDEX) return 0;
  if (i2 == DT_WA_NO_INDEX) return 1;
  const int nan1 = s1 != s1, nan2 = s2 != s2;
  if (nan1 != nan2) return nan2;
  if (!nan1 && s1 != s2) return s1 > s2;
  return i1 < i2;
}

/* The better of two candidates under dt_wa_ranks_before (associative and
 * commutative: the order is total on distinct indices). */
DT_WA_FN void dt_wa_best_of(double *s, int *i, double s_other, int i_other) {
  if (dt_wa_ranks_before(s_other, i_other, *s, *i)) {
    *s = s_other;
    *i = i_other;
  }
}

/* One lane's part of a selection pass: the best candidate among
 * scores[j], j = lane, lane + width, ... < n, that ranks strictly after the
 * previous pick (prev_s, prev_i) (prev_i < 0: no previous pick). idx[j] is
 * candidate j's block index, or DT_WA_NO_INDEX if j is not a candidate. */
DT_WA_FN void dt_wa_lane_scan(const double *scores, const int *idx, int n, int lane, int width,
                              double prev_s, int prev_i, double *best_s, int *best_i) {
  double bs = 0.0;
  int bi = DT_WA_NO_INDEX;
  for (int j = lane; j < n; j += width) {
    const int c = idx[j];
    if (c == DT_WA_NO_INDEX) continue;
    const double s = scores[j];
    if (prev_i >= 0 && !dt_wa_ranks_before(prev_s, prev_i, s, c)) continue;
    dt_wa_best_of(&bs, &bi, s, c);
  }
  *best_s = bs;
  *best_i = bi;
}

/* Online-softmax state of a set of logits: m = max, l = sum exp(z - m).
 * Merging two states is associative and commutative (up to rounding). An
 * empty state is (-inf, 0). */
DT_WA_FN void dt_wa_softmax_merge(float *m, float *l, float m_other, float l_other) {
  float mn = *m > m_other ? *m : m_other;
  if (mn == -INFINITY) return; /* both empty */
  *l = *l * expf(*m - mn) + l_other * expf(m_other - mn);
  *m = mn;
}

/* Rescale factor exp(m_old - m_new) of an accumulator when its running
 * maximum grows; an empty accumulator (m_old = -inf) has nothing to keep. */
DT_WA_FN float dt_wa_rescale(float m_old, float m_new) {
  if (m_new == -INFINITY) return 1.0f;
  return expf(m_old - m_new);
}

/* exp(z - m) with the empty-row convention exp(-inf - -inf) = 0. */
DT_WA_FN float dt_wa_prob(float z, float m) { return m == -INFINITY ? 0.0f : expf(z - m); }

DT_WA_FN float dt_wa_max(float a, float b) { return a > b ? a : b; }

#endif /* DITATTN_GPU_WARP_ALGOS_H */
