/* RoPeSLR low-rank branch (spec §3): positional injection, feature maps, and
 * the background linear attention both by definition (direct double sum) and
 * through per-block factors. */
#include "ropeslr_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

void dt_slr_phi(ditattn_slr_feature feature, int64_t r, const double *u, double *f) {
  if (feature == DITATTN_SLR_FEATURE_SOFTMAX) {
    double umax = -INFINITY, sum = 0.0;
    for (int64_t m = 0; m < r; m++) umax = u[m] > umax ? u[m] : umax;
    for (int64_t m = 0; m < r; m++) sum += f[m] = exp(u[m] - umax);
    for (int64_t m = 0; m < r; m++) f[m] /= sum;
    return;
  }
  for (int64_t m = 0; m < r; m++) f[m] = u[m] > 0.0 ? u[m] + 1.0 : exp(u[m]);
}

void dt_slr_phi_backward(ditattn_slr_feature feature, int64_t r, const double *u, const double *f,
                         const double *df, double *du) {
  if (feature == DITATTN_SLR_FEATURE_SOFTMAX) {
    /* J = diag(f) − f fᵀ (symmetric). */
    double dot = 0.0;
    for (int64_t m = 0; m < r; m++) dot += f[m] * df[m];
    for (int64_t m = 0; m < r; m++) du[m] = f[m] * (df[m] - dot);
    return;
  }
  /* elu(u) + 1: slope 1 for u > 0, exp(u) = f otherwise. */
  for (int64_t m = 0; m < r; m++) du[m] = u[m] > 0.0 ? df[m] : df[m] * f[m];
}

void dt_slr_features(const dt_slr_shape *s, const ditattn_tensor *proj,
                     const ditattn_ropeslr_weights *w, int64_t h, const int32_t *pos,
                     ditattn_slr_feature feature, const double *x, double *u, double *f) {
  const int64_t D = s->D, r = s->r;
  for (int64_t i = 0; i < s->N; i++) {
    double *ui = u + i * r;
    const float *et = dt_f32_at(&w->Et, 0, h, pos[3 * i], 0);
    const float *ey = dt_f32_at(&w->Ey, 0, h, pos[3 * i + 1], 0);
    const float *ex = dt_f32_at(&w->Ex, 0, h, pos[3 * i + 2], 0);
    for (int64_t m = 0; m < r; m++) ui[m] = (double)et[m] + (double)ey[m] + (double)ex[m];
    for (int64_t d = 0; d < D; d++) {
      const float *prow = dt_f32_at(proj, 0, h, d, 0);
      const double xd = x[i * D + d];
      for (int64_t m = 0; m < r; m++) ui[m] += xd * prow[m];
    }
    dt_slr_phi(feature, r, ui, f + i * r);
  }
}

void dt_slr_lowrank_direct(const dt_slr_shape *s, const int32_t *sel, const double *f,
                           const double *g, const double *v, double *olr, double *den) {
  const int64_t N = s->N, D = s->D, r = s->r;
  for (int64_t G = 0; G < s->n; G++) {
    const int64_t first = G * s->block, last = first + s->block < N ? first + s->block : N;
    for (int64_t i = first; i < last; i++) {
      double *oi = olr + i * D, sum = 0.0;
      for (int64_t d = 0; d < D; d++) oi[d] = 0.0;
      for (int64_t j = 0; j < N; j++) {
        const int64_t C = j / s->block;
        int selected = 0;
        for (int64_t t = 0; t < s->K && !selected; t++) selected = sel[G * s->K + t] == C;
        if (selected) continue;
        double a = 0.0;
        for (int64_t m = 0; m < r; m++) a += f[i * r + m] * g[j * r + m];
        sum += a;
        for (int64_t d = 0; d < D; d++) oi[d] += a * v[j * D + d];
      }
      /* Empty background (or a sum that underflowed): the branch adds 0. */
      if (sum != 0.0)
        for (int64_t d = 0; d < D; d++) oi[d] /= sum;
      den[i] = sum;
    }
  }
}

ditattn_status dt_slr_lowrank_factors(ditattn_context *ctx, const dt_slr_shape *s,
                                      const int32_t *sel, const double *f, const double *g,
                                      const double *v, double *olr, double *den) {
  const int64_t N = s->N, D = s->D, r = s->r, n = s->n;
  /* Layout: S_C (n·r·D) | S (r·D) | S_bg (r·D) | z_C (n·r) | z (r) | z_bg (r). */
  size_t rd, nrd, total;
  if (!dt_mul_size((size_t)r, (size_t)D, &rd) || !dt_mul_size(rd, (size_t)n, &nrd) ||
      rd > SIZE_MAX / 4 || nrd > SIZE_MAX / 4 || (size_t)(n + 2) > SIZE_MAX / 4 / (size_t)r)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "RoPeSLR factors: n = %lld, r = %lld, D = %lld",
                   (long long)n, (long long)r, (long long)D);
  total = nrd + 2 * rd + (size_t)(n + 2) * (size_t)r;
  double *SC = total <= (size_t)INT64_MAX ? dt_slr_alloc_doubles((int64_t)total) : NULL;
  unsigned char *in_sel = dt_malloc((size_t)n);
  if (!SC || !in_sel) {
    dt_free(SC);
    dt_free(in_sel);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "RoPeSLR factors (%zu doubles)", total);
  }
  double *S = SC + nrd, *Sbg = S + rd, *zC = Sbg + rd, *z = zC + n * r, *zbg = z + r;
  memset(SC, 0, total * sizeof(double));
  for (int64_t j = 0; j < N; j++) {
    const int64_t C = j / s->block;
    double *Sj = SC + C * r * D, *zj = zC + C * r;
    for (int64_t m = 0; m < r; m++) {
      const double gm = g[j * r + m];
      zj[m] += gm;
      for (int64_t d = 0; d < D; d++) Sj[m * D + d] += gm * v[j * D + d];
    }
  }
  for (int64_t C = 0; C < n; C++) {
    for (int64_t m = 0; m < r; m++) z[m] += zC[C * r + m];
    for (size_t e = 0; e < rd; e++) S[e] += SC[(size_t)C * rd + e];
  }
  for (int64_t G = 0; G < n; G++) {
    const int64_t kept = dt_slr_mark_selected(s, sel, G, in_sel);
    /* S_bg = S − Σ_sel S_C, spec §3; computed as written (total minus the
     * selected blocks) so the result matches what fast backends do. */
    memcpy(Sbg, S, rd * sizeof(double));
    memcpy(zbg, z, (size_t)r * sizeof(double));
    for (int64_t C = 0; C < n; C++) {
      if (!in_sel[C]) continue;
      for (int64_t m = 0; m < r; m++) zbg[m] -= zC[C * r + m];
      for (size_t e = 0; e < rd; e++) Sbg[e] -= SC[(size_t)C * rd + e];
    }
    const int64_t first = G * s->block, last = first + s->block < N ? first + s->block : N;
    for (int64_t i = first; i < last; i++) {
      double *oi = olr + i * D, sum = 0.0;
      for (int64_t d = 0; d < D; d++) oi[d] = 0.0;
      if (kept < n) {
        for (int64_t m = 0; m < r; m++) {
          const double fm = f[i * r + m];
          sum += fm * zbg[m];
          for (int64_t d = 0; d < D; d++) oi[d] += fm * Sbg[m * D + d];
        }
        if (sum != 0.0)
          for (int64_t d = 0; d < D; d++) oi[d] /= sum;
        else
          for (int64_t d = 0; d < D; d++) oi[d] = 0.0;
      }
      den[i] = sum;
    }
  }
  dt_free(SC);
  dt_free(in_sel);
  return DITATTN_OK;
}
