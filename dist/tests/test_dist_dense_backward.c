/* Distributed dense backward equals the single-process dense backward on
 * every rank (dq, dk, dv slices, f32 ≤ 1e-5 relative): uneven slices,
 * slices in reversed rank order, B·H > 1, padded and DiT layouts, a given
 * scale, ref and cpu contexts; out and lse from the single-process forward
 * or from ditattn_dist_dense_forward. Then the collective error discipline:
 * a mismatched scale, a NULL or aliased argument or a GPU context's route
 * on one rank, and every allocation failing in turn on one rank, give the
 * same status everywhere, quickly. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "dist_test_util.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bwd_case {
  int64_t B, H, N, D, pad;
  int bnhd, reversed, chain; /* chain: out, lse from ditattn_dist_dense_forward */
  float scale;
} bwd_case;

static double g_max_err[2]; /* largest error per backend (reported on rank 0) */

static void run_case(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int ci, const bwd_case *c,
                     double *max_err) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  dtu_rng rng = {seed * 1000039u + (uint64_t)ci};
  enum { Q, K, V, O, DO, DQ, DK, DV, NT };
  dtu_tensor full[NT], loc[NT];
  for (int i = 0; i < NT; i++) full[i] = dtu_tensor_new(c->B, c->H, c->N, c->D, 0, 0);
  const int inputs[] = {Q, K, V, DO};
  for (int i = 0; i < 4; i++) dtu_fill_uniform(&full[inputs[i]], &rng);
  int64_t lengths[64], offset = 0;
  dtu_partition(&rng, c->N, P, lengths);
  const int part = c->reversed ? P - 1 - rank : rank;
  for (int r = 0; r < part; r++) offset += lengths[r];
  const int64_t BH = c->B * c->H, len = lengths[part];
  float *lse_full = malloc((size_t)(BH * c->N) * sizeof(float));
  float *lse = malloc((size_t)(BH * len) * sizeof(float));
  ditattn_status st = ditattn_dense_forward(ctx, &full[Q].t, &full[K].t, &full[V].t, c->scale,
                                            &full[O].t, lse_full);
  if (st == DITATTN_OK)
    st = ditattn_dense_backward(ctx, &full[Q].t, &full[K].t, &full[V].t, &full[O].t, lse_full,
                                &full[DO].t, c->scale, &full[DQ].t, &full[DK].t, &full[DV].t);
  dtu_check(st == DITATTN_OK, "case %d: single-process dense forward/backward failed: %s", ci,
            ditattn_last_error(ctx));
  for (int i = 0; i < NT; i++)
    loc[i] = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd); /* NaN: poisoned */
  for (int i = 0; i < 4; i++) dtu_copy_slice(&loc[inputs[i]], &full[inputs[i]], offset);
  const ditattn_dist_slice slice = {c->N, offset, len};
  if (c->chain) {
    for (int64_t i = 0; i < BH * len; i++) lse[i] = NAN;
    st = ditattn_dist_dense_forward(ctx, comm, &slice, &loc[Q].t, &loc[K].t, &loc[V].t, c->scale,
                                    &loc[O].t, lse);
    dtu_check(st == DITATTN_OK, "case %d: dist dense forward failed: %s", ci,
              ditattn_last_error(ctx));
  } else {
    dtu_copy_slice(&loc[O], &full[O], offset);
    for (int64_t bh = 0; bh < BH; bh++)
      memcpy(lse + bh * len, lse_full + bh * c->N + offset, (size_t)len * sizeof(float));
  }
  st = ditattn_dist_dense_backward(ctx, comm, &slice, &loc[Q].t, &loc[K].t, &loc[V].t, &loc[O].t,
                                   lse, &loc[DO].t, c->scale, &loc[DQ].t, &loc[DK].t, &loc[DV].t);
  dtu_check(st == DITATTN_OK, "case %d: dist dense backward failed: %s", ci,
            ditattn_last_error(ctx));
  const int grads[] = {DQ, DK, DV};
  const char *names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; i++) {
    const double e = dtu_rel_err_ranks(comm, &loc[grads[i]].t, &full[grads[i]].t, offset);
    if (!(e <= *max_err)) *max_err = e;
    dtu_check(e <= 1e-5,
              "case %d: B=%lld H=%lld N=%lld D=%lld pad=%lld bnhd=%d P=%d slice=[%lld,+%lld) "
              "reversed=%d chain=%d backend=%s: %s rel err = %g",
              ci, (long long)c->B, (long long)c->H, (long long)c->N, (long long)c->D,
              (long long)c->pad, c->bnhd, P, (long long)offset, (long long)len, c->reversed,
              c->chain, ditattn_backend_name(ditattn_context_backend(ctx)), names[i], e);
  }
  for (int i = 0; i < NT; i++) {
    dtu_tensor_free(&full[i]);
    dtu_tensor_free(&loc[i]);
  }
  free(lse);
  free(lse_full);
}

/* ------------------------------------------------------------ errors */

typedef enum fault {
  F_NONE = 0,
  F_SCALE_DIFFERS, /* last rank: another scale */
  F_DOUT_NULL,     /* last rank: dout = NULL */
  F_LSE_NULL,      /* last rank: lse = NULL */
  F_DK_IS_DQ,      /* last rank: dk aliases dq */
  F_DEVICE,        /* last rank: a GPU context's route (dist's test hook) */
  F_COUNT
} fault;

static const char *const fault_names[F_COUNT] = {"none",     "scale differs", "dout NULL",
                                                 "lse NULL", "dk aliases dq", "GPU-context route"};

static ditattn_status expected(fault f, int P) {
  switch (f) {
  case F_NONE: return DITATTN_OK;
  case F_SCALE_DIFFERS: return P > 1 ? DITATTN_ERR_MPI : DITATTN_OK;
  case F_DOUT_NULL:
  case F_LSE_NULL: return DITATTN_ERR_NULL_POINTER;
  case F_DK_IS_DQ: return DITATTN_ERR_INVALID_ARGUMENT;
  case F_DEVICE: return DITATTN_ERR_UNSUPPORTED;
  default: return DITATTN_ERR_INTERNAL;
  }
}

/* One backward call on fresh inputs; `fault` on the last rank, or the
 * fail_alloc-th library allocation failing there (0: none). Returns the
 * status; *same is 1 when every rank returned the same status and message. */
static ditattn_status faulty_call(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int f,
                                  int64_t fail_alloc, int *same, double *seconds) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  const int last = rank == P - 1;
  const int64_t B = 1, H = 2, N = 61, D = 8;
  dtu_rng rng = {seed + 79u * (uint64_t)f};
  int64_t offset;
  const int64_t len = dtu_rank_slice(comm, &rng, N, 0, &offset);
  dtu_tensor t[8];
  for (int i = 0; i < 8; i++) t[i] = dtu_tensor_new(B, H, len, D, 0, 0);
  for (int i = 0; i < 5; i++) dtu_fill_uniform(&t[i], &rng);
  float *lse = malloc((size_t)(B * H * len) * sizeof(float));
  for (int64_t i = 0; i < B * H * len; i++) lse[i] = (float)dtu_uniform(&rng, 2.0, 3.0);
  const ditattn_dist_slice slice = {N, offset, len};
  const float scale = last && f == F_SCALE_DIFFERS ? 0.5f : 0.0f;
  const ditattn_tensor *dout = last && f == F_DOUT_NULL ? NULL : &t[4].t;
  const float *lse_in = last && f == F_LSE_NULL ? NULL : lse;
  ditattn_tensor *dk = last && f == F_DK_IS_DQ ? &t[5].t : &t[6].t;
  if (last && fail_alloc > 0) dt_debug_fail_alloc_at(fail_alloc);
  if (last && f == F_DEVICE) setenv("DITATTN_DIST_DEVICE_PATH", "1", 1);
  const double t0 = MPI_Wtime();
  const ditattn_status st =
      ditattn_dist_dense_backward(ctx, comm, &slice, &t[0].t, &t[1].t, &t[2].t, &t[3].t, lse_in,
                                  dout, scale, &t[5].t, dk, &t[7].t);
  *seconds = MPI_Wtime() - t0;
  if (last && fail_alloc > 0) dt_debug_fail_alloc_at(0);
  if (last && f == F_DEVICE) unsetenv("DITATTN_DIST_DEVICE_PATH");
  int same_status = 0, same_message = 0;
  dtu_compare_ranks(comm, st, st == DITATTN_OK ? "" : ditattn_last_error(ctx), &same_status,
                    &same_message);
  *same = same_status && same_message;
  for (int i = 0; i < 8; i++) dtu_tensor_free(&t[i]);
  free(lse);
  return st;
}

static void run_faults(ditattn_context *ctx, MPI_Comm comm, uint64_t seed) {
  int P = 1;
  MPI_Comm_size(comm, &P);
  ditattn_status want[F_COUNT];
  for (int f = 0; f < F_COUNT; f++) want[f] = expected((fault)f, P);
  dtu_run_faults(ctx, comm, seed, faulty_call, F_COUNT, fault_names, want);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm comm = MPI_COMM_WORLD;
  const uint64_t seed = dtu_seed(comm);
  const bwd_case cases[] = {
      /* B  H    N   D pad bnhd rev chain scale */
      {1, 1, 9, 1, 0, 0, 0, 0, 0.0f},    {1, 2, 203, 16, 2, 1, 0, 1, 0.0f},
      {2, 1, 131, 8, 0, 0, 1, 0, 0.3f},  {1, 1, 257, 64, 0, 1, 0, 1, 0.0f},
      {1, 3, 70, 12, 1, 0, 1, 1, 0.25f}, {2, 2, 13, 4, 0, 1, 0, 0, 0.0f},
  };
  const ditattn_backend backends[] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};
  for (size_t bi = 0; bi < 2; bi++) {
    ditattn_context *ctx = NULL;
    if (ditattn_context_create(backends[bi], &ctx) != DITATTN_OK) continue; /* not compiled */
    if (!ditattn_backend_supports(backends[bi], DITATTN_OP_DENSE_BACKWARD)) {
      ditattn_context_destroy(ctx);
      continue;
    }
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
      run_case(ctx, comm, seed, (int)ci, &cases[ci], &g_max_err[bi]);
    run_faults(ctx, comm, seed);
    ditattn_context_destroy(ctx);
  }
  double worst[2];
  MPI_Reduce(g_max_err, worst, 2, MPI_DOUBLE, MPI_MAX, 0, comm);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0)
    printf("largest rel err of dq/dk/dv vs single process: ref %.3g, cpu %.3g\n", worst[0],
           worst[1]);
  const int rc = dtu_finish(comm, "test_dist_dense_backward");
  MPI_Finalize();
  return rc;
}
