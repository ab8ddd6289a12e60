/* Memory-bound operations: mean pooling, log-sum-exp merge, 3D RoPE and
 * token permutation; parallel over rows, one writer per output row. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

ditattn_status dt_cpu_pool(ditattn_context *ctx, const dt_pool *p) {
  const int64_t B = p->x->shape[0], H = p->x->shape[1], N = p->x->shape[2], D = p->x->shape[3];
  const int64_t nb = p->y->shape[2], blk = p->block;
  const int dt_nt = dt_cpu_num_threads(ctx);
  ditattn_status dim_st = dt_cpu_check_dim(ctx, D, "pool");
  if (dim_st != DITATTN_OK) return dim_st;
  double *work = dt_malloc((size_t)dt_nt * (size_t)D * sizeof(double));
  if (!work) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "pool: thread buffers");
  const int64_t items = B * H * nb;
  DT_OMP_PARALLEL_FOR
  for (int64_t it = 0; it < items; it++) {
    double *acc = work + (size_t)dt_cpu_thread_id() * (size_t)D;
    const int64_t bh = it / nb, c = it % nb, b = bh / H, h = bh % H;
    const int64_t n0 = c * blk, n1 = n0 + blk < N ? n0 + blk : N;
    for (int64_t d = 0; d < D; d++) acc[d] = 0.0;
    for (int64_t n = n0; n < n1; n++) {
      const float *x = dt_f32_at(p->x, b, h, n, 0);
      for (int64_t d = 0; d < D; d++) acc[d] += x[d];
    }
    float *y = dt_f32_at(p->y, b, h, c, 0);
    for (int64_t d = 0; d < D; d++) y[d] = (float)(acc[d] / (double)(n1 - n0));
  }
  dt_free(work);
  return DITATTN_OK;
}

ditattn_status dt_cpu_lse_merge(ditattn_context *ctx, const dt_lse_merge *p) {
  const ditattn_tensor *oa = p->out_acc, *op = p->out_part;
  const int64_t B = oa->shape[0], H = oa->shape[1], N = oa->shape[2], D = oa->shape[3];
  const int dt_nt = dt_cpu_num_threads(ctx);
  const int64_t items = B * H * N;
  DT_OMP_PARALLEL_FOR
  for (int64_t it = 0; it < items; it++) {
    const int64_t bh = it / N, n = it % N, b = bh / H, h = bh % H;
    const double la = p->lse_acc[it], lp = p->lse_part[it];
    float *a = dt_f32_at(oa, b, h, n, 0);
    const float *x = dt_f32_at(op, b, h, n, 0);
    if (lp == -INFINITY) { /* empty part adds nothing; two empty sides give 0 (as ref/) */
      if (la == -INFINITY) memset(a, 0, (size_t)D * sizeof(float));
      continue;
    }
    if (la == -INFINITY) { /* empty accumulator: take the part */
      memcpy(a, x, (size_t)D * sizeof(float));
      p->lse_acc[it] = (float)lp;
      continue;
    }
    const double m = la > lp ? la : lp;
    const double lse = m + log(exp(la - m) + exp(lp - m));
    const double wa = exp(la - lse), wp = exp(lp - lse);
    for (int64_t d = 0; d < D; d++) a[d] = (float)(wa * a[d] + wp * x[d]);
    p->lse_acc[it] = (float)lse;
  }
  (void)ctx;
  return DITATTN_OK;
}

ditattn_status dt_cpu_rope(ditattn_context *ctx, const dt_rope *p) {
  const ditattn_tensor *x = p->x;
  ditattn_tensor *y = p->y;
  const int64_t B = x->shape[0], H = x->shape[1], N = x->shape[2], D = x->shape[3];
  const int64_t rot = p->params.dims[0] + p->params.dims[1] + p->params.dims[2];
  const int dt_nt = dt_cpu_num_threads(ctx);
  ditattn_status dim_st = dt_cpu_check_dim(ctx, D, "rope");
  if (dim_st != DITATTN_OK) return dim_st;
  /* Per thread: cos and sin of each rotated pair of one token. */
  float *work = dt_malloc((size_t)dt_nt * (size_t)(rot + 2) * sizeof(float));
  if (!work) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "rope: thread buffers");
  const double sign = p->direction == DITATTN_INVERSE ? -1.0 : 1.0;
  const int half_split = p->params.pairing == DITATTN_ROPE_HALF_SPLIT;
  DT_OMP_PARALLEL_FOR
  for (int64_t n = 0; n < N; n++) {
    float *cs = work + (size_t)dt_cpu_thread_id() * (size_t)(rot + 2), *sn = cs + rot / 2;
    int64_t pair = 0;
    for (int a = 0; a < 3; a++) {
      const int64_t da = p->params.dims[a];
      for (int64_t j = 0; j < da / 2; j++, pair++) {
        const double omega = pow(p->params.theta, -2.0 * (double)j / (double)da);
        const double phi = sign * (double)p->pos[3 * n + a] * omega;
        cs[pair] = (float)cos(phi);
        sn[pair] = (float)sin(phi);
      }
    }
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < H; h++) {
        const float *xs = dt_f32_at(x, b, h, n, 0);
        float *ys = dt_f32_at(y, b, h, n, 0);
        int64_t off = 0, pr = 0;
        for (int a = 0; a < 3; a++) {
          const int64_t da = p->params.dims[a], hd = da / 2;
          for (int64_t j = 0; j < hd; j++, pr++) {
            const int64_t i0 = half_split ? off + j : off + 2 * j;
            const int64_t i1 = half_split ? off + j + hd : off + 2 * j + 1;
            const float u = xs[i0], w = xs[i1];
            ys[i0] = u * cs[pr] - w * sn[pr];
            ys[i1] = u * sn[pr] + w * cs[pr];
          }
          off += da;
        }
        if (ys != xs)
          for (int64_t d = rot; d < D; d++) ys[d] = xs[d];
      }
  }
  dt_free(work);
  return DITATTN_OK;
}

ditattn_status dt_cpu_order(ditattn_context *ctx, const dt_order *p) {
  const int64_t B = p->x->shape[0], H = p->x->shape[1], N = p->x->shape[2], D = p->x->shape[3];
  const int dt_nt = dt_cpu_num_threads(ctx);
  const int inverse = p->direction == DITATTN_INVERSE;
  DT_OMP_PARALLEL_FOR
  for (int64_t s = 0; s < N; s++) {
    const int64_t r = p->seq_to_raster[s];
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < H; h++) {
        const float *src = dt_f32_at(p->x, b, h, inverse ? s : r, 0);
        memcpy(dt_f32_at(p->y, b, h, inverse ? r : s, 0), src, (size_t)D * sizeof(float));
      }
  }
  (void)ctx;
  return DITATTN_OK;
}
