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
/* Errors of a dist call's slice out (lse: [B·H][len], poisoned before the
 * call) against whole-sequence results on the CPU and on the GPU:
 * err[0..3] = out vs cpu, out vs gpu, lse vs cpu, lse vs gpu. When lse was
 * not requested, err[2] = err[3] = 0 if it is still all NaN, else +inf. */
void gx_slice_errors(const ditattn_tensor *out, const ditattn_tensor *ref_cpu,
                     const ditattn_tensor *ref_gpu, const float *lse, const float *lse_cpu,
                     const float *lse_gpu, int want_lse, const ditattn_dist_slice *slice,
                     double err[4]);
/* This rank's slice: a partition of N in rank order, pieces handed to
 * ranks in a random permutation (slices may come in any order). */
ditattn_dist_slice gx_draw_slice(uint64_t seed, int64_t N, int rank, int size);

#endif
