/* Distributed LLSA backward equals the single-process LLSA backward on every
 * rank (dq, dk, dv slices): uneven slices, blocks straddling slice
 * boundaries (slices shorter than a block included), slices in reversed
 * rank order, L = 1..3, B·H > 1, DiT layout, ref and cpu contexts; out and
 * lse from the single-process forward or from the distributed forward.
 * Then the collective error discipline: a mismatched parameter or a NULL
 * argument on one rank, and every allocation failing in turn on one rank,
 * give the same status everywhere, quickly. */
#define _POSIX_C_SOURCE 200809L
#include "dist_test_util.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bwd_case {
  int64_t B, H, N, D, pad;
  int bnhd, reversed, chain; /* chain: out, lse from ditattn_dist_llsa_forward */
  int64_t block;
  int levels;
  int64_t topk[3];
} bwd_case;

/* Largest error seen per backend (reported on rank 0). */
static double g_max_err[2];

#define BWD_FMT                                                                                    \
  "case %d: B=%lld H=%lld N=%lld D=%lld b=%lld L=%d K=(%lld,%lld,%lld) P=%d "                      \
  "slice=[%lld,+%lld) reversed=%d chain=%d backend=%s: %s rel err = %g"

static ditattn_llsa_params params_of(const bwd_case *c) {
  ditattn_llsa_params prm = ditattn_llsa_params_default();
  prm.block = c->block;
  prm.levels = c->levels;
  for (int l = 0; l < c->levels; l++) prm.topk[l] = c->topk[l];
  return prm;
}

static void run_case(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int ci, const bwd_case *c,
                     double *max_err) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  dtu_rng rng = {seed * 1000033u + (uint64_t)ci};
  enum { Q, K, V, O, DO, DQ, DK, DV, NFULL };
  dtu_tensor full[NFULL];
  for (int i = 0; i < NFULL; i++) full[i] = dtu_tensor_new(c->B, c->H, c->N, c->D, 0, 0);
  dtu_fill_uniform(&full[Q], &rng);
  dtu_fill_uniform(&full[K], &rng);
  dtu_fill_uniform(&full[V], &rng);
  dtu_fill_uniform(&full[DO], &rng);
  int64_t lengths[64], offset = 0;
  dtu_partition(&rng, c->N, P, lengths);
  const int part = c->reversed ? P - 1 - rank : rank;
  for (int r = 0; r < part; r++) offset += lengths[r];
  const int64_t BH = c->B * c->H, len = lengths[part];
  const ditattn_llsa_params prm = params_of(c);
  float *lse_full = malloc((size_t)(BH * c->N) * sizeof(float));
  float *lse = malloc((size_t)(BH * len) * sizeof(float));
  ditattn_status st = ditattn_llsa_forward(ctx, &prm, &full[Q].t, &full[K].t, &full[V].t,
                                           &full[O].t, lse_full, NULL);
  if (st == DITATTN_OK)
    st = ditattn_llsa_backward(ctx, &prm, &full[Q].t, &full[K].t, &full[V].t, &full[O].t, lse_full,
                               &full[DO].t, &full[DQ].t, &full[DK].t, &full[DV].t);
  dtu_check(st == DITATTN_OK, "case %d: single-process llsa forward/backward failed: %s", ci,
            ditattn_last_error(ctx));

  dtu_tensor loc[NFULL];
  for (int i = 0; i < NFULL; i++)
    loc[i] = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd); /* NaN: poisoned */
  const int inputs[] = {Q, K, V, DO};
  for (int i = 0; i < 4; i++) dtu_copy_slice(&loc[inputs[i]], &full[inputs[i]], offset);
  ditattn_dist_slice slice = {c->N, offset, len};
  if (c->chain) {
    for (int64_t i = 0; i < BH * len; i++) lse[i] = NAN;
    st = ditattn_dist_llsa_forward(ctx, comm, &slice, &prm, &loc[Q].t, &loc[K].t, &loc[V].t,
                                   &loc[O].t, lse);
    dtu_check(st == DITATTN_OK, "case %d: dist llsa forward failed: %s", ci,
              ditattn_last_error(ctx));
  } else {
    dtu_copy_slice(&loc[O], &full[O], offset);
    for (int64_t bh = 0; bh < BH; bh++)
      memcpy(lse + bh * len, lse_full + bh * c->N + offset, (size_t)len * sizeof(float));
  }
  st = ditattn_dist_llsa_backward(ctx, comm, &slice, &prm, &loc[Q].t, &loc[K].t, &loc[V].t,
                                  &loc[O].t, lse, &loc[DO].t, &loc[DQ].t, &loc[DK].t, &loc[DV].t);
  dtu_check(st == DITATTN_OK, "case %d: dist llsa backward failed: %s", ci,
            ditattn_last_error(ctx));
  const char *bname = ditattn_backend_name(ditattn_context_backend(ctx));
  const int grads[] = {DQ, DK, DV};
  const char *names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; i++) {
    const double e = dtu_rel_err_ranks(comm, &loc[grads[i]].t, &full[grads[i]].t, offset);
    if (!(e <= *max_err)) *max_err = e;
    dtu_check(e <= 1e-5, BWD_FMT, ci, (long long)c->B, (long long)c->H, (long long)c->N,
              (long long)c->D, (long long)c->block, c->levels, (long long)c->topk[0],
              (long long)c->topk[1], (long long)c->topk[2], P, (long long)offset, (long long)len,
              c->reversed, c->chain, bname, names[i], e);
  }
  for (int i = 0; i < NFULL; i++) {
    dtu_tensor_free(&full[i]);
    dtu_tensor_free(&loc[i]);
  }
  free(lse);
  free(lse_full);
}

/* ------------------------------------------------------------ errors */

typedef enum fault {
  F_NONE = 0,
  F_TOPK_DIFFERS, /* last rank: another top-K */
  F_SCALE_DIFFERS,
  F_DOUT_NULL, /* last rank: dout = NULL */
  F_LSE_NULL,  /* last rank: lse = NULL */
  F_DK_IS_DQ,  /* last rank: dk aliases dq */
  F_DEVICE,    /* last rank: a GPU context's route (dist's test hook) */
  F_COUNT
} fault;

static const char *const fault_names[F_COUNT] = {
    "none",     "top-K differs", "scale differs",    "dout NULL",
    "lse NULL", "dk aliases dq", "GPU-context route"};

static ditattn_status expected(fault f, int P) {
  switch (f) {
  case F_NONE: return DITATTN_OK;
  case F_TOPK_DIFFERS:
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
  dtu_rng rng = {seed + 77u * (uint64_t)f};
  int64_t offset;
  const int64_t len = dtu_rank_slice(comm, &rng, N, 0, &offset);
  dtu_tensor t[8];
  for (int i = 0; i < 8; i++) t[i] = dtu_tensor_new(B, H, len, D, 0, 0);
  for (int i = 0; i < 5; i++) dtu_fill_uniform(&t[i], &rng);
  float *lse = malloc((size_t)(B * H * len) * sizeof(float));
  for (int64_t i = 0; i < B * H * len; i++) lse[i] = (float)dtu_uniform(&rng, 2.0, 3.0);
  ditattn_dist_slice slice = {N, offset, len};
  ditattn_llsa_params prm = ditattn_llsa_params_default();
  prm.block = 3;
  prm.topk[0] = 2;
  prm.topk[1] = 2;
  if (last && f == F_TOPK_DIFFERS) prm.topk[0] = 3;
  if (last && f == F_SCALE_DIFFERS) prm.scale = 0.5f;
  const ditattn_tensor *dout = last && f == F_DOUT_NULL ? NULL : &t[4].t;
  const float *lse_in = last && f == F_LSE_NULL ? NULL : lse;
  ditattn_tensor *dk = last && f == F_DK_IS_DQ ? &t[5].t : &t[6].t;
  if (last && fail_alloc > 0) dt_debug_fail_alloc_at(fail_alloc);
  /* dist's test hook: this host context takes the route of GPU contexts,
   * which the LLSA backward refuses. */
  if (last && f == F_DEVICE) setenv("DITATTN_DIST_DEVICE_PATH", "1", 1);
  double t0 = MPI_Wtime();
  ditattn_status st = ditattn_dist_llsa_backward(ctx, comm, &slice, &prm, &t[0].t, &t[1].t, &t[2].t,
                                                 &t[3].t, lse_in, dout, &t[5].t, dk, &t[7].t);
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
  uint64_t seed = dtu_seed(comm);
  const bwd_case cases[] = {
      /* B  H    N   D pad bnhd rev chain b  L   K */
      {1, 1, 8, 1, 0, 0, 0, 0, 2, 1, {1, 0, 0}},    {1, 2, 203, 16, 2, 1, 0, 1, 4, 2, {2, 3, 0}},
      {2, 1, 301, 8, 0, 0, 1, 0, 3, 3, {2, 1, 2}},  {1, 1, 517, 32, 0, 1, 0, 1, 16, 2, {8, 8, 0}},
      {1, 3, 130, 12, 1, 0, 1, 1, 2, 2, {3, 2, 0}}, {1, 1, 97, 32, 0, 0, 0, 0, 8, 1, {4, 0, 0}},
      {2, 2, 13, 4, 0, 1, 0, 0, 4, 2, {1, 1, 0}},  /* slices shorter than a block */
      {1, 1, 50, 8, 0, 0, 1, 1, 5, 1, {20, 0, 0}}, /* K above the candidate count */
      {1, 2, 83, 6, 3, 1, 1, 0, 2, 3, {2, 2, 1}},
  };
  const ditattn_backend backends[] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};
  for (size_t bi = 0; bi < 2; bi++) {
    ditattn_context *ctx = NULL;
    if (ditattn_context_create(backends[bi], &ctx) != DITATTN_OK) continue;
    if (!ditattn_backend_supports(backends[bi], DITATTN_OP_LLSA_BACKWARD)) {
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
  int rc = dtu_finish(comm, "test_dist_llsa_backward");
  MPI_Finalize();
  return rc;
}
