#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

uint64_t tu_seed(void) {
  static int printed;
  static uint64_t seed;
  if (!printed) {
    const char *env = getenv("DITATTN_TEST_SEED");
    seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "[seed] DITATTN_TEST_SEED=%llu\n", (unsigned long long)seed);
    printed = 1;
  }
  tu_srand(seed);
  return seed;
}

void tu_srand(uint64_t seed) { rng_state = seed * 0x9E3779B97F4A7C15ull + 1; }

uint64_t tu_rand_u64(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double tu_uniform(double lo, double hi) {
  return lo + (hi - lo) * ((double)(tu_rand_u64() >> 11) * 0x1.0p-53);
}

int64_t tu_rand_int(int64_t lo, int64_t hi) {
  return lo + (int64_t)(tu_rand_u64() % (uint64_t)(hi - lo + 1));
}

tu_tensor tu_tensor_new(int64_t B, int64_t H, int64_t N, int64_t D, int64_t pad, int layout_bnhd) {
  tu_tensor r;
  const int64_t row = D + pad;
  r.count = (size_t)(B * H * N * row);
  r.buf = malloc(r.count * sizeof(float));
  assert_non_null(r.buf);
  r.t.data = r.buf;
  r.t.dtype = DITATTN_F32;
  r.t.shape[0] = B;
  r.t.shape[1] = H;
  r.t.shape[2] = N;
  r.t.shape[3] = D;
  if (layout_bnhd) {
    r.t.stride[0] = N * H * row;
    r.t.stride[1] = row;
    r.t.stride[2] = H * row;
  } else {
    r.t.stride[0] = H * N * row;
    r.t.stride[1] = N * row;
    r.t.stride[2] = row;
  }
  tu_poison(&r);
  return r;
}

void tu_tensor_free(tu_tensor *t) {
  free(t->buf);
  t->buf = NULL;
}

float *tu_at(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n, int64_t d) {
  return (float *)t->data + b * t->stride[0] + h * t->stride[1] + n * t->stride[2] + d;
}

#define TU_FOR_EACH(t, b, h, n, d)                                                                 \
  for (int64_t b = 0; b < (t)->shape[0]; b++)                                                      \
    for (int64_t h = 0; h < (t)->shape[1]; h++)                                                    \
      for (int64_t n = 0; n < (t)->shape[2]; n++)                                                  \
        for (int64_t d = 0; d < (t)->shape[3]; d++)

void tu_fill_uniform(tu_tensor *t) {
  TU_FOR_EACH(&t->t, b, h, n, d) * tu_at(&t->t, b, h, n, d) = (float)tu_uniform(-1.0, 1.0);
}

void tu_poison_floats(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = NAN;
}

void tu_poison(tu_tensor *t) { tu_poison_floats(t->buf, t->count); }

double tu_rel_err(const ditattn_tensor *a, const ditattn_tensor *b) {
  double num = 0.0, den = 0.0;
  TU_FOR_EACH(b, ib, ih, in, id) {
    double x = *tu_at(a, ib, ih, in, id), y = *tu_at(b, ib, ih, in, id);
    if (!isfinite(x) || !isfinite(y)) return INFINITY;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

double tu_rel_err_floats(const float *a, const float *b, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

ditattn_context *tu_context_new(ditattn_backend backend, int num_threads) {
  ditattn_context *ctx = NULL;
  assert_int_equal(ditattn_context_create(backend, &ctx), DITATTN_OK);
  assert_int_equal(ditattn_context_set_num_threads(ctx, num_threads), DITATTN_OK);
  return ctx;
}
