/* The reference backend's dispatch table. */
#include "ref.h"

static const dt_backend_ops ref_ops = {
    .name = "ref",
    .dtypes = 1u << DITATTN_F32,
    .query_rows = 1,
    .mem_alloc = dt_host_mem_alloc,
    .mem_free = dt_host_mem_free,
    .copy_to_backend = dt_host_copy,
    .copy_to_host = dt_host_copy,
    .dense_forward = dt_ref_dense_forward,
    .dense_backward = dt_ref_dense_backward,
    .llsa_forward = dt_ref_llsa_forward,
    .llsa_backward = dt_ref_llsa_backward,
    .rope = dt_ref_rope,
    .order = dt_ref_order,
    .pool = dt_ref_pool,
    .lse_merge = dt_ref_lse_merge,
    .ropeslr_forward = dt_ref_ropeslr_forward,
    .ropeslr_backward = dt_ref_ropeslr_backward,
};

const dt_backend_ops *dt_ref_ops(void) { return &ref_ops; }
