/* LLSA forward (§3) on the CPU: each query tile (whole level-1 blocks)
 * attends, through the one tile kernel, to (1) every level-L pooled token,
 * (2) for l = 1 .. L−1 the pooled candidates shared by its level-(l+1)
 * block, gathered into contiguous tiles, (3) per level-1 block the fine
 * tokens of the selected blocks, gathered. One thread per tile. */
#include "cpu_llsa.h"

#include <string.h>

enum { KC = DT_CPU_KEY_CHUNK };

/* Attends rows [r0, r0 + rows) of the tile to n gathered keys, KC at a time;
 * kp: the same keys already packed (own kernels), or NULL. */
static void attend_chunked(int64_t r0, int64_t rows, int64_t n, int64_t D, const float *qt,
                           const float *k, const float *kp, const float *v, const float *lnw,
                           float *s, const dt_cpu_softmax_state *st) {
  const dt_cpu_softmax_state sub = {st->row_max + r0, st->row_sum + r0, st->acc + r0 * D};
  for (int64_t j0 = 0; j0 < n; j0 += KC) {
    const int64_t m = n - j0 < KC ? n - j0 : KC;
    if (kp) { /* KC is a multiple of the 16-key panels */
      dt_cpu_attend_tile_packed(rows, m, D, qt + r0 * D, kp + j0 * D, v + j0 * D, D,
                                lnw ? lnw + j0 : NULL, s, &sub);
      continue;
    }
    dt_cpu_attend_tile(rows, m, D, qt + r0 * D, k + j0 * D, D, v + j0 * D, D, lnw ? lnw + j0 : NULL,
                       s, &sub);
  }
}

ditattn_status dt_cpu_llsa_forward(ditattn_context *ctx, const dt_llsa_fwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], N = p->q->shape[2], D = p->q->shape[3];
  const int dt_nt = dt_cpu_num_threads(ctx);
  dt_cpu_llsa_head h;
  TRY_CPU(dt_cpu_llsa_head_alloc(ctx, &p->params, N, D, dt_nt, &h));
  const dt_llsa_geom *g = &h.g;
  const dt_cpu_llsa_tiling tiling = dt_cpu_llsa_tiles(g);
  const int64_t T = tiling.T, ntiles = tiling.count;
  const int64_t gmax = g->max_keys;
  /* Per thread: q tile, acc (T×D), max, sum (T), scores (T×KC), gathered k, v (gmax×D), w (gmax).
   */
  const size_t per_thread = (size_t)T * (size_t)D * 2 + 2 * (size_t)T +
                            DT_CPU_ATTEND_SCRATCH(T, D) + (size_t)(gmax + 16) * (size_t)D * 2 +
                            (size_t)gmax;
  float *work = dt_llsa_alloc(dt_nt, (int64_t)per_thread, sizeof(float));
  const float **krows = dt_llsa_alloc(dt_nt, gmax, sizeof(const float *));
  if (!work || !krows) {
    dt_free(work);
    dt_free(krows);
    dt_cpu_llsa_head_free(&h);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "llsa forward (cpu): %d thread buffers", dt_nt);
  }
  const int blas = dt_cpu_tiles_use_blas(D) ? dt_cpu_blas_enter() : 1;
  const int L = g->L;
  for (int64_t b = 0; b < B; b++)
    for (int64_t hi = 0; hi < H; hi++) {
      const int64_t bh = b * H + hi;
      dt_cpu_llsa_head_prepare(&h, p->q, p->k, p->v, b, hi);
      if (p->selection) dt_llsa_write_selection(g, (const int64_t *const *)h.sel, p->selection, bh);
      DT_OMP_PARALLEL_FOR
      for (int64_t t = 0; t < ntiles; t++) {
        float *w = work + (size_t)dt_cpu_thread_id() * per_thread;
        float *qt = w, *acc = qt + T * D, *mx = acc + T * D, *sum = mx + T, *s = sum + T;
        float *gk = s + DT_CPU_ATTEND_SCRATCH(T, D), *gv = gk + (gmax + 16) * D,
              *gw = gv + (gmax + 16) * D;
        const int own = dt_cpu_use_own_kernel;
        const float **krow = own ? krows + (size_t)dt_cpu_thread_id() * (size_t)gmax : NULL;
        const dt_cpu_softmax_state st = {mx, sum, acc};
        int64_t g1_0, g1_1, q0, rows;
        dt_cpu_llsa_tile(g, &tiling, t, &g1_0, &g1_1, &q0, &rows);
        if (rows == 0) continue;
        dt_cpu_load_rows(p->q, b, hi, q0, rows, p->params.scale, qt);
        dt_cpu_state_reset(&st, rows, D);
        /* (1) every pooled token of the coarsest level. */
        attend_chunked(0, rows, g->n[L], D, qt, h.pk[L], own ? h.pk_coarse_packed : NULL, h.pv[L],
                       h.lnw[L], s, &st);
        /* (2) pooled candidates of levels 1 .. L−1, shared per parent block. */
        for (int l = 1; l < L; l++) {
          const int64_t div = dt_cpu_llsa_level_div(g, l);
          for (int64_t a = g1_0; a < g1_1;) {
            const int64_t parent = a / div / g->b;
            int64_t e = a + 1;
            while (e < g1_1 && e / div / g->b == parent) e++;
            const int64_t n = dt_cpu_llsa_gather_pooled(&h, l, a / div, gk, gv, gw);
            int64_t r0, r1;
            dt_cpu_llsa_rows_of(g, a, e, q0, rows, &r0, &r1);
            attend_chunked(r0, r1 - r0, n, D, qt, gk, NULL, gv, gw, s, &st);
            a = e;
          }
        }
        /* (3) fine tokens of each level-1 block's selection. */
        for (int64_t g1 = g1_0; g1 < g1_1; g1++) {
          const int64_t n = dt_cpu_llsa_gather_fine(&h, p->k, p->v, b, hi, g1, gk, gv, krow);
          int64_t r0, r1;
          dt_cpu_llsa_rows_of(g, g1, g1 + 1, q0, rows, &r0, &r1);
          attend_chunked(r0, r1 - r0, n, D, qt, krow ? NULL : gk, krow ? gk : NULL, gv, NULL, s,
                         &st);
        }
        dt_cpu_state_finish(&st, rows, D, dt_f32_at(p->out, b, hi, q0, 0), p->out->stride[2],
                            p->lse ? p->lse + bh * N + q0 : NULL);
      }
    }
  dt_cpu_blas_leave(blas);
  dt_free(work);
  dt_free(krows);
  dt_cpu_llsa_head_free(&h);
  return DITATTN_OK;
}
