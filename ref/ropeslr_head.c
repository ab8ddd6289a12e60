/* Per-head helpers of the reference RoPeSLR: K from the policy, head loads,
 * checked allocation. */
#include "ropeslr_internal.h"

#include <math.h>
#include <stdint.h>

/* ceil(x) where x a hair above an integer (relative 1e-9, i.e. rounding of
 * rho·n such as 0.3·10 = 3.0000000000000004) counts as that integer. */
static int64_t tolerant_ceil(double x, int64_t n) {
  if (!(x < (double)n)) return n;
  double whole = floor(x);
  if (x - whole <= 1e-9 * fmax(1.0, x)) return (int64_t)whole;
  return (int64_t)whole + 1;
}

int64_t dt_slr_resolve_topk(const ditattn_ropeslr_params *params, int64_t n) {
  int64_t K;
  switch (params->policy) {
  case DITATTN_SLR_FIXED_K: K = params->topk < n ? params->topk : n; break;
  case DITATTN_SLR_SQRT: K = tolerant_ceil(params->sqrt_c * sqrt((double)n), n); break;
  case DITATTN_SLR_KEEP_FRACTION:
  default: K = tolerant_ceil(params->rho * (double)n, n); break;
  }
  if (K < 1) K = 1;
  return K > n ? n : K;
}

void dt_slr_load_head(const ditattn_tensor *t, int64_t b, int64_t h, int64_t N, int64_t D,
                      double *x) {
  for (int64_t i = 0; i < N; i++) {
    const float *row = dt_f32_at(t, b, h, i, 0);
    for (int64_t d = 0; d < D; d++) x[i * D + d] = row[d];
  }
}

double *dt_slr_alloc_doubles(int64_t count) {
  size_t bytes;
  if (count < 0 || !dt_mul_size((size_t)count, sizeof(double), &bytes)) return NULL;
  return dt_malloc(bytes);
}

/* acc += a·b in int64, 0 on overflow (or negative operands). */
static int add_product(int64_t *acc, int64_t a, int64_t b) {
  if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / a)) return 0;
  if (*acc > INT64_MAX - a * b) return 0;
  *acc += a * b;
  return 1;
}

ditattn_status dt_slr_work_alloc(ditattn_context *ctx, const dt_slr_shape *s, int64_t extra_nd,
                                 int64_t extra_nr, dt_slr_work *ws) {
  const int64_t N = s->N, D = s->D, r = s->r, n = s->n;
  int64_t ND = 0, Nr = 0, total = 0, sel_count = 0;
  int ok = add_product(&ND, N, D) && add_product(&Nr, N, r) &&
           add_product(&total, ND, 5 + extra_nd) && add_product(&total, Nr, 4 + extra_nr) &&
           add_product(&total, N, 2) && add_product(&total, n, 2 * D + 2) &&
           add_product(&sel_count, n, s->K) && sel_count <= INT64_MAX / 4;
  *ws = (dt_slr_work){0};
  ws->s = *s;
  if (!ok)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW,
                   "RoPeSLR workspace overflows: N = %lld, D = %lld, r = %lld, n = %lld",
                   (long long)N, (long long)D, (long long)r, (long long)n);
  double *base = dt_slr_alloc_doubles(total);
  ws->sel = dt_malloc((size_t)sel_count * sizeof(int32_t));
  ws->in_sel = dt_malloc((size_t)n);
  if (!base || !ws->sel || !ws->in_sel) {
    dt_free(base);
    ws->q = NULL;
    dt_slr_work_free(ws);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "RoPeSLR workspace (%lld doubles)",
                   (long long)total);
  }
  double *at = base;
  double **nd_arrays[] = {&ws->q, &ws->k, &ws->v, &ws->os, &ws->olr};
  for (int a = 0; a < 5; a++, at += ND) *nd_arrays[a] = at;
  double **nr_arrays[] = {&ws->u, &ws->f, &ws->w, &ws->g};
  for (int a = 0; a < 4; a++, at += Nr) *nr_arrays[a] = at;
  ws->lse = at;
  ws->den = at + N;
  ws->scratch = at + 2 * N;
  ws->extra = ws->scratch + n * (2 * D + 2);
  return DITATTN_OK;
}

void dt_slr_work_free(dt_slr_work *ws) {
  dt_free(ws->q); /* the single double block starts at q */
  dt_free(ws->sel);
  dt_free(ws->in_sel);
  *ws = (dt_slr_work){0};
}

ditattn_status dt_slr_head_forward(ditattn_context *ctx, const ditattn_ropeslr_params *params,
                                   const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                   const ditattn_tensor *q, const ditattn_tensor *k,
                                   const ditattn_tensor *v, int64_t b, int64_t h,
                                   dt_slr_lowrank_mode mode, dt_slr_work *ws) {
  const dt_slr_shape *s = &ws->s;
  dt_slr_load_head(q, b, h, s->N, s->D, ws->q);
  dt_slr_load_head(k, b, h, s->N, s->D, ws->k);
  dt_slr_load_head(v, b, h, s->N, s->D, ws->v);
  dt_slr_select(s, ws->q, ws->k, params->force_own_block, ws->scratch, ws->sel);
  dt_slr_sparse(s, ws->sel, params->scale, ws->q, ws->k, ws->v, ws->os, ws->lse);
  dt_slr_features(s, &weights->A, weights, h, pos, params->feature, ws->q, ws->u, ws->f);
  dt_slr_features(s, &weights->Bk, weights, h, pos, params->feature, ws->k, ws->w, ws->g);
  if (mode == DT_SLR_LOWRANK_FACTORS)
    return dt_slr_lowrank_factors(ctx, s, ws->sel, ws->f, ws->g, ws->v, ws->olr, ws->den);
  dt_slr_lowrank_direct(s, ws->sel, ws->f, ws->g, ws->v, ws->olr, ws->den);
  return DITATTN_OK;
}
