/* The RoPeSLR problem of `ditattn bench --dist` (dist_bench.c times it; the
 * GPU row-split bench of dist/device builds the same problem). */
#ifndef DITATTN_DIST_ROPESLR_BENCH_H
#define DITATTN_DIST_ROPESLR_BENCH_H

#include "ditattn/ditattn_dist.h"

/* The bench's problem for tokens [offset, offset + length) of n_global:
 * b = 64, rho = 0.1, r = 64, ELU1, own block forced; tokens in raster order
 * of frames of 32×32 (grid ceil(n_global/1024) × 32 × 32, explicit
 * positions); random weights as the CLI's (A, B, W ~ U(-1,1)/sqrt(D),
 * E ~ U(-0.5,0.5), seed 1), in device memory on GPU contexts. */
typedef struct dt_slr_bench_problem {
  ditattn_ropeslr_params params;
  ditattn_ropeslr_weights weights;
  int32_t *pos; /* 3 per token of the range */
  ditattn_context *ctx;
  float *host_w;
  void *dev_w;
} dt_slr_bench_problem;

ditattn_status dt_slr_bench_problem_new(ditattn_context *ctx, int64_t n_global, int64_t H,
                                        int64_t D, int64_t offset, int64_t length,
                                        dt_slr_bench_problem *p);
/* Waits for the context's queued work (it may read the weights), frees. */
void dt_slr_bench_problem_free(dt_slr_bench_problem *p);

/* One ditattn_dist_ropeslr_forward on this rank's slice with the bench's
 * problem. The problem is built outside the timed call. */
ditattn_status dt_dist_bench_ropeslr(ditattn_context *ctx, MPI_Comm comm,
                                     const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                     const ditattn_tensor *k, const ditattn_tensor *v,
                                     ditattn_tensor *out);

#endif
