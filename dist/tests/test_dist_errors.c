/* Mismatched parameters across ranks, or one rank with an invalid argument,
 * give the SAME status and message on every rank, quickly (no hang: ctest's
 * TIMEOUT would catch one). A valid call afterwards still works. */
#define _POSIX_C_SOURCE 200809L /* setenv, nanosleep */
#include "dist_test_util.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OP_DENSE = 0, OP_LLSA = 1 };

typedef enum fault {
  F_NONE = 0,
  F_D_DIFFERS,       /* last rank: D + 1 */
  F_SCALE_DIFFERS,   /* last rank: another scale */
  F_NGLOBAL_DIFFERS, /* last rank: n_global + 1 */
  F_Q_NULL,          /* last rank: q = NULL */
  F_CTX_NULL,        /* last rank: ctx = NULL */
  F_SLICE_VS_TENSOR, /* last rank: slice length != tensor N */
  F_GAP,             /* rank 0 starts at token 1: the slices do not tile */
  F_TOPK_DIFFERS,    /* LLSA, last rank: another top-K */
  F_BLOCK_INVALID,   /* LLSA, last rank: b = 1 */
  F_COUNT
} fault;

static const char *const fault_names[F_COUNT] = {"none",
                                                 "D differs",
                                                 "scale differs",
                                                 "n_global differs",
                                                 "q NULL",
                                                 "ctx NULL",
                                                 "slice length != tensor N",
                                                 "gap between slices",
                                                 "top-K differs",
                                                 "block invalid"};

/* The status every rank must return; mismatches need two ranks to exist. */
static ditattn_status expected(fault f, int P) {
  switch (f) {
  case F_NONE: return DITATTN_OK;
  case F_D_DIFFERS:
  case F_SCALE_DIFFERS:
  case F_TOPK_DIFFERS: return P > 1 ? DITATTN_ERR_MPI : DITATTN_OK;
  /* Alone, a rank whose n_global exceeds its slice leaves tokens uncovered. */
  case F_NGLOBAL_DIFFERS: return P > 1 ? DITATTN_ERR_MPI : DITATTN_ERR_INVALID_ARGUMENT;
  case F_Q_NULL:
  case F_CTX_NULL: return DITATTN_ERR_NULL_POINTER;
  case F_SLICE_VS_TENSOR: return DITATTN_ERR_SHAPE_MISMATCH;
  case F_GAP:
  case F_BLOCK_INVALID: return DITATTN_ERR_INVALID_ARGUMENT;
  default: return DITATTN_ERR_INTERNAL;
  }
}

static void run_fault(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int op, fault f) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  const int last = rank == P - 1;
  const int64_t B = 1, H = 2, N = 53;
  const int64_t D = 8 + ((f == F_D_DIFFERS && last) ? 1 : 0);
  dtu_rng rng = {seed + (uint64_t)f};
  int64_t lengths[64], offset = 0;
  dtu_partition(&rng, N, P, lengths);
  for (int r = 0; r < rank; r++) offset += lengths[r];
  int64_t len = lengths[rank];
  ditattn_dist_slice slice = {N, offset, len};
  if (f == F_NGLOBAL_DIFFERS && last) slice.n_global = N + 1;
  if (f == F_GAP && rank == 0) {
    /* Rank 0 drops its first token (keeps length >= 1 when it has 2). */
    slice.offset = 1;
    slice.length = len - 1;
    if (slice.length < 1) slice = (ditattn_dist_slice){N, 1, 1};
    len = slice.length;
  }
  int64_t tensor_len = len + ((f == F_SLICE_VS_TENSOR && last) ? 1 : 0);
  dtu_tensor q = dtu_tensor_new(B, H, tensor_len, D, 0, 0);
  dtu_tensor k = dtu_tensor_new(B, H, tensor_len, D, 0, 0);
  dtu_tensor v = dtu_tensor_new(B, H, tensor_len, D, 0, 0);
  dtu_tensor o = dtu_tensor_new(B, H, tensor_len, D, 0, 0);
  dtu_fill_uniform(&q, &rng);
  dtu_fill_uniform(&k, &rng);
  dtu_fill_uniform(&v, &rng);
  ditattn_context *use_ctx = (f == F_CTX_NULL && last) ? NULL : ctx;
  const ditattn_tensor *qp = (f == F_Q_NULL && last) ? NULL : &q.t;
  float scale = (f == F_SCALE_DIFFERS && last) ? 0.5f : 0.0f;

  double t0 = MPI_Wtime();
  ditattn_status st;
  if (op == OP_DENSE) {
    st = ditattn_dist_dense_forward(use_ctx, comm, &slice, qp, &k.t, &v.t, scale, &o.t, NULL);
  } else {
    ditattn_llsa_params prm = ditattn_llsa_params_default();
    prm.block = 4;
    prm.topk[0] = 2;
    prm.topk[1] = 2;
    prm.scale = scale;
    if (f == F_TOPK_DIFFERS && last) prm.topk[1] = 3;
    if (f == F_BLOCK_INVALID && last) prm.block = 1;
    st = ditattn_dist_llsa_forward(use_ctx, comm, &slice, &prm, qp, &k.t, &v.t, &o.t, NULL);
  }
  double dt = MPI_Wtime() - t0;
  const char *msg = use_ctx ? ditattn_last_error(use_ctx) : "";
  /* Compare status and message over ranks (the rank with ctx NULL has no
   * message to compare). */
  int same_status = 0, same_message = 0;
  dtu_compare_ranks(comm, st, use_ctx ? msg : NULL, &same_status, &same_message);
  const char *opn = op == OP_DENSE ? "dense" : "llsa";
  dtu_check(same_status, "%s, fault '%s', P=%d: ranks returned different statuses", opn,
            fault_names[f], P);
  dtu_check(st == expected(f, P), "%s, fault '%s', P=%d: status %s, expected %s (message: %s)", opn,
            fault_names[f], P, ditattn_strerror(st), ditattn_strerror(expected(f, P)), msg);
  dtu_check(same_message, "%s, fault '%s', P=%d: messages differ between ranks (mine: %s)", opn,
            fault_names[f], P, msg);
  if (use_ctx && st != DITATTN_OK)
    dtu_check(msg[0] != '\0', "%s, fault '%s': empty message", opn, fault_names[f]);
  dtu_check(dt < 10.0, "%s, fault '%s', P=%d: took %.1f s", opn, fault_names[f], P, dt);
  if (rank == 0 && st != DITATTN_OK)
    printf("  %s, %s: %s: %s\n", opn, fault_names[f], ditattn_strerror(st), msg);
  dtu_tensor *ts[] = {&q, &k, &v, &o};
  for (int i = 0; i < 4; i++) dtu_tensor_free(ts[i]);
}

/* The k-th library allocation fails on the last rank only (during
 * agreement, pooling, the ring or inside a backend call): every rank must
 * return the same status, and nothing may hang. Returns 1 while k still hit
 * an allocation. */
static int run_alloc_fault(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int op, int64_t k) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  const int64_t B = 1, H = 2, N = 61, D = 8;
  dtu_rng rng = {seed ^ 0xA5A5u};
  int64_t lengths[64], offset = 0;
  dtu_partition(&rng, N, P, lengths);
  for (int r = 0; r < rank; r++) offset += lengths[r];
  const int64_t len = lengths[rank];
  dtu_tensor t[4];
  for (int i = 0; i < 4; i++) t[i] = dtu_tensor_new(B, H, len, D, 0, 0);
  for (int i = 0; i < 3; i++) dtu_fill_uniform(&t[i], &rng);
  ditattn_dist_slice slice = {N, offset, len};
  ditattn_llsa_params prm = ditattn_llsa_params_default();
  prm.block = 3;
  prm.topk[0] = 2;
  prm.topk[1] = 2;
  if (rank == P - 1) dt_debug_fail_alloc_at(k);
  ditattn_status st = op == OP_DENSE
                          ? ditattn_dist_dense_forward(ctx, comm, &slice, &t[0].t, &t[1].t, &t[2].t,
                                                       0.0f, &t[3].t, NULL)
                          : ditattn_dist_llsa_forward(ctx, comm, &slice, &prm, &t[0].t, &t[1].t,
                                                      &t[2].t, &t[3].t, NULL);
  int64_t used = rank == P - 1 ? dt_debug_fail_alloc_at(0) : 0;
  int64_t mine[3] = {(int64_t)st, -(int64_t)st, used}, all[3];
  MPI_Allreduce(mine, all, 3, MPI_INT64_T, MPI_MIN, comm);
  MPI_Allreduce(&used, &all[2], 1, MPI_INT64_T, MPI_MAX, comm);
  const char *opn = op == OP_DENSE ? "dense" : "llsa";
  dtu_check(all[0] == -all[1], "%s, allocation %lld fails on rank %d of %d: statuses differ", opn,
            (long long)k, P - 1, P);
  dtu_check(st == DITATTN_OK || st == DITATTN_ERR_OUT_OF_MEMORY,
            "%s, allocation %lld fails on the last rank: status %s (%s)", opn, (long long)k,
            ditattn_strerror(st), ditattn_last_error(ctx));
  for (int i = 0; i < 4; i++) dtu_tensor_free(&t[i]);
  return st != DITATTN_OK;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm comm = MPI_COMM_WORLD;
  uint64_t seed = dtu_seed(comm);
  ditattn_context *ctx = NULL;
  if (ditattn_context_create(DITATTN_BACKEND_REF, &ctx) != DITATTN_OK) {
    fprintf(stderr, "cannot create a ref context\n");
    MPI_Abort(comm, 2);
  }
  for (int op = OP_DENSE; op <= OP_LLSA; op++)
    for (int f = 0; f < F_COUNT; f++) {
      if (op == OP_DENSE && (f == F_TOPK_DIFFERS || f == F_BLOCK_INVALID)) continue;
      run_fault(ctx, comm, seed, op, (fault)f);
    }
  const ditattn_backend fault_backends[] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};
  for (int bi = 0; bi < 2; bi++) {
    ditattn_context *fctx = NULL;
    if (ditattn_context_create(fault_backends[bi], &fctx) != DITATTN_OK) continue;
    for (int mode = 0; mode < 3; mode++) {
      /* LLSA twice more: fine keys by the ring, then by fetching. */
      const int op = mode == 0 ? OP_DENSE : OP_LLSA;
      setenv("DITATTN_DIST_LLSA", mode == 2 ? "fetch" : "ring", 1);
      for (int64_t k = 1; k < 300 && run_alloc_fault(fctx, comm, seed, op, k); k++) {
      }
    }
    unsetenv("DITATTN_DIST_LLSA");
    ditattn_context_destroy(fctx);
  }
  /* After all the failures, a valid call still succeeds everywhere. */
  run_fault(ctx, comm, seed, OP_DENSE, F_NONE);
  ditattn_context_destroy(ctx);
  int rc = dtu_finish(comm, "test_dist_errors");
  MPI_Finalize();
  return rc;
}
