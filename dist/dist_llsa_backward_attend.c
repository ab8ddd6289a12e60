/* The gradient kernels of the distributed LLSA backward: one block of
 * local queries against a list of keys. A scalar double kernel (REF
 * contexts; ref/'s arithmetic) and the CPU backend's tile kernels (CPU
 * contexts), both adding into double accumulators. */
#include "dist_llsa_backward.h"

#include <math.h>
#include <string.h>

enum { QT = DT_CPU_QUERY_TILE, KC = DT_CPU_KEY_CHUNK };

void dt_dist_bwd_keys_ref(const dt_bwd_queries *Q, int64_t n, const double *k, const double *v,
                          const double *lw, double *dk, double *dv) {
  const int64_t D = Q->D;
  const double scale = (double)Q->scale;
  for (int64_t i = 0; i < Q->rows; i++) {
    const float *q = Q->q + i * D, *dout = Q->dout + i * D;
    const double lse = (double)Q->lse[i], delta = Q->delta[i];
    double *dq = Q->dq + i * D;
    for (int64_t j = 0; j < n; j++) {
      const double *kj = k + j * D, *vj = v + j * D;
      double s = 0.0, dp = 0.0;
      for (int64_t d = 0; d < D; d++) {
        s += (double)q[d] * kj[d];
        dp += (double)dout[d] * vj[d];
      }
      const double prob = exp(scale * s + (lw ? lw[j] : 0.0) - lse);
      const double ds = prob * (dp - delta);
      for (int64_t d = 0; d < D; d++) {
        dq[d] += scale * ds * kj[d];
        dk[j * D + d] += scale * ds * (double)q[d];
        dv[j * D + d] += prob * (double)dout[d];
      }
    }
  }
}

int64_t dt_dist_bwd_cpu_scratch_floats(int64_t D) {
  return 2 * (int64_t)QT * KC + (KC + 16) * D + (int64_t)QT * D + 2 * (int64_t)KC * D;
}

dt_bwd_cpu_scratch dt_dist_bwd_cpu_scratch_split(float *buf, int64_t D) {
  dt_bwd_cpu_scratch S;
  S.p = buf;
  S.ds = S.p + (int64_t)QT * KC;
  S.kpack = S.ds + (int64_t)QT * KC;
  S.dqf = S.kpack + (KC + 16) * D;
  S.dkf = S.dqf + (int64_t)QT * D;
  S.dvf = S.dkf + (int64_t)KC * D;
  return S;
}

static void add_rows(double *dst, const float *src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] += (double)src[i];
}

void dt_dist_bwd_keys_cpu(const dt_bwd_queries *Q, const dt_bwd_cpu_scratch *S, int64_t n,
                          const float *k, int64_t k_ld, const float *v, int64_t v_ld,
                          const float *lw, double *dk, double *dv) {
  const int64_t D = Q->D;
  for (int64_t j0 = 0; j0 < n; j0 += KC) {
    const int64_t m = n - j0 < KC ? n - j0 : KC;
    const float *kc = k + j0 * k_ld, *vc = v + j0 * v_ld;
    memset(S->dkf, 0, (size_t)(m * D) * sizeof(float));
    memset(S->dvf, 0, (size_t)(m * D) * sizeof(float));
    for (int64_t r0 = 0; r0 < Q->rows; r0 += QT) {
      const int64_t rows = Q->rows - r0 < QT ? Q->rows - r0 : QT;
      const float *q = Q->q + r0 * D, *dout = Q->dout + r0 * D;
      /* p and dS (dS already carries the scale), then the three products. */
      dt_cpu_backward_tile(rows, m, D, Q->scale, q, dout, Q->lse + r0, Q->delta_f + r0, kc, k_ld,
                           vc, v_ld, lw ? lw + j0 : NULL, S->p, S->ds, S->kpack);
      memset(S->dqf, 0, (size_t)(rows * D) * sizeof(float));
      dt_cpu_acc_pv(0, rows, m, D, S->ds, m, kc, k_ld, S->dqf, D);
      add_rows(Q->dq + r0 * D, S->dqf, rows * D);
      dt_cpu_acc_pv(1, m, rows, D, S->p, m, dout, D, S->dvf, D);
      dt_cpu_acc_pv(1, m, rows, D, S->ds, m, q, D, S->dkf, D);
    }
    add_rows(dk + j0 * D, S->dkf, m * D);
    add_rows(dv + j0 * D, S->dvf, m * D);
  }
}
