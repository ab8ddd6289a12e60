/* Local checks of the distributed RoPeSLR forward: the single-process API's
 * checks (backends/api_ropeslr.c) on this rank's slice, and the parameters
 * every rank must agree on. */
#include "dist_ropeslr.h"

#include <math.h>
#include <string.h>

static ditattn_status check_params(ditattn_context *ctx, const ditattn_ropeslr_params *p,
                                   int64_t *grid_count) {
  static const char *const axis[3] = {"T", "H", "W"};
  if (!p) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "params is NULL");
  if (p->block < 1)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "block size b = %lld, must be >= 1",
                   (long long)p->block);
  switch (p->policy) {
  case DITATTN_SLR_KEEP_FRACTION:
    if (!(p->rho > 0.0 && p->rho <= 1.0))
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "rho = %g, must be in (0, 1]", p->rho);
    break;
  case DITATTN_SLR_FIXED_K:
    if (p->topk < 1)
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "topk K = %lld, must be >= 1",
                     (long long)p->topk);
    break;
  case DITATTN_SLR_SQRT:
    if (!(p->sqrt_c > 0.0) || !isfinite(p->sqrt_c))
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "sqrt_c = %g, must be finite and > 0",
                     p->sqrt_c);
    break;
  default:
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "policy = %d is unknown", (int)p->policy);
  }
  if (p->force_own_block != 0 && p->force_own_block != 1)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "force_own_block = %d, must be 0 or 1",
                   p->force_own_block);
  if (p->rank < 1)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "rank r = %lld, must be >= 1",
                   (long long)p->rank);
  if (p->feature != DITATTN_SLR_FEATURE_ELU1 && p->feature != DITATTN_SLR_FEATURE_SOFTMAX)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "feature = %d is unknown", (int)p->feature);
  int64_t count = 1;
  for (int a = 0; a < 3; a++) {
    if (p->grid[a] < 1 || p->grid[a] > INT32_MAX)
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT,
                     "grid %s = %lld, must be in [1, 2^31 - 1] (params.grid must be set)", axis[a],
                     (long long)p->grid[a]);
    if (count > INT64_MAX / p->grid[a])
      return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "grid T·H·W overflows int64");
    count *= p->grid[a];
  }
  *grid_count = count;
  return DITATTN_OK;
}

/* (1, H, rows, cols) f32 views, disjoint from out and lse_sparse. */
static ditattn_status check_weights(ditattn_context *ctx, const ditattn_ropeslr_weights *w,
                                    const ditattn_ropeslr_params *p, int64_t H, int64_t D,
                                    const ditattn_tensor *out, const char *out_name,
                                    const float *lse, size_t lse_bytes) {
  static const char *const names[6] = {"A", "Bk", "Et", "Ey", "Ex", "W"};
  if (!w) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "weights is NULL");
  const ditattn_tensor *views[6] = {&w->A, &w->Bk, &w->Et, &w->Ey, &w->Ex, &w->W};
  const int64_t rows[6] = {D, D, p->grid[0], p->grid[1], p->grid[2], D};
  const int64_t r = p->rank, cols[6] = {r, r, r, r, r, D};
  for (int a = 0; a < 6; a++) {
    TRY(dt_check_tensor(ctx, names[a], views[a]));
    TRY(dt_check_shape(ctx, names[a], views[a], 1, H, rows[a], cols[a]));
    if (views[a]->dtype != DITATTN_F32)
      return dt_fail(ctx, DITATTN_ERR_DTYPE, "%s has dtype %d, RoPeSLR weights are f32 (%d)",
                     names[a], (int)views[a]->dtype, (int)DITATTN_F32);
    TRY(dt_check_disjoint(ctx, out_name, out, names[a], views[a]));
    TRY(dt_check_buffer_disjoint(ctx, "lse_sparse", lse, lse_bytes, names[a], views[a]));
  }
  return DITATTN_OK;
}

ditattn_status dt_dist_slr_check(ditattn_context *ctx, const ditattn_dist_slice *slice,
                                 const ditattn_ropeslr_params *params,
                                 const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                 const ditattn_tensor *q, const ditattn_tensor *k,
                                 const ditattn_tensor *v, const ditattn_tensor *out,
                                 const char *out_name, const float *lse_sparse,
                                 int64_t prm[DT_DP_COUNT]) {
  TRY(dt_dist_check_local_as(ctx, slice, q, k, v, out, out_name, lse_sparse, prm));
  int64_t grid_count = 0;
  TRY(check_params(ctx, params, &grid_count));
  const int64_t B = q->shape[0], H = q->shape[1], D = q->shape[3], len = slice->length;
  const size_t lse_bytes = (size_t)(B * H * len) * sizeof(float); /* checked by check_local */
  TRY(check_weights(ctx, weights, params, H, D, out, out_name, lse_sparse, lse_bytes));
  if (!pos && slice->n_global != grid_count)
    return dt_fail(ctx, DITATTN_ERR_SHAPE_MISMATCH,
                   "n_global = %lld tokens but the raster grid T·H·W has %lld (pass positions)",
                   (long long)slice->n_global, (long long)grid_count);
  if (pos) {
    TRY(dt_check_positions(ctx, params->grid, pos, len));
    TRY(dt_check_buffer_disjoint(ctx, "pos", pos, (size_t)len * 3 * sizeof(int32_t), out_name,
                                 out));
    TRY(dt_check_buffers_disjoint(ctx, "lse_sparse", lse_sparse, lse_bytes, "pos", pos,
                                  (size_t)len * 3 * sizeof(int32_t)));
  }
  const int64_t n = slice->n_global / params->block + (slice->n_global % params->block != 0);
  if (n > INT32_MAX)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%lld blocks do not fit int32 selection indices",
                   (long long)n);
  float scale = 0.0f;
  TRY(dt_dist_scale_param(ctx, params->scale, D, &scale, prm));
  int64_t rho_bits = 0, c_bits = 0;
  memcpy(&rho_bits, &params->rho, sizeof rho_bits);
  memcpy(&c_bits, &params->sqrt_c, sizeof c_bits);
  prm[DT_DP_BLOCK] = params->block;
  prm[DT_DP_SLR_POLICY] = params->policy;
  /* Only the policy's own parameter matters (the others may differ). */
  prm[DT_DP_SLR_RHO_BITS] = params->policy == DITATTN_SLR_KEEP_FRACTION ? rho_bits : 0;
  prm[DT_DP_SLR_TOPK] = params->policy == DITATTN_SLR_FIXED_K ? params->topk : 0;
  prm[DT_DP_SLR_SQRT_C_BITS] = params->policy == DITATTN_SLR_SQRT ? c_bits : 0;
  prm[DT_DP_SLR_FORCE_OWN] = params->force_own_block;
  prm[DT_DP_SLR_RANK] = params->rank;
  prm[DT_DP_SLR_FEATURE] = params->feature;
  prm[DT_DP_SLR_GRID_T] = params->grid[0];
  prm[DT_DP_SLR_GRID_H] = params->grid[1];
  prm[DT_DP_SLR_GRID_W] = params->grid[2];
  prm[DT_DP_SLR_POS_GIVEN] = pos != NULL;
  return DITATTN_OK;
}

ditattn_status dt_dist_slr_check_grads(ditattn_context *ctx, const ditattn_dist_slice *slice,
                                       const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                       const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, const ditattn_tensor *dout,
                                       ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv,
                                       ditattn_ropeslr_weights *dweights) {
  static const char *const dw_names[6] = {"dA", "dBk", "dEt", "dEy", "dEx", "dW"};
  TRY(dt_dist_check_host(ctx, "dist ropeslr backward"));
  if (!dweights) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "dweights is NULL");
  const int64_t B = q->shape[0], H = q->shape[1], D = q->shape[3], len = slice->length;
  TRY(dt_check_dtype(ctx, "dout", dout, DITATTN_F32));
  const ditattn_tensor *wv[6] = {&weights->A,  &weights->Bk, &weights->Et,
                                 &weights->Ey, &weights->Ex, &weights->W};
  ditattn_tensor *dwv[6] = {&dweights->A,  &dweights->Bk, &dweights->Et,
                            &dweights->Ey, &dweights->Ex, &dweights->W};
  /* Inputs: q, k, v, dout, the weights and pos; outputs: dq, dk, dv and the
   * weight gradients, each disjoint from every input and every other. */
  const ditattn_tensor *ins[10] = {q, k, v, dout, wv[0], wv[1], wv[2], wv[3], wv[4], wv[5]};
  const char *in_names[10] = {"q", "k", "v", "dout", "A", "Bk", "Et", "Ey", "Ex", "W"};
  ditattn_tensor *outs[9] = {dq, dk, dv, dwv[0], dwv[1], dwv[2], dwv[3], dwv[4], dwv[5]};
  const char *out_names[9] = {"dq", "dk", "dv", "dA", "dBk", "dEt", "dEy", "dEx", "dW"};
  for (int i = 0; i < 9; i++) {
    TRY(dt_check_output(ctx, out_names[i], outs[i]));
    if (i < 3)
      TRY(dt_check_shape(ctx, out_names[i], outs[i], B, H, len, D));
    else
      TRY(dt_check_shape(ctx, dw_names[i - 3], outs[i], 1, H, wv[i - 3]->shape[2],
                         wv[i - 3]->shape[3]));
    TRY(dt_check_dtype(ctx, out_names[i], outs[i], DITATTN_F32));
    for (int j = 0; j < 10; j++)
      TRY(dt_check_disjoint(ctx, out_names[i], outs[i], in_names[j], ins[j]));
    for (int j = 0; j < i; j++)
      TRY(dt_check_disjoint(ctx, out_names[i], outs[i], out_names[j], outs[j]));
    if (pos)
      TRY(dt_check_buffer_disjoint(ctx, "pos", pos, (size_t)len * 3 * sizeof(int32_t), out_names[i],
                                   outs[i]));
  }
  return DITATTN_OK;
}
