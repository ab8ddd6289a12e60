/* Host <-> device helpers shared by the dist GPU checks (gpu_check.c,
 * gpu_check_sparse.c): bf16 rounding, uploads of host f32 data stored as
 * f32 or bf16, downloads back to f32, device views of host test tensors,
 * and the uneven, shuffled slice of a rank. */
#ifndef DITATTN_DIST_GPU_XFER_H
#define DITATTN_DIST_GPU_XFER_H

#include "dist_test_util.h"

#include <stddef.h>

/* Rounds every element to the nearest bf16 (so CPU and GPU see equal inputs). */
void gx_round_bf16(float *x, size_t n);
/* A device copy of n host floats stored as dtype (NaN stays NaN). */
ditattn_status gx_upload(ditattn_context *ctx, const float *host, size_t n, ditattn_dtype dtype,
                         void **dev);
ditattn_status gx_download(ditattn_context *ctx, const void *dev, size_t n, ditattn_dtype dtype,
                           float *host);
/* The device view of a host dtu_tensor uploaded whole (same strides). */
ditattn_tensor gx_device_view(const dtu_tensor *t, void *dev, ditattn_dtype dtype);
/* This rank's slice: a partition of N in rank order, pieces handed to
 * ranks in a random permutation (slices may come in any order). */
ditattn_dist_slice gx_draw_slice(uint64_t seed, int64_t N, int rank, int size);

#endif
