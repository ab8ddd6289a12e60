/* The LLSA/RoPeSLR GPU route's per-context cache (see dt_gather_cache):
 * whole-sequence q, k, v buffers and the peers' IPC mappings, kept in
 * ctx->ext between calls and released with the context or by
 * ditattn_dist_free_cache. */
#include "dist_device.h"

#include <string.h>

void dt_gather_cache_close_peers(ditattn_context *ctx, dt_gather_cache *cache) {
  for (int s = 0; s < cache->peer_slots; s++)
    if (cache->peer_ptr[s]) {
      char saved[sizeof ctx->last_error]; /* cleanup keeps the reason of a failure */
      memcpy(saved, ctx->last_error, sizeof saved);
      (void)ctx->ops->ipc_close(ctx, cache->peer_ptr[s]);
      memcpy(ctx->last_error, saved, sizeof saved);
      cache->peer_ptr[s] = NULL;
    }
}

static void free_buffers(ditattn_context *ctx, dt_gather_cache *cache) {
  dt_gather_cache_close_peers(ctx, cache);
  for (int i = 0; i < 3; i++) {
    dt_dist_device_free(ctx, cache->buf[i]);
    cache->buf[i] = NULL;
    cache->exported[i] = 0;
  }
}

static void cache_free(ditattn_context *ctx, void *ext) {
  dt_gather_cache *cache = ext;
  if (!cache) return;
  free_buffers(ctx, cache);
  dt_free(cache->peer_handles);
  dt_free(cache->peer_ptr);
  dt_free(cache);
}

ditattn_status dt_gather_cache_get(ditattn_context *ctx, const ditattn_tensor *like, int64_t N,
                                   int with_q, dt_gather_cache **out) {
  *out = NULL;
  if (ctx->ext_free && ctx->ext_free != cache_free)
    return dt_fail(ctx, DITATTN_ERR_INTERNAL, "context extension slot holds foreign state");
  dt_gather_cache *cache = ctx->ext;
  if (!cache) {
    cache = dt_calloc(1, sizeof *cache);
    if (!cache) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "dist gather cache");
    ctx->ext = cache;
    ctx->ext_free = cache_free;
  }
  const int64_t B = like->shape[0], H = like->shape[1], D = like->shape[3];
  if (cache->B != B || cache->H != H || cache->N != N || cache->D != D ||
      cache->dtype != like->dtype) {
    free_buffers(ctx, cache);
    cache->B = B, cache->H = H, cache->N = N, cache->D = D, cache->dtype = like->dtype;
  }
  size_t bytes = 0;
  if (!dt_mul_size((size_t)(B * H), (size_t)(N * D), &bytes) ||
      !dt_mul_size(bytes, ditattn_dtype_size(like->dtype), &bytes))
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "gathered q/k/v of %lld tokens", (long long)N);
  for (int i = with_q ? 0 : 1; i < 3; i++)
    if (!cache->buf[i]) {
      cache->exported[i] = 0;
      TRY(ditattn_malloc(ctx, bytes, &cache->buf[i]));
    }
  *out = cache;
  return DITATTN_OK;
}

void ditattn_dist_free_cache(ditattn_context *ctx) {
  if (!ctx || ctx->ext_free != cache_free) return;
  cache_free(ctx, ctx->ext);
  ctx->ext = NULL;
  ctx->ext_free = NULL;
}
