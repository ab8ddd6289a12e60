/* Distributed RoPeSLR backward equals the single-process RoPeSLR backward
 * (ref/, the oracle) on every rank: its slice of dq, dk, dv and the whole
 * weight gradients (f32, ≤ 1e-5 relative each). Cases: uneven slices,
 * blocks straddling slice boundaries and slices shorter than a block,
 * slices in reversed rank order, B·H > 1, padded and DiT layouts, NULL /
 * Morton / random positions, all three policies, both features, force_own
 * 0/1, b = 1, b > N, rho = 1 (empty background: no low-rank gradient),
 * r > D; ref and cpu contexts. Outputs are poisoned (NaN) first.
 * Then the collective error discipline: a mismatched rank r, dout NULL,
 * dweights NULL, dk aliasing dq, dW aliasing W, or a GPU context's route on
 * one rank, and every allocation failing in turn on one rank, give the
 * same status everywhere, quickly. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "slr_test_util.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double g_max_err[2]; /* largest error per backend (reported on rank 0) */
static const char *const weight_names[6] = {"dA", "dBk", "dEt", "dEy", "dEx", "dW"};

static void run_case(ditattn_context *ctx, ditattn_context *oracle, MPI_Comm comm, uint64_t seed,
                     int ci, const slr_case *c, double *max_err) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  dtu_rng rng = {seed * 1000037u + (uint64_t)ci};
  enum { Q, K, V, DO, DQ, DK, DV, NT };
  dtu_tensor full[NT], loc[NT];
  for (int i = 0; i < NT; i++) full[i] = dtu_tensor_new(c->B, c->H, c->N, c->D, 0, 0);
  for (int i = Q; i <= DO; i++) dtu_fill_uniform(&full[i], &rng);
  slr_weights sw = slr_weights_new(c, &rng);
  slr_weights want = slr_weights_poisoned(c), got = slr_weights_poisoned(c);
  int32_t *pos = slr_positions(c, &rng);
  const ditattn_ropeslr_params prm = slr_params_of(c);
  int64_t offset;
  const int64_t len = dtu_rank_slice(comm, &rng, c->N, c->reversed, &offset);
  ditattn_status st =
      ditattn_ropeslr_backward(oracle, &prm, &sw.w, pos, &full[Q].t, &full[K].t, &full[V].t,
                               &full[DO].t, &full[DQ].t, &full[DK].t, &full[DV].t, &want.w);
  dtu_check(st == DITATTN_OK, "case %d: single-process ropeslr backward failed: %s", ci,
            ditattn_last_error(oracle));
  for (int i = 0; i < NT; i++)
    loc[i] = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd); /* NaN: poisoned */
  for (int i = Q; i <= DO; i++) dtu_copy_slice(&loc[i], &full[i], offset);
  const ditattn_dist_slice slice = {c->N, offset, len};
  st = ditattn_dist_ropeslr_backward(ctx, comm, &slice, &prm, &sw.w, pos ? pos + 3 * offset : NULL,
                                     &loc[Q].t, &loc[K].t, &loc[V].t, &loc[DO].t, &loc[DQ].t,
                                     &loc[DK].t, &loc[DV].t, &got.w);
  const char *bname = ditattn_backend_name(ditattn_context_backend(ctx));
  dtu_check(st == DITATTN_OK, "case %d (%s, P=%d): dist ropeslr backward failed: %s", ci, bname, P,
            ditattn_last_error(ctx));
  /* dq, dk, dv: this rank's slice; the weight gradients: whole, on every rank. */
  double err[9];
  const char *names[9] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; i++)
    err[i] = dtu_rel_err_ranks(comm, &loc[DQ + i].t, &full[DQ + i].t, offset);
  for (int a = 0; a < 6; a++) {
    err[3 + a] = dtu_rel_err_slice(&got.t[a].t, &want.t[a].t, 0);
    names[3 + a] = weight_names[a];
  }
  for (int i = 0; i < 9; i++) {
    if (!(err[i] <= *max_err)) *max_err = err[i];
    dtu_check(err[i] <= 1e-5,
              "case %d: B=%lld H=%lld N=%lld D=%lld pad=%lld bnhd=%d b=%lld policy=%d rho=%g "
              "K=%lld own=%d r=%lld feature=%d pos=%s P=%d slice=[%lld,+%lld) reversed=%d "
              "backend=%s: %s rel err = %g",
              ci, (long long)c->B, (long long)c->H, (long long)c->N, (long long)c->D,
              (long long)c->pad, c->bnhd, (long long)c->block, (int)c->policy, c->rho,
              (long long)c->topk, c->force_own, (long long)c->rank, (int)c->feature,
              slr_pos_names[c->pos_mode], P, (long long)offset, (long long)len, c->reversed, bname,
              names[i], err[i]);
  }
  for (int i = 0; i < NT; i++) {
    dtu_tensor_free(&full[i]);
    dtu_tensor_free(&loc[i]);
  }
  slr_weights_free(&sw);
  slr_weights_free(&want);
  slr_weights_free(&got);
  free(pos);
}

/* ------------------------------------------------------------ errors */
typedef enum fault {
  F_NONE = 0,
  F_RANK_DIFFERS, /* last rank: r = 4 on views of the first 4 columns */
  F_DOUT_NULL,
  F_DWEIGHTS_NULL,
  F_DK_IS_DQ,
  F_DW_IS_W, /* dweights.W aliases weights.W */
  F_DEVICE,  /* a GPU context's route (dist's test hook) */
  F_COUNT
} fault;

static const char *const fault_names[F_COUNT] = {
    "none",          "rank r differs", "dout NULL",        "dweights NULL",
    "dk aliases dq", "dW aliases W",   "GPU-context route"};

static ditattn_status expected(fault f, int P) {
  switch (f) {
  case F_NONE: return DITATTN_OK;
  case F_RANK_DIFFERS: return P > 1 ? DITATTN_ERR_MPI : DITATTN_OK;
  case F_DOUT_NULL:
  case F_DWEIGHTS_NULL: return DITATTN_ERR_NULL_POINTER;
  case F_DK_IS_DQ:
  case F_DW_IS_W: return DITATTN_ERR_INVALID_ARGUMENT;
  case F_DEVICE: return DITATTN_ERR_UNSUPPORTED;
  default: return DITATTN_ERR_INTERNAL;
  }
}

static ditattn_status faulty_call(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int f,
                                  int64_t fail_alloc, int *same, double *seconds) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  const int last = rank == P - 1;
  const slr_case c = slr_fault_case();
  dtu_rng rng = {seed + 83u * (uint64_t)f};
  int64_t offset;
  const int64_t len = dtu_rank_slice(comm, &rng, c.N, 0, &offset);
  dtu_tensor t[7]; /* q k v dout dq dk dv */
  for (int i = 0; i < 7; i++) t[i] = dtu_tensor_new(c.B, c.H, len, c.D, 0, 0);
  for (int i = 0; i < 4; i++) dtu_fill_uniform(&t[i], &rng);
  slr_weights sw = slr_weights_new(&c, &rng), dw = slr_weights_poisoned(&c);
  int32_t *pos = slr_positions(&c, &rng);
  ditattn_ropeslr_params prm = slr_params_of(&c);
  ditattn_ropeslr_weights w = sw.w, dws = dw.w;
  if (last && f == F_RANK_DIFFERS) {
    /* Valid locally (views of the first 4 columns): only the agreement can
     * catch it. */
    prm.rank = 4;
    ditattn_tensor *lr[5] = {&w.A, &w.Bk, &w.Et, &w.Ey, &w.Ex};
    ditattn_tensor *dlr[5] = {&dws.A, &dws.Bk, &dws.Et, &dws.Ey, &dws.Ex};
    for (int a = 0; a < 5; a++) lr[a]->shape[3] = dlr[a]->shape[3] = 4;
  }
  if (last && f == F_DW_IS_W) dws.W = w.W;
  const ditattn_tensor *dout = last && f == F_DOUT_NULL ? NULL : &t[3].t;
  ditattn_ropeslr_weights *dweights = last && f == F_DWEIGHTS_NULL ? NULL : &dws;
  ditattn_tensor *dk = last && f == F_DK_IS_DQ ? &t[4].t : &t[5].t;
  const ditattn_dist_slice slice = {c.N, offset, len};
  if (last && fail_alloc > 0) dt_debug_fail_alloc_at(fail_alloc);
  if (last && f == F_DEVICE) setenv("DITATTN_DIST_DEVICE_PATH", "1", 1);
  const double t0 = MPI_Wtime();
  const ditattn_status st =
      ditattn_dist_ropeslr_backward(ctx, comm, &slice, &prm, &w, pos + 3 * offset, &t[0].t, &t[1].t,
                                    &t[2].t, dout, &t[4].t, dk, &t[6].t, dweights);
  *seconds = MPI_Wtime() - t0;
  if (last && fail_alloc > 0) dt_debug_fail_alloc_at(0);
  if (last && f == F_DEVICE) unsetenv("DITATTN_DIST_DEVICE_PATH");
  /* The message names the argument the caller got wrong. */
  if (last && f == F_DOUT_NULL && fail_alloc == 0)
    dtu_check(strstr(ditattn_last_error(ctx), "dout") != NULL,
              "dout NULL: the message does not name dout: %s", ditattn_last_error(ctx));
  int same_status = 0, same_message = 0;
  dtu_compare_ranks(comm, st, st == DITATTN_OK ? "" : ditattn_last_error(ctx), &same_status,
                    &same_message);
  *same = same_status && same_message;
  for (int i = 0; i < 7; i++) dtu_tensor_free(&t[i]);
  slr_weights_free(&sw);
  slr_weights_free(&dw);
  free(pos);
  return st;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm comm = MPI_COMM_WORLD;
  const uint64_t seed = dtu_seed(comm);
  unsetenv("DITATTN_DIST_DEVICE_PATH");
  int ncases = 0;
  const slr_case *cases = slr_test_cases(&ncases);
  ditattn_context *oracle = NULL;
  if (ditattn_context_create(DITATTN_BACKEND_REF, &oracle) != DITATTN_OK)
    dtu_check(0, "no ref context for the oracle");
  const ditattn_backend backends[] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};
  for (size_t bi = 0; bi < 2 && oracle; bi++) {
    ditattn_context *ctx = NULL;
    if (ditattn_context_create(backends[bi], &ctx) != DITATTN_OK) continue; /* not compiled */
    for (int ci = 0; ci < ncases; ci++)
      run_case(ctx, oracle, comm, seed, ci, &cases[ci], &g_max_err[bi]);
    int P = 1;
    MPI_Comm_size(comm, &P);
    ditattn_status want[F_COUNT];
    for (int f = 0; f < F_COUNT; f++) want[f] = expected((fault)f, P);
    dtu_run_faults(ctx, comm, seed, faulty_call, F_COUNT, fault_names, want);
    ditattn_context_destroy(ctx);
  }
  ditattn_context_destroy(oracle);
  double worst[2];
  MPI_Reduce(g_max_err, worst, 2, MPI_DOUBLE, MPI_MAX, 0, comm);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0)
    printf("largest rel err of dq/dk/dv/dweights vs single process: ref %.3g, cpu %.3g\n", worst[0],
           worst[1]);
  const int rc = dtu_finish(comm, "test_dist_ropeslr_backward");
  MPI_Finalize();
  return rc;
}
