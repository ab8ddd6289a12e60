/* Public entry points: LLSA forward and backward. */
#include "validate.h"

#include <stdint.h>
#include <stdio.h>

ditattn_llsa_params ditattn_llsa_params_default(void) {
  ditattn_llsa_params p = {16, 2, {8, 8}, 0.0f};
  return p;
}

static ditattn_status check_params(ditattn_context *ctx, const ditattn_llsa_params *params) {
  if (!params) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "params is NULL");
  if (params->block < 2)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "block size b = %lld, must be >= 2",
                   (long long)params->block);
  if (params->levels < 1 || params->levels > DITATTN_LLSA_MAX_LEVELS)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "levels L = %d, must be in [1, %d]",
                   params->levels, DITATTN_LLSA_MAX_LEVELS);
  for (int l = 0; l < params->levels; l++) {
    if (params->topk[l] < 1)
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "top-K of level %d = %lld, must be >= 1",
                     l + 1, (long long)params->topk[l]);
    /* K·b^l keys per query must stay countable. */
    if (params->topk[l] > INT32_MAX)
      return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "top-K of level %d = %lld is too large", l + 1,
                     (long long)params->topk[l]);
  }
  return DITATTN_OK;
}

int64_t ditattn_llsa_selection_count(const ditattn_llsa_params *params, int64_t B, int64_t H,
                                     int64_t N, int level) {
  if (check_params(NULL, params) != DITATTN_OK || B < 1 || H < 1 || N < 1 || level < 1 ||
      level > params->levels)
    return 0;
  int64_t n = dt_ceil_div_pow(N, params->block, level);
  int64_t K = params->topk[level - 1];
  if (B > INT64_MAX / H || B * H > INT64_MAX / n || B * H * n > INT64_MAX / K) return 0;
  return B * H * n * K;
}

/* Shapes, dtypes and aliasing of q, k, v (inputs) and `outs` (outputs). */
static ditattn_status check_qkv(ditattn_context *ctx, const ditattn_tensor *q,
                                const ditattn_tensor *k, const ditattn_tensor *v,
                                const ditattn_tensor *const *extra_in,
                                const char *const *extra_in_names, int n_extra_in,
                                ditattn_tensor *const *outs, const char *const *out_names,
                                int n_out) {
  TRY(dt_check_tensor(ctx, "q", q));
  TRY(dt_check_tensor(ctx, "k", k));
  TRY(dt_check_tensor(ctx, "v", v));
  const int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2], D = q->shape[3];
  TRY(dt_check_shape(ctx, "k", k, B, H, N, D));
  TRY(dt_check_shape(ctx, "v", v, B, H, N, D));
  TRY(dt_check_dtype(ctx, "q", q, q->dtype));
  TRY(dt_check_dtype(ctx, "k", k, q->dtype));
  TRY(dt_check_dtype(ctx, "v", v, q->dtype));
  for (int i = 0; i < n_extra_in; i++) {
    TRY(dt_check_tensor(ctx, extra_in_names[i], extra_in[i]));
    TRY(dt_check_shape(ctx, extra_in_names[i], extra_in[i], B, H, N, D));
    TRY(dt_check_dtype(ctx, extra_in_names[i], extra_in[i], q->dtype));
  }
  for (int i = 0; i < n_out; i++) {
    TRY(dt_check_output(ctx, out_names[i], outs[i]));
    TRY(dt_check_shape(ctx, out_names[i], outs[i], B, H, N, D));
    TRY(dt_check_dtype(ctx, out_names[i], outs[i], q->dtype));
    TRY(dt_check_disjoint(ctx, out_names[i], outs[i], "q", q));
    TRY(dt_check_disjoint(ctx, out_names[i], outs[i], "k", k));
    TRY(dt_check_disjoint(ctx, out_names[i], outs[i], "v", v));
    for (int j = 0; j < n_extra_in; j++)
      TRY(dt_check_disjoint(ctx, out_names[i], outs[i], extra_in_names[j], extra_in[j]));
    for (int j = 0; j < i; j++) /* earlier outputs only: later ones are not checked yet */
      TRY(dt_check_disjoint(ctx, out_names[i], outs[i], out_names[j], outs[j]));
  }
  return DITATTN_OK;
}

/* Bytes of a [B][H][N] float lse buffer for q's shape (0 on overflow). */
static size_t lse_bytes_of(const ditattn_tensor *q) {
  size_t n;
  if (!dt_mul_size((size_t)q->shape[0], (size_t)q->shape[1], &n) ||
      !dt_mul_size(n, (size_t)q->shape[2], &n) || !dt_mul_size(n, sizeof(float), &n))
    return 0;
  return n;
}

/* A host buffer (lse or selection) must not overlap any listed tensor. */
static ditattn_status check_buffer_vs(ditattn_context *ctx, const char *name, const void *buf,
                                      size_t bytes, const ditattn_tensor *const *ts,
                                      const char *const *names, int n) {
  for (int i = 0; i < n; i++) TRY(dt_check_buffer_disjoint(ctx, name, buf, bytes, names[i], ts[i]));
  return DITATTN_OK;
}

static int buffers_overlap(const void *a, size_t na, const void *b, size_t nb) {
  uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
  return a && b && a0 < b0 + nb && b0 < a0 + na;
}

/* The optional selection arrays: indices must fit int32, sizes must be
 * representable, and no array may overlap a tensor, lse or another level. */
static ditattn_status check_selection(ditattn_context *ctx, const ditattn_llsa_params *params,
                                      const ditattn_llsa_selection *selection,
                                      const ditattn_tensor *const *ts, const char *const *names,
                                      int n, const float *lse, size_t lse_bytes) {
  const ditattn_tensor *q = ts[0];
  const int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2];
  size_t bytes[DITATTN_LLSA_MAX_LEVELS] = {0};
  for (int l = 0; l < params->levels; l++) {
    const int32_t *sel = selection->sel[l];
    if (!sel) continue;
    char name[32];
    snprintf(name, sizeof name, "selection->sel[%d]", l);
    if (dt_ceil_div_pow(N, params->block, l + 1) > (int64_t)INT32_MAX + 1)
      return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s: block indices of N = %lld exceed int32", name,
                     (long long)N);
    const int64_t count = ditattn_llsa_selection_count(params, B, H, N, l + 1);
    if (count == 0 || !dt_mul_size((size_t)count, sizeof(int32_t), &bytes[l]))
      return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s: size of B*H*n_l*K_l entries overflows", name);
    TRY(check_buffer_vs(ctx, name, sel, bytes[l], ts, names, n));
    if (buffers_overlap(sel, bytes[l], lse, lse_bytes))
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "%s overlaps lse in memory", name);
    for (int m = 0; m < l; m++)
      if (buffers_overlap(sel, bytes[l], selection->sel[m], bytes[m]))
        return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT,
                       "%s overlaps selection->sel[%d] in memory", name, m);
  }
  return DITATTN_OK;
}

ditattn_status ditattn_llsa_forward(ditattn_context *ctx, const ditattn_llsa_params *params,
                                    const ditattn_tensor *q, const ditattn_tensor *k,
                                    const ditattn_tensor *v, ditattn_tensor *out, float *lse,
                                    ditattn_llsa_selection *selection) {
  TRY(dt_begin(ctx));
  TRY(check_params(ctx, params));
  ditattn_tensor *outs[] = {out};
  const char *out_names[] = {"out"};
  TRY(check_qkv(ctx, q, k, v, NULL, NULL, 0, outs, out_names, 1));
  const size_t lse_bytes = lse_bytes_of(q);
  if (lse_bytes == 0)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "lse: size of B*H*N floats overflows");
  const ditattn_tensor *all[] = {q, k, v, out};
  const char *all_names[] = {"q", "k", "v", "out"};
  TRY(check_buffer_vs(ctx, "lse", lse, lse_bytes, all, all_names, 4));
  if (selection) TRY(check_selection(ctx, params, selection, all, all_names, 4, lse, lse_bytes));
  dt_llsa_fwd p = {*params, q, k, v, out, lse, selection, 0, {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0}};
  TRY(dt_resolve_scale(ctx, params->scale, q->shape[3], &p.params.scale));
  UNSUPPORTED_IF_NULL(ctx, llsa_forward, "llsa_forward");
  return ctx->ops->llsa_forward(ctx, &p);
}

ditattn_status ditattn_llsa_backward(ditattn_context *ctx, const ditattn_llsa_params *params,
                                     const ditattn_tensor *q, const ditattn_tensor *k,
                                     const ditattn_tensor *v, const ditattn_tensor *out,
                                     const float *lse, const ditattn_tensor *dout,
                                     ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv) {
  TRY(dt_begin(ctx));
  TRY(check_params(ctx, params));
  if (!lse) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "lse is NULL (backward needs it)");
  const ditattn_tensor *ins[] = {out, dout};
  const char *in_names[] = {"out", "dout"};
  ditattn_tensor *outs[] = {dq, dk, dv};
  const char *out_names[] = {"dq", "dk", "dv"};
  TRY(check_qkv(ctx, q, k, v, ins, in_names, 2, outs, out_names, 3));
  const size_t lse_bytes = lse_bytes_of(q);
  if (lse_bytes == 0)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "lse: size of B*H*N floats overflows");
  const ditattn_tensor *grads[] = {dq, dk, dv};
  TRY(check_buffer_vs(ctx, "lse", lse, lse_bytes, grads, out_names, 3));
  dt_llsa_bwd p = {*params, q, k, v, out, dout, lse, dq, dk, dv};
  TRY(dt_resolve_scale(ctx, params->scale, q->shape[3], &p.params.scale));
  UNSUPPORTED_IF_NULL(ctx, llsa_backward, "llsa_backward");
  return ctx->ops->llsa_backward(ctx, &p);
}
