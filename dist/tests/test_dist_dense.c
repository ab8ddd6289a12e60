/* Ring attention equals single-process dense attention on every rank:
 * uneven slices, strided/DiT layouts, with and without lse, ref and cpu. */
#include "dist_test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct dense_case {
  int64_t B, H, N, D, pad;
  int bnhd, with_lse;
  float scale;
} dense_case;

#define DENSE_FMT                                                                                  \
  "case %d: B=%lld H=%lld N=%lld D=%lld pad=%lld bnhd=%d P=%d slice=[%lld,+%lld) "                 \
  "backend=%s: %s = %g"

static void run_case(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int ci,
                     const dense_case *c) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  dtu_rng rng = {seed * 1000003u + (uint64_t)ci};
  dtu_tensor q, k, v, ref;
  dtu_qkv_new(c->B, c->H, c->N, c->D, &rng, &q, &k, &v, &ref);
  int64_t lengths[64], offset = 0;
  dtu_partition(&rng, c->N, P, lengths);
  for (int r = 0; r < rank; r++) offset += lengths[r];
  const int64_t BH = c->B * c->H, len = lengths[rank];
  float *lse_ref = malloc((size_t)(BH * c->N) * sizeof(float));
  float *lse = malloc((size_t)(BH * len) * sizeof(float));
  for (int64_t i = 0; i < BH * len; i++) lse[i] = NAN;
  ditattn_status st = ditattn_dense_forward(ctx, &q.t, &k.t, &v.t, c->scale, &ref.t, lse_ref);
  dtu_check(st == DITATTN_OK, "case %d: single-process dense failed: %s", ci,
            ditattn_last_error(ctx));

  dtu_tensor ql = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor kl = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor vl = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_tensor ol = dtu_tensor_new(c->B, c->H, len, c->D, c->pad, c->bnhd);
  dtu_copy_slice(&ql, &q, offset);
  dtu_copy_slice(&kl, &k, offset);
  dtu_copy_slice(&vl, &v, offset);
  ditattn_dist_slice slice = {c->N, offset, len};
  st = ditattn_dist_dense_forward(ctx, comm, &slice, &ql.t, &kl.t, &vl.t, c->scale, &ol.t,
                                  c->with_lse ? lse : NULL);
  dtu_check(st == DITATTN_OK, "case %d: dist dense failed: %s", ci, ditattn_last_error(ctx));
  double e = dtu_rel_err_slice(&ol.t, &ref.t, offset);
  dtu_check(e <= 1e-5, DENSE_FMT, ci, (long long)c->B, (long long)c->H, (long long)c->N,
            (long long)c->D, (long long)c->pad, c->bnhd, P, (long long)offset, (long long)len,
            ditattn_backend_name(ditattn_context_backend(ctx)), "out rel err", e);
  if (c->with_lse) {
    e = dtu_rel_err_lse(lse, lse_ref, BH, len, c->N, offset);
    dtu_check(e <= 1e-5, DENSE_FMT, ci, (long long)c->B, (long long)c->H, (long long)c->N,
              (long long)c->D, (long long)c->pad, c->bnhd, P, (long long)offset, (long long)len,
              ditattn_backend_name(ditattn_context_backend(ctx)), "lse rel err", e);
  }
  dtu_tensor *all[] = {&q, &k, &v, &ref, &ql, &kl, &vl, &ol};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dtu_tensor_free(all[i]);
  free(lse);
  free(lse_ref);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm comm = MPI_COMM_WORLD;
  uint64_t seed = dtu_seed(comm);
  const dense_case cases[] = {
      {1, 1, 37, 8, 0, 0, 1, 0.0f}, {2, 3, 101, 16, 3, 1, 1, 0.0f}, {1, 2, 64, 32, 0, 0, 0, 0.3f},
      {2, 1, 7, 5, 1, 1, 1, 0.0f},  {1, 1, 257, 64, 0, 1, 1, 0.0f},
  };
  const ditattn_backend backends[] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};
  for (size_t bi = 0; bi < 2; bi++) {
    ditattn_context *ctx = NULL;
    if (ditattn_context_create(backends[bi], &ctx) != DITATTN_OK) continue; /* not compiled */
    if (!ditattn_backend_supports(backends[bi], DITATTN_OP_DENSE_FORWARD) ||
        !ditattn_backend_supports(backends[bi], DITATTN_OP_LSE_MERGE)) {
      ditattn_context_destroy(ctx);
      continue;
    }
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
      run_case(ctx, comm, seed, (int)ci, &cases[ci]);
    ditattn_context_destroy(ctx);
  }
  int rc = dtu_finish(comm, "test_dist_dense");
  MPI_Finalize();
  return rc;
}
