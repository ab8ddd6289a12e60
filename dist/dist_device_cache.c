/* The LLSA/RoPeSLR GPU route's per-context cache (see dt_gather_cache):
 * whole-sequence q, k, v buffers and the peers' IPC mappings, kept in
 * ctx->ext between calls and released with the context or by
 * ditattn_dist_free_cache. */
#include "dist_device.h"

#include <string.h>

void dt_gather_cache_close_slot(ditattn_context *ctx, dt_gather_cache *cache, int slot) {
  for (int s = 0; s < cache->peer_slots; s++) {
    if (slot >= 0 && s % DT_GATHER_SLOTS != slot) continue;
    dt_dist_release(ctx, ctx->ops->ipc_close, cache->peer_ptr[s]);
    cache->peer_ptr[s] = NULL;
  }
}

void dt_gather_cache_close_peers(ditattn_context *ctx, dt_gather_cache *cache) {
  dt_gather_cache_close_slot(ctx, cache, -1);
}

static void free_buffers(ditattn_context *ctx, dt_gather_cache *cache) {
  dt_gather_cache_close_peers(ctx, cache);
  for (int i = 0; i < DT_GATHER_SLOTS; i++) {
    dt_dist_device_free(ctx, cache->buf[i]);
    cache->buf[i] = NULL;
    cache->exported[i] = 0;
  }
  cache->summary_bytes = 0;
}

static void free_ring(ditattn_context *ctx, dt_gather_cache *cache) {
  for (int i = 0; i < 2; i++) {
    dt_dist_device_free(ctx, cache->ring_dev[i]);
    dt_dist_staging_free(ctx, cache->ring_host[i]);
    cache->ring_dev[i] = cache->ring_host[i] = NULL;
  }
  cache->ring_bytes = 0;
}

static void cache_free(ditattn_context *ctx, void *ext) {
  dt_gather_cache *cache = ext;
  if (!cache) return;
  free_buffers(ctx, cache);
  free_ring(ctx, cache);
  dt_free(cache->peer_handles);
  dt_free(cache->peer_ptr);
  dt_free(cache);
}

/* A buffer must not be freed while a peer still has it mapped (CUDA: "undefined
 * behavior"), so before any rank frees buffers that peers may have mapped,
 * every rank unmaps the peers' buffers (of one slot, or all for -1) and all
 * meet in a barrier. Returns nonzero when the collective itself failed. */
static int unmap_everywhere(ditattn_context *ctx, dt_gather_cache *cache, MPI_Comm comm, int slot) {
  if (cache) dt_gather_cache_close_slot(ctx, cache, slot);
  return MPI_Barrier(comm) != MPI_SUCCESS;
}

static int has_buffers(const dt_gather_cache *cache) {
  for (int i = 0; cache && i < DT_GATHER_SLOTS; i++)
    if (cache->buf[i]) return 1;
  return 0;
}

/* The context's cache in *out, made empty on first use. Fails when the
 * context's extension slot holds something else or memory runs out. */
static ditattn_status cache_of(ditattn_context *ctx, dt_gather_cache **out) {
  *out = NULL;
  if (ctx->ext_free && ctx->ext_free != cache_free)
    return dt_fail(ctx, DITATTN_ERR_INTERNAL, "context extension slot holds foreign state");
  if (!ctx->ext) {
    dt_gather_cache *cache = dt_calloc(1, sizeof *cache);
    if (!cache) return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "dist gather cache");
    ctx->ext = cache;
    ctx->ext_free = cache_free;
  }
  *out = ctx->ext;
  return DITATTN_OK;
}

ditattn_status dt_gather_cache_ring(ditattn_context *ctx, size_t bytes, int staged, void *dev[2],
                                    void *host[2]) {
  dt_gather_cache *cache;
  TRY(cache_of(ctx, &cache));
  if (cache->ring_bytes < bytes || (staged && !cache->ring_host[0])) {
    free_ring(ctx, cache);
    for (int i = 0; i < 2; i++) {
      ditattn_status st = ditattn_malloc(ctx, bytes, &cache->ring_dev[i]);
      if (st == DITATTN_OK && staged) st = dt_dist_staging_alloc(ctx, bytes, &cache->ring_host[i]);
      if (st != DITATTN_OK) {
        free_ring(ctx, cache);
        return st;
      }
    }
    cache->ring_bytes = bytes;
  }
  for (int i = 0; i < 2; i++) dev[i] = cache->ring_dev[i], host[i] = cache->ring_host[i];
  return DITATTN_OK;
}

ditattn_status dt_gather_cache_get(dt_dist_job *job, const ditattn_tensor *like, int with_q,
                                   dt_gather_cache **out) {
  ditattn_context *ctx = job->ctx;
  *out = NULL;
  const int foreign = ctx->ext_free && ctx->ext_free != cache_free;
  dt_gather_cache *cache = foreign ? NULL : ctx->ext;
  const int64_t B = like->shape[0], H = like->shape[1], D = like->shape[3], N = job->n_global;
  const int new_shape = !cache || cache->B != B || cache->H != H || cache->N != N ||
                        cache->D != D || cache->dtype != like->dtype;
  const int reshape = new_shape && has_buffers(cache);
  /* Collective on every call (the ranks' caches agree, but a hang must not
   * depend on that): a new shape anywhere unmaps everywhere first. */
  int any = 0;
  if (MPI_Allreduce(&reshape, &any, 1, MPI_INT, MPI_MAX, job->comm) != MPI_SUCCESS ||
      (any && unmap_everywhere(ctx, cache, job->comm, -1)))
    return dt_fail(ctx, DITATTN_ERR_MPI, "gather cache: collective failed");
  TRY(cache_of(ctx, &cache));
  if (new_shape) {
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

dt_gather_cache *dt_gather_cache_current(ditattn_context *ctx) {
  return ctx->ext_free == cache_free ? ctx->ext : NULL;
}

ditattn_status dt_gather_cache_summary(dt_dist_job *job, dt_gather_cache *cache, size_t bytes) {
  ditattn_context *ctx = job->ctx;
  const int grow = cache->summary_bytes < bytes;
  int any = 0;
  /* Only summary buffers are freed: only their mappings must go first. */
  if (MPI_Allreduce(&grow, &any, 1, MPI_INT, MPI_MAX, job->comm) != MPI_SUCCESS ||
      (any && unmap_everywhere(ctx, cache, job->comm, DT_GATHER_SUMMARY)))
    return dt_fail(ctx, DITATTN_ERR_MPI, "key summary buffer: collective failed");
  ditattn_status local = DITATTN_OK;
  if (grow) {
    void **buf = &cache->buf[DT_GATHER_SUMMARY];
    dt_dist_device_free(ctx, *buf);
    *buf = NULL;
    cache->exported[DT_GATHER_SUMMARY] = 0;
    cache->summary_bytes = 0;
    local = ditattn_malloc(ctx, bytes, buf);
    if (local == DITATTN_OK) cache->summary_bytes = bytes;
  }
  return dt_dist_agree(job, local);
}

ditattn_status ditattn_dist_free_cache(ditattn_context *ctx, MPI_Comm comm) {
  dt_gather_cache *cache = ctx && ctx->ext_free == cache_free ? ctx->ext : NULL;
  /* Every rank unmaps its peers' buffers before any rank frees its own. */
  const int mpi_failed =
      ctx ? unmap_everywhere(ctx, cache, comm, -1) : MPI_Barrier(comm) != MPI_SUCCESS;
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  dt_clear_error(ctx);
  if (cache) {
    cache_free(ctx, cache);
    ctx->ext = NULL;
    ctx->ext_free = NULL;
  }
  return mpi_failed ? dt_fail(ctx, DITATTN_ERR_MPI, "ditattn_dist_free_cache: MPI_Barrier failed")
                    : DITATTN_OK;
}
