/* Host side of the GPU RoPeSLR forward (spec ropeslr.md), included by
 * gpu_ops_impl.h before its table (uses its gpu_carver, gpu_workspace,
 * GPU_TRY): lays every device array of dt_gpu_ropeslr out in the backend
 * workspace, uploads the positions, launches, and copies the selection to
 * the caller's host array. */
#include "ropeslr_api.h"

/* The key summary: block factors S_C | z_C ([BH][n][r(D+1)] doubles), then
 * pooled k ([BH][D][n] doubles: rows B·H·D, units n), carved into p's SC
 * and pk64 (base NULL: sizes only); its layout into s when non-NULL. A
 * size overflow sets c->overflow. */
static void gpu_slr_summary_carve(gpu_carver *c, dt_gpu_ropeslr *p, dt_key_summary *s) {
  const size_t BH = (size_t)(p->B * p->H), n = (size_t)p->n, D = (size_t)p->D;
  size_t factor_bytes;
  if (!dt_mul_size((size_t)p->r, (D + 1) * sizeof(double), &factor_bytes)) {
    c->overflow = 1;
    return;
  }
  const size_t sc_at = c->used;
  p->SC = gpu_carve(c, BH * n, factor_bytes);
  const size_t pk_at = c->used;
  p->pk64 = gpu_carve(c, BH * n, D * sizeof(double));
  if (s) {
    memset(s, 0, sizeof *s);
    s->arrays = 2;
    s->rows[0] = (int64_t)BH;
    s->units[0] = p->n;
    s->span[0] = p->b;
    s->unit_bytes[0] = factor_bytes;
    s->offset[0] = sc_at;
    s->rows[1] = (int64_t)(BH * D);
    s->units[1] = p->n;
    s->span[1] = p->b;
    s->unit_bytes[1] = sizeof(double);
    s->offset[1] = pk_at;
    s->bytes = c->used;
  }
}

/* Carves p's arrays (base NULL: sizes only); 0 on size overflow. With a
 * dist/ key summary, SC and pk64 are the caller's buffer (not carved);
 * computing a share of it (fill) needs only the positions and key
 * features; reading it needs no key features. */
static int gpu_slr_layout(gpu_carver *c, dt_gpu_ropeslr *p, dt_summary_use use) {
  const size_t BH = (size_t)(p->B * p->H), n = (size_t)p->n, N = (size_t)p->N;
  const size_t D = (size_t)p->D, r = (size_t)p->r, rd1 = r * (D + 1);
  p->pos = gpu_carve(c, N, 3 * sizeof(int32_t));
  if (use != DT_SUMMARY_READ) p->g = gpu_carve(c, BH * N, r * sizeof(double));
  if (use == DT_SUMMARY_NONE) gpu_slr_summary_carve(c, p, NULL);
  if (use == DT_SUMMARY_FILL) return !c->overflow;
  p->pq64 = gpu_carve(c, BH * n, D * sizeof(double));
  p->sel = gpu_carve(c, BH * n, (size_t)p->K * sizeof(int32_t));
  p->scores = gpu_carve(c, (size_t)p->select_rows, n * sizeof(double));
  p->idx = gpu_carve(c, (size_t)p->select_rows, n * sizeof(int32_t));
  p->f = gpu_carve(c, BH * N, r * sizeof(double));
  p->Sbg = gpu_carve(c, BH * n, rd1 * sizeof(double));
  p->S = gpu_carve(c, BH, rd1 * sizeof(double));
  p->olr = gpu_carve(c, BH * N, D * sizeof(double));
  return !c->overflow;
}

/* The problem's sizes (no device pointers yet). */
static void gpu_slr_describe(const dt_ropeslr_fwd *f, dt_gpu_ropeslr *p) {
  memset(p, 0, sizeof *p);
  p->B = f->q->shape[0];
  p->H = f->q->shape[1];
  p->N = f->q->shape[2];
  p->D = f->q->shape[3];
  p->r = f->params.rank;
  p->b = f->params.block;
  p->n = p->N / p->b + (p->N % p->b != 0);
  p->K = f->topk;
  p->scale = f->params.scale;
  p->force_own = f->params.force_own_block;
  p->softmax_feature = f->params.feature == DITATTN_SLR_FEATURE_SOFTMAX;
  p->q_lo = f->q_row0;
  p->q_hi = f->q_row0 + f->out->shape[2];
  p->C_lo = 0;
  p->C_n = p->n;
  if (f->summary.use == DT_SUMMARY_FILL) { /* blocks whose first token is in [key_lo, key_hi) */
    int64_t hi;
    dt_summary_units(f->summary.key_lo, f->summary.key_hi, p->b, p->n, &p->C_lo, &hi);
    p->C_n = hi - p->C_lo;
  }
  p->keys_ready = f->summary.use == DT_SUMMARY_READ;
}

static ditattn_status gpu_ropeslr_summary_layout(ditattn_context *ctx, const dt_ropeslr_fwd *f,
                                                 dt_key_summary *s) {
  dt_gpu_ropeslr p;
  gpu_slr_describe(f, &p);
  gpu_carver sizing = {NULL, 0, 0};
  gpu_slr_summary_carve(&sizing, &p, s);
  if (sizing.overflow)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s ropeslr key summary size", DT_GPU_NAME);
  return DITATTN_OK;
}

static ditattn_status gpu_ropeslr_forward(ditattn_context *ctx, const dt_ropeslr_fwd *f) {
  dt_gpu_ropeslr p;
  gpu_slr_describe(f, &p);
  const dt_summary_use use = f->summary.use;
  if (use == DT_SUMMARY_FILL ? p.C_n <= 0 : p.q_hi == p.q_lo)
    return DITATTN_OK; /* nothing to compute (a dist/ rank's empty slice) */
  p.G_lo = p.q_lo / p.b;
  p.G_n = use == DT_SUMMARY_FILL ? 0 : (p.q_hi - 1) / p.b - p.G_lo + 1;
  if (p.D > DT_GPU_MAX_D || p.n > INT32_MAX)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "%s ropeslr_forward: D = %lld, n = %lld blocks",
                   DT_GPU_NAME, (long long)p.D, (long long)p.n);
  /* Selection scratch (a double and an int per candidate) in row chunks,
   * for the warp passes only (the sort keeps its row in shared memory). */
  const int64_t rows = p.B * p.H * p.G_n;
  const int64_t fit = (int64_t)(GPU_SELECT_SCRATCH_BYTES / ((size_t)p.n * 12u));
  p.select_rows = fit < 1 ? 1 : (fit < rows ? fit : rows);
  if (use == DT_SUMMARY_FILL || DT_GPU_FN(ropeslr_select_sorts)(&p)) p.select_rows = 0;
  gpu_carver sizing = {NULL, 0, 0};
  if (!gpu_slr_layout(&sizing, &p, use))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s ropeslr workspace size", DT_GPU_NAME);
  void *ws;
  TRY(gpu_workspace(ctx, sizing.used, &ws));
  gpu_carver carver = {(char *)ws, 0, 0};
  (void)gpu_slr_layout(&carver, &p, use);
  if (use != DT_SUMMARY_NONE) {
    gpu_carver in_summary = {(char *)f->summary.buf, 0, 0};
    gpu_slr_summary_carve(&in_summary, &p, NULL);
  }
  /* RoPeSLR reads k and v of every slice at once: it joins all chunks. */
  if (f->summary.side_chunks && gpu_st(ctx)->side) {
    p.join_stream = gpu_st(ctx)->side;
    p.join_event = gpu_st(ctx)->side_event;
  }
  GPU_TRY(
      ctx,
      DT_GPU_FN(copy_h2d)((void *)p.pos, f->pos, (size_t)p.N * 3 * sizeof(int32_t), ctx->stream),
      "ropeslr positions");
  if (use == DT_SUMMARY_FILL) {
    GPU_TRY(ctx, DT_GPU_FN(launch_ropeslr_factors)(&p, f->k, f->v, f->weights, ctx->stream),
            "ropeslr factors");
    return DITATTN_OK;
  }
  GPU_TRY(ctx,
          DT_GPU_FN(launch_ropeslr_forward)(&p, f->q, f->k, f->v, f->out, f->weights, f->lse_sparse,
                                            ctx->stream),
          "ropeslr_forward");
  if (f->sel) /* whole-sequence calls only: rows = B·H·n */
    GPU_TRY(ctx,
            DT_GPU_FN(copy_d2h)(f->sel, p.sel, (size_t)rows * (size_t)p.K * sizeof(int32_t),
                                ctx->stream),
            "ropeslr selection to host");
  return DITATTN_OK;
}
