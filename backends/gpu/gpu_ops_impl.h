/* Host side of a GPU backend, plain C, written once for CUDA and HIP:
 * backends/cuda/cuda_ops.c and backends/hip/hip_ops.c define
 *   DT_GPU_FN(name)  the kernels' symbol prefix (dt_cuda_##name, dt_hip_##name)
 *   DT_GPU_NAME      the backend's name ("cuda", "hip")
 *   DT_GPU_TABLE     the table getter's name (dt_cuda_ops, dt_hip_ops)
 * and include this file once. It turns validated problems into launches of
 * gpu_api.h, owns a grow-only device workspace, and maps runtime errors to
 * statuses. Tensors, lse and workspace are device memory; positions,
 * permutations and selections are host memory (ditattn.h). */
#ifndef DT_GPU_FN
#error "define DT_GPU_FN, DT_GPU_NAME and DT_GPU_TABLE before including gpu_ops_impl.h"
#endif

#include "../backend.h"
#include "../validate.h"
#include "gpu_api.h"

#include <stddef.h>
#include <string.h>

typedef struct gpu_state {
  void *ws; /* device workspace, grown on demand */
  size_t ws_bytes;
  void *stream; /* stream the workspace was last used on */
  int device;   /* bound device (ditattn_context_create_on_device), or -1: current */
  /* The side stream for copies overlapping the stream (dist/'s gather),
   * made on first use, and the event that orders the two. */
  void *side, *side_event;
  /* The side stream's marks since the last fork (events made on first use). */
  void *marks[DT_SIDE_MARKS_MAX];
  int nmarks;
} gpu_state;

static ditattn_status gpu_check(ditattn_context *ctx, int err, const char *what) {
  if (err == 0) return DITATTN_OK;
  DT_GPU_FN(clear_error)(); /* the next call must not report this one */
  if (err == DT_GPU_NOT_IMPLEMENTED)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "%s %s: configuration not implemented",
                   DT_GPU_NAME, what);
  return dt_fail(ctx, DITATTN_ERR_DEVICE, "%s %s: %s", DT_GPU_NAME, what,
                 DT_GPU_FN(error_string)(err));
}

#define GPU_TRY(ctx, call, what)                                                                   \
  do {                                                                                             \
    ditattn_status gpu_try_st_ = gpu_check((ctx), (call), (what));                                 \
    if (gpu_try_st_ != DITATTN_OK) return gpu_try_st_;                                             \
  } while (0)

static gpu_state *gpu_st(ditattn_context *ctx) { return (gpu_state *)ctx->backend_state; }

/* A workspace of at least `bytes`; earlier contents are not kept. Work queued
 * on the stream may still read the old buffer, so it is drained first. */
static ditattn_status gpu_workspace(ditattn_context *ctx, size_t bytes, void **ws) {
  gpu_state *st = gpu_st(ctx);
  if (st->ws_bytes < bytes) {
    GPU_TRY(ctx, DT_GPU_FN(stream_sync)(st->stream), "synchronize before workspace growth");
    GPU_TRY(ctx, DT_GPU_FN(free)(st->ws), "free workspace");
    st->ws = NULL;
    st->ws_bytes = 0;
    GPU_TRY(ctx, DT_GPU_FN(malloc)(&st->ws, bytes), "allocate workspace");
    st->ws_bytes = bytes;
  }
  *ws = st->ws;
  return DITATTN_OK;
}

/* ------------------------------------------------------------ lifetime */
static ditattn_status gpu_init(ditattn_context *ctx) {
  int count = 0;
  int err = DT_GPU_FN(device_count)(&count);
  if (err || count < 1)
    return dt_fail(ctx, DITATTN_ERR_BACKEND_UNAVAILABLE, "%s: no device (%s)", DT_GPU_NAME,
                   err ? DT_GPU_FN(error_string)(err) : "0 devices");
  gpu_state *st = dt_calloc(1, sizeof *st);
  if (!st) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "%s backend state", DT_GPU_NAME);
  st->device = -1;
  ctx->backend_state = st;
  return DITATTN_OK;
}

static void gpu_fini(ditattn_context *ctx) {
  gpu_state *st = gpu_st(ctx);
  if (!st) return;
  if (st->ws) {
    (void)DT_GPU_FN(stream_sync)(st->stream);
    (void)DT_GPU_FN(free)(st->ws);
  }
  if (st->side) {
    (void)DT_GPU_FN(stream_sync)(st->side);
    (void)DT_GPU_FN(side_stream_destroy)(st->side, st->side_event);
  }
  for (int m = 0; m < DT_SIDE_MARKS_MAX; m++) (void)DT_GPU_FN(event_destroy)(st->marks[m]);
  dt_free(st);
  ctx->backend_state = NULL;
}

static ditattn_status gpu_set_stream(ditattn_context *ctx, void *stream) {
  gpu_state *st = gpu_st(ctx);
  /* Work on the old stream may still use the workspace. */
  GPU_TRY(ctx, DT_GPU_FN(stream_sync)(st->stream), "synchronize previous stream");
  st->stream = stream;
  return DITATTN_OK;
}

static ditattn_status gpu_synchronize(ditattn_context *ctx) {
  /* The side stream's work is the caller's to join first (side_join):
   * dist/ waits for the stream alone while its copies still run. */
  GPU_TRY(ctx, DT_GPU_FN(stream_sync)(ctx->stream), "synchronize");
  return DITATTN_OK;
}

/* ------------------------------------------------------------ side stream */
static ditattn_status gpu_side_fork(ditattn_context *ctx) {
  gpu_state *st = gpu_st(ctx);
  if (!st->side)
    GPU_TRY(ctx, DT_GPU_FN(side_stream_create)(&st->side, &st->side_event), "side stream");
  GPU_TRY(ctx, DT_GPU_FN(stream_wait)(st->side, ctx->stream, st->side_event), "side stream fork");
  st->nmarks = 0;
  return DITATTN_OK;
}

static ditattn_status gpu_side_mark(ditattn_context *ctx) {
  gpu_state *st = gpu_st(ctx);
  if (!st->side) return dt_fail(ctx, DITATTN_ERR_INTERNAL, "side mark before side_fork");
  if (st->nmarks == DT_SIDE_MARKS_MAX)
    return dt_fail(ctx, DITATTN_ERR_INTERNAL, "more than %d side marks", DT_SIDE_MARKS_MAX);
  void **ev = &st->marks[st->nmarks];
  if (!*ev) GPU_TRY(ctx, DT_GPU_FN(event_create)(ev), "side mark event");
  GPU_TRY(ctx, DT_GPU_FN(event_record)(*ev, st->side), "side mark");
  st->nmarks++;
  return DITATTN_OK;
}

static ditattn_status gpu_side_copy_2d(ditattn_context *ctx, void *dst, size_t dpitch,
                                       const void *src, size_t spitch, size_t width,
                                       size_t height) {
  gpu_state *st = gpu_st(ctx);
  if (!st->side) return dt_fail(ctx, DITATTN_ERR_INTERNAL, "side copy before side_fork");
  GPU_TRY(ctx, DT_GPU_FN(copy_2d)(dst, dpitch, src, spitch, width, height, st->side),
          "side stream copy");
  return DITATTN_OK;
}

static ditattn_status gpu_side_join(ditattn_context *ctx) {
  gpu_state *st = gpu_st(ctx);
  if (st->side)
    GPU_TRY(ctx, DT_GPU_FN(stream_wait)(ctx->stream, st->side, st->side_event), "side stream join");
  return DITATTN_OK;
}

/* Before a forward first reads k and v rows of chunk c of sum->side_chunks
 * (backend.h): the stream waits for side mark c, or for all of the side
 * stream where there is no such mark. */
static ditattn_status gpu_side_wait_chunk(ditattn_context *ctx, const dt_summary_arg *sum, int c) {
  gpu_state *st = gpu_st(ctx);
  if (sum->side_marked && c < st->nmarks) {
    GPU_TRY(ctx, DT_GPU_FN(stream_wait_event)(ctx->stream, st->marks[c]), "side mark wait");
    return DITATTN_OK;
  }
  return gpu_side_join(ctx);
}

/* ------------------------------------------------------------ memory */
static ditattn_status gpu_mem_alloc(ditattn_context *ctx, size_t bytes, void **ptr) {
  int err = DT_GPU_FN(malloc)(ptr, bytes);
  if (err) {
    *ptr = NULL;
    DT_GPU_FN(clear_error)();
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "%s: allocating %zu bytes: %s", DT_GPU_NAME,
                   bytes, DT_GPU_FN(error_string)(err));
  }
  return DITATTN_OK;
}

static ditattn_status gpu_mem_free(ditattn_context *ctx, void *ptr) {
  GPU_TRY(ctx, DT_GPU_FN(free)(ptr), "free");
  return DITATTN_OK;
}

static ditattn_status gpu_copy_to_backend(ditattn_context *ctx, void *dst, const void *src,
                                          size_t n) {
  GPU_TRY(ctx, DT_GPU_FN(copy_h2d)(dst, src, n, ctx->stream), "copy to device");
  return DITATTN_OK;
}

static ditattn_status gpu_copy_to_host(ditattn_context *ctx, void *dst, const void *src, size_t n) {
  GPU_TRY(ctx, DT_GPU_FN(copy_d2h)(dst, src, n, ctx->stream), "copy to host");
  return DITATTN_OK;
}

/* ------------------------------------------------------------ small ops */
static ditattn_status gpu_pool(ditattn_context *ctx, const dt_pool *p) {
  GPU_TRY(ctx, DT_GPU_FN(launch_pool)(p->x, p->y, p->block, ctx->stream), "pool");
  return DITATTN_OK;
}

static ditattn_status gpu_rope(ditattn_context *ctx, const dt_rope *p) {
  const int64_t N = p->x->shape[2];
  size_t bytes;
  if (!dt_mul_size((size_t)N, 3 * sizeof(int32_t), &bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "rope positions for N = %lld", (long long)N);
  void *pos;
  TRY(gpu_workspace(ctx, bytes, &pos));
  GPU_TRY(ctx, DT_GPU_FN(copy_h2d)(pos, p->pos, bytes, ctx->stream), "rope positions");
  GPU_TRY(ctx,
          DT_GPU_FN(launch_rope)(p->x, p->y, (const int32_t *)pos, p->params.dims, p->params.theta,
                                 p->params.pairing == DITATTN_ROPE_HALF_SPLIT,
                                 p->direction == DITATTN_INVERSE, ctx->stream),
          "rope");
  return DITATTN_OK;
}

static ditattn_status gpu_order(ditattn_context *ctx, const dt_order *p) {
  const int64_t N = p->x->shape[2];
  size_t bytes;
  if (!dt_mul_size((size_t)N, sizeof(int64_t), &bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "order permutation for N = %lld", (long long)N);
  void *perm;
  TRY(gpu_workspace(ctx, bytes, &perm));
  GPU_TRY(ctx, DT_GPU_FN(copy_h2d)(perm, p->seq_to_raster, bytes, ctx->stream),
          "order permutation");
  GPU_TRY(ctx,
          DT_GPU_FN(launch_order)(p->x, p->y, (const int64_t *)perm,
                                  p->direction == DITATTN_INVERSE, ctx->stream),
          "order");
  return DITATTN_OK;
}

static ditattn_status gpu_lse_merge(ditattn_context *ctx, const dt_lse_merge *p) {
  GPU_TRY(
      ctx,
      DT_GPU_FN(launch_lse_merge)(p->out_acc, p->lse_acc, p->out_part, p->lse_part, ctx->stream),
      "lse_merge");
  return DITATTN_OK;
}

/* ------------------------------------------------------------ dense */
static ditattn_status gpu_dense_forward(ditattn_context *ctx, const dt_dense_fwd *p) {
  if (p->q->shape[3] > DT_GPU_MAX_D)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "%s dense_forward: D = %lld > %d", DT_GPU_NAME,
                   (long long)p->q->shape[3], DT_GPU_MAX_D);
  int err = DT_GPU_FN(launch_dense_mma)(p->q, p->k, p->v, p->out, p->lse, p->scale, ctx->stream);
  if (err == DT_GPU_NOT_IMPLEMENTED)
    err = DT_GPU_FN(launch_dense_f32)(p->q, p->k, p->v, p->out, p->lse, p->scale, ctx->stream);
  GPU_TRY(ctx, err, "dense_forward");
  return DITATTN_OK;
}

static ditattn_status gpu_dense_backward(ditattn_context *ctx, const dt_dense_bwd *p) {
  const int64_t D = p->q->shape[3];
  if (D > DT_GPU_MAX_D)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "%s dense_backward: D = %lld > %d", DT_GPU_NAME,
                   (long long)D, DT_GPU_MAX_D);
  size_t bytes;
  const size_t rows = (size_t)(p->q->shape[0] * p->q->shape[1] * p->q->shape[2]);
  if (!dt_mul_size(rows, sizeof(float), &bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s dense_backward: %zu rows", DT_GPU_NAME, rows);
  void *delta;
  TRY(gpu_workspace(ctx, bytes, &delta));
  const ditattn_tensor *t[8] = {p->q, p->k, p->v, p->out, p->dout, p->dq, p->dk, p->dv};
  GPU_TRY(ctx, DT_GPU_FN(launch_dense_bwd)(t, p->lse, p->scale, (float *)delta, ctx->stream),
          "dense_backward");
  return DITATTN_OK;
}

/* ------------------------------------------------------------ LLSA */
/* Carves aligned pieces out of one workspace; sizes are counted first (base
 * NULL), then the same sequence runs on the real buffer. */
typedef struct gpu_carver {
  char *base;
  size_t used;
  int overflow;
} gpu_carver;

static void *gpu_carve(gpu_carver *c, size_t count, size_t elem) {
  size_t bytes;
  if (!dt_mul_size(count, elem, &bytes) || bytes > SIZE_MAX - 512 - c->used) {
    c->overflow = 1;
    return NULL;
  }
  void *p = c->base ? c->base + c->used : NULL;
  c->used += (bytes + 255) & ~(size_t)255;
  return p;
}

/* Selection scratch (scores + indices) is processed in row chunks of at most this. */
#define GPU_SELECT_SCRATCH_BYTES ((size_t)256 << 20)

/* The key summary (backend.h dt_key_summary) of an LLSA forward: for each
 * level l, array 2(l-1) holds the pooled k in double and array 2l-1 the
 * pooled v in f32, [B·H][n_l][D] each, unit c covering the tokens of block
 * c, [c·span_l, (c+1)·span_l). The f32 pooled k is not in it: (float) of
 * the double one, it is cast where it is read. Carves the arrays into g
 * (base NULL: offsets only) and records them in s when non-NULL. */
static void gpu_llsa_summary_carve(gpu_carver *c, dt_gpu_llsa *g, dt_key_summary *s) {
  const size_t BH = (size_t)(g->B * g->H), D = (size_t)g->D;
  for (int l = 1; l <= g->L; l++) {
    const size_t rows = BH * (size_t)g->n[l];
    const size_t k_at = c->used;
    g->pk64[l - 1] = gpu_carve(c, rows, D * sizeof(double));
    const size_t v_at = c->used;
    g->pv[l - 1] = gpu_carve(c, rows, D * sizeof(float));
    if (!s) continue;
    const int ak = 2 * (l - 1), av = ak + 1;
    s->units[ak] = s->units[av] = g->n[l];
    s->span[ak] = s->span[av] = g->span[l];
    s->rows[ak] = (int64_t)(BH * D); /* pk64 is [B·H][D][n_l] */
    s->rows[av] = (int64_t)BH;
    s->unit_bytes[ak] = sizeof(double);
    s->unit_bytes[av] = D * sizeof(float);
    s->offset[ak] = k_at;
    s->offset[av] = v_at;
  }
}

/* Carves the workspace arrays of a forward that attends (NONE or READ;
 * READ's pooled k and v are the caller's summary, not carved here). */
static size_t gpu_llsa_layout(gpu_carver *c, dt_gpu_llsa *g, dt_summary_use use,
                              int64_t *scratch_rows) {
  const size_t BH = (size_t)(g->B * g->H);
  if (use == DT_SUMMARY_NONE) gpu_llsa_summary_carve(c, g, NULL);
  int64_t max_cand = 1;
  for (int l = 1; l <= g->L; l++) {
    size_t rows = BH * (size_t)g->n[l];
    g->pq64[l - 1] = gpu_carve(c, rows, (size_t)g->D * sizeof(double));
    g->pk[l - 1] = gpu_carve(c, rows, (size_t)g->D * sizeof(float));
    g->sel[l - 1] = gpu_carve(c, rows, (size_t)g->keff[l - 1] * sizeof(int32_t));
    int64_t nc = DT_GPU_FN(llsa_candidates)(g, l);
    if (nc > max_cand) max_cand = nc;
  }
  int64_t max_rows = 0;
  for (int l = 1; l <= g->L; l++)
    if ((int64_t)BH * g->blk_n[l] > max_rows) max_rows = (int64_t)BH * g->blk_n[l];
  int64_t fit = (int64_t)(GPU_SELECT_SCRATCH_BYTES / ((size_t)max_cand * 12u));
  *scratch_rows = fit < 1 ? 1 : (fit < max_rows ? fit : max_rows);
  return (size_t)max_cand;
}

static ditattn_status gpu_llsa_describe(ditattn_context *ctx, const dt_llsa_fwd *p,
                                        dt_gpu_llsa *g) {
  const dt_summary_arg *sum = &p->summary;
  memset(g, 0, sizeof *g);
  g->B = p->q->shape[0];
  g->H = p->q->shape[1];
  g->N = p->q->shape[2];
  g->D = p->q->shape[3];
  g->b = p->params.block;
  g->L = p->params.levels;
  g->scale = p->params.scale;
  g->n[0] = g->N;
  g->span[0] = 1;
  g->q_lo = p->q_row0;
  g->q_hi = p->q_row0 + p->out->shape[2];
  g->kv_pool = sum->use == DT_SUMMARY_FILL   ? DT_GPU_KV_RANGE
               : sum->use == DT_SUMMARY_READ ? DT_GPU_KV_READY
                                             : DT_GPU_KV_ALL;
  for (int l = 1; l <= g->L; l++) {
    g->n[l] = dt_ceil_div_pow(g->N, g->b, l);
    int64_t pw = dt_pow_sat(g->b, l);
    g->span[l] = pw < g->N ? pw : g->N;
    int64_t K = p->params.topk[l - 1];
    g->keff[l - 1] = K < g->n[l] ? K : g->n[l];
    /* The level-l blocks that rows [q_lo, q_hi) touch (none for a fill). */
    g->blk_lo[l] = g->q_lo / g->span[l];
    if (g->q_hi > g->q_lo && sum->use != DT_SUMMARY_FILL)
      g->blk_n[l] = (g->q_hi - 1) / g->span[l] - g->blk_lo[l] + 1;
    if (sum->use == DT_SUMMARY_FILL) { /* the units whose first token is in [key_lo, key_hi) */
      int64_t hi;
      dt_summary_units(sum->key_lo, sum->key_hi, g->span[l], g->n[l], &g->kv_lo[l], &hi);
      g->kv_n[l] = hi - g->kv_lo[l];
    }
    if (g->n[l] > INT32_MAX)
      return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "%s llsa: %lld level-%d blocks exceed int32",
                     DT_GPU_NAME, (long long)g->n[l], l);
  }
  if (g->D > DT_GPU_MAX_D)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "%s llsa_forward: D = %lld > %d", DT_GPU_NAME,
                   (long long)g->D, DT_GPU_MAX_D);
  return DITATTN_OK;
}

static ditattn_status gpu_llsa_summary_layout(ditattn_context *ctx, const dt_llsa_fwd *p,
                                              dt_key_summary *s) {
  dt_gpu_llsa g;
  TRY(gpu_llsa_describe(ctx, p, &g));
  memset(s, 0, sizeof *s);
  s->arrays = 2 * g.L;
  gpu_carver sizing = {NULL, 0, 0};
  gpu_llsa_summary_carve(&sizing, &g, s);
  if (sizing.overflow)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s llsa key summary size", DT_GPU_NAME);
  s->bytes = sizing.used;
  return DITATTN_OK;
}

/* Device selection of level l (keff columns) → the caller's host array
 * (topk columns, -1 padded). */
static ditattn_status gpu_llsa_export(ditattn_context *ctx, const dt_gpu_llsa *g, int l, int64_t K,
                                      int32_t *host_sel) {
  const size_t rows = (size_t)(g->B * g->H * g->n[l]), keff = (size_t)g->keff[l - 1];
  if ((int64_t)keff == K) {
    GPU_TRY(
        ctx,
        DT_GPU_FN(copy_d2h)(host_sel, g->sel[l - 1], rows * keff * sizeof(int32_t), ctx->stream),
        "llsa selection to host");
    return DITATTN_OK;
  }
  int32_t *tmp = dt_malloc(rows * keff * sizeof(int32_t));
  if (!tmp) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "llsa selection staging");
  int err = DT_GPU_FN(copy_d2h)(tmp, g->sel[l - 1], rows * keff * sizeof(int32_t), ctx->stream);
  if (!err) {
    for (size_t r = 0; r < rows; r++) {
      int32_t *dst = host_sel + r * (size_t)K;
      memcpy(dst, tmp + r * keff, keff * sizeof(int32_t));
      for (size_t j = keff; j < (size_t)K; j++) dst[j] = -1;
    }
  }
  dt_free(tmp);
  GPU_TRY(ctx, err, "llsa selection to host");
  return DITATTN_OK;
}

/* Points g's pooled k (double) and v into the caller's key summary. */
static ditattn_status gpu_llsa_in_summary(ditattn_context *ctx, const dt_llsa_fwd *p,
                                          dt_gpu_llsa *g) {
  gpu_carver given = {(char *)p->summary.buf, 0, 0};
  gpu_llsa_summary_carve(&given, g, NULL);
  if (given.overflow)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s llsa key summary size", DT_GPU_NAME);
  return DITATTN_OK;
}

/* The pooled k and v (into the summary buffer) of the units g->kv_lo/kv_n
 * say; nothing else, and no workspace. */
static ditattn_status gpu_llsa_fill_summary(ditattn_context *ctx, const dt_llsa_fwd *p,
                                            dt_gpu_llsa *g) {
  TRY(gpu_llsa_in_summary(ctx, p, g));
  GPU_TRY(ctx, DT_GPU_FN(launch_llsa_pool)(g, p->q, p->k, p->v, ctx->stream), "llsa summary pool");
  return DITATTN_OK;
}

static ditattn_status gpu_llsa_forward(ditattn_context *ctx, const dt_llsa_fwd *p) {
  const dt_summary_use use = p->summary.use;
  /* Nothing to compute: an empty key range to fill, or no query rows (a
   * dist/ rank's empty slice). */
  if (use == DT_SUMMARY_FILL ? p->summary.key_hi <= p->summary.key_lo : p->out->shape[2] == 0)
    return DITATTN_OK;
  dt_gpu_llsa g;
  TRY(gpu_llsa_describe(ctx, p, &g));
  if (use == DT_SUMMARY_FILL) return gpu_llsa_fill_summary(ctx, p, &g);
  gpu_carver sizing = {NULL, 0, 0};
  int64_t chunk_rows;
  size_t ncand_max = gpu_llsa_layout(&sizing, &g, use, &chunk_rows);
  double *scores = gpu_carve(&sizing, (size_t)chunk_rows, ncand_max * sizeof(double));
  (void)gpu_carve(&sizing, (size_t)chunk_rows, ncand_max * sizeof(int32_t));
  if (sizing.overflow)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s llsa workspace size", DT_GPU_NAME);
  void *ws;
  TRY(gpu_workspace(ctx, sizing.used, &ws));
  gpu_carver carver = {(char *)ws, 0, 0};
  (void)gpu_llsa_layout(&carver, &g, use, &chunk_rows);
  scores = gpu_carve(&carver, (size_t)chunk_rows, ncand_max * sizeof(double));
  int32_t *idx = gpu_carve(&carver, (size_t)chunk_rows, ncand_max * sizeof(int32_t));
  /* READ: pooled k (double) and v are every rank's share, exchanged. */
  if (use == DT_SUMMARY_READ) TRY(gpu_llsa_in_summary(ctx, p, &g));

  /* §1: exact means over the original tokens, every level (READ: q only,
   * and the f32 pooled k from the summary's double one). */
  GPU_TRY(ctx, DT_GPU_FN(launch_llsa_pool)(&g, p->q, p->k, p->v, ctx->stream), "llsa pool");
  /* §2: coarsest level first, then each finer level from its parent's picks. */
  for (int l = g.L; l >= 1; l--) {
    const int64_t rows = g.B * g.H * g.blk_n[l];
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
      int64_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
      GPU_TRY(ctx, DT_GPU_FN(launch_llsa_select)(&g, l, r0, nr, scores, idx, ctx->stream),
              "llsa select");
    }
  }
  /* §3: the first read of k and v rows, which dist/ may still be copying
   * in chunks of (b, h) slices: each chunk's attention waits for its own. */
  const int chunks = p->summary.side_chunks > 1 ? p->summary.side_chunks : 1;
  for (int c = 0; c < chunks; c++) {
    int64_t bh_lo, bh_hi;
    dt_side_chunk_bh(g.B * g.H, chunks, c, &bh_lo, &bh_hi);
    if (p->summary.side_chunks) TRY(gpu_side_wait_chunk(ctx, &p->summary, c));
    GPU_TRY(ctx,
            DT_GPU_FN(launch_llsa_attend)(&g, p->q, p->k, p->v, p->out, p->lse, bh_lo, bh_hi,
                                          ctx->stream),
            "llsa attend");
  }
  if (p->selection) {
    for (int l = 1; l <= g.L; l++)
      if (p->selection->sel[l - 1])
        TRY(gpu_llsa_export(ctx, &g, l, p->params.topk[l - 1], p->selection->sel[l - 1]));
  }
  return DITATTN_OK;
}

/* ------------------------------------------------------------ RoPeSLR */
#include "ropeslr_ops_impl.h"

/* ------------------------------------------------------------ IPC, staging */
_Static_assert(DT_GPU_IPC_HANDLE_BYTES == DT_IPC_HANDLE_BYTES, "IPC handle size");
_Static_assert(sizeof(dt_gpu_copy_2d) == sizeof(dt_copy_2d_desc) &&
                   offsetof(dt_gpu_copy_2d, src) == offsetof(dt_copy_2d_desc, src) &&
                   offsetof(dt_gpu_copy_2d, height) == offsetof(dt_copy_2d_desc, height),
               "the batch copy's entries cross the C seam as they are");

static ditattn_status gpu_ipc_export(ditattn_context *ctx, void *base, void *handle) {
  GPU_TRY(ctx, DT_GPU_FN(ipc_export)(base, handle), "IPC export");
  return DITATTN_OK;
}

static ditattn_status gpu_ipc_open(ditattn_context *ctx, const void *handle, void **ptr) {
  GPU_TRY(ctx, DT_GPU_FN(ipc_open)(handle, ptr), "IPC open");
  return DITATTN_OK;
}

static ditattn_status gpu_ipc_close(ditattn_context *ctx, void *ptr) {
  GPU_TRY(ctx, DT_GPU_FN(ipc_close)(ptr), "IPC close");
  return DITATTN_OK;
}

static ditattn_status gpu_copy_2d(ditattn_context *ctx, void *dst, size_t dpitch, const void *src,
                                  size_t spitch, size_t width, size_t height) {
  GPU_TRY(ctx, DT_GPU_FN(copy_2d)(dst, dpitch, src, spitch, width, height, ctx->stream),
          "device copy");
  return DITATTN_OK;
}

static ditattn_status gpu_copy_2d_batch(ditattn_context *ctx, const dt_copy_2d_desc *descs,
                                        int count) {
  /* As copy_2d (cudaMemcpy2DAsync) would refuse them. */
  for (int i = 0; i < count; i++)
    if (descs[i].height > 1 &&
        (descs[i].dpitch < descs[i].width || descs[i].spitch < descs[i].width))
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT,
                     "%s device copy batch: entry %d's pitch %zu/%zu is under its width %zu",
                     DT_GPU_NAME, i, descs[i].dpitch, descs[i].spitch, descs[i].width);
  /* The same fields in the same order (backends/gpu/gpu_api.h). */
  GPU_TRY(ctx, DT_GPU_FN(launch_copy_2d_batch)((const dt_gpu_copy_2d *)descs, count, ctx->stream),
          "device copy batch");
  return DITATTN_OK;
}

static ditattn_status gpu_host_alloc(ditattn_context *ctx, size_t bytes, void **ptr) {
  int err = DT_GPU_FN(host_alloc)(ptr, bytes);
  if (err) {
    *ptr = NULL;
    DT_GPU_FN(clear_error)();
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "%s: page-locking %zu host bytes: %s",
                   DT_GPU_NAME, bytes, DT_GPU_FN(error_string)(err));
  }
  return DITATTN_OK;
}

static ditattn_status gpu_host_free(ditattn_context *ctx, void *ptr) {
  GPU_TRY(ctx, DT_GPU_FN(host_free)(ptr), "free page-locked host memory");
  return DITATTN_OK;
}

/* ------------------------------------------------------------ devices */
#include "gpu_device_bind.h"

/* ------------------------------------------------------------ the table */
static const dt_backend_ops gpu_ops_table = {
    .name = DT_GPU_NAME,
    .dtypes = (1u << DITATTN_F32) | (1u << DITATTN_BF16) | (1u << DITATTN_F16),
    .query_rows = 1,
    .init = gpu_init,
    .fini = gpu_bound_fini,
    .set_stream = gpu_bound_set_stream,
    .synchronize = gpu_bound_synchronize,
    .mem_alloc = gpu_bound_mem_alloc,
    .mem_free = gpu_bound_mem_free,
    .copy_to_backend = gpu_bound_copy_to_backend,
    .copy_to_host = gpu_bound_copy_to_host,
    .dense_forward = gpu_bound_dense_forward,
    .dense_backward = gpu_bound_dense_backward,
    .llsa_forward = gpu_bound_llsa_forward,
    .rope = gpu_bound_rope,
    .order = gpu_bound_order,
    .pool = gpu_bound_pool,
    .lse_merge = gpu_bound_lse_merge,
    .ropeslr_forward = gpu_bound_ropeslr_forward,
    .device_count = gpu_device_count,
    .bind_device = gpu_bind_device,
    .ipc_export = gpu_bound_ipc_export,
    .ipc_open = gpu_bound_ipc_open,
    .ipc_close = gpu_bound_ipc_close,
    .copy_2d = gpu_bound_copy_2d,
    .copy_2d_batch = gpu_bound_copy_2d_batch,
    .host_alloc = gpu_bound_host_alloc,
    .host_free = gpu_bound_host_free,
    .llsa_summary_layout = gpu_llsa_summary_layout,
    .ropeslr_summary_layout = gpu_ropeslr_summary_layout,
    .side_fork = gpu_bound_side_fork,
    .side_copy_2d = gpu_bound_side_copy_2d,
    .side_join = gpu_bound_side_join,
    .side_mark = gpu_bound_side_mark,
};

const dt_backend_ops *DT_GPU_TABLE(void) { return &gpu_ops_table; }
