/* Distributed RoPeSLR forward equals the single-process RoPeSLR forward on
 * every rank (out and lse_sparse): uneven slices, blocks straddling slice
 * boundaries and slices shorter than a block, slices in reversed rank
 * order, B·H > 1, strided layouts, NULL / Morton / random positions, all
 * three policies, both features, lse_sparse given or NULL, force_own 0/1,
 * b = 1, b > N, rho = 1 (empty background), r > D; ref and cpu contexts.
 * On ref the cases run again on the device-memory route of GPU contexts
 * (test hook DITATTN_DIST_DEVICE_PATH=1: q/k/v all-gathered, then ref's
 * forward restricted to this rank's rows).
 * Then error agreement: a mismatched rank r, a NULL weight, pos NULL on one
 * rank only, or a failing allocation on one rank (host route, and on ref
 * the device route too) gives the same status on every rank; the device
 * route works on ref and is refused by cpu, which cannot restrict its
 * forward to a range of rows. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "slr_test_util.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLR_FMT                                                                                    \
  "case %d: B=%lld H=%lld N=%lld D=%lld pad=%lld bnhd=%d b=%lld policy=%d rho=%g K=%lld own=%d "   \
  "r=%lld feature=%d grid=%lldx%lldx%lld pos=%s P=%d slice=[%lld,+%lld) reversed=%d backend=%s "   \
  "gpu_transfer=%d: %s rel err = %g"
#define SLR_ARGS(what, e)                                                                          \
  ci, (long long)c->B, (long long)c->H, (long long)c->N, (long long)c->D, (long long)c->pad,       \
      c->bnhd, (long long)c->block, (int)c->policy, c->rho, (long long)c->topk, c->force_own,      \
      (long long)c->rank, (int)c->feature, (long long)c->grid[0], (long long)c->grid[1],           \
      (long long)c->grid[2], slr_pos_names[c->pos_mode], P, (long long)offset, (long long)len,     \
      c->reversed, bname, expect_transfer, what, e

/* expect_transfer: ditattn_dist_stats.gpu_transfer of the route taken (0:
 * host route; 1: device route staged through host buffers). */
static void run_case(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int ci, const slr_case *c,
                     int expect_transfer) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  dtu_rng rng = {seed * 1000033u + (uint64_t)ci};
  dtu_tensor q, k, v, ref;
  dtu_qkv_new(c->B, c->H, c->N, c->D, &rng, &q, &k, &v, &ref);
  slr_weights sw = slr_weights_new(c, &rng);
  int32_t *pos = slr_positions(c, &rng);
  int64_t offset;
  const int64_t len = dtu_rank_slice(comm, &rng, c->N, c->reversed, &offset);
  const int64_t BH = c->B * c->H;
  const ditattn_ropeslr_params prm = slr_params_of(c);
  float *lse_ref = malloc((size_t)(BH * c->N) * sizeof(float));
  float *lse = malloc((size_t)(BH * len) * sizeof(float));
  for (int64_t i = 0; i < BH * len; i++) lse[i] = NAN;
  ditattn_status st =
      ditattn_ropeslr_forward(ctx, &prm, &sw.w, pos, &q.t, &k.t, &v.t, &ref.t, lse_ref, NULL);
  dtu_check(st == DITATTN_OK, "case %d: single-process ropeslr failed: %s", ci,
            ditattn_last_error(ctx));

  dtu_tensor ql = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor kl = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor vl = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor ol = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd); /* NaN: poisoned */
  dtu_copy_slice(&ql, &q, offset);
  dtu_copy_slice(&kl, &k, offset);
  dtu_copy_slice(&vl, &v, offset);
  ditattn_dist_slice slice = {c->N, offset, len};
  const int want_lse = ci % 4 != 3; /* some cases without lse_sparse */
  st = ditattn_dist_ropeslr_forward(ctx, comm, &slice, &prm, &sw.w, pos ? pos + 3 * offset : NULL,
                                    &ql.t, &kl.t, &vl.t, &ol.t, want_lse ? lse : NULL);
  ditattn_dist_stats stats;
  ditattn_dist_last_stats(&stats);
  const char *bname = ditattn_backend_name(ditattn_context_backend(ctx));
  dtu_check(st == DITATTN_OK, "case %d (%s, gpu_transfer %d, P=%d): dist ropeslr failed: %s", ci,
            bname, expect_transfer, P, ditattn_last_error(ctx));
  dtu_check(stats.gpu_transfer == expect_transfer, "case %d (%s): gpu_transfer = %d, expected %d",
            ci, bname, stats.gpu_transfer, expect_transfer);
  double e = dtu_rel_err_slice(&ol.t, &ref.t, offset);
  dtu_check(e <= 1e-5, SLR_FMT, SLR_ARGS("out", e));
  if (want_lse) {
    e = dtu_rel_err_lse(lse, lse_ref, BH, len, c->N, offset);
    dtu_check(e <= 1e-5, SLR_FMT, SLR_ARGS("lse_sparse", e));
  }
  dtu_tensor *all[] = {&q, &k, &v, &ref, &ql, &kl, &vl, &ol};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dtu_tensor_free(all[i]);
  slr_weights_free(&sw);
  free(pos);
  free(lse);
  free(lse_ref);
}

/* ------------------------------------------------------------ errors */
enum { E_NONE = 0, E_RANK_DIFFERS, E_WEIGHT_NULL, E_POS_NULL_ON_ONE, E_DEVICE, E_COUNT };
static const char *const error_names[E_COUNT] = {
    "none", "rank r differs on the last rank", "weights.W data NULL on the last rank",
    "pos NULL on the last rank only",
    "device-memory route (works on ref; cpu cannot restrict to its rows)"};

static ditattn_status expected(int f, int P, ditattn_backend backend) {
  switch (f) {
  case E_RANK_DIFFERS:
  case E_POS_NULL_ON_ONE: return P > 1 ? DITATTN_ERR_MPI : DITATTN_OK;
  case E_WEIGHT_NULL: return DITATTN_ERR_NULL_POINTER;
  case E_DEVICE: return backend == DITATTN_BACKEND_REF ? DITATTN_OK : DITATTN_ERR_UNSUPPORTED;
  default: return DITATTN_OK;
  }
}

/* Runs one small call with fault f (or allocation k failing on the last
 * rank when k > 0), on the device-memory route when device (or f is
 * E_DEVICE); checks every rank returns the same status and message.
 * Returns the status. */
static ditattn_status run_error(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int f,
                                int64_t alloc_k, int device) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  const int last = rank == P - 1;
  const slr_case c = slr_fault_case();
  dtu_rng rng = {seed + 77u * (uint64_t)f};
  int64_t offset;
  const int64_t len = dtu_rank_slice(comm, &rng, c.N, 0, &offset);
  dtu_tensor t[4];
  for (int i = 0; i < 4; i++) t[i] = dtu_tensor_new(c.B, c.H, len, c.D, 0, 0);
  for (int i = 0; i < 3; i++) dtu_fill_uniform(&t[i], &rng);
  slr_weights sw = slr_weights_new(&c, &rng);
  int32_t *pos = slr_positions(&c, &rng);
  ditattn_ropeslr_params prm = slr_params_of(&c);
  ditattn_ropeslr_weights w = sw.w;
  if (f == E_RANK_DIFFERS && last) {
    /* r = 4 with views of the first 4 columns: valid locally, so only the
     * agreement can catch it. */
    prm.rank = 4;
    ditattn_tensor *lr[5] = {&w.A, &w.Bk, &w.Et, &w.Ey, &w.Ex};
    for (int a = 0; a < 5; a++) lr[a]->shape[3] = 4;
  }
  if (f == E_WEIGHT_NULL && last) w.W.data = NULL;
  const int32_t *my_pos = (f == E_POS_NULL_ON_ONE && last) ? NULL : pos + 3 * offset;
  ditattn_dist_slice slice = {c.N, offset, len};
  if (alloc_k > 0 && last) dt_debug_fail_alloc_at(alloc_k);
  /* dist's test hook: this host context takes the route of GPU contexts. */
  if (device || f == E_DEVICE) setenv("DITATTN_DIST_DEVICE_PATH", "1", 1);
  double t0 = MPI_Wtime();
  ditattn_status st = ditattn_dist_ropeslr_forward(ctx, comm, &slice, &prm, &w, my_pos, &t[0].t,
                                                   &t[1].t, &t[2].t, &t[3].t, NULL);
  double dt = MPI_Wtime() - t0;
  if (device || f == E_DEVICE) unsetenv("DITATTN_DIST_DEVICE_PATH");
  if (alloc_k > 0 && last) dt_debug_fail_alloc_at(0);
  const char *msg = ditattn_last_error(ctx);
  int same_status = 0, same_message = 0;
  dtu_compare_ranks(comm, st, msg, &same_status, &same_message);
  const ditattn_backend backend = ditattn_context_backend(ctx);
  const char *bname = ditattn_backend_name(backend);
  const char *route = device || f == E_DEVICE ? "device route" : "host route";
  const char *what = alloc_k > 0 ? "allocation fault" : error_names[f];
  dtu_check(same_status, "ropeslr (%s, %s), %s (k=%lld), P=%d: ranks returned different statuses",
            bname, route, what, (long long)alloc_k, P);
  dtu_check(same_message, "ropeslr (%s, %s), %s (k=%lld), P=%d: messages differ (mine: %s)", bname,
            route, what, (long long)alloc_k, P, msg);
  if (alloc_k == 0)
    dtu_check(st == expected(f, P, backend),
              "ropeslr (%s, %s), %s, P=%d: status %s, expected %s (%s)", bname, route, what, P,
              ditattn_strerror(st), ditattn_strerror(expected(f, P, backend)), msg);
  else
    dtu_check(st == DITATTN_OK || st == DITATTN_ERR_OUT_OF_MEMORY,
              "ropeslr (%s, %s), allocation %lld fails on the last rank, P=%d: status %s (%s)",
              bname, route, (long long)alloc_k, P, ditattn_strerror(st), msg);
  if (f == E_DEVICE && st == DITATTN_ERR_UNSUPPORTED)
    dtu_check(strstr(msg, "cannot restrict") != NULL,
              "ropeslr (%s), device route refused without saying why: %s", bname, msg);
  dtu_check(dt < 10.0, "ropeslr (%s, %s), %s, P=%d: took %.1f s", bname, route, what, P, dt);
  if (rank == 0 && st != DITATTN_OK && alloc_k == 0)
    printf("  ropeslr (%s, %s), %s: %s: %s\n", bname, route, what, ditattn_strerror(st), msg);
  for (int i = 0; i < 4; i++) dtu_tensor_free(&t[i]);
  slr_weights_free(&sw);
  free(pos);
  return st;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm comm = MPI_COMM_WORLD;
  uint64_t seed = dtu_seed(comm);
  unsetenv("DITATTN_DIST_DEVICE_PATH"); /* the host route first, whatever the caller set */
  int ncases = 0;
  const slr_case *cases = slr_test_cases(&ncases);
  const ditattn_backend backends[] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};
  for (size_t bi = 0; bi < 2; bi++) {
    ditattn_context *ctx = NULL;
    if (ditattn_context_create(backends[bi], &ctx) != DITATTN_OK) continue;
    if (!ditattn_backend_supports(backends[bi], DITATTN_OP_ROPESLR_FORWARD)) {
      ditattn_context_destroy(ctx);
      continue;
    }
    const int is_ref = backends[bi] == DITATTN_BACKEND_REF;
    for (int ci = 0; ci < ncases; ci++) run_case(ctx, comm, seed, ci, &cases[ci], 0);
    if (is_ref) {
      /* The device-memory route, staged through host buffers. */
      setenv("DITATTN_DIST_DEVICE_PATH", "1", 1);
      setenv("DITATTN_DIST_CUDA_AWARE", "0", 1);
      for (int ci = 0; ci < ncases; ci++) run_case(ctx, comm, seed, ci, &cases[ci], 1);
      unsetenv("DITATTN_DIST_CUDA_AWARE");
      unsetenv("DITATTN_DIST_DEVICE_PATH");
    }
    for (int f = 0; f < E_COUNT; f++) run_error(ctx, comm, seed, f, 0, 0);
    /* The k-th allocation of the call fails on the last rank: same status
     * everywhere, no hang; k grows until the call no longer fails. On ref
     * the device route's allocations (gathered q/k/v, ring buffers, the
     * ranged forward) too. */
    for (int device = 0; device <= is_ref; device++) {
      int64_t kk = 1;
      for (; kk < 200; kk++) {
        ditattn_status st = run_error(ctx, comm, seed, E_NONE, kk, device);
        int failed = st != DITATTN_OK, any = 0;
        MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, comm);
        if (!any) break;
      }
      dtu_check(kk > 3 && kk < 200, "allocation faults (%s, %s route): the loop ended at k = %lld",
                ditattn_backend_name(backends[bi]), device ? "device" : "host", (long long)kk);
    }
    ditattn_context_destroy(ctx);
  }
  int rc = dtu_finish(comm, "test_dist_ropeslr");
  MPI_Finalize();
  return rc;
}
