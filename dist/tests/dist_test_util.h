/* Helpers for the MPI tests of dist/ (plain C: CMocka and MPI mix poorly).
 * Every rank regenerates the full inputs from one broadcast seed, so each
 * can compute the single-process result itself and compare its slice. */
#ifndef DITATTN_DIST_TEST_UTIL_H
#define DITATTN_DIST_TEST_UTIL_H

#include <stdint.h>

#include "ditattn/ditattn_dist.h"

/* Seed from DITATTN_TEST_SEED or the clock on rank 0, broadcast, printed. */
uint64_t dtu_seed(MPI_Comm comm);
/* A small deterministic generator (splitmix64), same stream on every rank. */
typedef struct dtu_rng {
  uint64_t state;
} dtu_rng;
uint64_t dtu_next(dtu_rng *rng);
double dtu_uniform(dtu_rng *rng, double lo, double hi);
int64_t dtu_int(dtu_rng *rng, int64_t lo, int64_t hi); /* [lo, hi] */

/* A host f32 tensor owning its buffer: pad extra floats per row, optional
 * DiT layout; filled with NaN (poison). */
typedef struct dtu_tensor {
  ditattn_tensor t;
  float *buf;
  size_t count;
} dtu_tensor;
dtu_tensor dtu_tensor_new(int64_t B, int64_t H, int64_t N, int64_t D, int64_t pad, int bnhd);
void dtu_tensor_free(dtu_tensor *t);
void dtu_fill_uniform(dtu_tensor *t, dtu_rng *rng);
/* The usual whole-sequence inputs: q, k, v (B, H, N, D) filled from rng in
 * that order, and ref, an unfilled (NaN) output of the same shape. */
void dtu_qkv_new(int64_t B, int64_t H, int64_t N, int64_t D, dtu_rng *rng, dtu_tensor *q,
                 dtu_tensor *k, dtu_tensor *v, dtu_tensor *ref);
/* dst (N = length) = tokens [offset, offset + length) of src. */
void dtu_copy_slice(dtu_tensor *dst, const dtu_tensor *src, int64_t offset);
/* ‖a − b[offset:]‖ / ‖b[offset:]‖ over a's tokens; +inf on NaN/Inf. */
double dtu_rel_err_slice(const ditattn_tensor *a, const ditattn_tensor *b, int64_t offset);
/* Collective: the same over the whole sequence, every rank passing its
 * slice a of b's tokens (b the whole-sequence result, on every rank): the
 * error of the distributed result as one tensor. A rank's slice can be
 * small beside the rounding of a gradient sum that cancels (the
 * backwards' dk, dv) where the tensor as a whole is not. */
double dtu_rel_err_ranks(MPI_Comm comm, const ditattn_tensor *a, const ditattn_tensor *b,
                         int64_t offset);
/* Same for lse arrays: a is [B][H][len], b is [B][H][n_global]. */
double dtu_rel_err_lse(const float *a, const float *b, int64_t BH, int64_t len, int64_t n_global,
                       int64_t offset);

/* Uneven random partition of N tokens over P ranks (each >= 1), the same on
 * every rank given the same rng state. lengths has P entries. */
void dtu_partition(dtu_rng *rng, int64_t N, int P, int64_t *lengths);

/* This rank's slice of an uneven random partition (dtu_partition) of N
 * tokens over comm's ranks: piece `rank`, or P − 1 − rank when reversed.
 * Returns its length; *offset its first token. */
int64_t dtu_rank_slice(MPI_Comm comm, dtu_rng *rng, int64_t N, int reversed, int64_t *offset);

/* Counts one check; prints a one-line description when it fails. */
void dtu_check(int ok, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Collective over comm: *same_status = every rank passed the same st;
 * *same_message = every rank with a message (message NULL: none to
 * compare) passed the same text. */
void dtu_compare_ranks(MPI_Comm comm, ditattn_status st, const char *message, int *same_status,
                       int *same_message);
/* One call of the operation under test on fresh inputs, with fault f
 * (0: none) injected on the last rank, or its fail_alloc-th library
 * allocation failing there (0: none). *same: every rank returned the same
 * status and message; *seconds: how long the call took. */
typedef ditattn_status (*dtu_faulty_call)(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, int f,
                                          int64_t fail_alloc, int *same, double *seconds);
/* The collective error discipline of a call: each fault f in [0, nfaults)
 * (named names[f]) returns expected[f], the same on every rank, within
 * 10 s; then every library allocation failing in turn on the last rank
 * gives OK or OUT_OF_MEMORY, the same everywhere; then a valid call works. */
void dtu_run_faults(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, dtu_faulty_call call,
                    int nfaults, const char *const *names, const ditattn_status *expected);
/* Sums passes/failures over comm, prints "N passed, N failed" on rank 0 and
 * returns the process exit code (0 when nothing failed anywhere). */
int dtu_finish(MPI_Comm comm, const char *test_name);

#endif
