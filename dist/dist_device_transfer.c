/* Which way device buffers cross MPI: staged through host memory (always
 * works) or as device pointers (needs a CUDA-aware MPI). */
#include "dist_device.h"

#include <stdlib.h>
#include <string.h>

#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>
#endif

int dt_dist_env_is(const char *name, const char *value) {
  const char *env = getenv(name);
  return env && !strcmp(env, value);
}

int dt_dist_is_device(const ditattn_context *ctx) {
  if (!ctx) return 0;
  if (ctx->backend == DITATTN_BACKEND_CUDA || ctx->backend == DITATTN_BACKEND_HIP) return 1;
  /* Test hook: host memory is valid "device" memory for REF/CPU, so their
   * contexts can run the device-memory path, and CI covers its ring, staging
   * and merge logic without a GPU. */
  return dt_dist_env_is("DITATTN_DIST_DEVICE_PATH", "1");
}

/* Open MPI built with CUDA support (compile time) and running with it on. */
static int mpi_is_cuda_aware(void) {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return 0;
#endif
}

int dt_dist_device_transfer(ditattn_backend backend) {
  if (dt_dist_env_is("DITATTN_DIST_CUDA_AWARE", "0")) return DT_DIST_XFER_STAGED;
  if (dt_dist_env_is("DITATTN_DIST_CUDA_AWARE", "1")) return DT_DIST_XFER_DEVICE;
  return backend == DITATTN_BACKEND_CUDA && mpi_is_cuda_aware() ? DT_DIST_XFER_DEVICE
                                                                : DT_DIST_XFER_STAGED;
}

void dt_dist_release(ditattn_context *ctx, dt_dist_release_fn release, void *ptr) {
  if (!ptr) return;
  char saved[sizeof ctx->last_error];
  memcpy(saved, ctx->last_error, sizeof saved);
  (void)release(ctx, ptr);
  memcpy(ctx->last_error, saved, sizeof saved);
}

void dt_dist_device_free(ditattn_context *ctx, void *ptr) {
  dt_dist_release(ctx, ditattn_free, ptr);
}

static int has_pinned(const ditattn_context *ctx) {
  return ctx->ops->host_alloc && ctx->ops->host_free;
}

ditattn_status dt_dist_staging_alloc(ditattn_context *ctx, size_t bytes, void **ptr) {
  if (has_pinned(ctx)) return ctx->ops->host_alloc(ctx, bytes, ptr);
  *ptr = dt_malloc(bytes);
  return *ptr ? DITATTN_OK
              : dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "staging buffer of %zu bytes", bytes);
}

void dt_dist_staging_free(ditattn_context *ctx, void *ptr) {
  if (has_pinned(ctx))
    dt_dist_release(ctx, ctx->ops->host_free, ptr);
  else
    dt_free(ptr);
}
