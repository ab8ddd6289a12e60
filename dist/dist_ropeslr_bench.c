/* The RoPeSLR problem of `ditattn bench --dist`: parameters, positions and
 * random weights around one timed ditattn_dist_ropeslr_forward. */
#include "dist_ropeslr_bench.h"

#include <math.h>
#include <stdlib.h>

enum { FRAME = 32 }; /* frames of FRAME × FRAME tokens */

/* U(lo, hi) from a splitmix64 stream. */
static float uniform(uint64_t *state, double lo, double hi) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(lo + (hi - lo) * (double)(z >> 11) / 9007199254740992.0);
}

ditattn_status dt_dist_bench_ropeslr(ditattn_context *ctx, MPI_Comm comm,
                                     const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                     const ditattn_tensor *k, const ditattn_tensor *v,
                                     ditattn_tensor *out) {
  const int64_t H = q->shape[1], D = q->shape[3];
  ditattn_ropeslr_params prm = ditattn_ropeslr_params_default(); /* b 64, rho 0.1, r 64 */
  prm.grid[0] = (slice->n_global + FRAME * FRAME - 1) / (FRAME * FRAME);
  prm.grid[1] = FRAME;
  prm.grid[2] = FRAME;
  const int64_t r = prm.rank;
  const int64_t rows[6] = {D, D, prm.grid[0], FRAME, FRAME, D};
  const int64_t cols[6] = {r, r, r, r, r, D};
  size_t at[7] = {0};
  for (int a = 0; a < 6; a++) at[a + 1] = at[a] + (size_t)(H * rows[a] * cols[a]);
  float *w = malloc(at[6] * sizeof(float));
  int32_t *pos = malloc((size_t)slice->length * 3 * sizeof(int32_t));
  if (!w || !pos) {
    free(w);
    free(pos);
    /* Still collective: the call agrees on the failure with the others. */
    return ditattn_dist_ropeslr_forward(ctx, comm, slice, &prm, NULL, NULL, q, k, v, out, NULL);
  }
  uint64_t seed = 1;
  ditattn_tensor views[6];
  for (int a = 0; a < 6; a++) {
    const double amp = (a < 2 || a == 5) ? 1.0 / sqrt((double)D) : 0.5;
    for (size_t i = at[a]; i < at[a + 1]; i++) w[i] = uniform(&seed, -amp, amp);
    views[a] = ditattn_tensor_bhnd(w + at[a], DITATTN_F32, 1, H, rows[a], cols[a]);
  }
  /* GPU contexts take their weights in device memory. */
  const ditattn_backend be = ditattn_context_backend(ctx);
  const int on_device = be == DITATTN_BACKEND_CUDA || be == DITATTN_BACKEND_HIP;
  void *dev = NULL;
  int uploaded = 0;
  if (on_device && ditattn_malloc(ctx, at[6] * sizeof(float), &dev) == DITATTN_OK)
    uploaded = ditattn_copy_to_backend(ctx, dev, w, at[6] * sizeof(float)) == DITATTN_OK;
  for (int a = 0; a < 6 && uploaded; a++) views[a].data = (float *)dev + at[a];
  const ditattn_ropeslr_weights weights = {views[0], views[1], views[2],
                                           views[3], views[4], views[5]};
  for (int64_t i = 0; i < slice->length; i++) {
    const int64_t g = slice->offset + i;
    pos[3 * i] = (int32_t)(g / (FRAME * FRAME));
    pos[3 * i + 1] = (int32_t)(g / FRAME % FRAME);
    pos[3 * i + 2] = (int32_t)(g % FRAME);
  }
  ditattn_status st = ditattn_dist_ropeslr_forward(
      ctx, comm, slice, &prm, on_device && !uploaded ? NULL : &weights, pos, q, k, v, out, NULL);
  if (dev) {
    (void)ditattn_synchronize(ctx); /* the call's kernels read the weights */
    (void)ditattn_free(ctx, dev);
  }
  free(w);
  free(pos);
  return st;
}
