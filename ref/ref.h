/* The reference backend: readable scalar C11, one loop nest per operation,
 * double accumulation, no threads. It defines ditattn's semantics; every
 * other backend is tested against it. */
#ifndef DITATTN_REF_H
#define DITATTN_REF_H

#include "../backends/backend.h"

/* Address of element (b, h, n, d) of an f32 tensor view. */
static inline float *dt_f32_at(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n,
                               int64_t d) {
  return (float *)t->data + b * t->stride[0] + h * t->stride[1] + n * t->stride[2] + d;
}

/* Token orders (pure index functions; also used by the API layer). */
ditattn_status dt_order_seq_to_raster(const ditattn_order_params *params, int64_t *seq_to_raster);
ditattn_status dt_order_positions(const ditattn_order_params *params, int32_t *pos);

/* Dispatch entries. */
ditattn_status dt_ref_dense_forward(ditattn_context *ctx, const dt_dense_fwd *p);
ditattn_status dt_ref_dense_backward(ditattn_context *ctx, const dt_dense_bwd *p);
ditattn_status dt_ref_lse_merge(ditattn_context *ctx, const dt_lse_merge *p);
ditattn_status dt_ref_pool(ditattn_context *ctx, const dt_pool *p);
ditattn_status dt_ref_llsa_forward(ditattn_context *ctx, const dt_llsa_fwd *p);
ditattn_status dt_ref_llsa_backward(ditattn_context *ctx, const dt_llsa_bwd *p);
ditattn_status dt_ref_rope(ditattn_context *ctx, const dt_rope *p);
ditattn_status dt_ref_order(ditattn_context *ctx, const dt_order *p);
ditattn_status dt_ref_ropeslr_forward(ditattn_context *ctx, const dt_ropeslr_fwd *p);
ditattn_status dt_ref_ropeslr_backward(ditattn_context *ctx, const dt_ropeslr_bwd *p);

#endif
