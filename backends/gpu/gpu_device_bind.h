/* Device binding of a GPU context, included by gpu_ops_impl.h before its
 * table: a context made by ditattn_context_create_on_device runs every entry
 * on its device. Each bound entry makes that device current, calls the
 * entry, and restores the thread's previous device, so callers that juggle
 * devices themselves see no change. Unbound contexts (device -1) use the
 * thread's current device, as before. */

static ditattn_status gpu_device_count(int *count) {
  int err = DT_GPU_FN(device_count)(count);
  if (err) *count = 0;
  return err || *count < 1 ? DITATTN_ERR_BACKEND_UNAVAILABLE : DITATTN_OK;
}

static ditattn_status gpu_bind_device(ditattn_context *ctx, int device) {
  int count = 0;
  int err = DT_GPU_FN(device_count)(&count);
  if (err || count < 1)
    return dt_fail(ctx, DITATTN_ERR_BACKEND_UNAVAILABLE, "%s: no device (%s)", DT_GPU_NAME,
                   err ? DT_GPU_FN(error_string)(err) : "0 devices");
  if (device < 0 || device >= count)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "%s: device %d out of range [0, %d)",
                   DT_GPU_NAME, device, count);
  gpu_state *st = gpu_st(ctx);
  if (st->ws)
    return dt_fail(ctx, DITATTN_ERR_INTERNAL, "%s: binding a context that already has a workspace",
                   DT_GPU_NAME);
  st->device = device;
  return DITATTN_OK;
}

/* Makes the bound device current; *prev receives the device to restore
 * (-1: nothing to restore). */
static ditattn_status gpu_enter(ditattn_context *ctx, int *prev) {
  *prev = -1;
  const gpu_state *st = gpu_st(ctx);
  if (!st || st->device < 0) return DITATTN_OK;
  int cur = -1;
  GPU_TRY(ctx, DT_GPU_FN(get_device)(&cur), "get current device");
  if (cur == st->device) return DITATTN_OK;
  GPU_TRY(ctx, DT_GPU_FN(set_device)(st->device), "set device");
  *prev = cur;
  return DITATTN_OK;
}

static void gpu_leave(int prev) {
  if (prev >= 0) (void)DT_GPU_FN(set_device)(prev);
}

/* gpu_bound_<entry>: the entry run on the context's device. */
#define GPU_BOUND(entry, params, args)                                                             \
  static ditattn_status gpu_bound_##entry params {                                                 \
    int prev_device;                                                                               \
    TRY(gpu_enter(ctx, &prev_device));                                                             \
    ditattn_status bound_st_ = gpu_##entry args;                                                   \
    gpu_leave(prev_device);                                                                        \
    return bound_st_;                                                                              \
  }

GPU_BOUND(set_stream, (ditattn_context * ctx, void *stream), (ctx, stream))
GPU_BOUND(synchronize, (ditattn_context * ctx), (ctx))
GPU_BOUND(mem_alloc, (ditattn_context * ctx, size_t bytes, void **ptr), (ctx, bytes, ptr))
GPU_BOUND(mem_free, (ditattn_context * ctx, void *ptr), (ctx, ptr))
GPU_BOUND(copy_to_backend, (ditattn_context * ctx, void *dst, const void *src, size_t n),
          (ctx, dst, src, n))
GPU_BOUND(copy_to_host, (ditattn_context * ctx, void *dst, const void *src, size_t n),
          (ctx, dst, src, n))
GPU_BOUND(dense_forward, (ditattn_context * ctx, const dt_dense_fwd *p), (ctx, p))
GPU_BOUND(dense_backward, (ditattn_context * ctx, const dt_dense_bwd *p), (ctx, p))
GPU_BOUND(llsa_forward, (ditattn_context * ctx, const dt_llsa_fwd *p), (ctx, p))
GPU_BOUND(rope, (ditattn_context * ctx, const dt_rope *p), (ctx, p))
GPU_BOUND(order, (ditattn_context * ctx, const dt_order *p), (ctx, p))
GPU_BOUND(pool, (ditattn_context * ctx, const dt_pool *p), (ctx, p))
GPU_BOUND(lse_merge, (ditattn_context * ctx, const dt_lse_merge *p), (ctx, p))
GPU_BOUND(ropeslr_forward, (ditattn_context * ctx, const dt_ropeslr_fwd *p), (ctx, p))
GPU_BOUND(ipc_export, (ditattn_context * ctx, void *base, void *handle), (ctx, base, handle))
GPU_BOUND(ipc_open, (ditattn_context * ctx, const void *handle, void **ptr), (ctx, handle, ptr))
GPU_BOUND(ipc_close, (ditattn_context * ctx, void *ptr), (ctx, ptr))
GPU_BOUND(copy_2d,
          (ditattn_context * ctx, void *dst, size_t dpitch, const void *src, size_t spitch,
           size_t width, size_t height),
          (ctx, dst, dpitch, src, spitch, width, height))
GPU_BOUND(copy_2d_batch, (ditattn_context * ctx, const dt_copy_2d_desc *descs, int count),
          (ctx, descs, count))
GPU_BOUND(host_alloc, (ditattn_context * ctx, size_t bytes, void **ptr), (ctx, bytes, ptr))
GPU_BOUND(host_free, (ditattn_context * ctx, void *ptr), (ctx, ptr))
GPU_BOUND(side_fork, (ditattn_context * ctx), (ctx))
GPU_BOUND(side_copy_2d,
          (ditattn_context * ctx, void *dst, size_t dpitch, const void *src, size_t spitch,
           size_t width, size_t height),
          (ctx, dst, dpitch, src, spitch, width, height))
GPU_BOUND(side_join, (ditattn_context * ctx), (ctx))
GPU_BOUND(side_mark, (ditattn_context * ctx), (ctx))

#undef GPU_BOUND

/* The workspace lives on the bound device: free it there. */
static void gpu_bound_fini(ditattn_context *ctx) {
  int prev_device = -1;
  ditattn_status st = gpu_enter(ctx, &prev_device);
  gpu_fini(ctx);
  if (st == DITATTN_OK) gpu_leave(prev_device);
}
