/* The CPU backend's dispatch table, thread count and BLAS thread pinning. */
#include "cpu_internal.h"

#ifdef DITATTN_CPU_OPENBLAS
#include <cblas.h>
#endif

int dt_cpu_num_threads(const ditattn_context *ctx) {
#ifdef _OPENMP
  if (ctx && ctx->num_threads > 0) return ctx->num_threads;
  int n = omp_get_max_threads();
  return n > 0 ? n : 1;
#else
  (void)ctx;
  return 1;
#endif
}

int dt_cpu_blas_enter(void) {
#ifdef DITATTN_CPU_OPENBLAS
  int saved = openblas_get_num_threads();
  if (saved != 1) openblas_set_num_threads(1);
  return saved;
#else
  return 1;
#endif
}

int dt_cpu_tiles_use_blas(int64_t D) {
#ifdef DITATTN_CPU_OPENBLAS
  return !dt_cpu_use_own_kernel || D % 64 != 0;
#else
  (void)D;
  return 0;
#endif
}

void dt_cpu_blas_leave(int saved) {
#ifdef DITATTN_CPU_OPENBLAS
  if (saved != 1) openblas_set_num_threads(saved);
#else
  (void)saved;
#endif
}

#include <stdlib.h>
#include <string.h>

_Atomic int dt_cpu_use_own_kernel = 1;

static ditattn_status cpu_init(ditattn_context *ctx) {
  (void)ctx;
  /* Default: the own kernels, 1.6x faster than OpenBLAS 0.3.21 on the
   * benchmark machine (bench/RESULTS.md). Process-wide, read at each
   * context creation. */
  const char *choice = getenv("DITATTN_CPU_KERNEL");
  if (choice && strcmp(choice, "own") == 0)
    dt_cpu_use_own_kernel = 1;
  else if (choice && strcmp(choice, "blas") == 0)
    dt_cpu_use_own_kernel = 0;
  return DITATTN_OK;
}

static ditattn_status cpu_set_num_threads(ditattn_context *ctx, int num_threads) {
  (void)ctx;
  (void)num_threads; /* read from ctx->num_threads by every entry */
  return DITATTN_OK;
}

static const dt_backend_ops cpu_ops = {
    .name = "cpu",
    .dtypes = 1u << DITATTN_F32,
    .init = cpu_init,
    .set_num_threads = cpu_set_num_threads,
    .mem_alloc = dt_host_mem_alloc,
    .mem_free = dt_host_mem_free,
    .copy_to_backend = dt_host_copy,
    .copy_to_host = dt_host_copy,
    .dense_forward = dt_cpu_dense_forward,
    .dense_backward = dt_cpu_dense_backward,
    .llsa_forward = dt_cpu_llsa_forward,
    .llsa_backward = dt_cpu_llsa_backward,
    .rope = dt_cpu_rope,
    .order = dt_cpu_order,
    .pool = dt_cpu_pool,
    .lse_merge = dt_cpu_lse_merge,
    .ropeslr_forward = dt_cpu_slr_forward,
    .ropeslr_backward = dt_cpu_slr_backward,
};

const dt_backend_ops *dt_cpu_ops(void) { return &cpu_ops; }
