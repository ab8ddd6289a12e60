/* Public entry points: 3D RoPE and token orders. */
#include "../ref/ref.h"
#include "validate.h"

#include <math.h>

/* Morton codes interleave 3 coordinates into 63 bits: 21 bits each. */
#define DT_MAX_GRID_EXTENT (INT64_C(1) << 21)

static ditattn_status check_grid(ditattn_context *ctx, const char *what, const int64_t grid[3],
                                 int64_t *count) {
  static const char *const axis[3] = {"T", "H", "W"};
  for (int a = 0; a < 3; a++) {
    if (grid[a] < 1 || grid[a] > DT_MAX_GRID_EXTENT)
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "%s grid %s = %lld, must be in [1, 2^21]",
                     what, axis[a], (long long)grid[a]);
  }
  /* T·H fits (each extent <= 2^21), but T·H·W may reach 2^63. */
  if (grid[0] * grid[1] > INT64_MAX / grid[2])
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s grid %lld x %lld x %lld has too many tokens",
                   what, (long long)grid[0], (long long)grid[1], (long long)grid[2]);
  *count = grid[0] * grid[1] * grid[2];
  return DITATTN_OK;
}

ditattn_status ditattn_rope_params_preset(ditattn_rope_preset preset, int64_t D, int64_t T,
                                          int64_t H, int64_t W, ditattn_rope_params *params) {
  if (!params) return DITATTN_ERR_NULL_POINTER;
  if (D < 2 || D % 2 != 0) return DITATTN_ERR_INVALID_ARGUMENT;
  ditattn_rope_params p = {{T, H, W}, {0, 0, 0}, 0.0, DITATTN_ROPE_INTERLEAVED};
  switch (preset) {
  case DITATTN_ROPE_PRESET_WAN21:
    p.theta = 10000.0;
    p.dims[1] = p.dims[2] = 2 * (D / 6);
    p.dims[0] = D - 4 * (D / 6);
    break;
  case DITATTN_ROPE_PRESET_HUNYUAN:
    /* (16, 56, 56) at D = 128; other D keep the proportions with even parts. */
    p.theta = 256.0;
    p.dims[0] = 2 * (D / 16);
    p.dims[1] = p.dims[2] = 2 * ((D - p.dims[0]) / 4);
    break;
  default: return DITATTN_ERR_INVALID_ARGUMENT;
  }
  *params = p;
  return DITATTN_OK;
}

static ditattn_status check_rope_params(ditattn_context *ctx, const ditattn_rope_params *params,
                                        int64_t D, int64_t *grid_count) {
  if (!params) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "params is NULL");
  TRY(check_grid(ctx, "rope", params->grid, grid_count));
  int64_t sum = 0;
  for (int a = 0; a < 3; a++) {
    if (params->dims[a] < 0 || params->dims[a] % 2 != 0 || params->dims[a] > D)
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT,
                     "rope dims[%d] = %lld, must be even and in [0, D = %lld]", a,
                     (long long)params->dims[a], (long long)D);
    if (params->dims[a] > D - sum) /* sum + dims[a] > D, without overflow */
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "rope dims sum to more than D = %lld",
                     (long long)D);
    sum += params->dims[a];
  }
  if (sum > D)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "rope dims sum to %lld > D = %lld",
                   (long long)sum, (long long)D);
  if (!(params->theta > 0.0) || !isfinite(params->theta))
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "rope theta = %g, must be finite and > 0",
                   params->theta);
  if (params->pairing != DITATTN_ROPE_INTERLEAVED && params->pairing != DITATTN_ROPE_HALF_SPLIT)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "rope pairing = %d is unknown",
                   (int)params->pairing);
  return DITATTN_OK;
}

ditattn_status dt_check_positions(ditattn_context *ctx, const int64_t grid[3], const int32_t *pos,
                                  int64_t N) {
  for (int64_t i = 0; i < N; i++) {
    for (int a = 0; a < 3; a++) {
      if (pos[3 * i + a] < 0 || pos[3 * i + a] >= grid[a])
        return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT,
                       "pos[%lld] axis %d = %d is outside the grid extent %lld", (long long)i, a,
                       (int)pos[3 * i + a], (long long)grid[a]);
    }
  }
  return DITATTN_OK;
}

ditattn_status dt_raster_positions(ditattn_context *ctx, const int64_t grid[3], int64_t N,
                                   int32_t **pos_out) {
  size_t bytes;
  if (!dt_mul_size((size_t)N, 3 * sizeof(int32_t), &bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "positions for N = %lld", (long long)N);
  int32_t *pos = dt_malloc(bytes);
  if (!pos) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "positions (%zu bytes)", bytes);
  ditattn_order_params raster = {DITATTN_ORDER_RASTER, {grid[0], grid[1], grid[2]}, {1, 1, 1}};
  dt_order_positions(&raster, pos);
  *pos_out = pos;
  return DITATTN_OK;
}

ditattn_status ditattn_rope_apply(ditattn_context *ctx, const ditattn_rope_params *params,
                                  const int32_t *pos, ditattn_direction direction,
                                  const ditattn_tensor *x, ditattn_tensor *y) {
  TRY(dt_begin(ctx));
  TRY(dt_check_tensor(ctx, "x", x));
  TRY(dt_check_output(ctx, "y", y));
  int64_t grid_count = 0;
  TRY(check_rope_params(ctx, params, x->shape[3], &grid_count));
  if (direction != DITATTN_FORWARD && direction != DITATTN_INVERSE)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "direction = %d", (int)direction);
  TRY(dt_check_shape(ctx, "y", y, x->shape[0], x->shape[1], x->shape[2], x->shape[3]));
  TRY(dt_check_dtype(ctx, "x", x, x->dtype));
  TRY(dt_check_dtype(ctx, "y", y, x->dtype));
  /* In place is fine when the views are identical; partial overlap is not. */
  int same_view = x->data == y->data && x->stride[0] == y->stride[0] &&
                  x->stride[1] == y->stride[1] && x->stride[2] == y->stride[2];
  if (!same_view) TRY(dt_check_disjoint(ctx, "y", y, "x", x));
  const int64_t N = x->shape[2];
  if (!pos && N != grid_count)
    return dt_fail(ctx, DITATTN_ERR_SHAPE_MISMATCH,
                   "x has N = %lld tokens but the raster grid has %lld (pass positions)",
                   (long long)N, (long long)grid_count);
  if (pos) {
    size_t pos_bytes;
    if (!dt_mul_size((size_t)N, 3 * sizeof(int32_t), &pos_bytes))
      return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "pos: byte size of %lld triples overflows",
                     (long long)N);
    TRY(dt_check_buffer_disjoint(ctx, "pos", pos, pos_bytes, "y", y));
    TRY(dt_check_positions(ctx, params->grid, pos, N));
  }
  UNSUPPORTED_IF_NULL(ctx, rope, "rope");
  int32_t *raster = NULL;
  if (!pos) {
    TRY(dt_raster_positions(ctx, params->grid, N, &raster));
    pos = raster;
  }
  dt_rope p = {*params, pos, direction, x, y};
  ditattn_status st = ctx->ops->rope(ctx, &p);
  dt_free(raster);
  return st;
}

static ditattn_status check_order_params(ditattn_context *ctx, const ditattn_order_params *params,
                                         int64_t *count) {
  if (!params) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "order params is NULL");
  if (params->kind != DITATTN_ORDER_RASTER && params->kind != DITATTN_ORDER_MORTON &&
      params->kind != DITATTN_ORDER_TILE)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "order kind = %d is unknown",
                   (int)params->kind);
  TRY(check_grid(ctx, "order", params->grid, count));
  if (params->kind == DITATTN_ORDER_TILE) {
    for (int a = 0; a < 3; a++)
      if (params->tile[a] < 1)
        return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "tile[%d] = %lld, must be >= 1", a,
                       (long long)params->tile[a]);
  }
  return DITATTN_OK;
}

ditattn_status ditattn_order_permutation(const ditattn_order_params *params,
                                         int64_t *seq_to_raster) {
  int64_t count = 0;
  if (!seq_to_raster) return DITATTN_ERR_NULL_POINTER;
  TRY(check_order_params(NULL, params, &count));
  return dt_order_seq_to_raster(params, seq_to_raster);
}

ditattn_status ditattn_order_positions(const ditattn_order_params *params, int32_t *pos) {
  int64_t count = 0;
  if (!pos) return DITATTN_ERR_NULL_POINTER;
  TRY(check_order_params(NULL, params, &count));
  return dt_order_positions(params, pos);
}

ditattn_status ditattn_order_apply(ditattn_context *ctx, const ditattn_order_params *params,
                                   ditattn_direction direction, const ditattn_tensor *x,
                                   ditattn_tensor *y) {
  TRY(dt_begin(ctx));
  int64_t count = 0;
  TRY(check_order_params(ctx, params, &count));
  TRY(dt_check_tensor(ctx, "x", x));
  TRY(dt_check_output(ctx, "y", y));
  if (direction != DITATTN_FORWARD && direction != DITATTN_INVERSE)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "direction = %d", (int)direction);
  if (x->shape[2] != count)
    return dt_fail(ctx, DITATTN_ERR_SHAPE_MISMATCH, "x has N = %lld tokens, grid has %lld",
                   (long long)x->shape[2], (long long)count);
  TRY(dt_check_shape(ctx, "y", y, x->shape[0], x->shape[1], x->shape[2], x->shape[3]));
  TRY(dt_check_dtype(ctx, "x", x, x->dtype));
  TRY(dt_check_dtype(ctx, "y", y, x->dtype));
  TRY(dt_check_disjoint(ctx, "y", y, "x", x));
  UNSUPPORTED_IF_NULL(ctx, order, "order");
  size_t bytes;
  if (!dt_mul_size((size_t)count, sizeof(int64_t), &bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "permutation of %lld tokens", (long long)count);
  int64_t *perm = dt_malloc(bytes);
  if (!perm) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "permutation (%zu bytes)", bytes);
  ditattn_status st = dt_order_seq_to_raster(params, perm);
  if (st == DITATTN_OK) {
    dt_order p = {perm, direction, x, y};
    st = ctx->ops->order(ctx, &p);
  } else {
    st = dt_fail(ctx, st, "computing the %d-order permutation", (int)params->kind);
  }
  dt_free(perm);
  return st;
}
