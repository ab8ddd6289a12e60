/* Host <-> device helpers of the dist GPU checks (gpu_xfer.h). */
#include "gpu_xfer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint16_t to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* Rounds every element to the nearest bf16 (so CPU and GPU see equal inputs). */
void gx_round_bf16(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = from_bf16(to_bf16(x[i]));
}

/* A device copy of n host floats stored as dtype (NaN stays NaN). */
ditattn_status gx_upload(ditattn_context *ctx, const float *host, size_t n, ditattn_dtype dtype,
                         void **dev) {
  const size_t es = ditattn_dtype_size(dtype);
  ditattn_status st = ditattn_malloc(ctx, n * es, dev);
  if (st != DITATTN_OK) return st;
  if (dtype == DITATTN_F32) return ditattn_copy_to_backend(ctx, *dev, host, n * es);
  uint16_t *h = malloc(n * sizeof *h);
  if (!h) return DITATTN_ERR_OUT_OF_MEMORY;
  for (size_t i = 0; i < n; i++) h[i] = to_bf16(host[i]);
  st = ditattn_copy_to_backend(ctx, *dev, h, n * es);
  free(h);
  return st;
}

ditattn_status gx_download(ditattn_context *ctx, const void *dev, size_t n, ditattn_dtype dtype,
                           float *host) {
  if (dtype == DITATTN_F32) return ditattn_copy_to_host(ctx, host, dev, n * sizeof(float));
  uint16_t *h = malloc(n * sizeof *h);
  if (!h) return DITATTN_ERR_OUT_OF_MEMORY;
  ditattn_status st = ditattn_copy_to_host(ctx, h, dev, n * sizeof *h);
  for (size_t i = 0; i < n; i++) host[i] = from_bf16(h[i]);
  free(h);
  return st;
}

/* The device view of a host dtu_tensor uploaded whole (same strides). */
ditattn_tensor gx_device_view(const dtu_tensor *t, void *dev, ditattn_dtype dtype) {
  ditattn_tensor d = t->t;
  d.data = dev;
  d.dtype = dtype;
  return d;
}

/* This rank's slice: a partition of N in rank order, pieces handed to
 * ranks in a random permutation (slices may come in any order). */
ditattn_dist_slice gx_draw_slice(uint64_t seed, int64_t N, int rank, int size) {
  dtu_rng rng = {seed ^ 0x5bd1e995u};
  int64_t len[64], off[64];
  int perm[64];
  dtu_partition(&rng, N, size, len);
  for (int r = 0; r < size; r++) perm[r] = r;
  for (int r = size - 1; r > 0; r--) {
    int j = (int)dtu_int(&rng, 0, r), t = perm[r];
    perm[r] = perm[j];
    perm[j] = t;
  }
  int64_t o = 0;
  for (int r = 0; r < size; r++) {
    off[r] = o;
    o += len[r];
  }
  ditattn_dist_slice s = {N, off[perm[rank]], len[perm[rank]]};
  return s;
}

void gx_slice_errors(const ditattn_tensor *out, const ditattn_tensor *ref_cpu,
                     const ditattn_tensor *ref_gpu, const float *lse, const float *lse_cpu,
                     const float *lse_gpu, int want_lse, const ditattn_dist_slice *slice,
                     double err[4]) {
  const int64_t BH = out->shape[0] * out->shape[1], len = slice->length;
  err[0] = dtu_rel_err_slice(out, ref_cpu, slice->offset);
  err[1] = dtu_rel_err_slice(out, ref_gpu, slice->offset);
  if (want_lse) {
    err[2] = dtu_rel_err_lse(lse, lse_cpu, BH, len, slice->n_global, slice->offset);
    err[3] = dtu_rel_err_lse(lse, lse_gpu, BH, len, slice->n_global, slice->offset);
  } else {
    /* lse not requested: the device lse buffer must be untouched (still NaN). */
    int untouched = 1;
    for (int64_t i = 0; i < BH * len; i++) untouched &= isnan(lse[i]) != 0;
    err[2] = err[3] = untouched ? 0.0 : INFINITY;
  }
}
