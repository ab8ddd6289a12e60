/* RoPeSLR vs dense attention on the CPU backend, forward and backward, in one
 * run: D = 64, one head, b = 64, rho = 0.1 (K = ceil(0.1·n)), r = 64, raster
 * positions on a T×32×32 grid, inputs uniform in [-1, 1).
 *   bench_cpu_ropeslr [--threads T] [--reps R] [--no-backward] [--no-dense] [N ...]
 * N must be a multiple of 1024 (default 16384 65536). Times are the best of
 * R repetitions (default 2; 1 for dense at N > 16384). */
#include "bench_cpu_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { D = 64, RANK = 64, BLOCK = 64 };

static uint64_t rng_state = 0x2545f4914f6cdd1dull; /* inputs: the same every run */
static const char *const PROG = "bench_cpu_ropeslr";

/* Buffers of one problem: q k v out dout dq dk dv (N×D), lse (N), weights
 * and their gradients. */
typedef struct problem {
  int64_t N;
  float *x[8], *lse, *w[6], *dw[6];
  ditattn_tensor t[8];
  ditattn_ropeslr_params prm;
  ditattn_ropeslr_weights wt, dwt;
} problem;

static problem problem_new(int64_t N) {
  problem p;
  memset(&p, 0, sizeof p);
  p.N = N;
  for (int i = 0; i < 8; i++) {
    p.x[i] = bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f);
    p.t[i] = ditattn_tensor_bhnd(p.x[i], DITATTN_F32, 1, 1, N, D);
  }
  p.lse = bench_rand_buf(PROG, &rng_state, (size_t)N, 1.0f);
  p.prm = ditattn_ropeslr_params_default(); /* b = 64, rho = 0.1, r = 64, own block */
  p.prm.block = BLOCK;
  p.prm.rank = RANK;
  p.prm.grid[0] = N / 1024;
  p.prm.grid[1] = 32;
  p.prm.grid[2] = 32;
  const int64_t rows[6] = {D, D, p.prm.grid[0], 32, 32, D},
                cols[6] = {RANK, RANK, RANK, RANK, RANK, D};
  ditattn_tensor wt[6], dwt[6];
  for (int a = 0; a < 6; a++) {
    /* Projections ~ 1/sqrt(D) so the features stay O(1). */
    p.w[a] = bench_rand_buf(PROG, &rng_state, (size_t)(rows[a] * cols[a]), a < 2 ? 0.125f : 0.5f);
    p.dw[a] = bench_rand_buf(PROG, &rng_state, (size_t)(rows[a] * cols[a]), 1.0f);
    wt[a] = ditattn_tensor_bhnd(p.w[a], DITATTN_F32, 1, 1, rows[a], cols[a]);
    dwt[a] = ditattn_tensor_bhnd(p.dw[a], DITATTN_F32, 1, 1, rows[a], cols[a]);
  }
  p.wt = (ditattn_ropeslr_weights){wt[0], wt[1], wt[2], wt[3], wt[4], wt[5]};
  p.dwt = (ditattn_ropeslr_weights){dwt[0], dwt[1], dwt[2], dwt[3], dwt[4], dwt[5]};
  return p;
}

static void problem_free(problem *p) {
  for (int i = 0; i < 8; i++) free(p->x[i]);
  for (int a = 0; a < 6; a++) {
    free(p->w[a]);
    free(p->dw[a]);
  }
  free(p->lse);
}

enum { Q, K, V, OUT, DOUT, DQ, DK, DV };
enum op { DENSE_FWD, DENSE_BWD, SLR_FWD, SLR_BWD };

static void run_op(ditattn_context *ctx, problem *p, enum op op) {
  ditattn_tensor *t = p->t;
  switch (op) {
  case DENSE_FWD:
    bench_check(PROG, ditattn_dense_forward(ctx, &t[Q], &t[K], &t[V], 0.0f, &t[OUT], p->lse), ctx,
                "dense");
    break;
  case DENSE_BWD:
    bench_check(PROG,
                ditattn_dense_backward(ctx, &t[Q], &t[K], &t[V], &t[OUT], p->lse, &t[DOUT], 0.0f,
                                       &t[DQ], &t[DK], &t[DV]),
                ctx, "dense backward");
    break;
  case SLR_FWD:
    bench_check(PROG,
                ditattn_ropeslr_forward(ctx, &p->prm, &p->wt, NULL, &t[Q], &t[K], &t[V], &t[OUT],
                                        NULL, NULL),
                ctx, "ropeslr");
    break;
  case SLR_BWD:
    bench_check(PROG,
                ditattn_ropeslr_backward(ctx, &p->prm, &p->wt, NULL, &t[Q], &t[K], &t[V], &t[DOUT],
                                         &t[DQ], &t[DK], &t[DV], &p->dwt),
                ctx, "ropeslr backward");
    break;
  }
}

static double best_of(ditattn_context *ctx, problem *p, enum op op, int reps) {
  double best = INFINITY;
  for (int r = 0; r < reps; r++) {
    const double t0 = bench_now_s();
    run_op(ctx, p, op);
    const double dt = bench_now_s() - t0;
    best = dt < best ? dt : best;
  }
  return best;
}

int main(int argc, char **argv) {
  int threads = 0, reps = 2, backward = 1, dense = 1;
  int64_t ns[16];
  int count = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--no-backward") == 0)
      backward = 0;
    else if (strcmp(argv[i], "--no-dense") == 0) /* RoPeSLR alone (profiling) */
      dense = 0;
    else if (count < 16 && atoll(argv[i]) >= 1024 && atoll(argv[i]) % 1024 == 0)
      ns[count++] = atoll(argv[i]);
    else {
      fprintf(stderr, "usage: bench_cpu_ropeslr [--threads T] [--reps R] [--no-backward] "
                      "[--no-dense] [N ...] (N a multiple of 1024)\n");
      return 2;
    }
  }
  if (count == 0) {
    ns[count++] = 16384;
    ns[count++] = 65536;
  }
  ditattn_context *ctx = NULL;
  bench_check(PROG, ditattn_context_create(DITATTN_BACKEND_CPU, &ctx), ctx, "context");
  bench_check(PROG, ditattn_context_set_num_threads(ctx, threads), ctx, "threads");
  printf("# CPU backend, %d threads (0 = OpenMP default); D = %d, b = %d, rho = 0.1, r = %d\n",
         threads, D, BLOCK, RANK);
  printf("%8s %4s %12s %12s %9s %12s %12s %9s\n", "N", "K", "dense_fwd_s", "slr_fwd_s", "fwd_x",
         "dense_bwd_s", "slr_bwd_s", "bwd_x");
  for (int i = 0; i < count; i++) {
    problem p = problem_new(ns[i]);
    const int dense_reps = ns[i] > 16384 ? 1 : reps;
    /* Dense backward right after dense forward: it reads that out and lse. */
    const double df = dense ? best_of(ctx, &p, DENSE_FWD, dense_reps) : NAN;
    const double db = dense && backward ? best_of(ctx, &p, DENSE_BWD, dense_reps) : NAN;
    const double sf = best_of(ctx, &p, SLR_FWD, reps);
    const double sb = backward ? best_of(ctx, &p, SLR_BWD, reps) : NAN;
    printf("%8lld %4lld %12.4f %12.4f %8.2fx %12.4f %12.4f %8.2fx\n", (long long)ns[i],
           (long long)ditattn_ropeslr_topk(&p.prm, ns[i]), df, sf, df / sf, db, sb, db / sb);
    fflush(stdout);
    problem_free(&p);
  }
  ditattn_context_destroy(ctx);
  return 0;
}
