/* Low-rank branch and output of distributed RoPeSLR on CPU contexts: the
 * same stages as dist_ropeslr_lowrank.c with the CPU backend's f32 GEMMs
 * (as backends/cpu/cpu_ropeslr_*.c: features, factors and readout are
 * GEMMs; sums over blocks and ranks stay double). */
#include "dist_ropeslr.h"

#include <math.h>
#include <string.h>

/* out (count × r) = φ(x projᵀ… + E^t + E^y + E^x) for count rows of x (leading
 * dimension ld) at positions p (3 ints per row), head h; as the CPU backend. */
static void features(const slr_run *R, const ditattn_tensor *proj, int64_t h, const float *x,
                     int64_t ld, const int32_t *p, int64_t count, float *out) {
  const ditattn_ropeslr_weights *w = R->w;
  const int64_t r = R->r;
  dt_cpu_gemm(0, 0, count, r, R->D, 1.0f, x, ld, dt_f32_at(proj, 0, h, 0, 0), proj->stride[2], 0.0f,
              out, r);
  for (int64_t i = 0; i < count; i++) {
    const int32_t *ps = p + 3 * i;
    const float *et = dt_f32_at(&w->Et, 0, h, ps[0], 0);
    const float *ey = dt_f32_at(&w->Ey, 0, h, ps[1], 0);
    const float *ex = dt_f32_at(&w->Ex, 0, h, ps[2], 0);
    float *fi = out + i * r;
    for (int64_t m = 0; m < r; m++) fi[m] += et[m] + ey[m] + ex[m];
    if (R->params.feature == DITATTN_SLR_FEATURE_SOFTMAX) {
      float umax = -INFINITY;
      double sum = 0.0;
      for (int64_t m = 0; m < r; m++) umax = fi[m] > umax ? fi[m] : umax;
      for (int64_t m = 0; m < r; m++) sum += fi[m] = expf(fi[m] - umax);
      const float inv = (float)(1.0 / sum);
      for (int64_t m = 0; m < r; m++) fi[m] *= inv;
    } else {
      for (int64_t m = 0; m < r; m++) fi[m] = fi[m] > 0.0f ? fi[m] + 1.0f : expf(fi[m]);
    }
  }
}

/* S (r×D, then z: r; double) = gᵀ V and Σ g over count rows. */
static void outer_sum(const slr_run *R, const float *g, int64_t count, const float *v, int64_t ldv,
                      double *S) {
  const int64_t r = R->r, D = R->D;
  dt_cpu_gemm(1, 0, r, D, count, 1.0f, g, r, v, ldv, 0.0f, R->Sf, D);
  for (int64_t e = 0; e < r * D; e++) S[e] = R->Sf[e];
  double *z = S + r * D;
  for (int64_t m = 0; m < r; m++) z[m] = 0.0;
  for (int64_t j = 0; j < count; j++)
    for (int64_t m = 0; m < r; m++) z[m] += (double)g[j * r + m];
}

void dt_dist_slr_local_features_cpu(slr_run *R) {
  const int64_t r = R->r, rd = r * R->D + r;
  for (int64_t bh = 0; bh < R->BH; bh++) {
    const int64_t b = bh / R->H, h = bh % R->H;
    const int32_t *p = R->pos + 3 * R->off;
    float *f = R->ff + bh * R->len * r, *g = R->gf + bh * R->len * r;
    features(R, &R->w->A, h, dt_f32_at(R->q, b, h, 0, 0), R->q->stride[2], p, R->len, f);
    features(R, &R->w->Bk, h, dt_f32_at(R->k, b, h, 0, 0), R->k->stride[2], p, R->len, g);
    outer_sum(R, g, R->len, dt_f32_at(R->v, b, h, 0, 0), R->v->stride[2], R->part + bh * rd);
  }
}

void dt_dist_slr_factors_cpu(slr_run *R, const dt_dist_block_fetch *F, int fetched) {
  const int64_t r = R->r, D = R->D, rd = r * D + r, n = R->s.n;
  for (int64_t bh = 0; bh < R->BH; bh++) {
    const int64_t b = bh / R->H, h = bh % R->H;
    for (int64_t C = 0; C < n; C++) {
      const int64_t at = R->fac_of[bh * n + C];
      const int64_t slot = F->slot_of ? F->slot_of[bh * n + C] : -1;
      if (at < 0 || (slot >= 0) != fetched) continue;
      int64_t first, count;
      dt_dist_slr_block(R, C, &first, &count);
      if (fetched) {
        features(R, &R->w->Bk, h, dt_dist_block_fetch_k(F, slot), D, R->pos + 3 * first, count,
                 R->gblk);
        outer_sum(R, R->gblk, count, dt_dist_block_fetch_v(F, slot), D, R->fac + at * rd);
      } else {
        outer_sum(R, R->gf + (bh * R->len + first - R->off) * r, count,
                  dt_f32_at(R->v, b, h, first - R->off, 0), R->v->stride[2], R->fac + at * rd);
      }
    }
  }
}

void dt_dist_slr_finish_head_cpu(slr_run *R, int64_t bh, ditattn_tensor *out, float *lse_sparse) {
  const int64_t r = R->r, D = R->D, rd = r * D + r, n = R->s.n, b = bh / R->H, h = bh % R->H;
  const ditattn_tensor *W = &R->w->W;
  for (int64_t G = R->glo; G <= R->ghi; G++) {
    int64_t a, e;
    dt_dist_slr_local_part(R, G, &a, &e);
    const int64_t row0 = bh * R->len + (a - R->off), rows = e - a;
    const dt_cpu_softmax_state st = {R->row_max + row0, R->row_sum + row0, R->acc + row0 * D};
    dt_cpu_state_finish(&st, rows, D, R->os, D, lse_sparse ? lse_sparse + row0 : NULL);
    /* Background: the global sums minus the K selected (distinct) blocks. */
    const int32_t *row = dt_dist_slr_sel_row(R, bh, G);
    memcpy(R->Sbg, R->total + bh * rd, (size_t)rd * sizeof(double));
    for (int64_t t = 0; t < R->s.K; t++) {
      const double *SC = R->fac + R->fac_of[bh * n + row[t]] * rd;
      for (int64_t x = 0; x < rd; x++) R->Sbg[x] -= SC[x];
    }
    if (R->s.K == n) { /* empty background: o = o_s */
      dt_cpu_store_rows(out, b, h, a - R->off, rows, R->os);
      continue;
    }
    for (int64_t x = 0; x < r * D; x++) R->Sf[x] = (float)R->Sbg[x];
    const float *f = R->ff + row0 * r;
    const double *zbg = R->Sbg + r * D;
    dt_cpu_gemm(0, 0, rows, D, r, 1.0f, f, r, R->Sf, D, 0.0f, R->olrf, D);
    for (int64_t i = 0; i < rows; i++) {
      double den = 0.0;
      for (int64_t m = 0; m < r; m++) den += (double)f[i * r + m] * zbg[m];
      const float inv = den != 0.0 ? (float)(1.0 / den) : 0.0f;
      for (int64_t d = 0; d < D; d++) R->olrf[i * D + d] *= inv;
    }
    /* o = o_s + o_lr W */
    dt_cpu_gemm(0, 0, rows, D, D, 1.0f, R->olrf, D, dt_f32_at(W, 0, h, 0, 0), W->stride[2], 1.0f,
                R->os, D);
    dt_cpu_store_rows(out, b, h, a - R->off, rows, R->os);
  }
}
