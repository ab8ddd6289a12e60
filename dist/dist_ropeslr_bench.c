/* The RoPeSLR problem of `ditattn bench --dist`: parameters, positions and
 * random weights around one timed ditattn_dist_ropeslr_forward. */
#include "dist_ropeslr_bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { FRAME = 32 }; /* frames of FRAME × FRAME tokens */

/* U(lo, hi) from a splitmix64 stream. */
static float uniform(uint64_t *state, double lo, double hi) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(lo + (hi - lo) * (double)(z >> 11) / 9007199254740992.0);
}

ditattn_status dt_slr_bench_problem_new(ditattn_context *ctx, int64_t n_global, int64_t H,
                                        int64_t D, int64_t offset, int64_t length,
                                        dt_slr_bench_problem *p) {
  memset(p, 0, sizeof *p);
  p->ctx = ctx;
  ditattn_ropeslr_params *prm = &p->params;
  *prm = ditattn_ropeslr_params_default(); /* b 64, rho 0.1, r 64 */
  prm->grid[0] = (n_global + FRAME * FRAME - 1) / (FRAME * FRAME);
  prm->grid[1] = FRAME;
  prm->grid[2] = FRAME;
  const int64_t r = prm->rank;
  const int64_t rows[6] = {D, D, prm->grid[0], FRAME, FRAME, D};
  const int64_t cols[6] = {r, r, r, r, r, D};
  size_t at[7] = {0};
  for (int a = 0; a < 6; a++) at[a + 1] = at[a] + (size_t)(H * rows[a] * cols[a]);
  p->host_w = malloc(at[6] * sizeof(float));
  p->pos = malloc((size_t)(length > 0 ? length : 1) * 3 * sizeof(int32_t));
  if (!p->host_w || !p->pos) {
    dt_slr_bench_problem_free(p);
    return DITATTN_ERR_OUT_OF_MEMORY;
  }
  uint64_t seed = 1;
  ditattn_tensor views[6];
  for (int a = 0; a < 6; a++) {
    const double amp = (a < 2 || a == 5) ? 1.0 / sqrt((double)D) : 0.5;
    for (size_t i = at[a]; i < at[a + 1]; i++) p->host_w[i] = uniform(&seed, -amp, amp);
    views[a] = ditattn_tensor_bhnd(p->host_w + at[a], DITATTN_F32, 1, H, rows[a], cols[a]);
  }
  /* GPU contexts take their weights in device memory. */
  const ditattn_backend be = ditattn_context_backend(ctx);
  if (be == DITATTN_BACKEND_CUDA || be == DITATTN_BACKEND_HIP) {
    ditattn_status st = ditattn_malloc(ctx, at[6] * sizeof(float), &p->dev_w);
    if (st == DITATTN_OK)
      st = ditattn_copy_to_backend(ctx, p->dev_w, p->host_w, at[6] * sizeof(float));
    if (st != DITATTN_OK) {
      dt_slr_bench_problem_free(p);
      return st;
    }
    for (int a = 0; a < 6; a++) views[a].data = (float *)p->dev_w + at[a];
  }
  p->weights =
      (ditattn_ropeslr_weights){views[0], views[1], views[2], views[3], views[4], views[5]};
  for (int64_t i = 0; i < length; i++) {
    const int64_t g = offset + i;
    p->pos[3 * i] = (int32_t)(g / (FRAME * FRAME));
    p->pos[3 * i + 1] = (int32_t)(g / FRAME % FRAME);
    p->pos[3 * i + 2] = (int32_t)(g % FRAME);
  }
  return DITATTN_OK;
}

void dt_slr_bench_problem_free(dt_slr_bench_problem *p) {
  if (p->dev_w) {
    (void)ditattn_synchronize(p->ctx); /* queued kernels may read the weights */
    (void)ditattn_free(p->ctx, p->dev_w);
  }
  free(p->host_w);
  free(p->pos);
  memset(p, 0, sizeof *p);
}

ditattn_status dt_dist_bench_ropeslr(ditattn_context *ctx, MPI_Comm comm,
                                     const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                     const ditattn_tensor *k, const ditattn_tensor *v,
                                     ditattn_tensor *out) {
  const int64_t H = q->shape[1], D = q->shape[3];
  dt_slr_bench_problem p;
  ditattn_status st =
      dt_slr_bench_problem_new(ctx, slice->n_global, H, D, slice->offset, slice->length, &p);
  /* Still collective on failure: the call agrees on it with the others. */
  st = ditattn_dist_ropeslr_forward(
      ctx, comm, slice, &p.params, st == DITATTN_OK ? &p.weights : NULL, p.pos, q, k, v, out, NULL);
  dt_slr_bench_problem_free(&p);
  return st;
}
