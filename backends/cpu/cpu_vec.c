/* Vector kernels of the softmax: plain loops written so that GCC/Clang
 * vectorize them, cloned for AVX-512, AVX2 and baseline x86-64 and picked
 * at load time (ifunc), so the committed flags stay portable. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

/* Cephes-style expf: |rel err| < 2e-7 on [-87, 88]; inputs are clamped
 * there (exp of anything below -87 is < 2e-38, far below float sums). NaN
 * stays NaN; it must not reach the float-to-int conversion (undefined). */
static inline float exp_poly(float x_in) {
  const int is_nan = x_in != x_in;
  float x = is_nan ? 0.0f : x_in;
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float fx = floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } two_n;
  two_n.i = ((int32_t)fx + 127) << 23;
  return is_nan ? x_in : p * two_n.f;
}

DT_CLONES float dt_cpu_exp_rows(float *x, const float *add, int64_t n, float sub) {
  float sum = 0.0f;
  if (add) {
    for (int64_t i = 0; i < n; i++) x[i] = exp_poly(x[i] + add[i] - sub);
  } else {
    for (int64_t i = 0; i < n; i++) x[i] = exp_poly(x[i] - sub);
  }
  /* Sixteen partial sums in a fixed pattern: vectorizable, deterministic. */
  float part[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) part[j] += x[i + j];
  for (; i < n; i++) part[i & 15] += x[i];
  for (int j = 0; j < 16; j++) sum += part[j];
  return sum;
}

DT_CLONES float dt_cpu_max_plus(const float *x, const float *add, int64_t n) {
  float part[16];
  for (int j = 0; j < 16; j++) part[j] = -INFINITY;
  int64_t i = 0;
  if (add) {
    for (; i + 16 <= n; i += 16)
      for (int j = 0; j < 16; j++) {
        float y = x[i + j] + add[i + j];
        part[j] = y > part[j] ? y : part[j];
      }
    for (; i < n; i++) {
      float y = x[i] + add[i];
      part[i & 15] = y > part[i & 15] ? y : part[i & 15];
    }
  } else {
    for (; i + 16 <= n; i += 16)
      for (int j = 0; j < 16; j++) part[j] = x[i + j] > part[j] ? x[i + j] : part[j];
    for (; i < n; i++) part[i & 15] = x[i] > part[i & 15] ? x[i] : part[i & 15];
  }
  float m = -INFINITY;
  for (int j = 0; j < 16; j++) m = part[j] > m ? part[j] : m;
  return m;
}

DT_CLONES void dt_cpu_scale(float *y, int64_t n, float a) {
  for (int64_t i = 0; i < n; i++) y[i] *= a;
}

DT_CLONES void dt_cpu_exp_shift(float *p, const float *s, const float *add, int64_t n, float lse,
                                float c) {
  if (add) {
    for (int64_t i = 0; i < n; i++) p[i] = exp_poly(s[i] * c + add[i] - lse);
  } else {
    for (int64_t i = 0; i < n; i++) p[i] = exp_poly(s[i] * c - lse);
  }
}

DT_CLONES void dt_cpu_ds(float *dp, const float *p, int64_t n, float delta, float c) {
  for (int64_t i = 0; i < n; i++) dp[i] = c * p[i] * (dp[i] - delta);
}
