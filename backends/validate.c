/* Argument validation, done once in the API layer before dispatch. */
#include "validate.h"

#include <math.h>
#include <stdint.h>

static const char *const dim_names[4] = {"B", "H", "N", "D"};

ditattn_status dt_begin(ditattn_context *ctx) {
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  dt_clear_error(ctx);
  return DITATTN_OK;
}

size_t dt_tensor_span_bytes(const ditattn_tensor *t) {
  size_t elem = ditattn_dtype_size(t->dtype);
  /* Last element offset: sum (shape_i - 1) * stride_i, plus D. int64 is
   * enough after the per-term overflow checks below. */
  uint64_t last = (uint64_t)t->shape[3];
  for (int i = 0; i < 3; i++) {
    uint64_t extent = (uint64_t)(t->shape[i] - 1);
    uint64_t stride = (uint64_t)t->stride[i];
    if (extent != 0 && stride > (UINT64_MAX / 2) / extent) return 0;
    uint64_t term = extent * stride;
    if (last > UINT64_MAX / 2 - term) return 0;
    last += term;
  }
  if (elem == 0 || last > (uint64_t)SIZE_MAX / elem) return 0;
  return (size_t)last * elem;
}

ditattn_status dt_check_tensor(ditattn_context *ctx, const char *name, const ditattn_tensor *t) {
  if (!t) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "tensor %s is NULL", name);
  if (!t->data) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "%s.data is NULL", name);
  if (ditattn_dtype_size(t->dtype) == 0)
    return dt_fail(ctx, DITATTN_ERR_DTYPE, "%s has unknown dtype %d", name, (int)t->dtype);
  for (int i = 0; i < 4; i++) {
    if (t->shape[i] < 1)
      return dt_fail(ctx, DITATTN_ERR_SHAPE_MISMATCH, "%s.shape[%d] (%s) = %lld, must be >= 1",
                     name, i, dim_names[i], (long long)t->shape[i]);
  }
  for (int i = 0; i < 3; i++) {
    if (t->stride[i] < 0)
      return dt_fail(ctx, DITATTN_ERR_BAD_STRIDE, "%s.stride[%d] (%s) = %lld, must be >= 0", name,
                     i, dim_names[i], (long long)t->stride[i]);
  }
  if (dt_tensor_span_bytes(t) == 0)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW,
                   "%s: byte size of shape (%lld,%lld,%lld,%lld) overflows", name,
                   (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2],
                   (long long)t->shape[3]);
  return DITATTN_OK;
}

ditattn_status dt_check_output(ditattn_context *ctx, const char *name, const ditattn_tensor *t) {
  ditattn_status st = dt_check_tensor(ctx, name, t);
  if (st != DITATTN_OK) return st;
  /* Sufficient non-overlap test: visiting outer dims by increasing stride,
   * each stride must clear everything inside it. */
  int order[3] = {0, 1, 2};
  for (int i = 0; i < 3; i++)
    for (int j = i + 1; j < 3; j++)
      if (t->stride[order[j]] < t->stride[order[i]]) {
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
      }
  int64_t inner = t->shape[3];
  for (int i = 0; i < 3; i++) {
    int d = order[i];
    if (t->shape[d] == 1) continue;
    if (t->stride[d] < inner)
      return dt_fail(ctx, DITATTN_ERR_BAD_STRIDE,
                     "output %s overlaps itself: stride of %s = %lld < %lld elements inside it",
                     name, dim_names[d], (long long)t->stride[d], (long long)inner);
    inner += (t->shape[d] - 1) * t->stride[d];
  }
  return DITATTN_OK;
}

ditattn_status dt_check_shape(ditattn_context *ctx, const char *name, const ditattn_tensor *t,
                              int64_t B, int64_t H, int64_t N, int64_t D) {
  const int64_t want[4] = {B, H, N, D};
  for (int i = 0; i < 4; i++) {
    if (want[i] != DT_ANY && t->shape[i] != want[i])
      return dt_fail(ctx, DITATTN_ERR_SHAPE_MISMATCH, "%s.shape[%d] (%s) = %lld, expected %lld",
                     name, i, dim_names[i], (long long)t->shape[i], (long long)want[i]);
  }
  return DITATTN_OK;
}

ditattn_status dt_check_dtype(ditattn_context *ctx, const char *name, const ditattn_tensor *t,
                              ditattn_dtype dtype) {
  if (t->dtype != dtype)
    return dt_fail(ctx, DITATTN_ERR_DTYPE,
                   "%s has dtype %d, expected %d (the dtype of the first tensor argument)", name,
                   (int)t->dtype, (int)dtype);
  if (!(ctx->ops->dtypes & (1u << (unsigned)dtype)))
    return dt_fail(ctx, DITATTN_ERR_DTYPE, "backend %s does not accept dtype %d (%s)",
                   ctx->ops->name, (int)dtype, name);
  return DITATTN_OK;
}

static int spans_overlap(const void *a, size_t na, const void *b, size_t nb) {
  uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
  return a0 < b0 + nb && b0 < a0 + na;
}

ditattn_status dt_check_disjoint(ditattn_context *ctx, const char *name_a, const ditattn_tensor *a,
                                 const char *name_b, const ditattn_tensor *b) {
  if (spans_overlap(a->data, dt_tensor_span_bytes(a), b->data, dt_tensor_span_bytes(b)))
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "%s overlaps %s in memory", name_a, name_b);
  return DITATTN_OK;
}

ditattn_status dt_check_buffer_disjoint(ditattn_context *ctx, const char *name, const void *buf,
                                        size_t bytes, const char *tname, const ditattn_tensor *t) {
  if (buf && spans_overlap(buf, bytes, t->data, dt_tensor_span_bytes(t)))
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "%s overlaps %s in memory", name, tname);
  return DITATTN_OK;
}

ditattn_status dt_check_buffers_disjoint(ditattn_context *ctx, const char *name_a, const void *a,
                                         size_t bytes_a, const char *name_b, const void *b,
                                         size_t bytes_b) {
  if (a && b && spans_overlap(a, bytes_a, b, bytes_b))
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "%s overlaps %s in memory", name_a, name_b);
  return DITATTN_OK;
}

ditattn_status dt_resolve_scale(ditattn_context *ctx, float scale, int64_t D, float *out) {
  if (!isfinite(scale)) return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "scale is not finite");
  *out = scale > 0.0f ? scale : (float)(1.0 / sqrt((double)D));
  return DITATTN_OK;
}

int64_t dt_pow_sat(int64_t b, int l) {
  int64_t p = 1;
  for (int i = 0; i < l; i++) {
    if (p > INT64_MAX / b) return INT64_MAX;
    p *= b;
  }
  return p;
}

int64_t dt_ceil_div_pow(int64_t N, int64_t b, int l) {
  int64_t p = dt_pow_sat(b, l);
  return N / p + (N % p != 0);
}
