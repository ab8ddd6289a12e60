/* Distributed LLSA forward equals the single-process LLSA forward on every
 * rank: uneven slices, blocks straddling slice boundaries (tiny slices
 * included), slices in reversed rank order, several (b, L, K), ref and cpu;
 * three routes: the host ring, the host fetch, and the device-memory route
 * of GPU contexts (taken by host contexts under the test hook
 * DITATTN_DIST_DEVICE_PATH=1). The device route gathers q/k/v and runs the
 * backend's own forward on this rank's rows, so on REF it must equal the
 * single-process result bit for bit; CPU cannot restrict its forward to a
 * range of rows and must refuse it on every rank. */
#define _POSIX_C_SOURCE 200809L /* setenv, nanosleep */
#include "dist_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How ditattn_dist_llsa_forward is made to move the keys. */
typedef enum llsa_mode { MODE_RING = 0, MODE_FETCH = 1, MODE_DEVICE = 2, MODE_COUNT } llsa_mode;
static const char *const mode_names[MODE_COUNT] = {"ring", "fetch", "device"};

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

/* One case on one route. expect_transfer: the gpu_transfer the device route
 * must report (1 staged, 2 device pointers; 0 for the host routes). */
static void run_case(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int ci, const llsa_case *c,
                     llsa_mode mode, int expect_transfer) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  dtu_rng rng = {seed * 1000033u + (uint64_t)ci};
  dtu_tensor q, k, v, ref;
  dtu_qkv_new(c->B, c->H, c->N, c->D, &rng, &q, &k, &v, &ref);
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
  ditattn_dist_stats stats;
  ditattn_dist_last_stats(&stats);
  const char *bname = ditattn_backend_name(ditattn_context_backend(ctx));
  const char *mname = mode_names[mode];
  dtu_check(st == DITATTN_OK, "case %d (%s, mode %s, P=%d): dist llsa failed: %s", ci, bname, mname,
            P, ditattn_last_error(ctx));
  if (mode == MODE_DEVICE)
    dtu_check(stats.llsa_fetched == 0,
              "case %d (%s, mode device): llsa_fetched = %d on the device route", ci, bname,
              stats.llsa_fetched);
  else
    dtu_check(stats.llsa_fetched == (P > 1 && mode == MODE_FETCH),
              "case %d (%s, mode %s, P=%d): llsa_fetched = %d", ci, bname, mname, P,
              stats.llsa_fetched);
  dtu_check(stats.gpu_transfer == expect_transfer,
            "case %d (%s, mode %s): gpu_transfer = %d, expected %d", ci, bname, mname,
            stats.gpu_transfer, expect_transfer);
  /* The device route runs the single-process kernel on the gathered
   * sequence, so its rows are the same numbers, not just close ones. */
  const double tol = mode == MODE_DEVICE ? 0.0 : 1e-5;
  double e = dtu_rel_err_slice(&ol.t, &ref.t, offset);
  dtu_check(e <= tol, LLSA_FMT, ci, (long long)c->B, (long long)c->H, (long long)c->N,
            (long long)c->D, (long long)c->block, c->levels, (long long)c->topk[0],
            (long long)c->topk[1], (long long)c->topk[2], P, (long long)offset, (long long)len,
            c->reversed, bname, mname, "out", e);
  e = dtu_rel_err_lse(lse, lse_ref, BH, len, c->N, offset);
  dtu_check(e <= tol, LLSA_FMT, ci, (long long)c->B, (long long)c->H, (long long)c->N,
            (long long)c->D, (long long)c->block, c->levels, (long long)c->topk[0],
            (long long)c->topk[1], (long long)c->topk[2], P, (long long)offset, (long long)len,
            c->reversed, bname, mname, "lse", e);
  dtu_tensor *all[] = {&q, &k, &v, &ref, &ql, &kl, &vl, &ol};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dtu_tensor_free(all[i]);
  free(lse);
  free(lse_ref);
}

/* A backend without ranged forwards (CPU) on the device route: every rank
 * answers UNSUPPORTED, saying why, and leaves out untouched. */
static void device_refused(ditattn_context *ctx, MPI_Comm comm, int ci, const llsa_case *c) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  const int64_t base = c->N / P, len = rank == P - 1 ? c->N - base * (P - 1) : base;
  dtu_rng rng = {(uint64_t)ci + 1u};
  dtu_tensor t[4];
  for (int i = 0; i < 4; i++) t[i] = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  for (int i = 0; i < 3; i++) dtu_fill_uniform(&t[i], &rng);
  ditattn_llsa_params prm = ditattn_llsa_params_default();
  prm.block = c->block;
  prm.levels = c->levels;
  for (int l = 0; l < c->levels; l++) prm.topk[l] = c->topk[l];
  ditattn_dist_slice slice = {c->N, base * rank, len};
  ditattn_status st =
      ditattn_dist_llsa_forward(ctx, comm, &slice, &prm, &t[0].t, &t[1].t, &t[2].t, &t[3].t, NULL);
  const char *msg = ditattn_last_error(ctx);
  int s = (int)st, lo = 0, hi = 0;
  MPI_Allreduce(&s, &lo, 1, MPI_INT, MPI_MIN, comm);
  MPI_Allreduce(&s, &hi, 1, MPI_INT, MPI_MAX, comm);
  dtu_check(lo == hi, "case %d (cpu, mode device, P=%d): ranks returned different statuses", ci, P);
  dtu_check(st == DITATTN_ERR_UNSUPPORTED && strstr(msg, "cannot restrict"),
            "case %d (cpu, mode device, P=%d): %s: %s, expected UNSUPPORTED (cannot restrict)", ci,
            P, ditattn_strerror(st), msg);
  int untouched = 1;
  for (size_t i = 0; i < t[3].count; i++) untouched &= isnan(t[3].buf[i]) != 0;
  dtu_check(untouched, "case %d (cpu, mode device): out written by a refused call", ci);
  for (int i = 0; i < 4; i++) dtu_tensor_free(&t[i]);
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
  const int ncases = (int)(sizeof cases / sizeof cases[0]);
  unsetenv("DITATTN_DIST_DEVICE_PATH"); /* the host routes first, whatever the caller set */
  for (size_t bi = 0; bi < 2; bi++) {
    ditattn_context *ctx = NULL;
    if (ditattn_context_create(backends[bi], &ctx) != DITATTN_OK) continue;
    if (!ditattn_backend_supports(backends[bi], DITATTN_OP_LLSA_FORWARD)) {
      ditattn_context_destroy(ctx);
      continue;
    }
    /* Both ways of moving the fine keys (ring, fetch) must give the result. */
    for (int m = MODE_RING; m <= MODE_FETCH; m++) {
      setenv("DITATTN_DIST_LLSA", mode_names[m], 1);
      for (int ci = 0; ci < ncases; ci++) run_case(ctx, comm, seed, ci, &cases[ci], m, 0);
    }
    unsetenv("DITATTN_DIST_LLSA");
    setenv("DITATTN_DIST_DEVICE_PATH", "1", 1);
    if (backends[bi] == DITATTN_BACKEND_REF) {
      /* Staged through host buffers, then (a few cases) buffers handed to
       * MPI as they are. */
      setenv("DITATTN_DIST_CUDA_AWARE", "0", 1);
      for (int ci = 0; ci < ncases; ci++) run_case(ctx, comm, seed, ci, &cases[ci], MODE_DEVICE, 1);
      setenv("DITATTN_DIST_CUDA_AWARE", "1", 1);
      for (int ci = 1; ci < 3; ci++) run_case(ctx, comm, seed, ci, &cases[ci], MODE_DEVICE, 2);
      unsetenv("DITATTN_DIST_CUDA_AWARE");
    } else {
      for (int ci = 0; ci < ncases; ci++) device_refused(ctx, comm, ci, &cases[ci]);
    }
    unsetenv("DITATTN_DIST_DEVICE_PATH");
    ditattn_context_destroy(ctx);
  }
  int rc = dtu_finish(comm, "test_dist_llsa");
  MPI_Finalize();
  return rc;
}
