/* Helpers for the MPI tests of dist/. */
#include "dist_test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t g_passed, g_failed;

uint64_t dtu_seed(MPI_Comm comm) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  uint64_t seed = 0;
  if (rank == 0) {
    const char *env = getenv("DITATTN_TEST_SEED");
    seed = env && *env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)clock();
    fprintf(stderr, "seed: DITATTN_TEST_SEED=%llu\n", (unsigned long long)seed);
  }
  MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, comm);
  return seed;
}

uint64_t dtu_next(dtu_rng *rng) {
  uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double dtu_uniform(dtu_rng *rng, double lo, double hi) {
  return lo + (hi - lo) * (double)(dtu_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

int64_t dtu_int(dtu_rng *rng, int64_t lo, int64_t hi) {
  return lo + (int64_t)(dtu_next(rng) % (uint64_t)(hi - lo + 1));
}

dtu_tensor dtu_tensor_new(int64_t B, int64_t H, int64_t N, int64_t D, int64_t pad, int bnhd) {
  dtu_tensor t;
  memset(&t, 0, sizeof t);
  int64_t row = D + pad;
  t.count = (size_t)(B * H * N * row);
  t.buf = malloc(t.count * sizeof(float));
  if (!t.buf) {
    fprintf(stderr, "test: out of memory (%zu floats)\n", t.count);
    exit(2);
  }
  for (size_t i = 0; i < t.count; i++) t.buf[i] = NAN;
  t.t.data = t.buf;
  t.t.dtype = DITATTN_F32;
  t.t.shape[0] = B;
  t.t.shape[1] = H;
  t.t.shape[2] = N;
  t.t.shape[3] = D;
  if (bnhd) {
    t.t.stride[0] = N * H * row;
    t.t.stride[1] = row;
    t.t.stride[2] = H * row;
  } else {
    t.t.stride[0] = H * N * row;
    t.t.stride[1] = N * row;
    t.t.stride[2] = row;
  }
  return t;
}

void dtu_tensor_free(dtu_tensor *t) {
  free(t->buf);
  t->buf = NULL;
}

static float *at(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n, int64_t d) {
  return (float *)t->data + b * t->stride[0] + h * t->stride[1] + n * t->stride[2] + d;
}

void dtu_qkv_new(int64_t B, int64_t H, int64_t N, int64_t D, dtu_rng *rng, dtu_tensor *q,
                 dtu_tensor *k, dtu_tensor *v, dtu_tensor *ref) {
  *q = dtu_tensor_new(B, H, N, D, 0, 0);
  *k = dtu_tensor_new(B, H, N, D, 0, 0);
  *v = dtu_tensor_new(B, H, N, D, 0, 0);
  *ref = dtu_tensor_new(B, H, N, D, 0, 0);
  dtu_fill_uniform(q, rng);
  dtu_fill_uniform(k, rng);
  dtu_fill_uniform(v, rng);
}

void dtu_fill_uniform(dtu_tensor *t, dtu_rng *rng) {
  const int64_t *s = t->t.shape;
  for (int64_t b = 0; b < s[0]; b++)
    for (int64_t h = 0; h < s[1]; h++)
      for (int64_t n = 0; n < s[2]; n++)
        for (int64_t d = 0; d < s[3]; d++)
          *at(&t->t, b, h, n, d) = (float)dtu_uniform(rng, -1.0, 1.0);
}

void dtu_copy_slice(dtu_tensor *dst, const dtu_tensor *src, int64_t offset) {
  const int64_t *s = dst->t.shape;
  for (int64_t b = 0; b < s[0]; b++)
    for (int64_t h = 0; h < s[1]; h++)
      for (int64_t n = 0; n < s[2]; n++)
        memcpy(at(&dst->t, b, h, n, 0), at(&src->t, b, h, offset + n, 0),
               (size_t)s[3] * sizeof(float));
}

/* Σ (a − b[offset:])² and Σ b[offset:]² over a's tokens into sums; 0
 * when a value is NaN or Inf. */
static int err_sums(const ditattn_tensor *a, const ditattn_tensor *b, int64_t offset,
                    double sums[2]) {
  double num = 0.0, den = 0.0;
  const int64_t *s = a->shape;
  for (int64_t i = 0; i < s[0]; i++)
    for (int64_t h = 0; h < s[1]; h++)
      for (int64_t n = 0; n < s[2]; n++)
        for (int64_t d = 0; d < s[3]; d++) {
          double x = *at(a, i, h, n, d), y = *at(b, i, h, offset + n, d);
          if (!isfinite(x) || !isfinite(y)) return 0;
          num += (x - y) * (x - y);
          den += y * y;
        }
  sums[0] = num, sums[1] = den;
  return 1;
}

static double rel_of(const double sums[2]) {
  return sums[1] > 0.0 ? sqrt(sums[0] / sums[1]) : sqrt(sums[0]);
}

double dtu_rel_err_slice(const ditattn_tensor *a, const ditattn_tensor *b, int64_t offset) {
  double sums[2];
  return err_sums(a, b, offset, sums) ? rel_of(sums) : INFINITY;
}

double dtu_rel_err_ranks(MPI_Comm comm, const ditattn_tensor *a, const ditattn_tensor *b,
                         int64_t offset) {
  double sums[3] = {0.0, 0.0, 0.0}, all[3];
  if (!err_sums(a, b, offset, sums)) sums[2] = 1.0; /* a NaN or Inf on this rank */
  MPI_Allreduce(sums, all, 3, MPI_DOUBLE, MPI_SUM, comm);
  return all[2] > 0.0 ? INFINITY : rel_of(all);
}

double dtu_rel_err_lse(const float *a, const float *b, int64_t BH, int64_t len, int64_t n_global,
                       int64_t offset) {
  double num = 0.0, den = 0.0;
  for (int64_t bh = 0; bh < BH; bh++)
    for (int64_t n = 0; n < len; n++) {
      double x = a[bh * len + n], y = b[bh * n_global + offset + n];
      if (!isfinite(x) || !isfinite(y)) return INFINITY;
      num += (x - y) * (x - y);
      den += y * y;
    }
  return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

void dtu_partition(dtu_rng *rng, int64_t N, int P, int64_t *lengths) {
  /* Random positive weights, then every rank gets >= 1 token. */
  int64_t left = N - P;
  double w[64], total = 0.0;
  for (int r = 0; r < P; r++) total += (w[r] = dtu_uniform(rng, 0.2, 1.8));
  int64_t given = 0;
  for (int r = 0; r < P; r++) {
    lengths[r] = 1 + (r == P - 1 ? left - given : (int64_t)((double)left * w[r] / total));
    given += lengths[r] - 1;
  }
}

int64_t dtu_rank_slice(MPI_Comm comm, dtu_rng *rng, int64_t N, int reversed, int64_t *offset) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  int64_t lengths[64]; /* the tests run at most 64 ranks */
  dtu_partition(rng, N, P, lengths);
  const int piece = reversed ? P - 1 - rank : rank;
  *offset = 0;
  for (int r = 0; r < piece; r++) *offset += lengths[r];
  return lengths[piece];
}

void dtu_check(int ok, const char *fmt, ...) {
  if (ok) {
    g_passed++;
    return;
  }
  g_failed++;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "FAIL (rank %d): %s\n", rank, line);
}

void dtu_compare_ranks(MPI_Comm comm, ditattn_status st, const char *message, int *same_status,
                       int *same_message) {
  /* FNV-1a, cut to 62 bits so that it and its negation fit an int64_t. */
  uint64_t h = 1469598103934665603ull;
  for (const char *c = message ? message : ""; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
  const int64_t mh = (int64_t)(h >> 2);
  /* Minima of (x, -x) give both the smallest and the largest x. */
  int64_t mine[4] = {(int64_t)st, -(int64_t)st, message ? mh : INT64_MAX,
                     message ? -mh : INT64_MAX},
          all[4];
  MPI_Allreduce(mine, all, 4, MPI_INT64_T, MPI_MIN, comm);
  *same_status = all[0] == -all[1];
  *same_message = all[2] == INT64_MAX || all[2] == -all[3];
}

void dtu_run_faults(ditattn_context *ctx, MPI_Comm comm, uint64_t seed, dtu_faulty_call call,
                    int nfaults, const char *const *names, const ditattn_status *expected) {
  int rank = 0, P = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &P);
  const char *bname = ditattn_backend_name(ditattn_context_backend(ctx));
  for (int f = 0; f < nfaults; f++) {
    int same = 0;
    double dt = 0.0;
    ditattn_status st = call(ctx, comm, seed, f, 0, &same, &dt);
    dtu_check(same, "%s, fault '%s', P=%d: ranks returned different statuses or messages", bname,
              names[f], P);
    dtu_check(st == expected[f], "%s, fault '%s', P=%d: status %s, expected %s (%s)", bname,
              names[f], P, ditattn_strerror(st), ditattn_strerror(expected[f]),
              ditattn_last_error(ctx));
    dtu_check(dt < 10.0, "%s, fault '%s', P=%d: took %.1f s", bname, names[f], P, dt);
    if (rank == 0 && st != DITATTN_OK)
      printf("  %s, %s: %s: %s\n", bname, names[f], ditattn_strerror(st), ditattn_last_error(ctx));
  }
  /* Every library allocation made to fail in turn on the last rank. */
  int64_t k = 1;
  for (; k < 400; k++) {
    int same = 0;
    double dt = 0.0;
    ditattn_status st = call(ctx, comm, seed, 0, k, &same, &dt);
    dtu_check(same, "%s, allocation %lld fails on rank %d of %d: statuses differ", bname,
              (long long)k, P - 1, P);
    dtu_check(st == DITATTN_OK || st == DITATTN_ERR_OUT_OF_MEMORY,
              "%s, allocation %lld fails on the last rank: status %s (%s)", bname, (long long)k,
              ditattn_strerror(st), ditattn_last_error(ctx));
    dtu_check(dt < 10.0, "%s, allocation %lld fails: took %.1f s", bname, (long long)k, dt);
    if (st == DITATTN_OK) break; /* k is past the call's last allocation */
  }
  dtu_check(k > 1 && k < 400, "%s: allocation fault loop ended at %lld", bname, (long long)k);
  if (rank == 0)
    printf("  %s: allocations 1..%lld failed in turn on the last rank\n", bname,
           (long long)(k - 1));
  /* Afterwards a valid call still works everywhere. */
  int same = 0;
  double dt = 0.0;
  ditattn_status st = call(ctx, comm, seed, 0, 0, &same, &dt);
  dtu_check(st == DITATTN_OK && same, "%s: valid call after the faults: %s", bname,
            ditattn_strerror(st));
}

int dtu_finish(MPI_Comm comm, const char *test_name) {
  int64_t mine[2] = {g_passed, g_failed}, all[2] = {0, 0};
  MPI_Allreduce(mine, all, 2, MPI_INT64_T, MPI_SUM, comm);
  int rank = 0, size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (rank == 0)
    printf("%s (P = %d): %lld passed, %lld failed\n", test_name, size, (long long)all[0],
           (long long)all[1]);
  return all[1] == 0 ? 0 : 1;
}
