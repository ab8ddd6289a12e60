/* Reference RoPeSLR forward (spec §2-4): o = o_sparse + Wᵀ o_lowrank, head by
 * head, double accumulation. */
#include "ropeslr_internal.h"

ditattn_status dt_ref_ropeslr_forward_mode(ditattn_context *ctx, const dt_ropeslr_fwd *p,
                                           dt_slr_lowrank_mode mode) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], N = p->q->shape[2], D = p->q->shape[3];
  const int64_t block = p->params.block, n = N / block + (N % block != 0);
  /* out holds query rows [row0, row0 + M); the head forward still runs over
   * all N tokens (selection and the low-rank background need them). */
  const int64_t M = p->out->shape[2], row0 = p->q_row0;
  const dt_slr_shape s = {N, D, p->params.rank, block, n, p->topk};
  dt_slr_work ws;
  ditattn_status st = dt_slr_work_alloc(ctx, &s, 0, 0, &ws);
  if (st != DITATTN_OK) return st;
  for (int64_t b = 0; b < B && st == DITATTN_OK; b++) {
    for (int64_t h = 0; h < H && st == DITATTN_OK; h++) {
      st = dt_slr_head_forward(ctx, &p->params, p->weights, p->pos, p->q, p->k, p->v, b, h, mode,
                               &ws);
      if (st != DITATTN_OK) break;
      for (int64_t i = row0; i < row0 + M; i++) {
        float *oi = dt_f32_at(p->out, b, h, i - row0, 0);
        const double *olr = ws.olr + i * D;
        for (int64_t e = 0; e < D; e++) {
          double acc = ws.os[i * D + e];
          for (int64_t d = 0; d < D; d++)
            acc += (double)*dt_f32_at(&p->weights->W, 0, h, d, e) * olr[d];
          oi[e] = (float)acc;
        }
      }
      const int64_t head = b * H + h;
      if (p->lse_sparse)
        for (int64_t i = 0; i < M; i++) p->lse_sparse[head * M + i] = (float)ws.lse[row0 + i];
      if (p->sel)
        for (int64_t e = 0; e < n * s.K; e++) p->sel[head * n * s.K + e] = ws.sel[e];
    }
  }
  dt_slr_work_free(&ws);
  return st;
}

ditattn_status dt_ref_ropeslr_forward(ditattn_context *ctx, const dt_ropeslr_fwd *p) {
  return dt_ref_ropeslr_forward_mode(ctx, p, DT_SLR_LOWRANK_DIRECT);
}
