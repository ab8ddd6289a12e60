/* The device-memory path of ditattn_dist_dense_forward (dist_device*.c) run
 * on host contexts through its test hook DITATTN_DIST_DEVICE_PATH=1 (host
 * memory is valid "device" memory for REF/CPU), so CI covers the packed,
 * double-buffered ring, host staging, "device pointer" transfers and the
 * device LSE merge without a GPU; and what the device route of LLSA
 * refuses (the forward on a backend without ranged forwards, the backward
 * everywhere). The GPU itself is checked by dist/device/run.sh. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "dist_test_util.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_rank, g_size;

/* One random case: uneven slices, strided/DiT layouts, lse or not. */
static void dense_case(ditattn_context *ctx, uint64_t seed, int ci, int expect_transfer) {
  dtu_rng rng = {seed * 7919u + (uint64_t)ci};
  const int64_t B = dtu_int(&rng, 1, 2), H = dtu_int(&rng, 1, 3), D = dtu_int(&rng, 1, 40);
  const int64_t N = dtu_int(&rng, g_size, 160), pad = dtu_int(&rng, 0, 3);
  const int bnhd = (int)dtu_int(&rng, 0, 1), with_lse = (int)dtu_int(&rng, 0, 1);
  const float scale = dtu_int(&rng, 0, 1) ? 0.0f : (float)dtu_uniform(&rng, 0.1, 0.5);
  dtu_tensor q, k, v, ref;
  dtu_qkv_new(B, H, N, D, &rng, &q, &k, &v, &ref);
  int64_t lengths[64], offset = 0;
  dtu_partition(&rng, N, g_size, lengths);
  for (int r = 0; r < g_rank; r++) offset += lengths[r];
  const int64_t BH = B * H, len = lengths[g_rank];
  float *lse_ref = malloc((size_t)(BH * N) * sizeof(float));
  float *lse = malloc((size_t)(BH * len) * sizeof(float));
  for (int64_t i = 0; i < BH * len; i++) lse[i] = NAN;
  ditattn_status st = ditattn_dense_forward(ctx, &q.t, &k.t, &v.t, scale, &ref.t, lse_ref);
  dtu_check(st == DITATTN_OK, "case %d: single-process dense failed: %s", ci,
            ditattn_last_error(ctx));
  dtu_tensor ql = dtu_tensor_new(B, H, len, D, pad, bnhd), kl = dtu_tensor_new(B, H, len, D, 0, 1),
             vl = dtu_tensor_new(B, H, len, D, pad, 0),
             ol = dtu_tensor_new(B, H, len, D, pad, !bnhd);
  dtu_copy_slice(&ql, &q, offset);
  dtu_copy_slice(&kl, &k, offset);
  dtu_copy_slice(&vl, &v, offset);
  ditattn_dist_slice slice = {N, offset, len};
  st = ditattn_dist_dense_forward(ctx, MPI_COMM_WORLD, &slice, &ql.t, &kl.t, &vl.t, scale, &ol.t,
                                  with_lse ? lse : NULL);
  ditattn_dist_stats stats;
  ditattn_dist_last_stats(&stats);
  const char *be = ditattn_backend_name(ditattn_context_backend(ctx));
  dtu_check(st == DITATTN_OK, "case %d (%s): dist dense failed: %s", ci, be,
            ditattn_last_error(ctx));
  dtu_check(stats.gpu_transfer == expect_transfer, "case %d (%s): gpu_transfer %d, expected %d", ci,
            be, stats.gpu_transfer, expect_transfer);
  double e = dtu_rel_err_slice(&ol.t, &ref.t, offset);
  dtu_check(e <= 1e-5,
            "case %d (%s, transfer %d): B=%lld H=%lld N=%lld D=%lld pad=%lld bnhd=%d "
            "slice=[%lld,+%lld) P=%d: out rel err %g",
            ci, be, expect_transfer, (long long)B, (long long)H, (long long)N, (long long)D,
            (long long)pad, bnhd, (long long)offset, (long long)len, g_size, e);
  if (with_lse) {
    e = dtu_rel_err_lse(lse, lse_ref, BH, len, N, offset);
    dtu_check(e <= 1e-5, "case %d (%s): lse rel err %g", ci, be, e);
  } else {
    int untouched = 1;
    for (int64_t i = 0; i < BH * len; i++) untouched &= isnan(lse[i]) != 0;
    dtu_check(untouched, "case %d (%s): lse written though not requested", ci, be);
  }
  dtu_tensor *all[] = {&q, &k, &v, &ref, &ql, &kl, &vl, &ol};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dtu_tensor_free(all[i]);
  free(lse);
  free(lse_ref);
}

/* An allocation failing on the last rank only (at each allocation in turn):
 * every rank returns the same status, nobody hangs, and the failing rank's
 * message survives the cleanup. */
static void alloc_failures_agree(ditattn_context *ctx) {
  const int64_t B = 1, H = 2, D = 8, N = 12 * g_size;
  dtu_rng rng = {42};
  for (int64_t at = 1; at <= 12; at++) {
    dtu_tensor q = dtu_tensor_new(B, H, 12, D, 0, 0), k = dtu_tensor_new(B, H, 12, D, 0, 0),
               v = dtu_tensor_new(B, H, 12, D, 0, 0), o = dtu_tensor_new(B, H, 12, D, 0, 0);
    dtu_fill_uniform(&q, &rng);
    dtu_fill_uniform(&k, &rng);
    dtu_fill_uniform(&v, &rng);
    ditattn_dist_slice slice = {N, 12 * g_rank, 12};
    if (g_rank == g_size - 1) dt_debug_fail_alloc_at(at);
    ditattn_status st =
        ditattn_dist_dense_forward(ctx, MPI_COMM_WORLD, &slice, &q.t, &k.t, &v.t, 0.0f, &o.t, NULL);
    dt_debug_fail_alloc_at(0);
    int s = (int)st, lo = 0, hi = 0;
    MPI_Allreduce(&s, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&s, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    dtu_check(lo == hi, "alloc failure at %lld: ranks disagree (%d vs %d)", (long long)at, lo, hi);
    dtu_check(st == DITATTN_OK || st == DITATTN_ERR_OUT_OF_MEMORY,
              "alloc failure at %lld: status %s", (long long)at, ditattn_strerror(st));
    if (st != DITATTN_OK)
      dtu_check(strlen(ditattn_last_error(ctx)) > 0, "alloc failure at %lld: empty message",
                (long long)at);
    dtu_tensor_free(&q);
    dtu_tensor_free(&k);
    dtu_tensor_free(&v);
    dtu_tensor_free(&o);
  }
}

/* Every rank returns st and the same message; reports both when not. */
static void check_agreed(ditattn_context *ctx, ditattn_status st, const char *what) {
  int mine[2] = {(int)st, -(int)st}, all[2] = {0, 0};
  MPI_Allreduce(mine, all, 2, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  dtu_check(all[0] == -all[1], "%s (%s): ranks returned different statuses", what,
            ditattn_backend_name(ditattn_context_backend(ctx)));
}

/* LLSA on the device route: the forward needs a backend that restricts it
 * to a range of query rows (ref does, and test_dist_llsa checks its values;
 * cpu does not and must say so); the backward has no device route at all. */
static void llsa_routes(ditattn_context *ctx) {
  const ditattn_backend backend = ditattn_context_backend(ctx);
  const char *be = ditattn_backend_name(backend);
  dtu_rng rng = {(uint64_t)g_rank + 5u};
  dtu_tensor t[9]; /* q k v out dout dq dk dv, [8] spare out for the forward */
  for (int i = 0; i < 9; i++) t[i] = dtu_tensor_new(1, 2, 8, 4, 0, 0);
  for (int i = 0; i < 5; i++) dtu_fill_uniform(&t[i], &rng);
  float lse[16];
  for (int i = 0; i < 16; i++) lse[i] = 1.0f;
  ditattn_dist_slice slice = {8 * (int64_t)g_size, 8 * (int64_t)g_rank, 8};
  ditattn_llsa_params p = ditattn_llsa_params_default();
  p.block = 2;
  p.levels = 1;
  p.topk[0] = 2;
  ditattn_status st;
  if (backend != DITATTN_BACKEND_REF) {
    st = ditattn_dist_llsa_forward(ctx, MPI_COMM_WORLD, &slice, &p, &t[0].t, &t[1].t, &t[2].t,
                                   &t[8].t, NULL);
    check_agreed(ctx, st, "llsa forward on the device route");
    dtu_check(st == DITATTN_ERR_UNSUPPORTED && strstr(ditattn_last_error(ctx), "cannot restrict"),
              "llsa forward on the device route (%s): %s: %s, expected UNSUPPORTED (cannot "
              "restrict)",
              be, ditattn_strerror(st), ditattn_last_error(ctx));
  }
  st = ditattn_dist_llsa_backward(ctx, MPI_COMM_WORLD, &slice, &p, &t[0].t, &t[1].t, &t[2].t,
                                  &t[3].t, lse, &t[4].t, &t[5].t, &t[6].t, &t[7].t);
  check_agreed(ctx, st, "llsa backward on the device route");
  dtu_check(st == DITATTN_ERR_UNSUPPORTED &&
                strstr(ditattn_last_error(ctx), "needs a host context"),
            "llsa backward on the device route (%s): %s: %s, expected UNSUPPORTED (needs a host "
            "context)",
            be, ditattn_strerror(st), ditattn_last_error(ctx));
  for (int i = 5; i < 9; i++) {
    int untouched = 1;
    for (size_t j = 0; j < t[i].count; j++) untouched &= isnan(t[i].buf[j]) != 0;
    dtu_check(untouched, "llsa on the device route (%s): a refused call wrote tensor %d", be, i);
  }
  for (int i = 0; i < 9; i++) dtu_tensor_free(&t[i]);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  const uint64_t seed = dtu_seed(MPI_COMM_WORLD);
  setenv("DITATTN_DIST_DEVICE_PATH", "1", 1);
  const ditattn_backend backends[2] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};
  for (int bi = 0; bi < 2; bi++) {
    ditattn_context *ctx = NULL;
    if (ditattn_context_create(backends[bi], &ctx) != DITATTN_OK) continue; /* not compiled */
    /* "0": staged through host buffers; "1": buffers handed to MPI as is. */
    setenv("DITATTN_DIST_CUDA_AWARE", "0", 1);
    for (int ci = 0; ci < 6; ci++) {
      /* Odd cases: staged messages in chunks of a few rows, uploaded as
       * they land. */
      if (ci % 2) setenv("DITATTN_DIST_RING_CHUNK_BYTES", ci == 1 ? "1" : "100", 1);
      dense_case(ctx, seed, ci, 1);
      unsetenv("DITATTN_DIST_RING_CHUNK_BYTES");
    }
    setenv("DITATTN_DIST_CUDA_AWARE", "1", 1);
    for (int ci = 6; ci < 12; ci++) dense_case(ctx, seed, ci, 2);
    unsetenv("DITATTN_DIST_CUDA_AWARE");
    alloc_failures_agree(ctx);
    llsa_routes(ctx);
    ditattn_context_destroy(ctx);
  }
  int rc = dtu_finish(MPI_COMM_WORLD, "test_dist_device_path");
  MPI_Finalize();
  return rc;
}
