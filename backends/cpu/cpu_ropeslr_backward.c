/* RoPeSLR backward on the CPU: gradients of Σ dout·o, the selection held
 * constant, without atomics (every gradient row has one owner thread and a
 * fixed accumulation order). Per head, after recomputing selection,
 * features and factors (cpu_ropeslr_head.c):
 *   pass 1, per query block G: recompute o_s, lse, o_lr; dW_G = o_lrᵀ dO,
 *     do_lr = dO Wᵀ; df_i = (S_bg do_i − z_bg (do_i·o_lr_i)) / den_i;
 *     P_G = Σ_i f_i do_iᵀ / den_i, p_G = −Σ_i f_i (do_i·o_lr_i) / den_i
 *     (the gradients of S_bg and z_bg); dq from the sparse branch and from
 *     df through φ and A; dA_G = Qᵀ du.
 *   pass 2, per key block C: dk, dv of the sparse branch over the query
 *     blocks that selected C (transposed selection lists, ascending); the
 *     background gradient dS_C = Σ_{G: C∉sel[G]} P_G = P − Σ_{G: C∈sel[G]} P_G
 *     (likewise dz_C) gives dv_j += dS_Cᵀ g_j and dg_j = dS_C v_j + dz_C;
 *     dk through φ and Bk; dBk_C = K_Cᵀ du.
 *   pass 3: per-block weight partials summed in block order (double), the
 *     PE tables' gradients scattered by position, token order. */
#include "cpu_ropeslr_head.h"

#include <string.h>

enum { KC = DT_CPU_KEY_CHUNK };

/* Per-head backward arrays beyond dt_cpu_slr_head. */
typedef struct bwd_head {
  float *lse, *delta;     /* N: sparse LSE and dO·o_s */
  float *duf, *dug;       /* N×r: gradients of the feature pre-activations */
  double *PG, *pG;        /* n×r×D, n×r: background-factor gradients per query block */
  double *P, *pt;         /* r×D, r: their sums */
  float *dWp, *dAp, *dBp; /* n×D×D, n×D×r, n×D×r: weight partials per block */
  int64_t *inv_start;     /* n + 1 */
  int32_t *inv_items;     /* n·K query blocks, grouped by the key block they selected */
  double *dA, *dB, *dEt, *dEy, *dEx, *dW; /* weight gradients (double, summed over batch) */
  void *mem[3];
} bwd_head;

/* One thread's buffers (both passes); T query rows, kb = key block rows. */
typedef struct bwd_bufs {
  double *Sbg, *zbg, *den, *pG;
  float *Sbg_f, *PGf, *qraw, *qs, *acc, *os, *olr, *dO, *dolr, *y, *dq;
  float *mx, *sum, *lse, *delta, *cc, *scratch, *kbuf, *vbuf, *p, *ds, *kpack, *df, *du;
  float *dk, *dv, *dG;
  unsigned char *in_sel;
} bwd_bufs;

static size_t bwd_layout(char *base, const dt_slr_shape *s, int64_t T, bwd_bufs *t) {
  const size_t D = (size_t)s->D, r = (size_t)s->r, TD = (size_t)T * D, Tz = (size_t)T;
  const size_t kb = (size_t)(s->block < s->N ? s->block : s->N);
  dt_cpu_slr_arena a = {base, 0};
  t->Sbg = dt_cpu_slr_take(&a, r * D, sizeof(double));
  t->zbg = dt_cpu_slr_take(&a, r, sizeof(double));
  t->den = dt_cpu_slr_take(&a, Tz, sizeof(double));
  t->pG = dt_cpu_slr_take(&a, r, sizeof(double));
  t->Sbg_f = dt_cpu_slr_take(&a, r * D, sizeof(float));
  t->PGf = dt_cpu_slr_take(&a, r * D, sizeof(float));
  float **td[] = {&t->qraw, &t->qs, &t->acc, &t->os, &t->olr, &t->dO, &t->dolr, &t->y, &t->dq};
  for (size_t i = 0; i < sizeof td / sizeof td[0]; i++)
    *td[i] = dt_cpu_slr_take(&a, TD, sizeof(float));
  float **tz[] = {&t->mx, &t->sum, &t->lse, &t->delta, &t->cc};
  for (size_t i = 0; i < sizeof tz / sizeof tz[0]; i++)
    *tz[i] = dt_cpu_slr_take(&a, Tz, sizeof(float));
  t->scratch = dt_cpu_slr_take(&a, DT_CPU_ATTEND_SCRATCH(T, D), sizeof(float));
  t->kbuf = dt_cpu_slr_take(&a, (DT_CPU_KEY_CHUNK + 16) * D, sizeof(float));
  t->vbuf = dt_cpu_slr_take(&a, DT_CPU_KEY_CHUNK * D, sizeof(float));
  t->p = dt_cpu_slr_take(&a, Tz * KC, sizeof(float));
  t->ds = dt_cpu_slr_take(&a, Tz * KC, sizeof(float));
  t->kpack = dt_cpu_slr_take(&a, (KC + 16) * D, sizeof(float));
  t->df = dt_cpu_slr_take(&a, Tz * r, sizeof(float));
  t->du = dt_cpu_slr_take(&a, Tz * r, sizeof(float));
  t->dk = dt_cpu_slr_take(&a, kb * D, sizeof(float));
  t->dv = dt_cpu_slr_take(&a, kb * D, sizeof(float));
  t->dG = dt_cpu_slr_take(&a, kb * r, sizeof(float));
  t->in_sel = dt_cpu_slr_take(&a, (size_t)s->n, 1);
  return a.used;
}

static void bwd_head_free(bwd_head *bh) {
  for (int i = 0; i < 3; i++) dt_free(bh->mem[i]);
  *bh = (bwd_head){0};
}

static ditattn_status bwd_head_alloc(ditattn_context *ctx, const dt_slr_shape *s,
                                     const ditattn_ropeslr_weights *w, bwd_head *bh) {
  const size_t N = (size_t)s->N, D = (size_t)s->D, r = (size_t)s->r, n = (size_t)s->n;
  const ditattn_tensor *views[6] = {&w->A, &w->Bk, &w->Et, &w->Ey, &w->Ex, &w->W};
  *bh = (bwd_head){0};
  /* Sizes: the head's arrays are no larger than the forward's per-head
   * buffers times small factors, which dt_cpu_slr_head_alloc checked; the
   * per-block weight partials n·D·(D + 2r) are checked here. */
  size_t wcount = 0, part, fl, db;
  for (int a = 0; a < 6; a++) wcount += (size_t)dt_cpu_slr_view_count(views[a]);
  if (!dt_mul_size(n, D * (D + 2 * r), &part) || part > SIZE_MAX / 8 - 2 * N * (r + 1) ||
      !dt_mul_size(n + 1, r * D + r, &db) || db > SIZE_MAX / 8 - wcount - r * D - r)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "ropeslr backward (cpu): buffers overflow");
  fl = 2 * N + 2 * N * r + part;
  db += wcount;
  float *F = dt_malloc(fl * sizeof(float));
  double *Dd = dt_malloc(db * sizeof(double));
  int64_t *I = dt_malloc((n + 1) * sizeof(int64_t) + n * (size_t)s->K * sizeof(int32_t));
  bh->mem[0] = F;
  bh->mem[1] = Dd;
  bh->mem[2] = I;
  if (!F || !Dd || !I) {
    bwd_head_free(bh);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "ropeslr backward (cpu): head buffers");
  }
  bh->lse = F;
  bh->delta = F + N;
  bh->duf = bh->delta + N;
  bh->dug = bh->duf + N * r;
  bh->dWp = bh->dug + N * r;
  bh->dAp = bh->dWp + n * D * D;
  bh->dBp = bh->dAp + n * D * r;
  bh->PG = Dd;
  bh->pG = bh->PG + n * r * D;
  bh->P = bh->pG + n * r;
  bh->pt = bh->P + r * D;
  double **gr[6] = {&bh->dA, &bh->dB, &bh->dEt, &bh->dEy, &bh->dEx, &bh->dW};
  double *at = bh->pt + r;
  for (int a = 0; a < 6; a++) {
    *gr[a] = at;
    at += dt_cpu_slr_view_count(views[a]);
  }
  memset(bh->dA, 0, wcount * sizeof(double));
  bh->inv_start = I;
  bh->inv_items = (int32_t *)(I + n + 1);
  return DITATTN_OK;
}

/* du = J_φᵀ df from the features f (rows × r): elu+1 has slope 1 where
 * u > 0 (f > 1) and exp(u) = f elsewhere (f = 1 exactly gives df either
 * way); softmax: f ⊙ (df − f·df). In place on df allowed (du == df). */
static void phi_backward(ditattn_slr_feature feature, int64_t rows, int64_t r, const float *f,
                         const float *df, float *du) {
  for (int64_t i = 0; i < rows; i++) {
    const float *fi = f + i * r, *dfi = df + i * r;
    float *dui = du + i * r;
    if (feature == DITATTN_SLR_FEATURE_SOFTMAX) {
      double dot = 0.0;
      for (int64_t m = 0; m < r; m++) dot += (double)fi[m] * dfi[m];
      for (int64_t m = 0; m < r; m++) dui[m] = fi[m] * (float)((double)dfi[m] - dot);
    } else {
      for (int64_t m = 0; m < r; m++) dui[m] = fi[m] > 1.0f ? dfi[m] : dfi[m] * fi[m];
    }
  }
}

/* For each key block C, the query blocks G (ascending) with C ∈ sel[G]. */
static void transpose_selection(const dt_cpu_slr_head *hd, bwd_head *bh) {
  const int64_t n = hd->s.n, K = hd->s.K;
  int64_t *start = bh->inv_start;
  memset(start, 0, (size_t)(n + 1) * sizeof(int64_t));
  for (int64_t e = 0; e < n * K; e++) start[hd->sel[e] + 1]++;
  for (int64_t c = 0; c < n; c++) start[c + 1] += start[c];
  for (int64_t G = 0; G < n; G++) /* start[c] runs to the end of c's list */
    for (int64_t t = 0; t < K; t++) bh->inv_items[start[hd->sel[G * K + t]]++] = (int32_t)G;
  for (int64_t c = n; c > 0; c--) start[c] = start[c - 1];
  start[0] = 0;
}

/* Pass 1 for query block G. */
static void query_block(const dt_ropeslr_bwd *p, const dt_cpu_slr_problem *pr,
                        const dt_cpu_slr_head *hd, bwd_head *bh, int64_t G, int64_t T,
                        const bwd_bufs *t) {
  const dt_slr_shape *s = &hd->s;
  const int64_t D = s->D, r = s->r, b = hd->b, h = hd->h;
  const float scale = p->params.scale;
  const ditattn_tensor *W = &p->weights->W, *A = &p->weights->A;
  const dt_cpu_softmax_state sm = {t->mx, t->sum, t->acc};
  const int64_t kept = dt_cpu_slr_background(hd, G, t->in_sel, t->Sbg, t->Sbg_f, t->zbg);
  float *dWG = bh->dWp + G * D * D, *dAG = bh->dAp + G * D * r;
  memset(t->PGf, 0, (size_t)(r * D) * sizeof(float));
  memset(dWG, 0, (size_t)(D * D) * sizeof(float));
  memset(dAG, 0, (size_t)(D * r) * sizeof(float));
  for (int64_t m = 0; m < r; m++) t->pG[m] = 0.0;
  int64_t first, count;
  dt_cpu_slr_block_rows(s, G, &first, &count);
  for (int64_t t0 = 0; t0 < count; t0 += T) {
    const int64_t rows = count - t0 < T ? count - t0 : T, q0 = first + t0;
    const float *f = hd->f + q0 * r;
    dt_cpu_load_rows(p->q, b, h, q0, rows, 1.0f, t->qraw);
    dt_cpu_load_rows(p->q, b, h, q0, rows, scale, t->qs);
    dt_cpu_load_rows(p->dout, b, h, q0, rows, 1.0f, t->dO);
    dt_cpu_slr_sparse_rows(hd, pr, G, rows, t->qs, &sm, t->scratch, t->kbuf, t->vbuf, t->os,
                           t->lse);
    dt_cpu_slr_lowrank_rows(hd, kept, t->Sbg_f, t->zbg, q0, rows, t->olr, t->den);
    for (int64_t i = 0; i < rows; i++) {
      double acc = 0.0;
      for (int64_t d = 0; d < D; d++) acc += (double)t->dO[i * D + d] * t->os[i * D + d];
      t->delta[i] = (float)acc;
    }
    /* o = o_s + o_lr W: dW += o_lrᵀ dO, do_lr = dO Wᵀ. */
    dt_cpu_gemm(1, 0, D, D, rows, 1.0f, t->olr, D, t->dO, D, 1.0f, dWG, D);
    dt_cpu_gemm(0, 1, rows, D, D, 1.0f, t->dO, D, dt_f32_at(W, 0, h, 0, 0), W->stride[2], 0.0f,
                t->dolr, D);
    memset(t->du, 0, (size_t)(rows * r) * sizeof(float));
    if (kept < s->n) {
      for (int64_t i = 0; i < rows; i++) {
        const double den = t->den[i];
        float *yi = t->y + i * D;
        if (den == 0.0) { /* the forward's guard: o_lr is the constant 0 */
          memset(yi, 0, (size_t)D * sizeof(float));
          t->cc[i] = 0.0f;
          continue;
        }
        double c = 0.0;
        for (int64_t d = 0; d < D; d++) c += (double)t->dolr[i * D + d] * t->olr[i * D + d];
        for (int64_t d = 0; d < D; d++) yi[d] = (float)(t->dolr[i * D + d] / den);
        t->cc[i] = (float)(c / den);
      }
      dt_cpu_gemm(1, 0, r, D, rows, 1.0f, f, r, t->y, D, 1.0f, t->PGf, D);
      for (int64_t i = 0; i < rows; i++)
        for (int64_t m = 0; m < r; m++) t->pG[m] -= (double)f[i * r + m] * t->cc[i];
      /* f·df = 0 on every row (o_lr does not change when f_i is scaled), so
       * with r = 1 df is exactly 0: keep du = 0 rather than rounding noise. */
      if (r > 1) {
        dt_cpu_gemm(0, 1, rows, r, D, 1.0f, t->y, D, t->Sbg_f, D, 0.0f, t->df, r);
        for (int64_t i = 0; i < rows; i++)
          for (int64_t m = 0; m < r; m++) t->df[i * r + m] -= (float)(t->cc[i] * t->zbg[m]);
        phi_backward(p->params.feature, rows, r, f, t->df, t->du);
      }
    }
    memcpy(bh->duf + q0 * r, t->du, (size_t)(rows * r) * sizeof(float));
    /* Sparse dq = scale · dS · K over the selected blocks. */
    memset(t->dq, 0, (size_t)(rows * D) * sizeof(float));
    for (int64_t sl = 0; sl < s->K; sl++) {
      int64_t k0, kn;
      dt_cpu_slr_block_rows(s, hd->sel[G * s->K + sl], &k0, &kn);
      for (int64_t j0 = 0; j0 < kn; j0 += KC) {
        const int64_t kc = kn - j0 < KC ? kn - j0 : KC;
        const float *kp = dt_f32_at(p->k, b, h, k0 + j0, 0);
        dt_cpu_backward_tile(rows, kc, D, scale, t->qraw, t->dO, t->lse, t->delta, kp,
                             p->k->stride[2], dt_f32_at(p->v, b, h, k0 + j0, 0), p->v->stride[2],
                             NULL, t->p, t->ds, t->kpack);
        dt_cpu_acc_pv(0, rows, kc, D, t->ds, kc, kp, p->k->stride[2], t->dq, D);
      }
    }
    /* Low-rank: dq += du Aᵀ, dA += Qᵀ du. */
    dt_cpu_gemm(0, 1, rows, D, r, 1.0f, t->du, r, dt_f32_at(A, 0, h, 0, 0), A->stride[2], 1.0f,
                t->dq, D);
    dt_cpu_gemm(1, 0, D, r, rows, 1.0f, t->qraw, D, t->du, r, 1.0f, dAG, r);
    dt_cpu_store_rows(p->dq, b, h, q0, rows, t->dq);
    memcpy(bh->lse + q0, t->lse, (size_t)rows * sizeof(float));
    memcpy(bh->delta + q0, t->delta, (size_t)rows * sizeof(float));
  }
  double *PG = bh->PG + G * r * D;
  for (int64_t e = 0; e < r * D; e++) PG[e] = (double)t->PGf[e];
  for (int64_t m = 0; m < r; m++) bh->pG[G * r + m] = t->pG[m];
}

/* Pass 2 for key block C. */
static void key_block(const dt_ropeslr_bwd *p, const dt_cpu_slr_head *hd, bwd_head *bh, int64_t C,
                      int64_t T, const bwd_bufs *t) {
  const dt_slr_shape *s = &hd->s;
  const int64_t D = s->D, r = s->r, b = hd->b, h = hd->h;
  const ditattn_tensor *Bk = &p->weights->Bk;
  int64_t k0, kn;
  dt_cpu_slr_block_rows(s, C, &k0, &kn);
  const float *kC = dt_f32_at(p->k, b, h, k0, 0), *vC = dt_f32_at(p->v, b, h, k0, 0);
  const int64_t ldk = p->k->stride[2], ldv = p->v->stride[2];
  memset(t->dk, 0, (size_t)(kn * D) * sizeof(float));
  memset(t->dv, 0, (size_t)(kn * D) * sizeof(float));
  double *dS = t->Sbg, *dz = t->zbg;
  memcpy(dS, bh->P, (size_t)(r * D) * sizeof(double));
  memcpy(dz, bh->pt, (size_t)r * sizeof(double));
  for (int64_t e = bh->inv_start[C]; e < bh->inv_start[C + 1]; e++) {
    const int64_t G = bh->inv_items[e];
    const double *PG = bh->PG + G * r * D, *pG = bh->pG + G * r;
    for (int64_t x = 0; x < r * D; x++) dS[x] -= PG[x];
    for (int64_t m = 0; m < r; m++) dz[m] -= pG[m];
    int64_t first, count;
    dt_cpu_slr_block_rows(s, G, &first, &count);
    for (int64_t t0 = 0; t0 < count; t0 += T) {
      const int64_t rows = count - t0 < T ? count - t0 : T, q0 = first + t0;
      dt_cpu_load_rows(p->q, b, h, q0, rows, 1.0f, t->qraw);
      dt_cpu_load_rows(p->dout, b, h, q0, rows, 1.0f, t->dO);
      for (int64_t j0 = 0; j0 < kn; j0 += KC) {
        const int64_t kc = kn - j0 < KC ? kn - j0 : KC;
        dt_cpu_backward_tile(rows, kc, D, p->params.scale, t->qraw, t->dO, bh->lse + q0,
                             bh->delta + q0, kC + j0 * ldk, ldk, vC + j0 * ldv, ldv, NULL, t->p,
                             t->ds, t->kpack);
        /* dV += Pᵀ dO, dK += dSᵀ Q (dS carries the scale). */
        dt_cpu_acc_pv(1, kc, rows, D, t->p, kc, t->dO, D, t->dv + j0 * D, D);
        dt_cpu_acc_pv(1, kc, rows, D, t->ds, kc, t->qraw, D, t->dk + j0 * D, D);
      }
    }
  }
  /* Background: dv_j += dS_Cᵀ g_j, dg_j = dS_C v_j + dz_C, then through φ. */
  for (int64_t x = 0; x < r * D; x++) t->Sbg_f[x] = (float)dS[x];
  const float *g = hd->g + k0 * r;
  dt_cpu_gemm(0, 0, kn, D, r, 1.0f, g, r, t->Sbg_f, D, 1.0f, t->dv, D);
  dt_cpu_gemm(0, 1, kn, r, D, 1.0f, vC, ldv, t->Sbg_f, D, 0.0f, t->dG, r);
  for (int64_t j = 0; j < kn; j++)
    for (int64_t m = 0; m < r; m++) t->dG[j * r + m] += (float)dz[m];
  phi_backward(p->params.feature, kn, r, g, t->dG, t->dG);
  memcpy(bh->dug + k0 * r, t->dG, (size_t)(kn * r) * sizeof(float));
  dt_cpu_gemm(0, 1, kn, D, r, 1.0f, t->dG, r, dt_f32_at(Bk, 0, h, 0, 0), Bk->stride[2], 1.0f, t->dk,
              D);
  dt_cpu_gemm(1, 0, D, r, kn, 1.0f, kC, ldk, t->dG, r, 0.0f, bh->dBp + C * D * r, r);
  dt_cpu_store_rows(p->dk, b, h, k0, kn, t->dk);
  dt_cpu_store_rows(p->dv, b, h, k0, kn, t->dv);
}

/* Pass 3: the head's weight partials into the double gradients. */
static void reduce_weights(const dt_ropeslr_bwd *p, const dt_cpu_slr_head *hd, bwd_head *bh,
                           int dt_nt) {
  const dt_slr_shape *s = &hd->s;
  const int64_t D = s->D, r = s->r, n = s->n, N = s->N, h = hd->h;
  const ditattn_ropeslr_weights *w = p->weights;
  (void)dt_nt; /* used by the OpenMP pragmas only */
  double *dW = bh->dW + h * D * D, *dA = bh->dA + h * D * r, *dB = bh->dB + h * D * r;
  DT_OMP_PARALLEL_FOR
  for (int64_t d = 0; d < D; d++)
    for (int64_t G = 0; G < n; G++) {
      const float *wp = bh->dWp + (G * D + d) * D, *ap = bh->dAp + (G * D + d) * r;
      const float *bp = bh->dBp + (G * D + d) * r;
      for (int64_t e = 0; e < D; e++) dW[d * D + e] += (double)wp[e];
      for (int64_t m = 0; m < r; m++) {
        dA[d * r + m] += (double)ap[m];
        dB[d * r + m] += (double)bp[m];
      }
    }
  const int64_t T = w->Et.shape[2], Hg = w->Ey.shape[2], Wg = w->Ex.shape[2];
  double *dEt = bh->dEt + h * T * r, *dEy = bh->dEy + h * Hg * r, *dEx = bh->dEx + h * Wg * r;
  DT_OMP_PARALLEL_FOR
  for (int64_t m = 0; m < r; m++)
    for (int64_t i = 0; i < N; i++) {
      const double du = (double)bh->duf[i * r + m] + (double)bh->dug[i * r + m];
      const int32_t *ps = p->pos + 3 * i;
      dEt[ps[0] * r + m] += du;
      dEy[ps[1] * r + m] += du;
      dEx[ps[2] * r + m] += du;
    }
}

static void store_weights(const bwd_head *bh, const ditattn_ropeslr_weights *w,
                          ditattn_ropeslr_weights *dw) {
  const ditattn_tensor *shapes[6] = {&w->A, &w->Bk, &w->Et, &w->Ey, &w->Ex, &w->W};
  ditattn_tensor *outs[6] = {&dw->A, &dw->Bk, &dw->Et, &dw->Ey, &dw->Ex, &dw->W};
  const double *src[6] = {bh->dA, bh->dB, bh->dEt, bh->dEy, bh->dEx, bh->dW};
  for (int a = 0; a < 6; a++) {
    const int64_t H = shapes[a]->shape[1], rows = shapes[a]->shape[2], cols = shapes[a]->shape[3];
    for (int64_t h = 0; h < H; h++)
      for (int64_t row = 0; row < rows; row++) {
        float *dst = dt_f32_at(outs[a], 0, h, row, 0);
        const double *g = src[a] + (h * rows + row) * cols;
        for (int64_t col = 0; col < cols; col++) dst[col] = (float)g[col];
      }
  }
}

ditattn_status dt_cpu_slr_backward(ditattn_context *ctx, const dt_ropeslr_bwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], N = p->q->shape[2], D = p->q->shape[3];
  const int64_t block = p->params.block, n = N / block + (N % block != 0), r = p->params.rank;
  const dt_slr_shape s = {N, D, r, block, n, p->topk};
  const int dt_nt = dt_cpu_num_threads(ctx);
  const int64_t T = block < DT_CPU_QUERY_TILE ? block : DT_CPU_QUERY_TILE;
  const dt_cpu_slr_problem pr = {&p->params, p->weights, p->pos, p->q, p->k, p->v};
  bwd_bufs probe;
  const size_t per_thread = bwd_layout(NULL, &s, T, &probe);
  size_t arena_bytes;
  if (!dt_mul_size(per_thread, (size_t)dt_nt, &arena_bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "ropeslr backward (cpu): thread buffers overflow");
  dt_cpu_slr_head hd;
  bwd_head bh;
  TRY_CPU(dt_cpu_slr_head_alloc(ctx, &s, dt_nt, &hd));
  ditattn_status st = bwd_head_alloc(ctx, &s, p->weights, &bh);
  char *arena = st == DITATTN_OK ? dt_malloc(arena_bytes) : NULL;
  if (st == DITATTN_OK && !arena)
    st =
        dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "ropeslr backward (cpu): %d thread buffers", dt_nt);
  if (st != DITATTN_OK) {
    bwd_head_free(&bh);
    dt_cpu_slr_head_free(&hd);
    return st;
  }
  const int blas = dt_cpu_blas_enter();
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++) {
      dt_cpu_slr_head_prepare(&hd, &pr, b, h);
      transpose_selection(&hd, &bh);
      DT_OMP_PARALLEL_FOR
      for (int64_t G = 0; G < n; G++) {
        bwd_bufs t;
        bwd_layout(arena + (size_t)dt_cpu_thread_id() * per_thread, &s, T, &t);
        query_block(p, &pr, &hd, &bh, G, T, &t);
      }
      DT_OMP_PARALLEL_FOR
      for (int64_t m = 0; m < r; m++) { /* P = Σ_G P_G, p = Σ_G p_G in block order */
        double pm = 0.0;
        for (int64_t d = 0; d < D; d++) bh.P[m * D + d] = 0.0;
        for (int64_t G = 0; G < n; G++) {
          const double *PG = bh.PG + (G * r + m) * D;
          for (int64_t d = 0; d < D; d++) bh.P[m * D + d] += PG[d];
          pm += bh.pG[G * r + m];
        }
        bh.pt[m] = pm;
      }
      DT_OMP_PARALLEL_FOR
      for (int64_t C = 0; C < n; C++) {
        bwd_bufs t;
        bwd_layout(arena + (size_t)dt_cpu_thread_id() * per_thread, &s, T, &t);
        key_block(p, &hd, &bh, C, T, &t);
      }
      reduce_weights(p, &hd, &bh, dt_nt);
    }
  dt_cpu_blas_leave(blas);
  store_weights(&bh, p->weights, p->dweights);
  dt_free(arena);
  bwd_head_free(&bh);
  dt_cpu_slr_head_free(&hd);
  return DITATTN_OK;
}
