/* Host f32 tensors for the verify tools. */
#include "verify_tensor.h"

#include <math.h>
#include <stdlib.h>

static uint64_t rng_state = 1;

void vt_srand(uint64_t seed) { rng_state = seed; }

/* splitmix64: tiny, seedable, good enough for test data. */
uint64_t vt_rand_u64(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double vt_uniform(double lo, double hi) {
  return lo + (hi - lo) * ((double)(vt_rand_u64() >> 11) * 0x1.0p-53);
}

int64_t vt_rand_int(int64_t lo, int64_t hi) {
  return lo + (int64_t)(vt_rand_u64() % (uint64_t)(hi - lo + 1));
}

vt_tensor vt_new(int64_t B, int64_t H, int64_t N, int64_t D, int64_t pad, int bnhd) {
  vt_tensor r = {{NULL, DITATTN_F32, {B, H, N, D}, {0, 0, 0}}, NULL, 0};
  const int64_t row = D + pad;
  if (bnhd) {
    r.t.stride[2] = H * row;
    r.t.stride[1] = row;
  } else {
    r.t.stride[2] = row;
    r.t.stride[1] = N * row;
  }
  r.t.stride[0] = H * N * row;
  r.count = (size_t)(B * H * N * row);
  r.buf = malloc((r.count ? r.count : 1) * sizeof(float));
  if (r.buf)
    for (size_t i = 0; i < r.count; i++) r.buf[i] = NAN;
  r.t.data = r.buf;
  return r;
}

void vt_free(vt_tensor *t) {
  free(t->buf);
  t->buf = NULL;
  t->t.data = NULL;
}

static float *at(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n, int64_t d) {
  return (float *)t->data + b * t->stride[0] + h * t->stride[1] + n * t->stride[2] + d;
}

void vt_fill_uniform(vt_tensor *t, double amp) {
  if (!t->buf) return;
  const int64_t *s = t->t.shape;
  for (int64_t b = 0; b < s[0]; b++)
    for (int64_t h = 0; h < s[1]; h++)
      for (int64_t n = 0; n < s[2]; n++)
        for (int64_t d = 0; d < s[3]; d++) *at(&t->t, b, h, n, d) = (float)vt_uniform(-amp, amp);
}

float *vt_contiguous(const vt_tensor *t) {
  const int64_t *s = t->t.shape;
  float *flat = malloc((size_t)(s[0] * s[1] * s[2] * s[3]) * sizeof *flat);
  if (!flat || !t->buf) {
    free(flat);
    return NULL;
  }
  size_t i = 0;
  for (int64_t b = 0; b < s[0]; b++)
    for (int64_t h = 0; h < s[1]; h++)
      for (int64_t n = 0; n < s[2]; n++)
        for (int64_t d = 0; d < s[3]; d++) flat[i++] = *at(&t->t, b, h, n, d);
  return flat;
}

void vt_load(vt_tensor *t, const float *flat) {
  const int64_t *s = t->t.shape;
  size_t i = 0;
  for (int64_t b = 0; b < s[0]; b++)
    for (int64_t h = 0; h < s[1]; h++)
      for (int64_t n = 0; n < s[2]; n++)
        for (int64_t d = 0; d < s[3]; d++) *at(&t->t, b, h, n, d) = flat[i++];
}

float *vt_floats(size_t n) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  if (x)
    for (size_t i = 0; i < n; i++) x[i] = NAN;
  return x;
}
