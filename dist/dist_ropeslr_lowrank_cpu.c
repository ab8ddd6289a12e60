/* Low-rank branch and output of distributed RoPeSLR on CPU contexts: the
 * same stages as dist_ropeslr_lowrank.c with the CPU backend's f32 GEMMs
 * (as backends/cpu/cpu_ropeslr_*.c: features, factors and readout are
 * GEMMs; sums over blocks and ranks stay double). */
#include "dist_ropeslr.h"
#include "backends/cpu/cpu_ropeslr_head.h"

/* out (count × r): features of count rows of x (leading dimension ld) at
 * positions p (3 ints per row), head h; as the CPU backend. */
static void features(const slr_run *R, const ditattn_tensor *proj, int64_t h, const float *x,
                     int64_t ld, const int32_t *p, int64_t count, float *out) {
  dt_cpu_slr_features(R->w, R->params.feature, proj, h, R->D, R->r, x, ld, p, count, out);
}

/* S (r×D, then z: r; double) = gᵀ V and Σ g over count rows. */
static void outer_sum(const slr_run *R, const float *g, int64_t count, const float *v, int64_t ldv,
                      double *S) {
  const int64_t r = R->r, D = R->D;
  dt_cpu_slr_block_factor(r, D, count, g, v, ldv, R->Sf, S + r * D);
  for (int64_t e = 0; e < r * D; e++) S[e] = R->Sf[e];
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

/* S_C, z_C of block C of bh: local rows reuse their key features; fetched
 * blocks get theirs from the slot's rows. */
static void block_factor(slr_run *R, const dt_dist_block_fetch *F, int64_t bh, int64_t C,
                         int64_t slot, double *S) {
  const int64_t r = R->r, D = R->D, b = bh / R->H, h = bh % R->H;
  int64_t first, count;
  dt_dist_slr_block(R, C, &first, &count);
  if (slot >= 0) {
    features(R, &R->w->Bk, h, dt_dist_block_fetch_k(F, slot), D, R->pos + 3 * first, count,
             R->gblk);
    outer_sum(R, R->gblk, count, dt_dist_block_fetch_v(F, slot), D, S);
  } else {
    outer_sum(R, R->gf + (bh * R->len + first - R->off) * r, count,
              dt_f32_at(R->v, b, h, first - R->off, 0), R->v->stride[2], S);
  }
}

void dt_dist_slr_factors_cpu(slr_run *R, const dt_dist_block_fetch *F, int fetched) {
  dt_dist_slr_each_factor(R, F, fetched, block_factor);
}

void dt_dist_slr_finish_head_cpu(slr_run *R, int64_t bh, ditattn_tensor *out, float *lse_sparse) {
  const int64_t r = R->r, D = R->D, b = bh / R->H, h = bh % R->H;
  const ditattn_tensor *W = &R->w->W;
  for (int64_t G = R->glo; G <= R->ghi; G++) {
    int64_t a, row0;
    const int64_t rows = dt_dist_slr_sparse_out(R, bh, G, lse_sparse, &a, &row0);
    if (dt_dist_slr_background(R, bh, G) == R->s.n) { /* empty background: o = o_s */
      dt_cpu_store_rows(out, b, h, a - R->off, rows, R->os);
      continue;
    }
    for (int64_t x = 0; x < r * D; x++) R->Sf[x] = (float)R->Sbg[x];
    dt_cpu_slr_readout(r, D, rows, R->ff + row0 * r, R->Sf, R->Sbg + r * D, R->olrf, NULL);
    /* o = o_s + o_lr W */
    dt_cpu_gemm(0, 0, rows, D, D, 1.0f, R->olrf, D, dt_f32_at(W, 0, h, 0, 0), W->stride[2], 1.0f,
                R->os, D);
    dt_cpu_store_rows(out, b, h, a - R->off, rows, R->os);
  }
}
