/* Context lifetime, the backend registry and backend memory. */
#include "backend.h"

#include <string.h>

static const char *const backend_names[DITATTN_BACKEND_COUNT] = {"ref", "cpu", "cuda", "hip"};

const dt_backend_ops *dt_backend_table(ditattn_backend backend) {
  switch (backend) {
  case DITATTN_BACKEND_REF: return dt_ref_ops();
  case DITATTN_BACKEND_CPU: return dt_cpu_ops();
  case DITATTN_BACKEND_CUDA: return dt_cuda_ops();
  case DITATTN_BACKEND_HIP: return dt_hip_ops();
  default: return NULL;
  }
}

const char *ditattn_backend_name(ditattn_backend backend) {
  if ((int)backend < 0 || backend >= DITATTN_BACKEND_COUNT) return "unknown";
  return backend_names[backend];
}

ditattn_status ditattn_backend_parse(const char *name, ditattn_backend *backend) {
  if (!name || !backend) return DITATTN_ERR_NULL_POINTER;
  for (int i = 0; i < DITATTN_BACKEND_COUNT; i++) {
    if (strcmp(name, backend_names[i]) == 0) {
      *backend = (ditattn_backend)i;
      return DITATTN_OK;
    }
  }
  return DITATTN_ERR_INVALID_ARGUMENT;
}

int ditattn_backend_compiled(ditattn_backend backend) { return dt_backend_table(backend) != NULL; }

ditattn_status ditattn_context_create(ditattn_backend backend, ditattn_context **ctx) {
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  *ctx = NULL;
  if ((int)backend < 0 || backend >= DITATTN_BACKEND_COUNT) return DITATTN_ERR_INVALID_ARGUMENT;
  const dt_backend_ops *ops = dt_backend_table(backend);
  if (!ops) return DITATTN_ERR_BACKEND_UNAVAILABLE;
  ditattn_context *c = dt_calloc(1, sizeof *c);
  if (!c) return DITATTN_ERR_OUT_OF_MEMORY;
  c->backend = backend;
  c->ops = ops;
  if (ops->init) {
    ditattn_status st = ops->init(c);
    if (st != DITATTN_OK) {
      dt_free(c);
      return st;
    }
  }
  *ctx = c;
  return DITATTN_OK;
}

void ditattn_context_destroy(ditattn_context *ctx) {
  if (!ctx) return;
  if (ctx->ext_free) ctx->ext_free(ctx, ctx->ext);
  if (ctx->ops && ctx->ops->fini) ctx->ops->fini(ctx);
  dt_free(ctx);
}

ditattn_backend ditattn_context_backend(const ditattn_context *ctx) {
  return ctx ? ctx->backend : DITATTN_BACKEND_COUNT;
}

ditattn_status ditattn_context_set_num_threads(ditattn_context *ctx, int num_threads) {
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  dt_clear_error(ctx);
  if (num_threads < 0)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "num_threads = %d (must be >= 0)",
                   num_threads);
  ctx->num_threads = num_threads;
  return ctx->ops->set_num_threads ? ctx->ops->set_num_threads(ctx, num_threads) : DITATTN_OK;
}

ditattn_status ditattn_context_set_stream(ditattn_context *ctx, void *stream) {
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  dt_clear_error(ctx);
  if (!ctx->ops->set_stream)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "backend %s has no streams", ctx->ops->name);
  ctx->stream = stream;
  return ctx->ops->set_stream(ctx, stream);
}

ditattn_status ditattn_synchronize(ditattn_context *ctx) {
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  dt_clear_error(ctx);
  return ctx->ops->synchronize ? ctx->ops->synchronize(ctx) : DITATTN_OK;
}

ditattn_status ditattn_malloc(ditattn_context *ctx, size_t bytes, void **ptr) {
  if (!ctx || !ptr)
    return ctx ? dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "ptr is NULL") : DITATTN_ERR_NULL_POINTER;
  dt_clear_error(ctx);
  *ptr = NULL;
  if (!ctx->ops->mem_alloc)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "backend %s: no allocator", ctx->ops->name);
  return ctx->ops->mem_alloc(ctx, bytes, ptr);
}

ditattn_status ditattn_free(ditattn_context *ctx, void *ptr) {
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  dt_clear_error(ctx);
  if (!ptr) return DITATTN_OK;
  if (!ctx->ops->mem_free)
    return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "backend %s: no allocator", ctx->ops->name);
  return ctx->ops->mem_free(ctx, ptr);
}

static ditattn_status check_copy(ditattn_context *ctx, void *dst, const void *src, size_t bytes) {
  if (!ctx) return DITATTN_ERR_NULL_POINTER;
  dt_clear_error(ctx);
  if (bytes && (!dst || !src))
    return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "%s is NULL", dst ? "src" : "dst");
  return DITATTN_OK;
}

ditattn_status ditattn_copy_to_backend(ditattn_context *ctx, void *dst, const void *host_src,
                                       size_t bytes) {
  ditattn_status st = check_copy(ctx, dst, host_src, bytes);
  if (st != DITATTN_OK || !bytes) return st;
  if (!ctx->ops->copy_to_backend) return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "no copy");
  return ctx->ops->copy_to_backend(ctx, dst, host_src, bytes);
}

ditattn_status ditattn_copy_to_host(ditattn_context *ctx, void *host_dst, const void *src,
                                    size_t bytes) {
  ditattn_status st = check_copy(ctx, host_dst, src, bytes);
  if (st != DITATTN_OK || !bytes) return st;
  if (!ctx->ops->copy_to_host) return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "no copy");
  return ctx->ops->copy_to_host(ctx, host_dst, src, bytes);
}

/* Host memory for the REF and CPU backends. */
ditattn_status dt_host_mem_alloc(ditattn_context *ctx, size_t bytes, void **ptr) {
  *ptr = dt_malloc(bytes);
  return *ptr ? DITATTN_OK : dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "allocating %zu bytes", bytes);
}
ditattn_status dt_host_mem_free(ditattn_context *ctx, void *ptr) {
  (void)ctx;
  dt_free(ptr);
  return DITATTN_OK;
}
ditattn_status dt_host_copy(ditattn_context *ctx, void *dst, const void *src, size_t bytes) {
  (void)ctx;
  memmove(dst, src, bytes);
  return DITATTN_OK;
}

static const char *const op_names[DITATTN_OP_COUNT] = {
    "dense_forward", "dense_backward", "llsa_forward", "llsa_backward",   "rope",
    "order",         "pool",           "lse_merge",    "ropeslr_forward", "ropeslr_backward"};

const char *ditattn_op_name(ditattn_op op) {
  if ((int)op < 0 || op >= DITATTN_OP_COUNT) return "unknown";
  return op_names[op];
}

int ditattn_backend_supports(ditattn_backend backend, ditattn_op op) {
  const dt_backend_ops *o = dt_backend_table(backend);
  if (!o) return 0;
  switch (op) {
  case DITATTN_OP_DENSE_FORWARD: return o->dense_forward != NULL;
  case DITATTN_OP_DENSE_BACKWARD: return o->dense_backward != NULL;
  case DITATTN_OP_LLSA_FORWARD: return o->llsa_forward != NULL;
  case DITATTN_OP_LLSA_BACKWARD: return o->llsa_backward != NULL;
  case DITATTN_OP_ROPE: return o->rope != NULL;
  case DITATTN_OP_ORDER: return o->order != NULL;
  case DITATTN_OP_POOL: return o->pool != NULL;
  case DITATTN_OP_LSE_MERGE: return o->lse_merge != NULL;
  case DITATTN_OP_ROPESLR_FORWARD: return o->ropeslr_forward != NULL;
  case DITATTN_OP_ROPESLR_BACKWARD: return o->ropeslr_backward != NULL;
  default: return 0;
  }
}
