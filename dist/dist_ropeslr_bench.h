/* The RoPeSLR case of `ditattn bench --dist` (dist_bench.c times it). */
#ifndef DITATTN_DIST_ROPESLR_BENCH_H
#define DITATTN_DIST_ROPESLR_BENCH_H

#include "ditattn/ditattn_dist.h"

/* One ditattn_dist_ropeslr_forward on this rank's slice with the bench's
 * problem: b = 64, rho = 0.1, r = 64, ELU1, own block forced; tokens in
 * raster order of frames of 32×32 (grid ceil(N/1024) × 32 × 32, explicit
 * positions); random weights as the CLI's (A, B, W ~ U(-1,1)/sqrt(D),
 * E ~ U(-0.5,0.5), seed 1). The weights are built outside the timed call. */
ditattn_status dt_dist_bench_ropeslr(ditattn_context *ctx, MPI_Comm comm,
                                     const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                     const ditattn_tensor *k, const ditattn_tensor *v,
                                     ditattn_tensor *out);

#endif
