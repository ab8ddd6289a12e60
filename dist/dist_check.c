/* Local argument checks of the dist entries (before the collective
 * agreement): the same checks as the single-process API, on the slice. */
#include "dist_device.h"
#include "dist_internal.h"

#include <string.h>

static const char *op_name(int64_t op) {
  switch (op) {
  case DT_DIST_OP_DENSE_FWD: return "dense forward";
  case DT_DIST_OP_LLSA_FWD: return "LLSA forward";
  case DT_DIST_OP_LLSA_BWD: return "LLSA backward";
  case DT_DIST_OP_ROPESLR_FWD: return "RoPeSLR forward";
  case DT_DIST_OP_ROPESLR_BWD: return "RoPeSLR backward";
  case DT_DIST_OP_DENSE_BWD: return "dense backward";
  default: return "this operation";
  }
}

static ditattn_status check_slice(ditattn_context *ctx, const ditattn_dist_slice *slice) {
  if (!slice) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "slice is NULL");
  if (slice->n_global < 1 || slice->offset < 0 || slice->length < 1 ||
      slice->offset > slice->n_global - slice->length)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT,
                   "slice [%lld, %lld + %lld) is not a non-empty part of [0, %lld)",
                   (long long)slice->offset, (long long)slice->offset, (long long)slice->length,
                   (long long)slice->n_global);
  return DITATTN_OK;
}

ditattn_status dt_dist_check_local(ditattn_context *ctx, const ditattn_dist_slice *slice,
                                   const ditattn_tensor *q, const ditattn_tensor *k,
                                   const ditattn_tensor *v, const ditattn_tensor *out,
                                   const float *lse, int64_t params[DT_DP_COUNT]) {
  return dt_dist_check_local_as(ctx, slice, q, k, v, out, "out", lse, params);
}

ditattn_status dt_dist_check_local_as(ditattn_context *ctx, const ditattn_dist_slice *slice,
                                      const ditattn_tensor *q, const ditattn_tensor *k,
                                      const ditattn_tensor *v, const ditattn_tensor *out,
                                      const char *out_name, const float *lse,
                                      int64_t params[DT_DP_COUNT]) {
  TRY(dt_begin(ctx));
  TRY(check_slice(ctx, slice));
  /* GPU contexts: the forwards have device-memory paths (dist_device*.c);
   * LLSA and RoPeSLR need a backend that computes a range of query rows. */
  const int device = dt_dist_is_device(ctx);
  const int64_t op = params[DT_DP_OP];
  if (device &&
      (op == DT_DIST_OP_LLSA_BWD || op == DT_DIST_OP_ROPESLR_BWD || op == DT_DIST_OP_DENSE_BWD))
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED,
                   "dist on a GPU context (backend %s): %s needs a host context (ref, cpu)",
                   ditattn_backend_name(ctx->backend), op_name(op));
  if (device && op != DT_DIST_OP_DENSE_FWD && !ctx->ops->query_rows)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED,
                   "dist %s on device memory: backend %s cannot restrict it to this rank's rows",
                   op_name(op), ditattn_backend_name(ctx->backend));
  if (!device && ctx->backend != DITATTN_BACKEND_REF && ctx->backend != DITATTN_BACKEND_CPU)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "dist does not support backend %s",
                   ditattn_backend_name(ctx->backend));
  TRY(dt_check_tensor(ctx, "q", q));
  TRY(dt_check_tensor(ctx, "k", k));
  TRY(dt_check_tensor(ctx, "v", v));
  TRY(dt_check_output(ctx, out_name, out));
  const int64_t B = q->shape[0], H = q->shape[1], D = q->shape[3];
  TRY(dt_check_shape(ctx, "q", q, B, H, slice->length, D));
  TRY(dt_check_shape(ctx, "k", k, B, H, slice->length, D));
  TRY(dt_check_shape(ctx, "v", v, B, H, slice->length, D));
  TRY(dt_check_shape(ctx, out_name, out, B, H, slice->length, D));
  /* Host dist is f32; device dense takes any dtype the backend does. */
  const ditattn_dtype dtype = device ? q->dtype : DITATTN_F32;
  if (device && !((ctx->ops->dtypes >> q->dtype) & 1u))
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "backend %s has no attention in dtype %d",
                   ditattn_backend_name(ctx->backend), (int)q->dtype);
  TRY(dt_check_dtype(ctx, "q", q, dtype));
  TRY(dt_check_dtype(ctx, "k", k, dtype));
  TRY(dt_check_dtype(ctx, "v", v, dtype));
  TRY(dt_check_dtype(ctx, out_name, out, dtype));
  TRY(dt_check_disjoint(ctx, out_name, out, "q", q));
  TRY(dt_check_disjoint(ctx, out_name, out, "k", k));
  TRY(dt_check_disjoint(ctx, out_name, out, "v", v));
  size_t lse_bytes = 0;
  if (!dt_mul_size((size_t)B * (size_t)H, (size_t)slice->length, &lse_bytes) ||
      !dt_mul_size(lse_bytes, sizeof(float), &lse_bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "lse size overflows");
  TRY(dt_check_buffer_disjoint(ctx, "lse", lse, lse_bytes, out_name, out));
  params[DT_DP_N_GLOBAL] = slice->n_global;
  params[DT_DP_B] = B;
  params[DT_DP_H] = H;
  params[DT_DP_D] = D;
  params[DT_DP_DTYPE] = (int64_t)q->dtype;
  params[DT_DP_BACKEND] = (int64_t)ctx->backend;
  return DITATTN_OK;
}

ditattn_status dt_dist_scale_param(ditattn_context *ctx, float scale, int64_t D, float *resolved,
                                   int64_t params[DT_DP_COUNT]) {
  TRY(dt_resolve_scale(ctx, scale, D, resolved));
  uint32_t bits = 0;
  memcpy(&bits, resolved, sizeof bits);
  params[DT_DP_SCALE_BITS] = bits;
  return DITATTN_OK;
}

/* Host memory only, whatever the shared checks allow for other calls. */
ditattn_status dt_dist_check_host(ditattn_context *ctx, const char *what) {
  if (ctx->backend != DITATTN_BACKEND_REF && ctx->backend != DITATTN_BACKEND_CPU)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED,
                   "%s supports host backends (ref, cpu) only; backend %s is not", what,
                   ditattn_backend_name(ctx->backend));
  return DITATTN_OK;
}

/* Shapes, dtypes and aliasing of a backward's extra tensors, the same
 * rules as the single-process backwards (q, k, v, out checked by
 * dt_dist_check_local). */
ditattn_status dt_dist_check_grads(ditattn_context *ctx, const char *what,
                                   const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                   const ditattn_tensor *k, const ditattn_tensor *v,
                                   const ditattn_tensor *out, const float *lse,
                                   const ditattn_tensor *dout, ditattn_tensor *dq,
                                   ditattn_tensor *dk, ditattn_tensor *dv) {
  TRY(dt_dist_check_host(ctx, what));
  if (!lse) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "lse is NULL (backward needs it)");
  const int64_t B = q->shape[0], H = q->shape[1], D = q->shape[3];
  TRY(dt_check_tensor(ctx, "dout", dout));
  TRY(dt_check_shape(ctx, "dout", dout, B, H, slice->length, D));
  TRY(dt_check_dtype(ctx, "dout", dout, DITATTN_F32));
  const ditattn_tensor *ins[] = {q, k, v, out, dout};
  const char *in_names[] = {"q", "k", "v", "out", "dout"};
  ditattn_tensor *outs[] = {dq, dk, dv};
  const char *out_names[] = {"dq", "dk", "dv"};
  size_t lse_bytes = 0;
  if (!dt_mul_size((size_t)B * (size_t)H, (size_t)slice->length, &lse_bytes) ||
      !dt_mul_size(lse_bytes, sizeof(float), &lse_bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "lse size overflows");
  for (int i = 0; i < 3; i++) {
    TRY(dt_check_output(ctx, out_names[i], outs[i]));
    TRY(dt_check_shape(ctx, out_names[i], outs[i], B, H, slice->length, D));
    TRY(dt_check_dtype(ctx, out_names[i], outs[i], DITATTN_F32));
    for (int j = 0; j < 5; j++)
      TRY(dt_check_disjoint(ctx, out_names[i], outs[i], in_names[j], ins[j]));
    for (int j = 0; j < i; j++)
      TRY(dt_check_disjoint(ctx, out_names[i], outs[i], out_names[j], outs[j]));
    TRY(dt_check_buffer_disjoint(ctx, "lse", lse, lse_bytes, out_names[i], outs[i]));
  }
  return DITATTN_OK;
}
