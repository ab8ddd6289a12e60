/* LLSA backward (§4) on the CPU, without atomics or dense masks: every
 * gradient row has one owner thread and a fixed accumulation order.
 *   dQ: per query tile, over the same key groups as the forward;
 *   fine dK/dV: per level-1 key block, over the query blocks that selected
 *     it (transposed selection lists, ascending);
 *   pooled dK/dV, level l < L: per level-(l+1) parent block P, over the
 *     query blocks G whose selection holds P (their queries attend P's
 *     children); level L: per chunk of pooled tokens, over all queries;
 *   then dk_j += dpk_l[c] / cnt_l[c] for the block c of every level. */
#include "cpu_llsa.h"

#include <string.h>

enum { KC = DT_CPU_KEY_CHUNK };

typedef struct bwd_lists { /* CSR: for each block c of a level, the query blocks selecting it */
  int64_t *start[DT_LLSA_LEVEL_SLOTS], *items[DT_LLSA_LEVEL_SLOTS];
} bwd_lists;

typedef struct thread_bufs {
  float *q, *g, *dq, *lse, *delta, *p, *ds, *kpack, *gk, *gv, *gw;
} thread_bufs;

static thread_bufs bufs_of(float *w, int64_t T, int64_t D, int64_t gmax) {
  thread_bufs t;
  t.q = w;
  t.g = t.q + T * D;
  t.dq = t.g + T * D;
  t.lse = t.dq + T * D;
  t.delta = t.lse + T;
  t.p = t.delta + T;
  t.ds = t.p + T * KC;
  t.kpack = t.ds + T * KC;
  t.gk = t.kpack + (KC + 16) * D;
  t.gv = t.gk + gmax * D;
  t.gw = t.gv + gmax * D;
  return t;
}

/* Loads q, dO, lse, delta of rows [n0, n0 + rows). */
static void load_query_rows(const dt_llsa_bwd *p, int64_t b, int64_t hi, int64_t n0, int64_t rows,
                            const float *lse_bh, const float *delta_bh, thread_bufs *t) {
  dt_cpu_load_rows(p->q, b, hi, n0, rows, 1.0f, t->q);
  dt_cpu_load_rows(p->dout, b, hi, n0, rows, 1.0f, t->g);
  memcpy(t->lse, lse_bh + n0, (size_t)rows * sizeof(float));
  memcpy(t->delta, delta_bh + n0, (size_t)rows * sizeof(float));
}

/* dq[r0 .. r0+rows) += scale · dS · K over n keys (chunked). */
static void query_grads(int64_t r0, int64_t rows, int64_t n, int64_t D, float scale, const float *k,
                        int64_t k_ld, const float *v, int64_t v_ld, const float *lnw,
                        thread_bufs *t) {
  for (int64_t j0 = 0; j0 < n; j0 += KC) {
    const int64_t m = n - j0 < KC ? n - j0 : KC;
    dt_cpu_backward_tile(rows, m, D, scale, t->q + r0 * D, t->g + r0 * D, t->lse + r0,
                         t->delta + r0, k + j0 * k_ld, k_ld, v + j0 * v_ld, v_ld,
                         lnw ? lnw + j0 : NULL, t->p, t->ds, t->kpack);
    dt_cpu_acc_pv(0, rows, m, D, t->ds, m, k + j0 * k_ld, k_ld, t->dq + r0 * D, D);
  }
}

/* dk, dv (n rows) += gradients from the `rows` loaded queries (chunked keys). */
static void key_grads(int64_t rows, int64_t n, int64_t D, float scale, const float *k, int64_t k_ld,
                      const float *v, int64_t v_ld, const float *lnw, float *dk, int64_t dk_ld,
                      float *dv, int64_t dv_ld, thread_bufs *t) {
  for (int64_t j0 = 0; j0 < n; j0 += KC) {
    const int64_t m = n - j0 < KC ? n - j0 : KC;
    dt_cpu_backward_tile(rows, m, D, scale, t->q, t->g, t->lse, t->delta, k + j0 * k_ld, k_ld,
                         v + j0 * v_ld, v_ld, lnw ? lnw + j0 : NULL, t->p, t->ds, t->kpack);
    dt_cpu_acc_pv(1, m, rows, D, t->p, m, t->g, D, dv + j0 * dv_ld, dv_ld);
    dt_cpu_acc_pv(1, m, rows, D, t->ds, m, t->q, D, dk + j0 * dk_ld, dk_ld);
  }
}

static void lists_free(bwd_lists *tl) {
  for (int l = 0; l < DT_LLSA_LEVEL_SLOTS; l++) {
    dt_free(tl->start[l]);
    dt_free(tl->items[l]);
  }
}

static int lists_alloc(const dt_llsa_geom *g, bwd_lists *tl) {
  memset(tl, 0, sizeof *tl);
  for (int l = 1; l <= g->L; l++) {
    tl->start[l] = dt_llsa_alloc(g->n[l] + 1, 1, sizeof(int64_t));
    tl->items[l] = dt_llsa_alloc(g->n[l], g->width[l] > 0 ? g->width[l] : 1, sizeof(int64_t));
    if (!tl->start[l] || !tl->items[l]) return 0;
  }
  return 1;
}

/* Transposes the selection of every level (ascending query block order). */
static void lists_build(const dt_cpu_llsa_head *h, bwd_lists *tl) {
  const dt_llsa_geom *g = &h->g;
  for (int l = 1; l <= g->L; l++) {
    const int64_t nl = g->n[l], w = g->width[l];
    int64_t *start = tl->start[l];
    memset(start, 0, (size_t)(nl + 1) * sizeof(int64_t));
    for (int64_t i = 0; i < nl * w; i++)
      if (h->sel[l][i] >= 0) start[h->sel[l][i] + 1]++;
    for (int64_t c = 0; c < nl; c++) start[c + 1] += start[c];
    for (int64_t gq = 0; gq < nl; gq++)
      for (int64_t r = 0; r < w; r++) {
        const int64_t c = h->sel[l][gq * w + r];
        if (c >= 0) tl->items[l][start[c]++] = gq;
      }
    for (int64_t c = nl; c > 0; c--) start[c] = start[c - 1]; /* undo the fill shift */
    start[0] = 0;
  }
}

ditattn_status dt_cpu_llsa_backward(ditattn_context *ctx, const dt_llsa_bwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], N = p->q->shape[2], D = p->q->shape[3];
  const float scale = p->params.scale;
  const int dt_nt = dt_cpu_num_threads(ctx);
  dt_cpu_llsa_head h;
  TRY_CPU(dt_cpu_llsa_head_alloc(ctx, &p->params, N, D, dt_nt, &h));
  const dt_llsa_geom *g = &h.g;
  const int L = g->L;
  const dt_cpu_llsa_tiling tiling = dt_cpu_llsa_tiles(g);
  const int64_t T = tiling.T, ntiles = tiling.count;
  const int64_t gmax = g->max_keys;
  const size_t per_thread = (size_t)T * (size_t)D * 3 + 2 * (size_t)T + 2 * (size_t)T * KC +
                            (size_t)(KC + 16) * (size_t)D + (size_t)gmax * (size_t)D * 2 +
                            (size_t)gmax;
  float *work = dt_llsa_alloc(dt_nt, (int64_t)per_thread, sizeof(float));
  float *delta = dt_llsa_alloc(N, 1, sizeof(float));
  float *dpk[DT_LLSA_LEVEL_SLOTS] = {0}, *dpv[DT_LLSA_LEVEL_SLOTS] = {0};
  bwd_lists tl = {{0}, {0}};
  int ok = work && delta && lists_alloc(g, &tl);
  for (int l = 1; l <= L && ok; l++) {
    dpk[l] = dt_llsa_alloc(g->n[l], D, sizeof(float));
    dpv[l] = dt_llsa_alloc(g->n[l], D, sizeof(float));
    ok = dpk[l] && dpv[l];
  }
  if (!ok) {
    for (int l = 1; l <= L; l++) {
      dt_free(dpk[l]);
      dt_free(dpv[l]);
    }
    lists_free(&tl);
    dt_free(work);
    dt_free(delta);
    dt_cpu_llsa_head_free(&h);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "llsa backward (cpu): work buffers (N = %lld)",
                   (long long)N);
  }
  const int blas = dt_cpu_tiles_use_blas(D) ? dt_cpu_blas_enter() : 1;
  for (int64_t b = 0; b < B; b++)
    for (int64_t hi = 0; hi < H; hi++) {
      const int64_t bh = b * H + hi;
      const float *lse_bh = p->lse + bh * N;
      dt_cpu_llsa_head_prepare(&h, p->q, p->k, p->v, b, hi);
      lists_build(&h, &tl);
      DT_OMP_PARALLEL_FOR
      for (int64_t i = 0; i < N; i++) {
        const float *o = dt_f32_at(p->out, b, hi, i, 0), *go = dt_f32_at(p->dout, b, hi, i, 0);
        double acc = 0.0;
        for (int64_t d = 0; d < D; d++) acc += (double)o[d] * go[d];
        delta[i] = (float)acc;
      }

      /* dQ: one query tile per work item, key groups as in the forward. */
      DT_OMP_PARALLEL_FOR
      for (int64_t t = 0; t < ntiles; t++) {
        thread_bufs tb_ = bufs_of(work + (size_t)dt_cpu_thread_id() * per_thread, T, D, gmax);
        int64_t g1_0, g1_1, q0, rows;
        dt_cpu_llsa_tile(g, &tiling, t, &g1_0, &g1_1, &q0, &rows);
        if (rows == 0) continue;
        load_query_rows(p, b, hi, q0, rows, lse_bh, delta, &tb_);
        memset(tb_.dq, 0, (size_t)(rows * D) * sizeof(float));
        query_grads(0, rows, g->n[L], D, scale, h.pk[L], D, h.pv[L], D, h.lnw[L], &tb_);
        for (int l = 1; l < L; l++) {
          const int64_t div = dt_cpu_llsa_level_div(g, l);
          for (int64_t a = g1_0; a < g1_1;) {
            const int64_t parent = a / div / g->b;
            int64_t e = a + 1;
            while (e < g1_1 && e / div / g->b == parent) e++;
            const int64_t n = dt_cpu_llsa_gather_pooled(&h, l, a / div, tb_.gk, tb_.gv, tb_.gw);
            int64_t r0, r1;
            dt_cpu_llsa_rows_of(g, a, e, q0, rows, &r0, &r1);
            query_grads(r0, r1 - r0, n, D, scale, tb_.gk, D, tb_.gv, D, tb_.gw, &tb_);
            a = e;
          }
        }
        for (int64_t g1 = g1_0; g1 < g1_1; g1++) {
          const int64_t n =
              dt_cpu_llsa_gather_fine(&h, p->k, p->v, b, hi, g1, tb_.gk, tb_.gv, NULL);
          int64_t r0, r1;
          dt_cpu_llsa_rows_of(g, g1, g1 + 1, q0, rows, &r0, &r1);
          query_grads(r0, r1 - r0, n, D, scale, tb_.gk, D, tb_.gv, D, NULL, &tb_);
        }
        dt_cpu_store_rows(p->dq, b, hi, q0, rows, tb_.dq);
      }

      /* Fine dK, dV: one level-1 key block per work item. */
      DT_OMP_PARALLEL_FOR
      for (int64_t c = 0; c < g->n[1]; c++) {
        thread_bufs tb_ = bufs_of(work + (size_t)dt_cpu_thread_id() * per_thread, T, D, gmax);
        const int64_t k0 = dt_llsa_block_start(g, 1, c), kn = dt_llsa_block_count(g, 1, c);
        float *dk = dt_f32_at(p->dk, b, hi, k0, 0), *dv = dt_f32_at(p->dv, b, hi, k0, 0);
        for (int64_t j = 0; j < kn; j++) {
          memset(dk + j * p->dk->stride[2], 0, (size_t)D * sizeof(float));
          memset(dv + j * p->dv->stride[2], 0, (size_t)D * sizeof(float));
        }
        for (int64_t i = tl.start[1][c]; i < tl.start[1][c + 1]; i++) {
          const int64_t g1 = tl.items[1][i];
          const int64_t q0 = dt_llsa_block_start(g, 1, g1), qn = dt_llsa_block_count(g, 1, g1);
          for (int64_t r0 = 0; r0 < qn; r0 += T) {
            const int64_t rows = qn - r0 < T ? qn - r0 : T;
            load_query_rows(p, b, hi, q0 + r0, rows, lse_bh, delta, &tb_);
            key_grads(rows, kn, D, scale, dt_f32_at(p->k, b, hi, k0, 0), p->k->stride[2],
                      dt_f32_at(p->v, b, hi, k0, 0), p->v->stride[2], NULL, dk, p->dk->stride[2],
                      dv, p->dv->stride[2], &tb_);
          }
        }
      }

      /* Pooled dK, dV of levels 1 .. L−1: one parent block P (level l+1) per item. */
      for (int l = 1; l < L; l++) {
        memset(dpk[l], 0, (size_t)(g->n[l] * D) * sizeof(float));
        memset(dpv[l], 0, (size_t)(g->n[l] * D) * sizeof(float));
        DT_OMP_PARALLEL_FOR
        for (int64_t P = 0; P < g->n[l + 1]; P++) {
          thread_bufs tb_ = bufs_of(work + (size_t)dt_cpu_thread_id() * per_thread, T, D, gmax);
          const int64_t c0 = P * g->b, cnt = c0 + g->b <= g->n[l] ? g->b : g->n[l] - c0;
          for (int64_t i = tl.start[l + 1][P]; i < tl.start[l + 1][P + 1]; i++) {
            const int64_t G = tl.items[l + 1][i];
            const int64_t q0 = dt_llsa_block_start(g, l + 1, G);
            const int64_t qn = dt_llsa_block_count(g, l + 1, G);
            for (int64_t r0 = 0; r0 < qn; r0 += T) {
              const int64_t rows = qn - r0 < T ? qn - r0 : T;
              load_query_rows(p, b, hi, q0 + r0, rows, lse_bh, delta, &tb_);
              key_grads(rows, cnt, D, scale, h.pk[l] + c0 * D, D, h.pv[l] + c0 * D, D,
                        h.lnw[l] + c0, dpk[l] + c0 * D, D, dpv[l] + c0 * D, D, &tb_);
            }
          }
        }
      }

      /* Pooled dK, dV of level L: one chunk of pooled tokens per item, all queries. */
      memset(dpk[L], 0, (size_t)(g->n[L] * D) * sizeof(float));
      memset(dpv[L], 0, (size_t)(g->n[L] * D) * sizeof(float));
      const int64_t nchunks = g->n[L] / KC + (g->n[L] % KC != 0);
      DT_OMP_PARALLEL_FOR
      for (int64_t ch = 0; ch < nchunks; ch++) {
        thread_bufs tb_ = bufs_of(work + (size_t)dt_cpu_thread_id() * per_thread, T, D, gmax);
        const int64_t c0 = ch * KC, cnt = c0 + KC <= g->n[L] ? KC : g->n[L] - c0;
        for (int64_t q0 = 0; q0 < N; q0 += T) {
          const int64_t rows = N - q0 < T ? N - q0 : T;
          load_query_rows(p, b, hi, q0, rows, lse_bh, delta, &tb_);
          key_grads(rows, cnt, D, scale, h.pk[L] + c0 * D, D, h.pv[L] + c0 * D, D, h.lnw[L] + c0,
                    dpk[L] + c0 * D, D, dpv[L] + c0 * D, D, &tb_);
        }
      }

      /* dk_j += Σ_l dpk_l[c] / cnt_l[c] (the mean's gradient), likewise dv. */
      DT_OMP_PARALLEL_FOR
      for (int64_t j = 0; j < N; j++) {
        float *dk = dt_f32_at(p->dk, b, hi, j, 0), *dv = dt_f32_at(p->dv, b, hi, j, 0);
        for (int l = 1; l <= L; l++) {
          const int64_t c = j / g->span[l];
          const float inv = 1.0f / (float)dt_llsa_block_count(g, l, c);
          const float *pk = dpk[l] + c * D, *pv = dpv[l] + c * D;
          for (int64_t d = 0; d < D; d++) {
            dk[d] += pk[d] * inv;
            dv[d] += pv[d] * inv;
          }
        }
      }
    }
  dt_cpu_blas_leave(blas);
  for (int l = 1; l <= L; l++) {
    dt_free(dpk[l]);
    dt_free(dpv[l]);
  }
  lists_free(&tl);
  dt_free(work);
  dt_free(delta);
  dt_cpu_llsa_head_free(&h);
  return DITATTN_OK;
}
