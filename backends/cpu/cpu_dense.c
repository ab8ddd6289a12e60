/* Dense attention, flash style: query tiles × key chunks with online
 * softmax; never an N×N buffer. Backward in two passes (dK/dV over key
 * blocks, then dQ over query blocks) so that every output row is written by
 * exactly one thread: no atomics, results independent of the thread count. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

enum { QT = DT_CPU_QUERY_TILE, KC = DT_CPU_KEY_CHUNK, BT = 256 /* backward block */ };

static int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

ditattn_status dt_cpu_dense_forward(ditattn_context *ctx, const dt_dense_fwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], Nq = p->q->shape[2], D = p->q->shape[3];
  const int64_t Nk = p->k->shape[2];
  const int64_t tiles = ceil_div(Nq, QT);
  const int dt_nt = dt_cpu_num_threads(ctx);
  ditattn_status dim_st = dt_cpu_check_dim(ctx, D, "dense forward");
  if (dim_st != DITATTN_OK) return dim_st;
  const size_t per_thread = (size_t)QT * (size_t)D * 2 + 2 * QT + DT_CPU_ATTEND_SCRATCH(QT, D);
  float *work = dt_malloc((size_t)dt_nt * per_thread * sizeof(float));
  if (!work)
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "dense forward: %d thread buffers", dt_nt);
  const int blas = dt_cpu_tiles_use_blas(D) ? dt_cpu_blas_enter() : 1;
  const int64_t items = B * H * tiles;
  DT_OMP_PARALLEL_FOR
  for (int64_t it = 0; it < items; it++) {
    float *w = work + (size_t)dt_cpu_thread_id() * per_thread;
    float *qt = w, *acc = w + QT * D, *mx = acc + QT * D, *sum = mx + QT, *s = sum + QT;
    const dt_cpu_softmax_state st = {mx, sum, acc};
    const int64_t bh = it / tiles, q0 = (it % tiles) * QT, b = bh / H, h = bh % H;
    const int64_t rows = Nq - q0 < QT ? Nq - q0 : QT;
    dt_cpu_load_rows(p->q, b, h, q0, rows, p->scale, qt);
    dt_cpu_state_reset(&st, rows, D);
    for (int64_t k0 = 0; k0 < Nk; k0 += KC) {
      const int64_t n = Nk - k0 < KC ? Nk - k0 : KC;
      dt_cpu_attend_tile(rows, n, D, qt, dt_f32_at(p->k, b, h, k0, 0), p->k->stride[2],
                         dt_f32_at(p->v, b, h, k0, 0), p->v->stride[2], NULL, s, &st);
    }
    dt_cpu_state_finish(&st, rows, D, dt_f32_at(p->out, b, h, q0, 0), p->out->stride[2],
                        p->lse ? p->lse + bh * Nq + q0 : NULL);
  }
  dt_cpu_blas_leave(blas);
  dt_free(work);
  return DITATTN_OK;
}

/* delta[r] = o_r · dO_r for rows [n0, n0 + rows). */
static void row_deltas(const ditattn_tensor *out, const ditattn_tensor *dout, int64_t b, int64_t h,
                       int64_t n0, int64_t rows, float *delta) {
  const int64_t D = out->shape[3];
  for (int64_t r = 0; r < rows; r++) {
    const float *o = dt_f32_at(out, b, h, n0 + r, 0), *g = dt_f32_at(dout, b, h, n0 + r, 0);
    double acc = 0.0;
    for (int64_t d = 0; d < D; d++) acc += (double)o[d] * g[d];
    delta[r] = (float)acc;
  }
}

ditattn_status dt_cpu_dense_backward(ditattn_context *ctx, const dt_dense_bwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], Nq = p->q->shape[2], D = p->q->shape[3];
  const int64_t Nk = p->k->shape[2];
  const float scale = p->scale;
  const int64_t qblocks = ceil_div(Nq, BT), kblocks = ceil_div(Nk, BT);
  const int dt_nt = dt_cpu_num_threads(ctx);
  ditattn_status dim_st = dt_cpu_check_dim(ctx, D, "dense backward");
  if (dim_st != DITATTN_OK) return dim_st;
  /* q, dO, acc (BT×D each) + lse, delta (BT) + p, ds (BT×BT each) + packed keys */
  const size_t per_thread =
      (size_t)BT * (size_t)D * 3 + 2 * BT + 2 * (size_t)BT * BT + (size_t)(BT + 16) * (size_t)D;
  float *work = dt_malloc((size_t)dt_nt * per_thread * sizeof(float));
  if (!work)
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "dense backward: %d thread buffers", dt_nt);
  const int blas = dt_cpu_tiles_use_blas(D) ? dt_cpu_blas_enter() : 1;

  /* Pass 1: dK, dV, one key block per work item. */
  const int64_t kitems = B * H * kblocks;
  DT_OMP_PARALLEL_FOR
  for (int64_t it = 0; it < kitems; it++) {
    float *w = work + (size_t)dt_cpu_thread_id() * per_thread;
    float *qb = w, *gb = qb + BT * D, *lse = gb + 2 * BT * D, *delta = lse + BT;
    float *pp = delta + BT, *ds = pp + BT * BT, *kpack = ds + BT * BT;
    const int64_t bh = it / kblocks, k0 = (it % kblocks) * BT, b = bh / H, h = bh % H;
    const int64_t kn = Nk - k0 < BT ? Nk - k0 : BT;
    const float *kp = dt_f32_at(p->k, b, h, k0, 0), *vp = dt_f32_at(p->v, b, h, k0, 0);
    float *dk = dt_f32_at(p->dk, b, h, k0, 0), *dv = dt_f32_at(p->dv, b, h, k0, 0);
    for (int64_t j = 0; j < kn; j++) {
      memset(dk + j * p->dk->stride[2], 0, (size_t)D * sizeof(float));
      memset(dv + j * p->dv->stride[2], 0, (size_t)D * sizeof(float));
    }
    for (int64_t qb0 = 0; qb0 < qblocks; qb0++) {
      const int64_t q0 = qb0 * BT, rows = Nq - q0 < BT ? Nq - q0 : BT;
      dt_cpu_load_rows(p->q, b, h, q0, rows, 1.0f, qb);
      dt_cpu_load_rows(p->dout, b, h, q0, rows, 1.0f, gb);
      for (int64_t r = 0; r < rows; r++) lse[r] = p->lse[bh * Nq + q0 + r];
      row_deltas(p->out, p->dout, b, h, q0, rows, delta);
      dt_cpu_backward_tile(rows, kn, D, scale, qb, gb, lse, delta, kp, p->k->stride[2], vp,
                           p->v->stride[2], NULL, pp, ds, kpack);
      /* dV += Pᵀ dO ; dK += dSᵀ Q (dS carries the scale), straight into the strided outputs */
      dt_cpu_acc_pv(1, kn, rows, D, pp, kn, gb, D, dv, p->dv->stride[2]);
      dt_cpu_acc_pv(1, kn, rows, D, ds, kn, qb, D, dk, p->dk->stride[2]);
    }
  }

  /* Pass 2: dQ, one query block per work item. */
  const int64_t qitems = B * H * qblocks;
  DT_OMP_PARALLEL_FOR
  for (int64_t it = 0; it < qitems; it++) {
    float *w = work + (size_t)dt_cpu_thread_id() * per_thread;
    float *qb = w, *gb = qb + BT * D, *dq = gb + BT * D, *lse = dq + BT * D, *delta = lse + BT;
    float *pp = delta + BT, *ds = pp + BT * BT, *kpack = ds + BT * BT;
    const int64_t bh = it / qblocks, q0 = (it % qblocks) * BT, b = bh / H, h = bh % H;
    const int64_t rows = Nq - q0 < BT ? Nq - q0 : BT;
    dt_cpu_load_rows(p->q, b, h, q0, rows, 1.0f, qb);
    dt_cpu_load_rows(p->dout, b, h, q0, rows, 1.0f, gb);
    for (int64_t r = 0; r < rows; r++) lse[r] = p->lse[bh * Nq + q0 + r];
    row_deltas(p->out, p->dout, b, h, q0, rows, delta);
    memset(dq, 0, (size_t)(rows * D) * sizeof(float));
    for (int64_t k0 = 0; k0 < Nk; k0 += BT) {
      const int64_t kn = Nk - k0 < BT ? Nk - k0 : BT;
      const float *kp = dt_f32_at(p->k, b, h, k0, 0), *vp = dt_f32_at(p->v, b, h, k0, 0);
      dt_cpu_backward_tile(rows, kn, D, scale, qb, gb, lse, delta, kp, p->k->stride[2], vp,
                           p->v->stride[2], NULL, pp, ds, kpack);
      dt_cpu_acc_pv(0, rows, kn, D, ds, kn, kp, p->k->stride[2], dq, D);
    }
    dt_cpu_store_rows(p->dq, b, h, q0, rows, dq);
  }
  dt_cpu_blas_leave(blas);
  dt_free(work);
  return DITATTN_OK;
}
