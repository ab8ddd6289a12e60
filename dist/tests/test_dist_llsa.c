/* Distributed LLSA forward equals the single-process LLSA forward on every
 * rank: uneven slices, blocks straddling slice boundaries (tiny slices
 * included), slices in reversed rank order, several (b, L, K), ref and cpu. */
#define _POSIX_C_SOURCE 200809L /* setenv, nanosleep */
#include "dist_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct llsa_case {
  int64_t B, H, N, D, pad;
  int bnhd, reversed;
  int64_t block;
  int levels;
  int64_t topk[3];
} llsa_case;

#define LLSA_FMT                                                                                   \
  "case %d: B=%lld H=%lld N=%lld D=%lld b=%lld L=%d K=(%lld,%lld,%lld) P=%d "                      \
  "slice=[%lld,+%lld) reversed=%d backend=%s mode=%s: %s rel err = %g"

static void run_case(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int ci,
                     const llsa_case *c) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  dtu_rng rng = {seed * 1000033u + (uint64_t)ci};
  dtu_tensor q = dtu_tensor_new(c->B, c->H, c->N, c->D, 0, 0);
  dtu_tensor k = dtu_tensor_new(c->B, c->H, c->N, c->D, 0, 0);
  dtu_tensor v = dtu_tensor_new(c->B, c->H, c->N, c->D, 0, 0);
  dtu_tensor ref = dtu_tensor_new(c->B, c->H, c->N, c->D, 0, 0);
  dtu_fill_uniform(&q, &rng);
  dtu_fill_uniform(&k, &rng);
  dtu_fill_uniform(&v, &rng);
  int64_t lengths[64], offset = 0;
  dtu_partition(&rng, c->N, P, lengths);
  /* Reversed: rank r holds the (P-1-r)-th slice of the sequence. */
  const int part = c->reversed ? P - 1 - rank : rank;
  for (int r = 0; r < part; r++) offset += lengths[r];
  const int64_t BH = c->B * c->H, len = lengths[part];
  ditattn_llsa_params prm = ditattn_llsa_params_default();
  prm.block = c->block;
  prm.levels = c->levels;
  for (int l = 0; l < c->levels; l++) prm.topk[l] = c->topk[l];
  float *lse_ref = malloc((size_t)(BH * c->N) * sizeof(float));
  float *lse = malloc((size_t)(BH * len) * sizeof(float));
  for (int64_t i = 0; i < BH * len; i++) lse[i] = NAN;
  ditattn_status st = ditattn_llsa_forward(ctx, &prm, &q.t, &k.t, &v.t, &ref.t, lse_ref, NULL);
  dtu_check(st == DITATTN_OK, "case %d: single-process llsa failed: %s", ci,
            ditattn_last_error(ctx));

  dtu_tensor ql = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor kl = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor vl = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor ol = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_copy_slice(&ql, &q, offset);
  dtu_copy_slice(&kl, &k, offset);
  dtu_copy_slice(&vl, &v, offset);
  ditattn_dist_slice slice = {c->N, offset, len};
  st = ditattn_dist_llsa_forward(ctx, comm, &slice, &prm, &ql.t, &kl.t, &vl.t, &ol.t, lse);
  dtu_check(st == DITATTN_OK, "case %d: dist llsa failed: %s", ci, ditattn_last_error(ctx));
  const char *bname = ditattn_backend_name(ditattn_context_backend(ctx));
  const char *mode = getenv("DITATTN_DIST_LLSA") ? getenv("DITATTN_DIST_LLSA") : "auto";
  double e = dtu_rel_err_slice(&ol.t, &ref.t, offset);
  dtu_check(e <= 1e-5, LLSA_FMT, ci, (long long)c->B, (long long)c->H, (long long)c->N,
            (long long)c->D, (long long)c->block, c->levels, (long long)c->topk[0],
            (long long)c->topk[1], (long long)c->topk[2], P, (long long)offset, (long long)len,
            c->reversed, bname, mode, "out", e);
  e = dtu_rel_err_lse(lse, lse_ref, BH, len, c->N, offset);
  dtu_check(e <= 1e-5, LLSA_FMT, ci, (long long)c->B, (long long)c->H, (long long)c->N,
            (long long)c->D, (long long)c->block, c->levels, (long long)c->topk[0],
            (long long)c->topk[1], (long long)c->topk[2], P, (long long)offset, (long long)len,
            c->reversed, bname, mode, "lse", e);
  dtu_tensor *all[] = {&q, &k, &v, &ref, &ql, &kl, &vl, &ol};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dtu_tensor_free(all[i]);
  free(lse);
  free(lse_ref);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm comm = MPI_COMM_WORLD;
  uint64_t seed = dtu_seed(comm);
  const llsa_case cases[] = {
      /* B  H    N   D pad bnhd rev  b  L   K */
      {1, 1, 8, 1, 0, 0, 0, 2, 1, {1, 0, 0}},    {1, 2, 203, 16, 2, 1, 0, 4, 2, {2, 3, 0}},
      {2, 1, 301, 8, 0, 0, 1, 3, 3, {2, 1, 2}},  {1, 1, 517, 64, 0, 1, 0, 16, 2, {8, 8, 0}},
      {1, 3, 130, 12, 1, 0, 1, 2, 2, {3, 2, 0}}, {1, 1, 97, 32, 0, 0, 0, 8, 1, {4, 0, 0}},
  };
  const ditattn_backend backends[] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};
  for (size_t bi = 0; bi < 2; bi++) {
    ditattn_context *ctx = NULL;
    if (ditattn_context_create(backends[bi], &ctx) != DITATTN_OK) continue;
    if (!ditattn_backend_supports(backends[bi], DITATTN_OP_LLSA_FORWARD)) {
      ditattn_context_destroy(ctx);
      continue;
    }
    /* Both ways of moving the fine keys (ring, fetch) must give the result. */
    const char *modes[] = {"ring", "fetch"};
    for (int m = 0; m < 2; m++) {
      setenv("DITATTN_DIST_LLSA", modes[m], 1);
      for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        run_case(ctx, comm, seed, (int)ci, &cases[ci]);
      ditattn_dist_stats stats;
      ditattn_dist_last_stats(&stats);
      int P = 1;
      MPI_Comm_size(comm, &P);
      dtu_check(stats.llsa_fetched == (P > 1 && m == 1), "mode %s: llsa_fetched = %d", modes[m],
                stats.llsa_fetched);
    }
    unsetenv("DITATTN_DIST_LLSA");
    ditattn_context_destroy(ctx);
  }
  int rc = dtu_finish(comm, "test_dist_llsa");
  MPI_Finalize();
  return rc;
}
