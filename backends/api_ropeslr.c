/* Public entry points of RoPeSLR (spec ropeslr.md): parameters, K, forward
 * and backward. Every argument is validated here once; entries get a
 * dt_ropeslr_fwd / dt_ropeslr_bwd with scale and K resolved and positions
 * always present. */
#include "../ref/ropeslr_internal.h"
#include "validate.h"

#include <math.h>
#include <stdint.h>

ditattn_ropeslr_params ditattn_ropeslr_params_default(void) {
  ditattn_ropeslr_params p = {64, DITATTN_SLR_KEEP_FRACTION, 0.10, 1,        1.0, 1,
                              64, DITATTN_SLR_FEATURE_ELU1,  0.0f, {0, 0, 0}};
  return p;
}

/* The block-selection part of params (all that K needs). */
static ditattn_status check_selection_params(ditattn_context *ctx,
                                             const ditattn_ropeslr_params *params) {
  if (!params) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "params is NULL");
  if (params->block < 1)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "block size b = %lld, must be >= 1",
                   (long long)params->block);
  switch (params->policy) {
  case DITATTN_SLR_KEEP_FRACTION:
    if (!(params->rho > 0.0 && params->rho <= 1.0))
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "rho = %g, must be in (0, 1]", params->rho);
    break;
  case DITATTN_SLR_FIXED_K:
    if (params->topk < 1)
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "topk K = %lld, must be >= 1",
                     (long long)params->topk);
    break;
  case DITATTN_SLR_SQRT:
    if (!(params->sqrt_c > 0.0) || !isfinite(params->sqrt_c))
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "sqrt_c = %g, must be finite and > 0",
                     params->sqrt_c);
    break;
  default:
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "policy = %d is unknown",
                   (int)params->policy);
  }
  if (params->force_own_block != 0 && params->force_own_block != 1)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "force_own_block = %d, must be 0 or 1",
                   params->force_own_block);
  return DITATTN_OK;
}

static ditattn_status check_params(ditattn_context *ctx, const ditattn_ropeslr_params *params,
                                   int64_t *grid_count) {
  static const char *const axis[3] = {"T", "H", "W"};
  TRY(check_selection_params(ctx, params));
  if (params->rank < 1)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "rank r = %lld, must be >= 1",
                   (long long)params->rank);
  if (params->feature != DITATTN_SLR_FEATURE_ELU1 && params->feature != DITATTN_SLR_FEATURE_SOFTMAX)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "feature = %d is unknown",
                   (int)params->feature);
  int64_t count = 1;
  for (int a = 0; a < 3; a++) {
    /* Positions are int32 triples. */
    if (params->grid[a] < 1 || params->grid[a] > INT32_MAX)
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT,
                     "grid %s = %lld, must be in [1, 2^31 - 1] (params.grid must be set)", axis[a],
                     (long long)params->grid[a]);
    if (count > INT64_MAX / params->grid[a])
      return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "grid T·H·W overflows int64");
    count *= params->grid[a];
  }
  *grid_count = count;
  return DITATTN_OK;
}

static int64_t block_count(int64_t N, int64_t block) { return N / block + (N % block != 0); }

int64_t ditattn_ropeslr_topk(const ditattn_ropeslr_params *params, int64_t N) {
  if (check_selection_params(NULL, params) != DITATTN_OK || N < 1) return 0;
  return dt_slr_resolve_topk(params, block_count(N, params->block));
}

int64_t ditattn_ropeslr_selection_count(const ditattn_ropeslr_params *params, int64_t B, int64_t H,
                                        int64_t N) {
  const int64_t K = ditattn_ropeslr_topk(params, N);
  if (K < 1 || B < 1 || H < 1) return 0;
  const int64_t n = block_count(N, params->block);
  if (B > INT64_MAX / H || B * H > INT64_MAX / n || B * H * n > INT64_MAX / K) return 0;
  return B * H * n * K;
}

/* ------------------------------------------------------------ aliasing */
/* A named byte range: a tensor's span or a raw buffer. */
typedef struct span {
  const char *name;
  const void *ptr;
  size_t bytes;
} span;

static span tensor_span(const char *name, const ditattn_tensor *t) {
  span s = {name, t->data, dt_tensor_span_bytes(t)};
  return s;
}

static int spans_overlap(const span *a, const span *b) {
  if (!a->ptr || !b->ptr) return 0;
  uintptr_t a0 = (uintptr_t)a->ptr, b0 = (uintptr_t)b->ptr;
  return a0 < b0 + b->bytes && b0 < a0 + a->bytes;
}

/* No output overlaps an input or another output. */
static ditattn_status check_aliasing(ditattn_context *ctx, const span *ins, int n_in,
                                     const span *outs, int n_out) {
  for (int o = 0; o < n_out; o++) {
    for (int i = 0; i < n_in; i++)
      if (spans_overlap(&outs[o], &ins[i]))
        return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "output %s overlaps input %s in memory",
                       outs[o].name, ins[i].name);
    for (int p = o + 1; p < n_out; p++)
      if (spans_overlap(&outs[o], &outs[p]))
        return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "output %s overlaps output %s in memory",
                       outs[o].name, outs[p].name);
  }
  return DITATTN_OK;
}

/* ------------------------------------------------------------ tensors */
static const char *const weight_names[6] = {"A", "Bk", "Et", "Ey", "Ex", "W"};
static const char *const dweight_names[6] = {"dA", "dBk", "dEt", "dEy", "dEx", "dW"};

static void weight_views(const ditattn_ropeslr_weights *w, const ditattn_tensor *views[6]) {
  views[0] = &w->A, views[1] = &w->Bk, views[2] = &w->Et;
  views[3] = &w->Ey, views[4] = &w->Ex, views[5] = &w->W;
}

/* Weights (or their gradients when is_output): (1,H,·,·) f32 views of the
 * shapes in ditattn.h. */
static ditattn_status check_weights(ditattn_context *ctx, const ditattn_ropeslr_weights *w,
                                    int is_output, const ditattn_ropeslr_params *params, int64_t H,
                                    int64_t D) {
  if (!w)
    return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "%s is NULL", is_output ? "dweights" : "weights");
  const ditattn_tensor *views[6];
  weight_views(w, views);
  const int64_t r = params->rank;
  const int64_t rows[6] = {D, D, params->grid[0], params->grid[1], params->grid[2], D};
  const int64_t cols[6] = {r, r, r, r, r, D};
  const char *const *names = is_output ? dweight_names : weight_names;
  for (int a = 0; a < 6; a++) {
    if (is_output)
      TRY(dt_check_output(ctx, names[a], views[a]));
    else
      TRY(dt_check_tensor(ctx, names[a], views[a]));
    TRY(dt_check_shape(ctx, names[a], views[a], 1, H, rows[a], cols[a]));
    if (views[a]->dtype != DITATTN_F32)
      return dt_fail(ctx, DITATTN_ERR_DTYPE, "%s has dtype %d, RoPeSLR weights are f32 (%d)",
                     names[a], (int)views[a]->dtype, (int)DITATTN_F32);
  }
  return DITATTN_OK;
}

/* q, k, v (and extra inputs like dout): same shape and dtype, dtype accepted. */
static ditattn_status check_qkv_like(ditattn_context *ctx, const ditattn_tensor *q,
                                     const ditattn_tensor *const *others, const char *const *names,
                                     int n_others, int n_outputs) {
  TRY(dt_check_tensor(ctx, "q", q));
  TRY(dt_check_dtype(ctx, "q", q, q->dtype));
  for (int i = 0; i < n_others; i++) {
    if (i >= n_others - n_outputs)
      TRY(dt_check_output(ctx, names[i], others[i]));
    else
      TRY(dt_check_tensor(ctx, names[i], others[i]));
    TRY(dt_check_shape(ctx, names[i], others[i], q->shape[0], q->shape[1], q->shape[2],
                       q->shape[3]));
    TRY(dt_check_dtype(ctx, names[i], others[i], q->dtype));
  }
  return DITATTN_OK;
}

/* N against the grid (raster order without pos), positions inside the grid,
 * block count representable in the int32 selection. */
static ditattn_status check_tokens(ditattn_context *ctx, const ditattn_ropeslr_params *params,
                                   int64_t grid_count, const int32_t *pos, int64_t N) {
  if (!pos && N != grid_count)
    return dt_fail(ctx, DITATTN_ERR_SHAPE_MISMATCH,
                   "q has N = %lld tokens but the raster grid T·H·W has %lld (pass positions)",
                   (long long)N, (long long)grid_count);
  if (pos) TRY(dt_check_positions(ctx, params->grid, pos, N));
  if (block_count(N, params->block) > INT32_MAX)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%lld blocks do not fit int32 selection indices",
                   (long long)block_count(N, params->block));
  return DITATTN_OK;
}

/* Bytes of B·H·N·... entries of elem bytes, or 0 on overflow. */
static size_t buffer_bytes(int64_t B, int64_t H, int64_t N, size_t elem) {
  size_t bytes;
  if (!dt_mul_size((size_t)B, (size_t)H, &bytes) || !dt_mul_size(bytes, (size_t)N, &bytes) ||
      !dt_mul_size(bytes, elem, &bytes))
    return 0;
  return bytes;
}

ditattn_status ditattn_ropeslr_forward(ditattn_context *ctx, const ditattn_ropeslr_params *params,
                                       const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                       const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, ditattn_tensor *out,
                                       float *lse_sparse, int32_t *sel) {
  TRY(dt_begin(ctx));
  int64_t grid_count;
  TRY(check_params(ctx, params, &grid_count));
  const ditattn_tensor *others[] = {k, v, out};
  const char *names[] = {"k", "v", "out"};
  TRY(check_qkv_like(ctx, q, others, names, 3, 1));
  const int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2], D = q->shape[3];
  TRY(check_weights(ctx, weights, 0, params, H, D));
  TRY(check_tokens(ctx, params, grid_count, pos, N));
  const size_t lse_bytes = buffer_bytes(B, H, N, sizeof(float));
  const int64_t sel_count = ditattn_ropeslr_selection_count(params, B, H, N);
  const size_t sel_bytes = sel_count > 0 ? buffer_bytes(sel_count, 1, 1, sizeof(int32_t)) : 0;
  if (lse_sparse && lse_bytes == 0)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "lse_sparse of B·H·N floats overflows");
  if (sel && sel_bytes == 0)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "sel of B·H·n·K int32 overflows");
  const size_t pos_bytes = pos ? buffer_bytes(N, 3, 1, sizeof(int32_t)) : 0;
  const ditattn_tensor *wv[6];
  weight_views(weights, wv);
  span ins[10] = {
      tensor_span("q", q), tensor_span("k", k), tensor_span("v", v), {"pos", pos, pos_bytes}};
  for (int a = 0; a < 6; a++) ins[4 + a] = tensor_span(weight_names[a], wv[a]);
  const span outs[3] = {
      tensor_span("out", out), {"lse_sparse", lse_sparse, lse_bytes}, {"sel", sel, sel_bytes}};
  TRY(check_aliasing(ctx, ins, 10, outs, 3));
  dt_ropeslr_fwd p = {*params, 0,   weights,    pos, q, k,
                      v,       out, lse_sparse, sel, 0, {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0}};
  TRY(dt_resolve_scale(ctx, params->scale, D, &p.params.scale));
  p.topk = ditattn_ropeslr_topk(params, N);
  UNSUPPORTED_IF_NULL(ctx, ropeslr_forward, "ropeslr_forward");
  int32_t *raster = NULL;
  if (!pos) {
    TRY(dt_raster_positions(ctx, params->grid, N, &raster));
    p.pos = raster;
  }
  ditattn_status st = ctx->ops->ropeslr_forward(ctx, &p);
  dt_free(raster);
  return st;
}

ditattn_status ditattn_ropeslr_backward(ditattn_context *ctx, const ditattn_ropeslr_params *params,
                                        const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                        const ditattn_tensor *q, const ditattn_tensor *k,
                                        const ditattn_tensor *v, const ditattn_tensor *dout,
                                        ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv,
                                        ditattn_ropeslr_weights *dweights) {
  TRY(dt_begin(ctx));
  int64_t grid_count;
  TRY(check_params(ctx, params, &grid_count));
  const ditattn_tensor *others[] = {k, v, dout, dq, dk, dv};
  const char *names[] = {"k", "v", "dout", "dq", "dk", "dv"};
  TRY(check_qkv_like(ctx, q, others, names, 6, 3));
  const int64_t H = q->shape[1], N = q->shape[2], D = q->shape[3];
  TRY(check_weights(ctx, weights, 0, params, H, D));
  TRY(check_weights(ctx, dweights, 1, params, H, D));
  TRY(check_tokens(ctx, params, grid_count, pos, N));
  const ditattn_tensor *wv[6], *dwv[6];
  weight_views(weights, wv);
  weight_views(dweights, dwv);
  span ins[11] = {tensor_span("q", q),
                  tensor_span("k", k),
                  tensor_span("v", v),
                  tensor_span("dout", dout),
                  {"pos", pos, pos ? buffer_bytes(N, 3, 1, sizeof(int32_t)) : 0}};
  span outs[9] = {tensor_span("dq", dq), tensor_span("dk", dk), tensor_span("dv", dv)};
  for (int a = 0; a < 6; a++) {
    ins[5 + a] = tensor_span(weight_names[a], wv[a]);
    outs[3 + a] = tensor_span(dweight_names[a], dwv[a]);
  }
  TRY(check_aliasing(ctx, ins, 11, outs, 9));
  dt_ropeslr_bwd p = {*params, 0, weights, pos, q, k, v, dout, dq, dk, dv, dweights};
  TRY(dt_resolve_scale(ctx, params->scale, D, &p.params.scale));
  p.topk = ditattn_ropeslr_topk(params, N);
  UNSUPPORTED_IF_NULL(ctx, ropeslr_backward, "ropeslr_backward");
  int32_t *raster = NULL;
  if (!pos) {
    TRY(dt_raster_positions(ctx, params->grid, N, &raster));
    p.pos = raster;
  }
  ditattn_status st = ctx->ops->ropeslr_backward(ctx, &p);
  dt_free(raster);
  return st;
}
