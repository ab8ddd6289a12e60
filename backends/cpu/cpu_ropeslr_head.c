/* RoPeSLR per-head stages on the CPU: pooled means, selection (ref/'s double
 * scores and tie rule, so the selected sets are identical), features, block
 * factors, background factors, and the per-rows sparse and low-rank pieces
 * that the forward and the backward loop over. */
#include "cpu_ropeslr_head.h"

#include <math.h>
#include <string.h>

enum { KC = DT_CPU_KEY_CHUNK };

/* total += count · elem, 0 on overflow. */
static int add_bytes(size_t *total, int64_t count, size_t elem) {
  size_t bytes;
  if (count < 0 || !dt_mul_size((size_t)count, elem, &bytes) || *total > SIZE_MAX - bytes) return 0;
  *total += bytes;
  return 1;
}

ditattn_status dt_cpu_slr_head_alloc(ditattn_context *ctx, const dt_slr_shape *s, int dt_nt,
                                     dt_cpu_slr_head *hd) {
  const int64_t N = s->N, D = s->D, r = s->r, n = s->n;
  *hd = (dt_cpu_slr_head){0};
  hd->s = *s;
  hd->dt_nt = dt_nt;
  /* Packed keys only with the own kernels (ceil(b/16)·16 ≤ N + 15). */
  const int64_t kp_stride =
      dt_cpu_use_own_kernel ? ((s->block < N ? s->block : N) + 15) / 16 * 16 * D : 0;
  size_t doubles = 0, floats = 0, bytes = 0, ints = 0;
  int ok = add_bytes(&doubles, n, 2 * (size_t)D) && add_bytes(&doubles, n, (size_t)dt_nt) &&
           add_bytes(&doubles, n, (size_t)r) && add_bytes(&doubles, r, (size_t)D + 1) &&
           add_bytes(&floats, N, 2 * (size_t)r) && add_bytes(&floats, n * r, (size_t)D) &&
           add_bytes(&floats, n, (size_t)kp_stride) && add_bytes(&bytes, n, (size_t)dt_nt) &&
           add_bytes(&ints, n, (size_t)s->K) && doubles < SIZE_MAX / 8 && floats < SIZE_MAX / 4 &&
           ints < SIZE_MAX / 4;
  if (!ok)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW,
                   "ropeslr (cpu): head buffers overflow (N = %lld, D = %lld, r = %lld)",
                   (long long)N, (long long)D, (long long)r);
  double *dbl = dt_malloc(doubles * sizeof(double));
  float *flt = dt_malloc(floats * sizeof(float));
  hd->flag = dt_malloc(bytes);
  hd->sel = dt_malloc(ints * sizeof(int32_t));
  hd->pq = dbl;
  hd->f = flt;
  if (!dbl || !flt || !hd->flag || !hd->sel) {
    dt_cpu_slr_head_free(hd);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "ropeslr (cpu): head buffers (N = %lld, D = %lld, r = %lld)", (long long)N,
                   (long long)D, (long long)r);
  }
  hd->pk = hd->pq + n * D;
  hd->score = hd->pk + n * D;
  hd->zC = hd->score + n * dt_nt;
  hd->S = hd->zC + n * r;
  hd->z = hd->S + r * D;
  hd->g = hd->f + N * r;
  hd->SC = hd->g + N * r;
  hd->kpacked = hd->SC + n * r * D;
  hd->kp_stride = kp_stride;
  return DITATTN_OK;
}

void dt_cpu_slr_head_free(dt_cpu_slr_head *hd) {
  dt_free(hd->pq); /* one block of doubles from pq, one of floats from f */
  dt_free(hd->f);
  dt_free(hd->flag);
  dt_free(hd->sel);
  *hd = (dt_cpu_slr_head){0};
}

/* Exact mean of rows [first, first + count) in ref/'s order (double). */
static void pooled_mean(const ditattn_tensor *x, int64_t b, int64_t h, int64_t first, int64_t count,
                        int64_t D, double *mean) {
  for (int64_t d = 0; d < D; d++) mean[d] = 0.0;
  for (int64_t j = first; j < first + count; j++) {
    const float *row = dt_f32_at(x, b, h, j, 0);
    for (int64_t d = 0; d < D; d++) mean[d] += (double)row[d];
  }
  for (int64_t d = 0; d < D; d++) mean[d] /= (double)count;
}

void dt_cpu_slr_features(const ditattn_ropeslr_weights *w, ditattn_slr_feature feature,
                         const ditattn_tensor *proj, int64_t h, int64_t D, int64_t r,
                         const float *x, int64_t ldx, const int32_t *pos, int64_t count,
                         float *out) {
  dt_cpu_gemm(0, 0, count, r, D, 1.0f, x, ldx, dt_f32_at(proj, 0, h, 0, 0), proj->stride[2], 0.0f,
              out, r);
  for (int64_t i = 0; i < count; i++) {
    const int32_t *ps = pos + 3 * i;
    const float *et = dt_f32_at(&w->Et, 0, h, ps[0], 0);
    const float *ey = dt_f32_at(&w->Ey, 0, h, ps[1], 0);
    const float *ex = dt_f32_at(&w->Ex, 0, h, ps[2], 0);
    float *fi = out + i * r;
    for (int64_t m = 0; m < r; m++) fi[m] += et[m] + ey[m] + ex[m];
    if (feature == DITATTN_SLR_FEATURE_SOFTMAX) {
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

/* f = φ(projᵀ x + E^t[t] + E^y[y] + E^x[x]) for rows [first, first + count). */
static void block_features(const dt_cpu_slr_head *hd, const dt_cpu_slr_problem *p,
                           const ditattn_tensor *proj, const ditattn_tensor *x, int64_t first,
                           int64_t count, float *f) {
  dt_cpu_slr_features(p->weights, p->params->feature, proj, hd->h, hd->s.D, hd->s.r,
                      dt_f32_at(x, hd->b, hd->h, first, 0), x->stride[2], p->pos + 3 * first, count,
                      f);
}

void dt_cpu_slr_block_factor(int64_t r, int64_t D, int64_t count, const float *g, const float *v,
                             int64_t ldv, float *SC, double *zC) {
  dt_cpu_gemm(1, 0, r, D, count, 1.0f, g, r, v, ldv, 0.0f, SC, D);
  for (int64_t m = 0; m < r; m++) zC[m] = 0.0;
  for (int64_t j = 0; j < count; j++)
    for (int64_t m = 0; m < r; m++) zC[m] += (double)g[j * r + m];
}

/* Moves heap entry `at` down: the root holds the lowest-ranked candidate. */
static void sift_down(int32_t *heap, int64_t size, int64_t at, const double *score) {
  for (;;) {
    int64_t worst = at;
    const int64_t l = 2 * at + 1, r = l + 1;
    if (l < size && dt_slr_ranks_before(score[heap[worst]], heap[worst], score[heap[l]], heap[l]))
      worst = l;
    if (r < size && dt_slr_ranks_before(score[heap[worst]], heap[worst], score[heap[r]], heap[r]))
      worst = r;
    if (worst == at) return;
    const int32_t t = heap[at];
    heap[at] = heap[worst];
    heap[worst] = t;
    at = worst;
  }
}

/* Row G of the selection, the same as ref/'s dt_slr_select: the K best by
 * (score desc, index asc), a strict total order without NaN, kept in a heap
 * (O(n log K)) and written in rank order; a row with a NaN score takes ref/'s
 * own K rounds of "best not yet taken" (NaN compares false everywhere). The
 * own block replaces the last slot when forced and not selected. */
static void select_row(const dt_cpu_slr_head *hd, int force_own, int64_t G, double *score,
                       unsigned char *taken) {
  const int64_t n = hd->s.n, D = hd->s.D, K = hd->s.K;
  const double *pq = hd->pq + G * D;
  int has_nan = 0;
  for (int64_t c = 0; c < n; c++) {
    double dot = 0.0;
    for (int64_t d = 0; d < D; d++) dot += pq[d] * hd->pk[c * D + d];
    score[c] = dot;
    has_nan |= dot != dot;
  }
  int32_t *row = hd->sel + G * K;
  int own_taken = 0;
  if (has_nan) {
    own_taken = dt_slr_select_rounds(score, n, K, G, taken, row);
  } else {
    int32_t *heap = row; /* built in place, then sorted */
    for (int64_t c = 0; c < n; c++) {
      if (c < K) {
        heap[c] = (int32_t)c;
        if (c == K - 1)
          for (int64_t at = K / 2 - 1; at >= 0; at--) sift_down(heap, K, at, score);
      } else if (dt_slr_ranks_before(score[c], c, score[heap[0]], heap[0])) {
        heap[0] = (int32_t)c;
        sift_down(heap, K, 0, score);
      }
    }
    for (int64_t size = K; size > 1; size--) { /* pop the lowest-ranked to the back */
      const int32_t t = heap[0];
      heap[0] = heap[size - 1];
      heap[size - 1] = t;
      sift_down(heap, size - 1, 0, score);
    }
    for (int64_t slot = 0; slot < K; slot++) own_taken |= row[slot] == G;
  }
  if (force_own && !own_taken) row[K - 1] = (int32_t)G;
}

void dt_cpu_slr_head_prepare(dt_cpu_slr_head *hd, const dt_cpu_slr_problem *p, int64_t b,
                             int64_t h) {
  const dt_slr_shape *s = &hd->s;
  const int64_t D = s->D, r = s->r, n = s->n;
  const int dt_nt = hd->dt_nt;
  (void)dt_nt; /* used by the OpenMP pragmas only */
  hd->b = b;
  hd->h = h;
  /* Per block: pooled means, features, S_C = G_Cᵀ V_C, z_C. */
  DT_OMP_PARALLEL_FOR
  for (int64_t c = 0; c < n; c++) {
    int64_t first, count;
    dt_cpu_slr_block_rows(s, c, &first, &count);
    pooled_mean(p->q, b, h, first, count, D, hd->pq + c * D);
    pooled_mean(p->k, b, h, first, count, D, hd->pk + c * D);
    block_features(hd, p, &p->weights->A, p->q, first, count, hd->f + first * r);
    block_features(hd, p, &p->weights->Bk, p->k, first, count, hd->g + first * r);
    dt_cpu_slr_block_factor(r, D, count, hd->g + first * r, dt_f32_at(p->v, b, h, first, 0),
                            p->v->stride[2], hd->SC + c * r * D, hd->zC + c * r);
    if (hd->kp_stride)
      dt_cpu_pack_keys(count, D, dt_f32_at(p->k, b, h, first, 0), p->k->stride[2],
                       hd->kpacked + c * hd->kp_stride);
  }
  /* S = Σ_C S_C, z = Σ_C z_C in block order. */
  DT_OMP_PARALLEL_FOR
  for (int64_t m = 0; m < r; m++) {
    double *Sm = hd->S + m * D;
    double zm = 0.0;
    for (int64_t d = 0; d < D; d++) Sm[d] = 0.0;
    for (int64_t c = 0; c < n; c++) {
      const float *SCm = hd->SC + (c * r + m) * D;
      zm += hd->zC[c * r + m];
      for (int64_t d = 0; d < D; d++) Sm[d] += (double)SCm[d];
    }
    hd->z[m] = zm;
  }
  DT_OMP_PARALLEL_FOR
  for (int64_t G = 0; G < n; G++) {
    const int t = dt_cpu_thread_id();
    select_row(hd, p->params->force_own_block, G, hd->score + (size_t)t * (size_t)n,
               hd->flag + (size_t)t * (size_t)n);
  }
}

int64_t dt_cpu_slr_background(const dt_cpu_slr_head *hd, int64_t G, unsigned char *in_sel,
                              double *Sbg, float *Sbg_f, double *zbg) {
  const int64_t n = hd->s.n, K = hd->s.K, r = hd->s.r, D = hd->s.D;
  const size_t rd = (size_t)r * (size_t)D;
  int64_t kept = 0;
  memset(in_sel, 0, (size_t)n);
  for (int64_t t = 0; t < K; t++) {
    const int32_t c = hd->sel[G * K + t];
    kept += !in_sel[c];
    in_sel[c] = 1;
  }
  if (kept == n) return n;
  /* Whichever is shorter: the background summed directly, or the total
   * minus the selected blocks (spec §3); both exact up to double rounding. */
  const int direct = n - kept < kept;
  if (direct) {
    memset(Sbg, 0, rd * sizeof(double));
    memset(zbg, 0, (size_t)r * sizeof(double));
  } else {
    memcpy(Sbg, hd->S, rd * sizeof(double));
    memcpy(zbg, hd->z, (size_t)r * sizeof(double));
  }
  const double sign = direct ? 1.0 : -1.0;
  for (int64_t c = 0; c < n; c++) {
    if (in_sel[c] == direct) continue; /* direct: skip selected; else skip background */
    const float *SC = hd->SC + (size_t)c * rd;
    const double *zc = hd->zC + c * r;
    for (int64_t m = 0; m < r; m++) zbg[m] += sign * zc[m];
    for (size_t e = 0; e < rd; e++) Sbg[e] += sign * (double)SC[e];
  }
  for (size_t e = 0; e < rd; e++) Sbg_f[e] = (float)Sbg[e];
  return kept;
}

/* Attends the `have` gathered keys (kbuf: packed with the own kernels,
 * else rows of D) and values (vbuf). */
static void attend_gathered(const dt_cpu_slr_head *hd, int64_t rows, int64_t have, const float *qs,
                            const float *kbuf, const float *vbuf, float *scratch,
                            const dt_cpu_softmax_state *sm) {
  const int64_t D = hd->s.D;
  if (hd->kp_stride)
    dt_cpu_attend_tile_packed(rows, have, D, qs, kbuf, vbuf, D, NULL, scratch, sm);
  else
    dt_cpu_attend_tile(rows, have, D, qs, kbuf, D, vbuf, D, NULL, scratch, sm);
}

void dt_cpu_slr_sparse_rows(const dt_cpu_slr_head *hd, const dt_cpu_slr_problem *p, int64_t G,
                            int64_t rows, const float *qs, const dt_cpu_softmax_state *sm,
                            float *scratch, float *kbuf, float *vbuf, float *os, float *lse) {
  const dt_slr_shape *s = &hd->s;
  const int64_t D = s->D, b = hd->b, h = hd->h;
  const size_t row_bytes = (size_t)D * sizeof(float);
  dt_cpu_state_reset(sm, rows, D);
  /* Selected blocks are gathered into chunks of up to KC keys (one softmax
   * update and one PV product per chunk); packed panels concatenate only
   * for whole panels, so a block of a size not a multiple of 16 (the
   * partial last one) goes alone, straight from the tensors. */
  int64_t have = 0;
  for (int64_t t = 0; t < s->K; t++) {
    int64_t k0, kn;
    dt_cpu_slr_block_rows(s, hd->sel[G * s->K + t], &k0, &kn);
    if (kn % 16 != 0 || kn > KC) {
      for (int64_t j0 = 0; j0 < kn; j0 += KC)
        dt_cpu_attend_tile(rows, kn - j0 < KC ? kn - j0 : KC, D, qs,
                           dt_f32_at(p->k, b, h, k0 + j0, 0), p->k->stride[2],
                           dt_f32_at(p->v, b, h, k0 + j0, 0), p->v->stride[2], NULL, scratch, sm);
      continue;
    }
    if (have + kn > KC) {
      attend_gathered(hd, rows, have, qs, kbuf, vbuf, scratch, sm);
      have = 0;
    }
    if (hd->kp_stride)
      memcpy(kbuf + have * D, hd->kpacked + (k0 / s->block) * hd->kp_stride,
             (size_t)kn * row_bytes);
    else
      for (int64_t j = 0; j < kn; j++)
        memcpy(kbuf + (have + j) * D, dt_f32_at(p->k, b, h, k0 + j, 0), row_bytes);
    for (int64_t j = 0; j < kn; j++)
      memcpy(vbuf + (have + j) * D, dt_f32_at(p->v, b, h, k0 + j, 0), row_bytes);
    have += kn;
  }
  if (have) attend_gathered(hd, rows, have, qs, kbuf, vbuf, scratch, sm);
  dt_cpu_state_finish(sm, rows, D, os, D, lse);
}

void dt_cpu_slr_readout(int64_t r, int64_t D, int64_t rows, const float *f, const float *Sbg_f,
                        const double *zbg, float *olr, double *den) {
  dt_cpu_gemm(0, 0, rows, D, r, 1.0f, f, r, Sbg_f, D, 0.0f, olr, D);
  for (int64_t i = 0; i < rows; i++) {
    double sum = 0.0;
    for (int64_t m = 0; m < r; m++) sum += (double)f[i * r + m] * zbg[m];
    if (den) den[i] = sum;
    float *oi = olr + i * D;
    const float inv = sum != 0.0 ? (float)(1.0 / sum) : 0.0f;
    for (int64_t d = 0; d < D; d++) oi[d] *= inv;
  }
}

void dt_cpu_slr_lowrank_rows(const dt_cpu_slr_head *hd, int64_t kept, const float *Sbg_f,
                             const double *zbg, int64_t q0, int64_t rows, float *olr, double *den) {
  const int64_t D = hd->s.D, r = hd->s.r;
  if (kept == hd->s.n) { /* empty background: the branch adds 0 */
    memset(olr, 0, (size_t)rows * (size_t)D * sizeof(float));
    for (int64_t i = 0; i < rows; i++) den[i] = 0.0;
    return;
  }
  dt_cpu_slr_readout(r, D, rows, hd->f + q0 * r, Sbg_f, zbg, olr, den);
}
