/* Low-rank branch of distributed RoPeSLR (spec §3) and the output (§4).
 * Features are computed as ref/ computes them (double, same sum order). The
 * background factors of query block G are the global sums (an all-reduce of
 * every rank's r×D + r partial sums) minus the factors of G's selected
 * blocks, which come from the rows the sparse branch fetched anyway. */
#include "dist_ropeslr.h"

#include <string.h>

void dt_dist_slr_feature(const slr_run *R, const ditattn_tensor *proj, int64_t h, const float *x,
                         const int32_t *p, double *u, double *out) {
  const ditattn_ropeslr_weights *w = R->w;
  const int64_t r = R->r;
  const float *et = dt_f32_at(&w->Et, 0, h, p[0], 0);
  const float *ey = dt_f32_at(&w->Ey, 0, h, p[1], 0);
  const float *ex = dt_f32_at(&w->Ex, 0, h, p[2], 0);
  for (int64_t m = 0; m < r; m++) u[m] = (double)et[m] + (double)ey[m] + (double)ex[m];
  for (int64_t d = 0; d < R->D; d++) {
    const float *prow = dt_f32_at(proj, 0, h, d, 0);
    const double xd = x[d];
    for (int64_t m = 0; m < r; m++) u[m] += xd * prow[m];
  }
  dt_slr_phi(R->params.feature, r, u, out);
}

void dt_dist_slr_key_feature(const slr_run *R, int64_t h, const float *x, const int32_t *p,
                             double *u, double *g) {
  dt_dist_slr_feature(R, &R->w->Bk, h, x, p, u, g);
}

/* S += g vᵀ, z += g (S: r×D then z: r). */
static void add_outer(int64_t r, int64_t D, const double *g, const float *v, double *S) {
  double *z = S + r * D;
  for (int64_t m = 0; m < r; m++) {
    const double gm = g[m];
    double *Sm = S + m * D;
    z[m] += gm;
    for (int64_t d = 0; d < D; d++) Sm[d] += gm * (double)v[d];
  }
}

void dt_dist_slr_local_features(slr_run *R) {
  const int64_t r = R->r, D = R->D, rd = r * D + r;
  for (int64_t bh = 0; bh < R->BH; bh++) {
    const int64_t b = bh / R->H, h = bh % R->H;
    double *S = R->part + bh * rd;
    memset(S, 0, (size_t)rd * sizeof(double));
    for (int64_t i = 0; i < R->len; i++) {
      const int32_t *p = R->pos + 3 * (R->off + i);
      double *f = R->f + (bh * R->len + i) * r, *g = R->g + (bh * R->len + i) * r;
      dt_dist_slr_feature(R, &R->w->A, h, dt_f32_at(R->q, b, h, i, 0), p, R->u, f);
      dt_dist_slr_feature(R, &R->w->Bk, h, dt_f32_at(R->k, b, h, i, 0), p, R->u, g);
      add_outer(r, D, g, dt_f32_at(R->v, b, h, i, 0), S);
    }
  }
}

void dt_dist_slr_each_factor(slr_run *R, const dt_dist_block_fetch *F, int fetched,
                             dt_dist_slr_factor_fn *fn) {
  const int64_t rd = R->r * R->D + R->r, n = R->s.n;
  for (int64_t bh = 0; bh < R->BH; bh++)
    for (int64_t C = 0; C < n; C++) {
      const int64_t at = R->fac_of[bh * n + C];
      const int64_t slot = F->slot_of ? F->slot_of[bh * n + C] : -1;
      if (at < 0 || (slot >= 0) != fetched) continue;
      fn(R, F, bh, C, slot, R->fac + at * rd);
    }
}

/* S_C, z_C of block C of bh in ref/'s row order: local rows reuse their
 * key features, the others' come from the fetched rows. */
static void block_factor(slr_run *R, const dt_dist_block_fetch *F, int64_t bh, int64_t C,
                         int64_t slot, double *S) {
  const int64_t r = R->r, D = R->D, rd = r * D + r, b = bh / R->H, h = bh % R->H;
  const int fetched = slot >= 0;
  double *gj = R->olr; /* scratch: r <= max(r, D) doubles, see run_alloc */
  memset(S, 0, (size_t)rd * sizeof(double));
  int64_t first, count;
  dt_dist_slr_block(R, C, &first, &count);
  for (int64_t j = first; j < first + count; j++) {
    const int local = j >= R->off && j < R->off + R->len;
    const float *vj = fetched ? dt_dist_block_fetch_v(F, slot) + (j - first) * D
                              : dt_f32_at(R->v, b, h, j - R->off, 0);
    const double *g = local ? R->g + (bh * R->len + (j - R->off)) * r : gj;
    if (!local)
      dt_dist_slr_feature(R, &R->w->Bk, h, dt_dist_block_fetch_k(F, slot) + (j - first) * D,
                          R->pos + 3 * j, R->u, gj);
    add_outer(r, D, g, vj, S);
  }
}

void dt_dist_slr_factors(slr_run *R, const dt_dist_block_fetch *F, int fetched) {
  dt_dist_slr_each_factor(R, F, fetched, block_factor);
}

int64_t dt_dist_slr_background(slr_run *R, int64_t bh, int64_t G) {
  const int64_t rd = R->r * R->D + R->r, n = R->s.n, K = R->s.K;
  const int32_t *row = dt_dist_slr_sel_row(R, bh, G);
  memcpy(R->Sbg, R->total + bh * rd, (size_t)rd * sizeof(double));
  for (int64_t t = 0; t < K; t++) {
    const double *SC = R->fac + R->fac_of[bh * n + row[t]] * rd;
    for (int64_t e = 0; e < rd; e++) R->Sbg[e] -= SC[e];
  }
  return K; /* the K entries of a row are distinct blocks */
}

int64_t dt_dist_slr_sparse_out(slr_run *R, int64_t bh, int64_t G, float *lse_sparse, int64_t *a,
                               int64_t *row0) {
  const int64_t D = R->D;
  int64_t e;
  dt_dist_slr_local_part(R, G, a, &e);
  *row0 = bh * R->len + (*a - R->off);
  const int64_t rows = e - *a;
  const dt_cpu_softmax_state st = {R->row_max + *row0, R->row_sum + *row0, R->acc + *row0 * D};
  dt_cpu_state_finish(&st, rows, D, R->os, D, lse_sparse ? lse_sparse + *row0 : NULL);
  return rows;
}

void dt_dist_slr_finish_head(slr_run *R, int64_t bh, ditattn_tensor *out, float *lse_sparse) {
  const int64_t r = R->r, D = R->D, b = bh / R->H, h = bh % R->H;
  const ditattn_tensor *W = &R->w->W;
  for (int64_t G = R->glo; G <= R->ghi; G++) {
    int64_t a, row0;
    const int64_t rows = dt_dist_slr_sparse_out(R, bh, G, lse_sparse, &a, &row0);
    const int empty = dt_dist_slr_background(R, bh, G) == R->s.n;
    const double *zbg = R->Sbg + r * D;
    for (int64_t i = 0; i < rows; i++) {
      const double *f = R->f + (row0 + i) * r;
      double den = 0.0;
      for (int64_t d = 0; d < D; d++) R->olr[d] = 0.0;
      if (!empty) {
        for (int64_t m = 0; m < r; m++) {
          const double fm = f[m];
          den += fm * zbg[m];
          for (int64_t d = 0; d < D; d++) R->olr[d] += fm * R->Sbg[m * D + d];
        }
        /* A denominator that underflowed to 0: the branch adds 0 (ref/). */
        for (int64_t d = 0; d < D; d++) R->olr[d] = den != 0.0 ? R->olr[d] / den : 0.0;
      }
      float *o = dt_f32_at(out, b, h, a - R->off + i, 0);
      const float *os = R->os + i * D;
      for (int64_t c = 0; c < D; c++) {
        double acc = os[c];
        for (int64_t d = 0; d < D; d++) acc += (double)*dt_f32_at(W, 0, h, d, c) * R->olr[d];
        o[c] = (float)acc;
      }
    }
  }
}
