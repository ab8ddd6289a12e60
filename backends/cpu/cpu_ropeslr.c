/* RoPeSLR forward on the CPU (spec ropeslr.md §2-4). The sparse branch, the
 * O(N·K·b·D) part, runs through the tile kernel: one query tile per work
 * item, attending block by block to its selected key blocks straight from
 * the tensors. Selection reuses ref/'s helper (same selected sets by
 * construction); features and the O(N·r·D) low-rank factors follow ref/'s
 * double arithmetic exactly, split across threads. Backward: not
 * implemented for the CPU backend. */
#include "../../ref/ropeslr_internal.h"
#include "cpu_internal.h"

#include <string.h>

enum { KC = DT_CPU_KEY_CHUNK };

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ref/'s dt_slr_features over token chunks in parallel (each token is
 * independent, so the result is the same). */
static void features_parallel(const dt_slr_shape *s, const ditattn_tensor *proj,
                              const ditattn_ropeslr_weights *w, int64_t h, const int32_t *pos,
                              ditattn_slr_feature feature, const double *x, double *u, double *f,
                              int dt_nt) {
  enum { CHUNK = 256 };
  const int64_t chunks = s->N / CHUNK + (s->N % CHUNK != 0);
  DT_OMP_PARALLEL_FOR
  for (int64_t c = 0; c < chunks; c++) {
    dt_slr_shape sub = *s;
    const int64_t i0 = c * CHUNK;
    sub.N = min64(CHUNK, s->N - i0);
    dt_slr_features(&sub, proj, w, h, pos + 3 * i0, feature, x + i0 * s->D, u + i0 * s->r,
                    f + i0 * s->r);
  }
}

/* ref/'s dt_slr_lowrank_factors (spec §3) with its loops split across
 * threads; every sum keeps ref/'s order, so olr and den are identical.
 * fac: n·r·D + r·D + (n + 1)·r doubles; per-thread: r·D + r doubles + n bytes. */
static void lowrank_factors_parallel(const dt_slr_shape *s, const int32_t *sel, const double *f,
                                     const double *g, const double *v, double *fac,
                                     double *thread_bg, unsigned char *thread_in_sel, double *olr,
                                     double *den, int dt_nt) {
  const int64_t N = s->N, D = s->D, r = s->r, n = s->n, rd = r * D;
  double *SC = fac, *S = SC + n * rd, *zC = S + rd, *z = zC + n * r;
  DT_OMP_PARALLEL_FOR
  for (int64_t C = 0; C < n; C++) { /* S_C, z_C: tokens of block C in order */
    double *Sj = SC + C * rd, *zj = zC + C * r;
    memset(Sj, 0, (size_t)rd * sizeof(double));
    memset(zj, 0, (size_t)r * sizeof(double));
    for (int64_t j = C * s->block; j < min64((C + 1) * s->block, N); j++)
      for (int64_t m = 0; m < r; m++) {
        const double gm = g[j * r + m];
        zj[m] += gm;
        for (int64_t d = 0; d < D; d++) Sj[m * D + d] += gm * v[j * D + d];
      }
  }
  DT_OMP_PARALLEL_FOR
  for (int64_t m = 0; m < r; m++) { /* S = Σ_C S_C, z = Σ_C z_C in C order */
    z[m] = 0.0;
    for (int64_t C = 0; C < n; C++) z[m] += zC[C * r + m];
    for (int64_t d = 0; d < D; d++) {
      double acc = 0.0;
      for (int64_t C = 0; C < n; C++) acc += SC[C * rd + m * D + d];
      S[m * D + d] = acc;
    }
  }
  DT_OMP_PARALLEL_FOR
  for (int64_t G = 0; G < n; G++) {
    const int tid = dt_cpu_thread_id();
    double *Sbg = thread_bg + (size_t)tid * (size_t)(rd + r), *zbg = Sbg + rd;
    unsigned char *in_sel = thread_in_sel + (size_t)tid * (size_t)n;
    const int64_t kept = dt_slr_mark_selected(s, sel, G, in_sel);
    memcpy(Sbg, S, (size_t)rd * sizeof(double));
    memcpy(zbg, z, (size_t)r * sizeof(double));
    for (int64_t C = 0; C < n; C++) {
      if (!in_sel[C]) continue;
      for (int64_t m = 0; m < r; m++) zbg[m] -= zC[C * r + m];
      for (int64_t e = 0; e < rd; e++) Sbg[e] -= SC[C * rd + e];
    }
    for (int64_t i = G * s->block; i < min64((G + 1) * s->block, N); i++) {
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
}

ditattn_status dt_cpu_ropeslr_forward(ditattn_context *ctx, const dt_ropeslr_fwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], N = p->q->shape[2], D = p->q->shape[3];
  const int64_t block = p->params.block, n = N / block + (N % block != 0);
  const dt_slr_shape s = {N, D, p->params.rank, block, n, p->topk};
  const int dt_nt = dt_cpu_num_threads(ctx);
  const int64_t T = min64(block, DT_CPU_QUERY_TILE); /* query tile rows */
  const int64_t tiles_per_block = block / T + (block % T != 0), items = n * tiles_per_block;
  dt_slr_work ws;
  TRY_CPU(dt_slr_work_alloc(ctx, &s, 0, 0, &ws));
  /* Per thread: q tile, acc (T×D), max, sum (T), tile scratch. */
  const size_t per_thread = (size_t)T * (size_t)D * 2 + 2 * (size_t)T + DT_CPU_ATTEND_SCRATCH(T, D);
  size_t work_bytes;
  float *work = dt_mul_size((size_t)dt_nt * per_thread, sizeof(float), &work_bytes)
                    ? dt_malloc(work_bytes)
                    : NULL;
  float *os = dt_malloc((size_t)N * (size_t)D * sizeof(float));
  float *lse = dt_malloc((size_t)N * sizeof(float));
  const int64_t rd = s.r * D;
  /* Low-rank factors: n·r·D + r·D + (n + 1)·r doubles; per thread r·D + r doubles, n bytes.
   * Each term is below the N·D·r-sized arrays ref/'s workspace already holds. */
  size_t nrd = 0;
  const int fac_fits = dt_mul_size((size_t)n, (size_t)rd, &nrd) && nrd < (size_t)INT64_MAX / 4;
  double *fac = fac_fits ? dt_slr_alloc_doubles((int64_t)nrd + rd + (n + 1) * s.r) : NULL;
  double *thread_bg = dt_slr_alloc_doubles((int64_t)dt_nt * (rd + s.r));
  unsigned char *thread_in_sel = dt_malloc((size_t)dt_nt * (size_t)n);
  if (!work || !os || !lse || !fac || !thread_bg || !thread_in_sel) {
    dt_free(fac);
    dt_free(thread_bg);
    dt_free(thread_in_sel);
    dt_free(work);
    dt_free(os);
    dt_free(lse);
    dt_slr_work_free(&ws);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "ropeslr forward (cpu): buffers for N = %lld",
                   (long long)N);
  }
  const int blas = dt_cpu_blas_enter();
  ditattn_status st = DITATTN_OK;
  for (int64_t b = 0; b < B && st == DITATTN_OK; b++)
    for (int64_t h = 0; h < H && st == DITATTN_OK; h++) {
      const int64_t head = b * H + h;
      dt_slr_load_head(p->q, b, h, N, D, ws.q);
      dt_slr_load_head(p->k, b, h, N, D, ws.k);
      dt_slr_load_head(p->v, b, h, N, D, ws.v);
      dt_slr_select(&s, ws.q, ws.k, p->params.force_own_block, ws.scratch, ws.sel);

      /* Sparse branch: exact softmax over the tokens of the selected blocks. */
      DT_OMP_PARALLEL_FOR
      for (int64_t it = 0; it < items; it++) {
        float *w = work + (size_t)dt_cpu_thread_id() * per_thread;
        float *qt = w, *acc = qt + T * D, *mx = acc + T * D, *sum = mx + T, *scr = sum + T;
        const dt_cpu_softmax_state sm = {mx, sum, acc};
        const int64_t G = it / tiles_per_block, blk_end = min64((G + 1) * block, N);
        const int64_t q0 = G * block + (it % tiles_per_block) * T;
        if (q0 >= blk_end) continue;
        const int64_t rows = min64(T, blk_end - q0);
        dt_cpu_load_rows(p->q, b, h, q0, rows, p->params.scale, qt);
        dt_cpu_state_reset(&sm, rows, D);
        const int32_t *sel = ws.sel + G * s.K;
        for (int64_t t = 0; t < s.K; t++) {
          const int64_t k0 = (int64_t)sel[t] * block, kn = min64(block, N - k0);
          for (int64_t j0 = 0; j0 < kn; j0 += KC)
            dt_cpu_attend_tile(rows, min64(KC, kn - j0), D, qt, dt_f32_at(p->k, b, h, k0 + j0, 0),
                               p->k->stride[2], dt_f32_at(p->v, b, h, k0 + j0, 0), p->v->stride[2],
                               NULL, scr, &sm);
        }
        dt_cpu_state_finish(&sm, rows, D, os + q0 * D, D, lse + q0);
      }

      /* Low-rank branch: ref/'s arithmetic in double, loops split across threads. */
      features_parallel(&s, &p->weights->A, p->weights, h, p->pos, p->params.feature, ws.q, ws.u,
                        ws.f, dt_nt);
      features_parallel(&s, &p->weights->Bk, p->weights, h, p->pos, p->params.feature, ws.k, ws.w,
                        ws.g, dt_nt);
      lowrank_factors_parallel(&s, ws.sel, ws.f, ws.g, ws.v, fac, thread_bg, thread_in_sel, ws.olr,
                               ws.den, dt_nt);

      /* o = o_sparse + Wᵀ o_lowrank. */
      const ditattn_tensor *W = &p->weights->W;
      DT_OMP_PARALLEL_FOR
      for (int64_t i = 0; i < N; i++) {
        float *oi = dt_f32_at(p->out, b, h, i, 0);
        const double *olr = ws.olr + i * D;
        for (int64_t e = 0; e < D; e++) {
          double a = os[i * D + e];
          for (int64_t d = 0; d < D; d++) a += (double)*dt_f32_at(W, 0, h, d, e) * olr[d];
          oi[e] = (float)a;
        }
      }
      if (p->lse_sparse) memcpy(p->lse_sparse + head * N, lse, (size_t)N * sizeof(float));
      if (p->sel) memcpy(p->sel + head * n * s.K, ws.sel, (size_t)(n * s.K) * sizeof(int32_t));
    }
  dt_cpu_blas_leave(blas);
  dt_free(fac);
  dt_free(thread_bg);
  dt_free(thread_in_sel);
  dt_free(work);
  dt_free(os);
  dt_free(lse);
  dt_slr_work_free(&ws);
  return st;
}
