/* Public entry points: dense attention, log-sum-exp merge, pooling. */
#include "validate.h"

/* Bytes of a [B][H][N] f32 lse buffer for t's shape; OVERFLOW names `name`. */
static ditattn_status lse_bytes(ditattn_context *ctx, const char *name, const ditattn_tensor *t,
                                size_t *bytes) {
  size_t rows;
  if (!dt_mul_size((size_t)t->shape[0], (size_t)t->shape[1], &rows) ||
      !dt_mul_size(rows, (size_t)t->shape[2], &rows) || !dt_mul_size(rows, sizeof(float), bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW,
                   "%s: byte size of %lld x %lld x %lld floats overflows", name,
                   (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2]);
  return DITATTN_OK;
}

ditattn_status ditattn_dense_forward(ditattn_context *ctx, const ditattn_tensor *q,
                                     const ditattn_tensor *k, const ditattn_tensor *v, float scale,
                                     ditattn_tensor *out, float *lse) {
  TRY(dt_begin(ctx));
  TRY(dt_check_tensor(ctx, "q", q));
  TRY(dt_check_tensor(ctx, "k", k));
  TRY(dt_check_tensor(ctx, "v", v));
  TRY(dt_check_output(ctx, "out", out));
  const int64_t B = q->shape[0], H = q->shape[1], Nq = q->shape[2], D = q->shape[3];
  const int64_t Nk = k->shape[2];
  TRY(dt_check_shape(ctx, "k", k, B, H, DT_ANY, D));
  TRY(dt_check_shape(ctx, "v", v, B, H, Nk, D));
  TRY(dt_check_shape(ctx, "out", out, B, H, Nq, D));
  TRY(dt_check_dtype(ctx, "q", q, q->dtype));
  TRY(dt_check_dtype(ctx, "k", k, q->dtype));
  TRY(dt_check_dtype(ctx, "v", v, q->dtype));
  TRY(dt_check_dtype(ctx, "out", out, q->dtype));
  TRY(dt_check_disjoint(ctx, "out", out, "q", q));
  TRY(dt_check_disjoint(ctx, "out", out, "k", k));
  TRY(dt_check_disjoint(ctx, "out", out, "v", v));
  if (lse) {
    size_t lse_size;
    TRY(lse_bytes(ctx, "lse", q, &lse_size));
    TRY(dt_check_buffer_disjoint(ctx, "lse", lse, lse_size, "out", out));
    TRY(dt_check_buffer_disjoint(ctx, "lse", lse, lse_size, "q", q));
    TRY(dt_check_buffer_disjoint(ctx, "lse", lse, lse_size, "k", k));
    TRY(dt_check_buffer_disjoint(ctx, "lse", lse, lse_size, "v", v));
  }
  dt_dense_fwd p = {q, k, v, out, lse, 0.0f};
  TRY(dt_resolve_scale(ctx, scale, D, &p.scale));
  UNSUPPORTED_IF_NULL(ctx, dense_forward, "dense_forward");
  return ctx->ops->dense_forward(ctx, &p);
}

ditattn_status ditattn_dense_backward(ditattn_context *ctx, const ditattn_tensor *q,
                                      const ditattn_tensor *k, const ditattn_tensor *v,
                                      const ditattn_tensor *out, const float *lse,
                                      const ditattn_tensor *dout, float scale, ditattn_tensor *dq,
                                      ditattn_tensor *dk, ditattn_tensor *dv) {
  TRY(dt_begin(ctx));
  TRY(dt_check_tensor(ctx, "q", q));
  TRY(dt_check_tensor(ctx, "k", k));
  TRY(dt_check_tensor(ctx, "v", v));
  TRY(dt_check_tensor(ctx, "out", out));
  TRY(dt_check_tensor(ctx, "dout", dout));
  if (!lse) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "lse is NULL (backward needs it)");
  TRY(dt_check_output(ctx, "dq", dq));
  TRY(dt_check_output(ctx, "dk", dk));
  TRY(dt_check_output(ctx, "dv", dv));
  const int64_t B = q->shape[0], H = q->shape[1], Nq = q->shape[2], D = q->shape[3];
  const int64_t Nk = k->shape[2];
  TRY(dt_check_shape(ctx, "k", k, B, H, DT_ANY, D));
  TRY(dt_check_shape(ctx, "v", v, B, H, Nk, D));
  TRY(dt_check_shape(ctx, "out", out, B, H, Nq, D));
  TRY(dt_check_shape(ctx, "dout", dout, B, H, Nq, D));
  TRY(dt_check_shape(ctx, "dq", dq, B, H, Nq, D));
  TRY(dt_check_shape(ctx, "dk", dk, B, H, Nk, D));
  TRY(dt_check_shape(ctx, "dv", dv, B, H, Nk, D));
  const ditattn_tensor *ins[] = {q, k, v, out, dout};
  const char *in_names[] = {"q", "k", "v", "out", "dout"};
  ditattn_tensor *outs[] = {dq, dk, dv};
  const char *out_names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 5; i++) TRY(dt_check_dtype(ctx, in_names[i], ins[i], q->dtype));
  for (int i = 0; i < 3; i++) {
    TRY(dt_check_dtype(ctx, out_names[i], outs[i], q->dtype));
    for (int j = 0; j < 5; j++)
      TRY(dt_check_disjoint(ctx, out_names[i], outs[i], in_names[j], ins[j]));
    for (int j = i + 1; j < 3; j++)
      TRY(dt_check_disjoint(ctx, out_names[i], outs[i], out_names[j], outs[j]));
  }
  size_t lse_size;
  TRY(lse_bytes(ctx, "lse", q, &lse_size));
  for (int i = 0; i < 3; i++)
    TRY(dt_check_buffer_disjoint(ctx, "lse", lse, lse_size, out_names[i], outs[i]));
  dt_dense_bwd p = {q, k, v, out, dout, lse, dq, dk, dv, 0.0f};
  TRY(dt_resolve_scale(ctx, scale, D, &p.scale));
  UNSUPPORTED_IF_NULL(ctx, dense_backward, "dense_backward");
  return ctx->ops->dense_backward(ctx, &p);
}

ditattn_status ditattn_lse_merge(ditattn_context *ctx, ditattn_tensor *out_acc, float *lse_acc,
                                 const ditattn_tensor *out_part, const float *lse_part) {
  TRY(dt_begin(ctx));
  TRY(dt_check_output(ctx, "out_acc", out_acc));
  TRY(dt_check_tensor(ctx, "out_part", out_part));
  if (!lse_acc) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "lse_acc is NULL");
  if (!lse_part) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "lse_part is NULL");
  TRY(dt_check_shape(ctx, "out_part", out_part, out_acc->shape[0], out_acc->shape[1],
                     out_acc->shape[2], out_acc->shape[3]));
  TRY(dt_check_dtype(ctx, "out_acc", out_acc, out_acc->dtype));
  TRY(dt_check_dtype(ctx, "out_part", out_part, out_acc->dtype));
  TRY(dt_check_disjoint(ctx, "out_acc", out_acc, "out_part", out_part));
  size_t lse_size;
  TRY(lse_bytes(ctx, "lse_acc", out_acc, &lse_size));
  TRY(dt_check_buffer_disjoint(ctx, "lse_acc", lse_acc, lse_size, "out_acc", out_acc));
  TRY(dt_check_buffer_disjoint(ctx, "lse_acc", lse_acc, lse_size, "out_part", out_part));
  TRY(dt_check_buffer_disjoint(ctx, "lse_part", lse_part, lse_size, "out_acc", out_acc));
  TRY(dt_check_buffers_disjoint(ctx, "lse_acc", lse_acc, lse_size, "lse_part", lse_part, lse_size));
  dt_lse_merge p = {out_acc, lse_acc, out_part, lse_part};
  UNSUPPORTED_IF_NULL(ctx, lse_merge, "lse_merge");
  return ctx->ops->lse_merge(ctx, &p);
}

ditattn_status ditattn_pool_mean(ditattn_context *ctx, const ditattn_tensor *x, int64_t block,
                                 ditattn_tensor *y) {
  TRY(dt_begin(ctx));
  TRY(dt_check_tensor(ctx, "x", x));
  TRY(dt_check_output(ctx, "y", y));
  if (block < 1)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "block = %lld, must be >= 1",
                   (long long)block);
  const int64_t n = x->shape[2] / block + (x->shape[2] % block != 0);
  TRY(dt_check_shape(ctx, "y", y, x->shape[0], x->shape[1], n, x->shape[3]));
  TRY(dt_check_dtype(ctx, "x", x, x->dtype));
  TRY(dt_check_dtype(ctx, "y", y, x->dtype));
  TRY(dt_check_disjoint(ctx, "y", y, "x", x));
  dt_pool p = {x, y, block};
  UNSUPPORTED_IF_NULL(ctx, pool, "pool");
  return ctx->ops->pool(ctx, &p);
}
