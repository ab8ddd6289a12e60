/* Argument checks shared by the public API entry points. Each returns
 * DITATTN_OK or records a message naming the argument and dimension. */
#ifndef DITATTN_VALIDATE_H
#define DITATTN_VALIDATE_H

#include "backend.h"

/* Dimension value that matches anything in dt_check_shape. */
#define DT_ANY (-1)

/* Non-NULL, data non-NULL, known dtype, every dimension >= 1, strides >= 0,
 * byte extent representable in size_t. */
ditattn_status dt_check_tensor(ditattn_context *ctx, const char *name, const ditattn_tensor *t);
/* Additionally: the view does not overlap itself (outputs). */
ditattn_status dt_check_output(ditattn_context *ctx, const char *name, const ditattn_tensor *t);
/* Each of B, H, N, D equals the expected value unless it is DT_ANY. */
ditattn_status dt_check_shape(ditattn_context *ctx, const char *name, const ditattn_tensor *t,
                              int64_t B, int64_t H, int64_t N, int64_t D);
/* t's dtype is `dtype` and the backend accepts it. */
ditattn_status dt_check_dtype(ditattn_context *ctx, const char *name, const ditattn_tensor *t,
                              ditattn_dtype dtype);
/* The memory spans of a and b are disjoint. */
ditattn_status dt_check_disjoint(ditattn_context *ctx, const char *name_a, const ditattn_tensor *a,
                                 const char *name_b, const ditattn_tensor *b);
/* A float buffer of n entries named `name` does not overlap tensor t. */
ditattn_status dt_check_buffer_disjoint(ditattn_context *ctx, const char *name, const void *buf,
                                        size_t bytes, const char *tname, const ditattn_tensor *t);
/* Two raw buffers (either may be NULL = absent) do not overlap. */
ditattn_status dt_check_buffers_disjoint(ditattn_context *ctx, const char *name_a, const void *a,
                                         size_t bytes_a, const char *name_b, const void *b,
                                         size_t bytes_b);
/* Bytes from t->data to one past its last element (0 on overflow). */
size_t dt_tensor_span_bytes(const ditattn_tensor *t);
/* Entry point preamble: ctx non-NULL and error cleared. */
ditattn_status dt_begin(ditattn_context *ctx);
/* Every position triple lies inside grid. */
ditattn_status dt_check_positions(ditattn_context *ctx, const int64_t grid[3], const int32_t *pos,
                                  int64_t N);
/* Allocates (dt_malloc) raster-order positions for N = T·H·W tokens. */
ditattn_status dt_raster_positions(ditattn_context *ctx, const int64_t grid[3], int64_t N,
                                   int32_t **pos_out);
/* Resolves scale <= 0 to 1/sqrt(D); rejects NaN/Inf. */
ditattn_status dt_resolve_scale(ditattn_context *ctx, float scale, int64_t D, float *out);
/* n_l = ceil(N / b^l) with overflow care (b^l saturates past N). */
int64_t dt_ceil_div_pow(int64_t N, int64_t b, int l);
/* b^l saturated at INT64_MAX. */
int64_t dt_pow_sat(int64_t b, int l);

#define TRY(expr)                                                                                  \
  do {                                                                                             \
    ditattn_status try_status_ = (expr);                                                           \
    if (try_status_ != DITATTN_OK) return try_status_;                                             \
  } while (0)

#define UNSUPPORTED_IF_NULL(ctx, entry, what)                                                      \
  do {                                                                                             \
    if (!(ctx)->ops->entry)                                                                        \
      return dt_fail((ctx), DITATTN_ERR_UNSUPPORTED, "backend %s does not implement %s",           \
                     (ctx)->ops->name, (what));                                                    \
  } while (0)

#endif
