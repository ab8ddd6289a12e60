/* GPU backends vs ref/: every implemented operation on random shapes
 * (partial blocks, odd N, strided and DiT layouts, f32/bf16/f16), outputs
 * poisoned with NaN before each run, one line per case with everything needed
 * to reproduce it. Also times dense and LLSA forward (--time).
 *
 * Standalone (no CMocka) so it runs on the GPU machine; tests/test_gpu.c
 * includes this file with GC_NO_MAIN defined to run the same cases as CMocka
 * tests (skipped where no device is present). The command line and the
 * median timer are bench/gpu_check_driver.h, shared with gpu_check_ropeslr.c.
 *
 *   ditattn_gpu_check [--backend cuda|hip|cpu|ref] [--seed S] [--time|--time-only]
 *                     [--sides 128,256,512] [--quiet]
 * (cpu and ref run the same cases in f32 against ref/: a self-test of this
 * harness on machines without a GPU.)
 * Exit status: 0 all cases passed, 1 a case failed, 2 no usable backend. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include "ditattn/ditattn.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* POSIX, declared here too for includers that set no _POSIX_C_SOURCE before
 * <stdlib.h> (tests/test_gpu.c). */
int setenv(const char *name, const char *value, int overwrite);
int unsetenv(const char *name);

/* ------------------------------------------------------------ random */
static uint64_t gc_rng;

static uint64_t gc_next(void) { /* splitmix64 */
  uint64_t z = (gc_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double gc_uniform(double lo, double hi) {
  return lo + (hi - lo) * (double)(gc_next() >> 11) * (1.0 / 9007199254740992.0);
}
static int64_t gc_int(int64_t lo, int64_t hi) { /* inclusive */
  return lo + (int64_t)(gc_next() % (uint64_t)(hi - lo + 1));
}

/* ------------------------------------------------------------ 16-bit floats */
static uint32_t gc_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static float gc_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint16_t gc_f32_to_bf16(float f) { /* round to nearest even */
  uint32_t u = gc_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
static float gc_bf16_to_f32(uint16_t h) { return gc_from_bits((uint32_t)h << 16); }

static uint16_t gc_f32_to_f16(float f) { /* round to nearest even, subnormals kept */
  uint32_t u = gc_bits(f), sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
  if (a < 0x33000001u) return (uint16_t)sign;              /* below half the least subnormal */
  int32_t e = (int32_t)(a >> 23) - 127;
  uint32_t m = (a & 0x7fffffu) | 0x800000u;  /* 24-bit significand */
  int shift = e < -14 ? 13 + (-14 - e) : 13; /* bits to drop */
  uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) q++;
  /* Normal: exponent field e + 15 and the implicit bit folded in by addition
   * (a carry out of the significand bumps the exponent correctly). */
  uint32_t h = e < -14 ? q : ((uint32_t)(e + 14) << 10) + q;
  return (uint16_t)(sign | h);
}
static float gc_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return gc_from_bits(sign | 0x7f800000u | (m << 13));
  if (e == 0) { /* subnormal or zero: m · 2^-24 */
    float v = (float)m * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return gc_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}
static float gc_round(ditattn_dtype dt, float x) {
  if (dt == DITATTN_BF16) return gc_bf16_to_f32(gc_f32_to_bf16(x));
  if (dt == DITATTN_F16) return gc_f16_to_f32(gc_f32_to_f16(x));
  return x;
}
static const char *gc_dtype_name(ditattn_dtype dt) {
  return dt == DITATTN_F32 ? "f32" : dt == DITATTN_BF16 ? "bf16" : "f16";
}

/* ------------------------------------------------------------ environment */
typedef struct gc_env {
  ditattn_context *gpu, *ref;
  const char *name;
  uint64_t seed;
  int quiet;
  int f32_only; /* host backends (harness self-test): no 16-bit dtypes */
  int cases, failures;
} gc_env;

static gc_env *gc_cur; /* the env whose dtypes gc_pick_dtype may use */

/* Records one case's result; `what` reproduces it. */
static int gc_report(gc_env *env, int ok, const char *what, double err, double tol) {
  env->cases++;
  if (!ok) env->failures++;
  if (!ok || !env->quiet)
    printf("%s %-5s %s err=%.3g tol=%.1g seed=%llu\n", ok ? "ok  " : "FAIL", env->name, what, err,
           tol, (unsigned long long)env->seed);
  return ok;
}
static int gc_status(gc_env *env, ditattn_status st, ditattn_context *ctx, const char *what) {
  if (st == DITATTN_OK) return 1;
  env->cases++;
  env->failures++;
  printf("FAIL %-5s %s: %s (%s) seed=%llu\n", env->name, what, ditattn_strerror(st),
         ditattn_last_error(ctx), (unsigned long long)env->seed);
  return 0;
}

/* ------------------------------------------------------------ tensors */
/* Host f32 values of a (B,H,N,D) view (padding pad per row; DiT layout if
 * bnhd) and the same view in device memory with dtype dt. */
typedef struct gc_tensor {
  ditattn_tensor host, dev;
  float *buf;
  void *dmem;
  size_t count; /* elements of buf and dmem, padding included */
} gc_tensor;

static size_t gc_dsize(ditattn_dtype dt) { return dt == DITATTN_F32 ? 4 : 2; }

static int gc_tensor_new(gc_env *env, gc_tensor *t, int64_t B, int64_t H, int64_t N, int64_t D,
                         int64_t pad, int bnhd, ditattn_dtype dt) {
  memset(t, 0, sizeof *t);
  const int64_t row = D + pad;
  t->count = (size_t)(B * H * N * row);
  t->buf = malloc(t->count * sizeof(float));
  if (!t->buf) return 0;
  for (size_t i = 0; i < t->count; i++) t->buf[i] = NAN;
  int64_t s[3] = {H * N * row, N * row, row};
  if (bnhd) {
    s[0] = N * H * row;
    s[1] = row;
    s[2] = H * row;
  }
  ditattn_tensor v = {t->buf, DITATTN_F32, {B, H, N, D}, {s[0], s[1], s[2]}};
  t->host = v;
  if (!gc_status(env, ditattn_malloc(env->gpu, t->count * gc_dsize(dt), &t->dmem), env->gpu,
                 "device allocation"))
    return 0;
  t->dev = v;
  t->dev.data = t->dmem;
  t->dev.dtype = dt;
  return 1;
}
static void gc_tensor_free(gc_env *env, gc_tensor *t) {
  free(t->buf);
  if (t->dmem) ditattn_free(env->gpu, t->dmem);
  memset(t, 0, sizeof *t);
}
/* The four tensors of an attention call. */
static void gc_attention_tensors_free(gc_env *env, gc_tensor *q, gc_tensor *k, gc_tensor *v,
                                      gc_tensor *o) {
  gc_tensor_free(env, q);
  gc_tensor_free(env, k);
  gc_tensor_free(env, v);
  gc_tensor_free(env, o);
}
static float *gc_at(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n, int64_t d) {
  return (float *)t->data + b * t->stride[0] + h * t->stride[1] + n * t->stride[2] + d;
}
/* Uniform [-1, 1) values, already representable in the device dtype. */
static void gc_fill(gc_tensor *t) {
  const int64_t *sh = t->host.shape;
  for (int64_t b = 0; b < sh[0]; b++)
    for (int64_t h = 0; h < sh[1]; h++)
      for (int64_t n = 0; n < sh[2]; n++)
        for (int64_t d = 0; d < sh[3]; d++)
          *gc_at(&t->host, b, h, n, d) = gc_round(t->dev.dtype, (float)gc_uniform(-1.0, 1.0));
}
/* Host buffer → device (padding included, so device padding is NaN). */
static int gc_upload(gc_env *env, gc_tensor *t) {
  const ditattn_dtype dt = t->dev.dtype;
  if (dt == DITATTN_F32)
    return gc_status(env, ditattn_copy_to_backend(env->gpu, t->dmem, t->buf, t->count * 4),
                     env->gpu, "upload");
  uint16_t *tmp = malloc(t->count * 2);
  if (!tmp) return 0;
  for (size_t i = 0; i < t->count; i++)
    tmp[i] = dt == DITATTN_BF16 ? gc_f32_to_bf16(t->buf[i]) : gc_f32_to_f16(t->buf[i]);
  int ok = gc_status(env, ditattn_copy_to_backend(env->gpu, t->dmem, tmp, t->count * 2), env->gpu,
                     "upload");
  free(tmp);
  return ok;
}
/* Device → a second host f32 image `out` (same layout as t->buf). */
static int gc_download(gc_env *env, const gc_tensor *t, float *out) {
  const ditattn_dtype dt = t->dev.dtype;
  if (dt == DITATTN_F32)
    return gc_status(env, ditattn_copy_to_host(env->gpu, out, t->dmem, t->count * 4), env->gpu,
                     "download");
  uint16_t *tmp = malloc(t->count * 2);
  if (!tmp) return 0;
  int ok = gc_status(env, ditattn_copy_to_host(env->gpu, tmp, t->dmem, t->count * 2), env->gpu,
                     "download");
  for (size_t i = 0; ok && i < t->count; i++)
    out[i] = dt == DITATTN_BF16 ? gc_bf16_to_f32(tmp[i]) : gc_f16_to_f32(tmp[i]);
  free(tmp);
  return ok;
}
/* ‖a − b‖ / ‖b‖ over a view's elements (a, b: f32 images in t's layout);
 * +inf if either holds NaN/Inf there (unwritten poison included). */
static double gc_rel_err(const ditattn_tensor *view, const float *a, const float *b) {
  double num = 0.0, den = 0.0;
  const int64_t *sh = view->shape;
  for (int64_t bi = 0; bi < sh[0]; bi++)
    for (int64_t h = 0; h < sh[1]; h++)
      for (int64_t n = 0; n < sh[2]; n++)
        for (int64_t d = 0; d < sh[3]; d++) {
          const int64_t at = bi * view->stride[0] + h * view->stride[1] + n * view->stride[2] + d;
          const double x = a[at], y = b[at];
          if (!isfinite(x) || !isfinite(y)) return INFINITY;
          num += (x - y) * (x - y);
          den += y * y;
        }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}
static double gc_rel_err_flat(const float *a, const float *b, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}
/* Output tolerance for an fp32-accumulated result stored in dt. */
static double gc_tol(ditattn_dtype dt) {
  return dt == DITATTN_F32 ? 1e-5 : dt == DITATTN_BF16 ? 1e-2 : 3e-3;
}
static ditattn_dtype gc_pick_dtype(int i) {
  static const ditattn_dtype all[3] = {DITATTN_F32, DITATTN_BF16, DITATTN_F16};
  return gc_cur && gc_cur->f32_only ? DITATTN_F32 : all[i % 3];
}

/* Device float array helpers (lse). */
static float *gc_dev_floats(gc_env *env, size_t n) {
  void *p = NULL;
  if (!gc_status(env, ditattn_malloc(env->gpu, n * sizeof(float), &p), env->gpu, "lse alloc"))
    return NULL;
  return p;
}
static int gc_put_floats(gc_env *env, float *dev, const float *host, size_t n) {
  return gc_status(env, ditattn_copy_to_backend(env->gpu, dev, host, n * sizeof(float)), env->gpu,
                   "lse upload");
}
static int gc_get_floats(gc_env *env, float *host, const float *dev, size_t n) {
  return gc_status(env, ditattn_copy_to_host(env->gpu, host, dev, n * sizeof(float)), env->gpu,
                   "lse download");
}

/* Compares the device output tensor with the ref result in its host image. */
static int gc_compare_out(gc_env *env, const gc_tensor *out, const char *what, double tol) {
  float *got = malloc(out->count * sizeof(float));
  if (!got) return 0;
  int ok = gc_download(env, out, got);
  double err = ok ? gc_rel_err(&out->host, got, out->buf) : INFINITY;
  free(got);
  return gc_report(env, ok && err <= tol, what, err, tol);
}

/* Overwrites a device tensor's whole buffer with NaN (a second run's poison). */
static int gc_poison_device(gc_env *env, gc_tensor *t) {
  const size_t es = gc_dsize(t->dev.dtype);
  unsigned char *tmp = malloc(t->count * es);
  if (!tmp) return 0;
  const float fnan = NAN;
  const uint16_t hnan = t->dev.dtype == DITATTN_BF16 ? 0x7fc0u : 0x7e00u;
  for (size_t i = 0; i < t->count; i++)
    memcpy(tmp + i * es, es == 4 ? (const void *)&fnan : &hnan, es);
  int ok = gc_status(env, ditattn_copy_to_backend(env->gpu, t->dmem, tmp, t->count * es), env->gpu,
                     "poison upload");
  free(tmp);
  return ok;
}

/* The attention kernels a gathered-key case (LLSA, RoPeSLR) runs on: the
 * CUDA backend picks its tensor-core kernel for bf16/f16 with D in {64, 128}
 * unless DITATTN_GPU_ATTEND=simt (read on every call), so such cases run
 * twice, "mma" then "simt"; everything else has one path. Returns the count;
 * labels are "" on host backends. */
static int gc_attend_paths(const gc_env *env, ditattn_dtype dt, int64_t D, const char *paths[2]) {
  const ditattn_backend be = ditattn_context_backend(env->gpu);
  if (be == DITATTN_BACKEND_CUDA && dt != DITATTN_F32 && (D == 64 || D == 128)) {
    paths[0] = "mma";
    paths[1] = "simt";
    return 2;
  }
  paths[0] = be == DITATTN_BACKEND_CUDA || be == DITATTN_BACKEND_HIP ? "simt" : "";
  return 1;
}
/* Forces the fp32 kernel for "simt", the default dispatch otherwise. */
static void gc_set_attend_path(const char *path) {
  if (path && strcmp(path, "simt") == 0)
    setenv("DITATTN_GPU_ATTEND", "simt", 1);
  else
    unsetenv("DITATTN_GPU_ATTEND");
}
/* "op" or "op[path]". */
static void gc_path_op(char *buf, size_t size, const char *op, const char *path) {
  if (path && *path)
    snprintf(buf, size, "%s[%s]", op, path);
  else
    snprintf(buf, size, "%s", op);
}

/* ------------------------------------------------------------ cases */
/* Random B, H, padding and layout for a case; desc gets the common part. */
typedef struct gc_shape {
  int64_t B, H, N, D, pad;
  int bnhd;
  ditattn_dtype dt;
} gc_shape;

static gc_shape gc_random_shape(int64_t N, int64_t D, ditattn_dtype dt) {
  gc_shape s = {gc_int(1, 2), gc_int(1, 3), N, D, 0, (int)gc_int(0, 1), dt};
  const int64_t pads[4] = {0, 0, 8, 3};
  s.pad = pads[gc_int(0, 3)];
  return s;
}
static int gc_describe(char *buf, size_t size, const char *op, const gc_shape *s,
                       const char *extra) {
  return snprintf(buf, size, "%s %s B=%lld H=%lld N=%lld D=%lld pad=%lld %s %s", op,
                  gc_dtype_name(s->dt), (long long)s->B, (long long)s->H, (long long)s->N,
                  (long long)s->D, (long long)s->pad, s->bnhd ? "bnhd" : "bhnd", extra);
}

/* Input x of an x -> y operation (pool, rope, order) in the case's layout,
 * filled, and output y with y_rows rows, padding y_pad and layout y_bnhd;
 * both uploaded (y's device image all NaN). 0 if any step failed. */
static int gc_unary_tensors_new(gc_env *env, gc_tensor *x, gc_tensor *y, const gc_shape *s,
                                int64_t y_rows, int64_t y_pad, int y_bnhd) {
  memset(y, 0, sizeof *y); /* freeable even when x fails */
  if (!gc_tensor_new(env, x, s->B, s->H, s->N, s->D, s->pad, s->bnhd, s->dt) ||
      !gc_tensor_new(env, y, s->B, s->H, y_rows, s->D, y_pad, y_bnhd, s->dt))
    return 0;
  gc_fill(x);
  return gc_upload(env, x) && gc_upload(env, y);
}

static int gc_check_pool(gc_env *env) {
  int ok = 1;
  for (int i = 0; i < 9; i++) {
    gc_shape s = gc_random_shape(gc_int(1, 300), gc_int(1, 80), gc_pick_dtype(i));
    const int64_t block = i == 0 ? s.N + 3 : gc_int(1, 40), n = (s.N + block - 1) / block;
    char what[256], extra[64];
    snprintf(extra, sizeof extra, "block=%lld", (long long)block);
    gc_describe(what, sizeof what, "pool", &s, extra);
    gc_tensor x, y;
    ok &= gc_unary_tensors_new(env, &x, &y, &s, n, s.pad, !s.bnhd) &&
          gc_status(env, ditattn_pool_mean(env->ref, &x.host, block, &y.host), env->ref, what) &&
          gc_status(env, ditattn_pool_mean(env->gpu, &x.dev, block, &y.dev), env->gpu, what) &&
          gc_compare_out(env, &y, what, s.dt == DITATTN_F32 ? 1e-6 : gc_tol(s.dt));
    gc_tensor_free(env, &x);
    gc_tensor_free(env, &y);
  }
  return ok;
}

static int gc_check_rope(gc_env *env) {
  int ok = 1;
  for (int i = 0; i < 9; i++) {
    const int64_t T = gc_int(1, 4), Hg = gc_int(1, 6), W = gc_int(1, 7);
    gc_shape s = gc_random_shape(T * Hg * W, 2 * gc_int(1, 40) + (i % 4 == 3), gc_pick_dtype(i));
    ditattn_rope_params rp;
    ditattn_rope_params_preset(i % 2 ? DITATTN_ROPE_PRESET_WAN21 : DITATTN_ROPE_PRESET_HUNYUAN,
                               s.D - (s.D % 2), T, Hg, W, &rp);
    if (i % 3 == 2) { /* random parts that leave channels untouched */
      rp.dims[0] = 2 * gc_int(0, s.D / 6);
      rp.dims[1] = 2 * gc_int(0, s.D / 6);
      rp.dims[2] = 2 * gc_int(0, s.D / 6);
      rp.theta = gc_uniform(10.0, 20000.0);
    }
    rp.pairing = (ditattn_rope_pairing)gc_int(0, 1);
    const ditattn_direction dir = (ditattn_direction)gc_int(0, 1);
    const int in_place = i % 4 == 1;
    /* Positions: a random permutation of the grid (sequence order ≠ raster). */
    int32_t *pos = malloc((size_t)s.N * 3 * sizeof(int32_t));
    if (!pos) return 0;
    for (int64_t n = 0; n < s.N; n++) {
      pos[3 * n] = (int32_t)(n / (Hg * W));
      pos[3 * n + 1] = (int32_t)(n / W % Hg);
      pos[3 * n + 2] = (int32_t)(n % W);
    }
    for (int64_t n = s.N - 1; n > 0; n--) {
      int64_t m = gc_int(0, n);
      for (int a = 0; a < 3; a++) {
        int32_t tmp = pos[3 * n + a];
        pos[3 * n + a] = pos[3 * m + a];
        pos[3 * m + a] = tmp;
      }
    }
    char what[256], extra[160];
    snprintf(extra, sizeof extra, "grid=%lldx%lldx%lld dims=%lld,%lld,%lld theta=%g %s %s%s",
             (long long)T, (long long)Hg, (long long)W, (long long)rp.dims[0],
             (long long)rp.dims[1], (long long)rp.dims[2], rp.theta,
             rp.pairing ? "half-split" : "interleaved", dir ? "inverse" : "forward",
             in_place ? " in-place" : "");
    gc_describe(what, sizeof what, "rope", &s, extra);
    gc_tensor x, y;
    gc_tensor *out = in_place ? &x : &y;
    ok &= gc_unary_tensors_new(env, &x, &y, &s, s.N, s.pad, s.bnhd) &&
          gc_status(env, ditattn_rope_apply(env->ref, &rp, pos, dir, &x.host, &out->host), env->ref,
                    what) &&
          gc_status(env, ditattn_rope_apply(env->gpu, &rp, pos, dir, &x.dev, &out->dev), env->gpu,
                    what) &&
          gc_compare_out(env, out, what, s.dt == DITATTN_F32 ? 1e-6 : gc_tol(s.dt));
    free(pos);
    gc_tensor_free(env, &x);
    gc_tensor_free(env, &y);
  }
  return ok;
}

static int gc_check_order(gc_env *env) {
  int ok = 1;
  for (int i = 0; i < 6; i++) {
    ditattn_order_params op = {(ditattn_order_kind)(i % 3),
                               {gc_int(1, 3), gc_int(1, 9), gc_int(1, 9)},
                               {gc_int(1, 2), gc_int(1, 4), gc_int(1, 4)}};
    gc_shape s =
        gc_random_shape(op.grid[0] * op.grid[1] * op.grid[2], gc_int(1, 40), gc_pick_dtype(i));
    const ditattn_direction dir = (ditattn_direction)(i / 3);
    char what[256], extra[96];
    snprintf(extra, sizeof extra, "kind=%d grid=%lldx%lldx%lld %s", (int)op.kind,
             (long long)op.grid[0], (long long)op.grid[1], (long long)op.grid[2],
             dir ? "inverse" : "forward");
    gc_describe(what, sizeof what, "order", &s, extra);
    gc_tensor x, y;
    ok &=
        gc_unary_tensors_new(env, &x, &y, &s, s.N, 0, !s.bnhd) &&
        gc_status(env, ditattn_order_apply(env->ref, &op, dir, &x.host, &y.host), env->ref, what) &&
        gc_status(env, ditattn_order_apply(env->gpu, &op, dir, &x.dev, &y.dev), env->gpu, what) &&
        gc_compare_out(env, &y, what, 0.0);
    gc_tensor_free(env, &x);
    gc_tensor_free(env, &y);
  }
  return ok;
}

static int gc_check_merge(gc_env *env) {
  int ok = 1;
  for (int i = 0; i < 6; i++) {
    gc_shape s = gc_random_shape(gc_int(1, 200), gc_int(1, 96), gc_pick_dtype(i));
    const size_t rows = (size_t)(s.B * s.H * s.N);
    char what[256];
    gc_describe(what, sizeof what, "lse_merge", &s, "(-inf rows on both sides)");
    gc_tensor acc, part;
    float *lse_acc = malloc(rows * sizeof(float)), *lse_part = malloc(rows * sizeof(float));
    float *got = malloc(rows * sizeof(float));
    float *dacc = gc_dev_floats(env, rows), *dpart = gc_dev_floats(env, rows);
    if (lse_acc && lse_part && got && dacc && dpart &&
        gc_tensor_new(env, &acc, s.B, s.H, s.N, s.D, s.pad, s.bnhd, s.dt) &&
        gc_tensor_new(env, &part, s.B, s.H, s.N, s.D, 0, 0, s.dt)) {
      gc_fill(&acc);
      gc_fill(&part);
      for (size_t r = 0; r < rows; r++) {
        const int kind = (int)gc_int(0, 9); /* empty acc, empty part, both, or neither */
        lse_acc[r] = kind == 0 || kind == 2 ? -INFINITY : (float)gc_uniform(-3.0, 3.0);
        lse_part[r] = kind == 1 || kind == 2 ? -INFINITY : (float)gc_uniform(-3.0, 3.0);
      }
      ok &= gc_upload(env, &acc) && gc_upload(env, &part) &&
            gc_put_floats(env, dacc, lse_acc, rows) && gc_put_floats(env, dpart, lse_part, rows) &&
            gc_status(env, ditattn_lse_merge(env->ref, &acc.host, lse_acc, &part.host, lse_part),
                      env->ref, what) &&
            gc_status(env, ditattn_lse_merge(env->gpu, &acc.dev, dacc, &part.dev, dpart), env->gpu,
                      what) &&
            gc_compare_out(env, &acc, what, s.dt == DITATTN_F32 ? 1e-6 : gc_tol(s.dt));
      if (ok && gc_get_floats(env, got, dacc, rows)) {
        /* -inf rows stay -inf on both: compare finite rows, require equal -infs. */
        int same_inf = 1;
        for (size_t r = 0; r < rows; r++) {
          if (isinf(lse_acc[r]) || isinf(got[r])) {
            same_inf &= isinf(lse_acc[r]) && isinf(got[r]);
            got[r] = lse_acc[r] = 0.0f;
          }
        }
        const double err = same_inf ? gc_rel_err_flat(got, lse_acc, rows) : INFINITY;
        char lwhat[512];
        snprintf(lwhat, sizeof lwhat, "%s [lse]", what);
        ok &= gc_report(env, err <= 1e-6, lwhat, err, 1e-6);
      }
    } else {
      ok = 0;
    }
    free(lse_acc);
    free(lse_part);
    free(got);
    if (dacc) ditattn_free(env->gpu, dacc);
    if (dpart) ditattn_free(env->gpu, dpart);
    gc_tensor_free(env, &acc);
    gc_tensor_free(env, &part);
  }
  return ok;
}

/* The lse of an attention forward: ref/'s on the host, the backend's in
 * device memory, and a host image of NaN that poisons the device one. */
typedef struct gc_lse {
  float *ref, *dev, *poison;
  size_t rows;
} gc_lse;

static int gc_lse_new(gc_env *env, gc_lse *lse, size_t rows) {
  lse->rows = rows;
  lse->ref = malloc(rows * sizeof(float));
  lse->dev = gc_dev_floats(env, rows);
  lse->poison = malloc(rows * sizeof(float));
  if (!lse->ref || !lse->dev || !lse->poison) return 0;
  for (size_t r = 0; r < rows; r++) lse->poison[r] = NAN;
  return 1;
}
static int gc_lse_poison_device(gc_env *env, const gc_lse *lse) {
  return gc_put_floats(env, lse->dev, lse->poison, lse->rows);
}
static void gc_lse_free(gc_env *env, gc_lse *lse) {
  free(lse->ref);
  free(lse->poison);
  if (lse->dev) ditattn_free(env->gpu, lse->dev);
  memset(lse, 0, sizeof *lse);
}

/* Compares the device lse against ref's host lse. */
static int gc_compare_lse(gc_env *env, const gc_lse *lse, const char *what, double tol) {
  float *got = malloc(lse->rows * sizeof(float));
  if (!got) return 0;
  int ok = gc_get_floats(env, got, lse->dev, lse->rows);
  const double err = ok ? gc_rel_err_flat(got, lse->ref, lse->rows) : INFINITY;
  free(got);
  char lwhat[512];
  snprintf(lwhat, sizeof lwhat, "%s [lse]", what);
  return gc_report(env, ok && err <= tol, lwhat, err, tol);
}

/* Dense case i of gc_check_dense. */
static int gc_dense_case(gc_env *env, int i) {
  int ok = 1;
  /* Every third case is tensor-core shaped (D = 64/128, aligned rows). */
  const int64_t D = i % 3 == 0 ? (i % 2 ? 128 : 64) : gc_int(1, 256);
  gc_shape s = gc_random_shape(gc_int(1, 200), D, gc_pick_dtype(i / 3 + i));
  if (i % 3 == 0) s.pad = 8 * gc_int(0, 1);
  const int64_t Nk = i == 1 ? 1 : gc_int(1, 220);
  const float scale = i % 4 == 2 ? (float)gc_uniform(0.05, 0.5) : 0.0f;
  char what[256], extra[64];
  snprintf(extra, sizeof extra, "Nk=%lld scale=%g", (long long)Nk, scale);
  gc_describe(what, sizeof what, "dense", &s, extra);
  gc_tensor q, k, v, o;
  memset(&q, 0, sizeof q), memset(&k, 0, sizeof k), memset(&v, 0, sizeof v),
      memset(&o, 0, sizeof o);
  gc_lse lse;
  if (gc_lse_new(env, &lse, (size_t)(s.B * s.H * s.N)) &&
      gc_tensor_new(env, &q, s.B, s.H, s.N, D, s.pad, s.bnhd, s.dt) &&
      gc_tensor_new(env, &k, s.B, s.H, Nk, D, s.pad, s.bnhd, s.dt) &&
      gc_tensor_new(env, &v, s.B, s.H, Nk, D, s.pad, !s.bnhd, s.dt) &&
      gc_tensor_new(env, &o, s.B, s.H, s.N, D, s.pad, s.bnhd, s.dt)) {
    gc_fill(&q);
    gc_fill(&k);
    gc_fill(&v);
    ok &= gc_upload(env, &q) && gc_upload(env, &k) && gc_upload(env, &v) && gc_upload(env, &o) &&
          gc_lse_poison_device(env, &lse) &&
          gc_status(
              env,
              ditattn_dense_forward(env->ref, &q.host, &k.host, &v.host, scale, &o.host, lse.ref),
              env->ref, what) &&
          gc_status(env,
                    ditattn_dense_forward(env->gpu, &q.dev, &k.dev, &v.dev, scale, &o.dev, lse.dev),
                    env->gpu, what) &&
          gc_compare_out(env, &o, what, gc_tol(s.dt)) &&
          gc_compare_lse(env, &lse, what, s.dt == DITATTN_F32 ? 1e-5 : 1e-3);
  } else {
    ok = 0;
  }
  gc_lse_free(env, &lse);
  gc_attention_tensors_free(env, &q, &k, &v, &o);
  return ok;
}

static int gc_check_dense(gc_env *env) {
  int ok = 1;
  for (int i = 0; i < 12; i++) ok &= gc_dense_case(env, i);
  return ok;
}

/* A call that fails in the runtime (here an allocation no device has)
 * leaves a last error behind in CUDA/HIP; the next call must not report it
 * as its own. */
static int gc_check_error_recovery(gc_env *env) {
  /* Host backends (the harness self-test) have no runtime error state, and
   * a sanitizer aborts on such an allocation instead of failing it. */
  if (env->f32_only) return gc_dense_case(env, 0);
  void *p = (void *)&p;
  const ditattn_status st = ditattn_malloc(env->gpu, (size_t)1 << 62, &p);
  const int refused = st == DITATTN_ERR_OUT_OF_MEMORY && p == NULL;
  gc_report(env, refused, "malloc of 2^62 bytes: OUT_OF_MEMORY, *ptr NULL", refused ? 0.0 : 1.0,
            0.0);
  if (p) (void)ditattn_free(env->gpu, p);
  return gc_dense_case(env, 0) && gc_dense_case(env, 1) && refused;
}

/* Dense backward: out and lse from ref's forward (out rounded to the dtype),
 * the same given to both backends; dq, dk, dv compared. */
static int gc_check_dense_backward(gc_env *env) {
  int ok = 1;
  for (int i = 0; i < 6; i++) {
    const int64_t D = i % 3 == 0 ? 64 : gc_int(1, 256);
    gc_shape s = gc_random_shape(gc_int(1, 150), D, gc_pick_dtype(i));
    /* Nk >= 2: with one key dS is 0 up to rounding, and its relative error noise. */
    const int64_t Nk = i == 1 ? 2 : gc_int(2, 170);
    const float scale = i % 2 ? (float)gc_uniform(0.05, 0.5) : 0.0f;
    char what[256], extra[64];
    snprintf(extra, sizeof extra, "Nk=%lld scale=%g", (long long)Nk, scale);
    gc_describe(what, sizeof what, "dense_backward", &s, extra);
    const size_t rows = (size_t)(s.B * s.H * s.N);
    gc_tensor t[8]; /* q k v out dout dq dk dv */
    memset(t, 0, sizeof t);
    const int64_t n_of[8] = {s.N, Nk, Nk, s.N, s.N, s.N, Nk, Nk};
    float *lse = malloc(rows * sizeof(float)), *dlse = gc_dev_floats(env, rows);
    int made = lse && dlse;
    for (int j = 0; made && j < 8; j++)
      made = gc_tensor_new(env, &t[j], s.B, s.H, n_of[j], D, j % 2 ? s.pad : 0, (j + s.bnhd) % 2,
                           s.dt);
    if (made) {
      gc_fill(&t[0]), gc_fill(&t[1]), gc_fill(&t[2]), gc_fill(&t[4]);
      ok &= gc_status(env,
                      ditattn_dense_forward(env->ref, &t[0].host, &t[1].host, &t[2].host, scale,
                                            &t[3].host, lse),
                      env->ref, what);
      for (size_t j = 0; j < t[3].count; j++) t[3].buf[j] = gc_round(s.dt, t[3].buf[j]);
      for (int j = 0; ok && j < 8; j++) ok &= gc_upload(env, &t[j]);
      ok =
          ok && gc_put_floats(env, dlse, lse, rows) &&
          gc_status(env,
                    ditattn_dense_backward(env->ref, &t[0].host, &t[1].host, &t[2].host, &t[3].host,
                                           lse, &t[4].host, scale, &t[5].host, &t[6].host,
                                           &t[7].host),
                    env->ref, what) &&
          gc_status(env,
                    ditattn_dense_backward(env->gpu, &t[0].dev, &t[1].dev, &t[2].dev, &t[3].dev,
                                           dlse, &t[4].dev, scale, &t[5].dev, &t[6].dev, &t[7].dev),
                    env->gpu, what);
      static const char *const names[3] = {"dq", "dk", "dv"};
      for (int j = 0; ok && j < 3; j++) {
        char gwhat[512];
        snprintf(gwhat, sizeof gwhat, "%s [%s]", what, names[j]);
        ok &= gc_compare_out(env, &t[5 + j], gwhat, gc_tol(s.dt));
      }
    } else {
      ok = 0;
    }
    free(lse);
    if (dlse) ditattn_free(env->gpu, dlse);
    for (int j = 0; j < 8; j++) gc_tensor_free(env, &t[j]);
  }
  return ok;
}

/* One LLSA forward vs ref: outputs, lse, and the selection of every level
 * (which must be identical: both score in double with the same operations). */
static int gc_llsa_case(gc_env *env, const gc_shape *s, const ditattn_llsa_params *lp,
                        const float *given_qkv, const float *expect_o, const float *expect_lse) {
  char what[320], extra[160];
  int at = snprintf(extra, sizeof extra, "b=%lld L=%d K=", (long long)lp->block, lp->levels);
  for (int l = 0; l < lp->levels && at < (int)sizeof extra; l++)
    at += snprintf(extra + at, sizeof extra - (size_t)at, "%lld%s", (long long)lp->topk[l],
                   l + 1 < lp->levels ? "," : "");
  if (at < (int)sizeof extra)
    snprintf(extra + at, sizeof extra - (size_t)at, " scale=%g", lp->scale);
  gc_describe(what, sizeof what, "llsa", s, extra);
  const char *paths[2];
  const int npaths = gc_attend_paths(env, s->dt, s->D, paths);
  const size_t rows = (size_t)(s->B * s->H * s->N);
  ditattn_llsa_selection sel_ref, sel_gpu;
  memset(&sel_ref, 0, sizeof sel_ref);
  memset(&sel_gpu, 0, sizeof sel_gpu);
  int ok = 1;
  size_t sel_count[DITATTN_LLSA_MAX_LEVELS] = {0};
  for (int l = 0; l < lp->levels; l++) {
    sel_count[l] = (size_t)ditattn_llsa_selection_count(lp, s->B, s->H, s->N, l + 1);
    sel_ref.sel[l] = malloc(sel_count[l] * sizeof(int32_t));
    sel_gpu.sel[l] = malloc(sel_count[l] * sizeof(int32_t));
    if (!sel_ref.sel[l] || !sel_gpu.sel[l]) ok = 0;
    for (size_t j = 0; ok && j < sel_count[l]; j++) sel_gpu.sel[l][j] = -7; /* poison */
  }
  gc_tensor q, k, v, o;
  memset(&q, 0, sizeof q), memset(&k, 0, sizeof k), memset(&v, 0, sizeof v),
      memset(&o, 0, sizeof o);
  gc_lse lse;
  const int lse_made = gc_lse_new(env, &lse, rows);
  if (ok && lse_made && gc_tensor_new(env, &q, s->B, s->H, s->N, s->D, s->pad, s->bnhd, s->dt) &&
      gc_tensor_new(env, &k, s->B, s->H, s->N, s->D, s->pad, !s->bnhd, s->dt) &&
      gc_tensor_new(env, &v, s->B, s->H, s->N, s->D, 0, s->bnhd, s->dt) &&
      gc_tensor_new(env, &o, s->B, s->H, s->N, s->D, s->pad, s->bnhd, s->dt)) {
    if (given_qkv) { /* B = H = 1, D = 1 contiguous: the spec's test vector */
      for (int64_t n = 0; n < s->N; n++) {
        q.buf[n] = given_qkv[n];
        k.buf[n] = given_qkv[s->N + n];
        v.buf[n] = given_qkv[2 * s->N + n];
      }
    } else {
      gc_fill(&q);
      gc_fill(&k);
      gc_fill(&v);
    }
    ok = gc_upload(env, &q) && gc_upload(env, &k) && gc_upload(env, &v) &&
         gc_status(env,
                   ditattn_llsa_forward(env->ref, lp, &q.host, &k.host, &v.host, &o.host, lse.ref,
                                        &sel_ref),
                   env->ref, what);
    /* The same case on each attention kernel, outputs poisoned before each. */
    for (int pi = 0; ok && pi < npaths; pi++) {
      char op[32], pwhat[320];
      gc_path_op(op, sizeof op, "llsa", paths[pi]);
      gc_describe(pwhat, sizeof pwhat, op, s, extra);
      for (int l = 0; l < lp->levels; l++)
        for (size_t j = 0; j < sel_count[l]; j++) sel_gpu.sel[l][j] = -7;
      ok = gc_poison_device(env, &o) && gc_lse_poison_device(env, &lse);
      gc_set_attend_path(paths[pi]);
      ok = ok && gc_status(env,
                           ditattn_llsa_forward(env->gpu, lp, &q.dev, &k.dev, &v.dev, &o.dev,
                                                lse.dev, &sel_gpu),
                           env->gpu, pwhat);
      gc_set_attend_path(NULL);
      if (!ok) break;
      for (int l = 0; l < lp->levels; l++) {
        size_t diff = 0, first = 0;
        for (size_t j = 0; j < sel_count[l]; j++)
          if (sel_ref.sel[l][j] != sel_gpu.sel[l][j] && diff++ == 0) first = j;
        char swhat[512];
        snprintf(swhat, sizeof swhat, "%s [selection level %d: %zu of %zu differ, first at %zu]",
                 pwhat, l + 1, diff, sel_count[l], first);
        ok &= gc_report(env, diff == 0, swhat, (double)diff, 0.0);
      }
      ok &= gc_compare_out(env, &o, pwhat, gc_tol(s->dt)) &&
            gc_compare_lse(env, &lse, pwhat, s->dt == DITATTN_F32 ? 1e-5 : 1e-3);
    }
    if (ok && expect_o) { /* contiguous B = H = D = 1: buf is o itself */
      char vwhat[512];
      snprintf(vwhat, sizeof vwhat, "%s [ref vs spec numbers]", what);
      const double eo = gc_rel_err_flat(o.buf, expect_o, rows);
      const double el = gc_rel_err_flat(lse.ref, expect_lse, rows);
      ok &= gc_report(env, eo <= 1e-5 && el <= 1e-5, vwhat, eo > el ? eo : el, 1e-5);
    }
  } else {
    ok = 0;
  }
  for (int l = 0; l < lp->levels; l++) {
    free(sel_ref.sel[l]);
    free(sel_gpu.sel[l]);
  }
  gc_lse_free(env, &lse);
  gc_attention_tensors_free(env, &q, &k, &v, &o);
  return ok;
}

/* Spec §7: L = 1, N = 8, D = 1, b = 2, K = 1, scale = 1. GPU = ref is
 * checked as everywhere, and ref = the spec's numbers (6 digits). */
static int gc_check_llsa_vector(gc_env *env) {
  static const float qkv[24] = {1, 0, 0, 1,     -1, 0, 2, 1, 0.5f, 1, -1, 0,
                                2, 2, 0, -0.5f, 1,  2, 3, 4, 5,    6, 7,  8};
  ditattn_llsa_params lp = ditattn_llsa_params_default();
  lp.block = 2;
  lp.levels = 1;
  lp.topk[0] = 1;
  lp.scale = 1.0f;
  static const float o[8] = {5.05562f, 4.7f, 4.7f, 5.05562f, 4.24681f, 4.3f, 5.34781f, 5.05562f};
  static const float lse[8] = {3.59898f, 2.30259f, 2.30259f, 3.59898f,
                               2.37947f, 2.30259f, 5.43505f, 3.59898f};
  gc_shape s = {1, 1, 8, 1, 0, 0, DITATTN_F32};
  return gc_llsa_case(env, &s, &lp, qkv, o, lse);
}

static int gc_check_llsa(gc_env *env) {
  int ok = gc_check_llsa_vector(env);
  for (int i = 0; i < 12; i++) {
    ditattn_llsa_params lp = ditattn_llsa_params_default();
    lp.block = i % 4 == 0 ? 16 : gc_int(2, 9);
    lp.levels = (int)gc_int(1, 3);
    for (int l = 0; l < lp.levels; l++) lp.topk[l] = gc_int(1, 6);
    if (i % 5 == 4) lp.scale = (float)gc_uniform(0.05, 0.3);
    int64_t span = 1;
    for (int l = 0; l < lp.levels; l++) span *= lp.block;
    /* N from below one coarsest block to several, usually not a multiple. */
    const int64_t N = gc_int(1, span * 5 > 1500 ? 1500 : span * 5);
    const int64_t D = i % 3 == 0 ? 64 : gc_int(1, 130);
    gc_shape s = gc_random_shape(N, D, gc_pick_dtype(i));
    ok &= gc_llsa_case(env, &s, &lp, NULL, NULL, NULL);
  }
  /* 16-bit inputs with D in {64, 128} (the CUDA tensor-core kernel): b = 16
   * (one tile per query block), b = 64 (4 tiles share the whole key list),
   * b = 20 and b = 5 (partial tiles), padded rows (pad 3: element loads). */
  static const int64_t mma_blocks[8] = {16, 64, 20, 5, 16, 33, 16, 64};
  for (int i = 0; i < 8; i++) {
    ditattn_llsa_params lp = ditattn_llsa_params_default();
    lp.block = mma_blocks[i];
    lp.levels = lp.block >= 33 ? (int)gc_int(1, 2) : (int)gc_int(1, 3);
    for (int l = 0; l < lp.levels; l++) lp.topk[l] = gc_int(1, 6);
    if (i % 4 == 3) lp.scale = (float)gc_uniform(0.05, 0.3);
    int64_t span = 1;
    for (int l = 0; l < lp.levels; l++) span *= lp.block;
    const int64_t N = gc_int(1, span * 5 > 3000 ? 3000 : span * 5);
    const ditattn_dtype dt = gc_cur && gc_cur->f32_only ? DITATTN_F32
                             : i % 2                    ? DITATTN_F16
                                                        : DITATTN_BF16;
    gc_shape s = gc_random_shape(N, i % 4 < 2 ? 64 : 128, dt);
    ok &= gc_llsa_case(env, &s, &lp, NULL, NULL, NULL);
  }
  /* Wide top-K: the pick kernel's register lists of 16 (K = 12 over 375
   * candidates; K = 12 among the 512 children of 16 parent picks) and its
   * scan passes (K = 20 over 700 candidates). */
  static const struct {
    int64_t block, N, D;
    int levels;
    int64_t topk[2];
  } wide[3] = {{4, 1500, 64, 1, {12, 0}}, {2, 1400, 24, 1, {20, 0}}, {32, 5000, 64, 2, {12, 16}}};
  for (int i = 0; i < 3; i++) {
    ditattn_llsa_params lp = ditattn_llsa_params_default();
    lp.block = wide[i].block;
    lp.levels = wide[i].levels;
    for (int l = 0; l < lp.levels; l++) lp.topk[l] = wide[i].topk[l];
    gc_shape s = gc_random_shape(wide[i].N, wide[i].D, gc_pick_dtype(i));
    ok &= gc_llsa_case(env, &s, &lp, NULL, NULL, NULL);
  }
  /* The default configuration at a size with full and partial blocks. */
  ditattn_llsa_params lp = ditattn_llsa_params_default();
  gc_shape s = {1, 2, 4096 + 40, 64, 0, 1, gc_pick_dtype(1)};
  ok &= gc_llsa_case(env, &s, &lp, NULL, NULL, NULL);
  s.dt = DITATTN_F32;
  s.N = 4096;
  ok &= gc_llsa_case(env, &s, &lp, NULL, NULL, NULL);
  return ok;
}

/* Entries the GPU backends leave NULL must say UNSUPPORTED, and so must
 * head dimensions past the kernels' limit. */
static int gc_check_unsupported(gc_env *env) {
  const ditattn_backend be = ditattn_context_backend(env->gpu);
  if (be != DITATTN_BACKEND_CUDA && be != DITATTN_BACKEND_HIP) return 1;
  int ok = 1;
  ok &= gc_report(env, !ditattn_backend_supports(be, DITATTN_OP_LLSA_BACKWARD),
                  "llsa_backward is not listed", 0, 0);
  gc_shape s = {1, 1, 5, 300, 0, 0, DITATTN_F32};
  gc_tensor q, o;
  if (gc_tensor_new(env, &q, 1, 1, 5, 300, 0, 0, s.dt) &&
      gc_tensor_new(env, &o, 1, 1, 5, 300, 0, 0, s.dt)) {
    gc_fill(&q);
    ok &= gc_upload(env, &q);
    ditattn_status st = ditattn_dense_forward(env->gpu, &q.dev, &q.dev, &q.dev, 0.0f, &o.dev, NULL);
    ok &= gc_report(env, st == DITATTN_ERR_UNSUPPORTED, "dense D=300 answers UNSUPPORTED",
                    (double)st, 0);
    ok &= gc_report(env, strlen(ditattn_last_error(env->gpu)) > 0, "with a message", 0, 0);
  } else {
    ok = 0;
  }
  gc_tensor_free(env, &q);
  gc_tensor_free(env, &o);
  return ok;
}

/* ------------------------------------------------------------ driver */
typedef int (*gc_check_fn)(gc_env *env);
typedef struct gc_check {
  const char *name;
  gc_check_fn fn;
} gc_check;

/* Creates the GPU and ref contexts; 0 (with *why) when the backend is not usable. */
static int gc_env_open(gc_env *env, ditattn_backend be, uint64_t seed, const char **why) {
  memset(env, 0, sizeof *env);
  env->name = ditattn_backend_name(be);
  env->seed = seed;
  env->f32_only = be == DITATTN_BACKEND_REF || be == DITATTN_BACKEND_CPU;
  gc_rng = seed;
  gc_cur = env;
  if (!ditattn_backend_compiled(be)) {
    *why = "not compiled into this build";
    return 0;
  }
  ditattn_status st = ditattn_context_create(be, &env->gpu);
  if (st != DITATTN_OK) {
    *why = st == DITATTN_ERR_BACKEND_UNAVAILABLE ? "no usable device" : ditattn_strerror(st);
    return 0;
  }
  if (ditattn_context_create(DITATTN_BACKEND_REF, &env->ref) != DITATTN_OK) {
    ditattn_context_destroy(env->gpu);
    env->gpu = NULL;
    *why = "ref context failed";
    return 0;
  }
  return 1;
}
static void gc_env_close(gc_env *env) {
  ditattn_context_destroy(env->gpu);
  ditattn_context_destroy(env->ref);
  env->gpu = env->ref = NULL;
}

static const gc_check gc_checks[] = {{"pool", gc_check_pool},
                                     {"rope", gc_check_rope},
                                     {"order", gc_check_order},
                                     {"lse_merge", gc_check_merge},
                                     {"dense", gc_check_dense},
                                     {"error_recovery", gc_check_error_recovery},
                                     {"dense_backward", gc_check_dense_backward},
                                     {"llsa", gc_check_llsa},
                                     {"unsupported", gc_check_unsupported}};
#define GC_NCHECKS ((int)(sizeof gc_checks / sizeof gc_checks[0]))

#ifndef GC_NO_MAIN
#include "gpu_check_driver.h"

/* ------------------------------------------------------------ timing */
typedef struct gc_timing {
  ditattn_context *ctx;
  const ditattn_llsa_params *lp; /* NULL: dense */
  const ditattn_tensor *q, *k, *v;
  ditattn_tensor *o;
} gc_timing;

/* One dense or LLSA forward, synchronized (a gc_timed_call). */
static int gc_forward_synchronized(const void *arg) {
  const gc_timing *t = arg;
  const ditattn_status st =
      t->lp ? ditattn_llsa_forward(t->ctx, t->lp, t->q, t->k, t->v, t->o, NULL, NULL)
            : ditattn_dense_forward(t->ctx, t->q, t->k, t->v, 0.0f, t->o, NULL);
  return st == DITATTN_OK && ditattn_synchronize(t->ctx) == DITATTN_OK;
}

#if defined(GC_CUDA_STAGE_TIMES)
/* ------------------------------------------------------------ LLSA stages (CUDA) */
/* Issue 5 target 4: each LLSA forward stage timed on its own through the
 * backend's internal launchers (backends/gpu/gpu_api.h; the library is
 * static, so they link), with achieved bandwidth and arithmetic rates
 * against the H100's measured ceilings. Bytes are the minimum a stage must
 * move (each input read once, each output written once), so GB/s is a lower
 * bound on the traffic; gathers served by L2 can exceed it. */
#define DT_GPU_FN(n) dt_cuda_##n
#include "../backends/gpu/gpu_api.h"

static const double gc_ceiling_gbs = 3000.0;   /* copy bandwidth, GB/s */
static const double gc_ceiling_tflops = 798.0; /* bf16 dense GEMM, TFLOP/s */

/* One stage of the forward: `stage` in order pool (every level, one
 * launch), select L..1, attend. */
typedef struct gc_stage_call {
  const dt_gpu_llsa *g;
  int stage;
  const gc_tensor *q, *k, *v, *o;
  double *scores;
  int32_t *idx;
} gc_stage_call;

static int gc_stage_run(const gc_stage_call *c) {
  const dt_gpu_llsa *g = c->g;
  const int s = c->stage;
  if (s == 0) return dt_cuda_launch_llsa_pool(g, &c->q->dev, &c->k->dev, &c->v->dev, NULL);
  if (s <= g->L) {
    const int l = g->L + 1 - s;
    return dt_cuda_launch_llsa_select(g, l, 0, g->B * g->H * g->n[l], c->scores, c->idx, NULL);
  }
  return dt_cuda_launch_llsa_attend(g, &c->q->dev, &c->k->dev, &c->v->dev, &c->o->dev, NULL, 0,
                                    g->B * g->H, NULL);
}
/* The stage, synchronized (a gc_timed_call). */
static int gc_stage_synchronized(const void *arg) {
  return gc_stage_run(arg) == 0 && dt_cuda_stream_sync(NULL) == 0;
}

static void gc_stage_line(int64_t N, ditattn_dtype dt, const char *name, double sec, double bytes,
                          double flops) {
  if (sec < 0) {
    printf("stage %-8lld %-5s %-12s failed\n", (long long)N, gc_dtype_name(dt), name);
    return;
  }
  const double gbs = bytes / sec * 1e-9, tfs = flops / sec * 1e-12;
  printf("stage %-8lld %-5s %-12s %9.3f ms %9.1f GB/s (%5.1f%% of %.0f) %8.3f TFLOP/s (%5.2f%% of "
         "%.0f)\n",
         (long long)N, gc_dtype_name(dt), name, 1e3 * sec, gbs, 100.0 * gbs / gc_ceiling_gbs,
         gc_ceiling_gbs, tfs, 100.0 * tfs / gc_ceiling_tflops, gc_ceiling_tflops);
  fflush(stdout);
}

/* The stages of ditattn_llsa_forward(lp) on q, k, v (device images, B·H·N·D). */
static int gc_time_llsa_stages(gc_env *env, const ditattn_llsa_params *lp, const gc_tensor *q,
                               const gc_tensor *k, const gc_tensor *v, const gc_tensor *o) {
  if (ditattn_context_backend(env->gpu) != DITATTN_BACKEND_CUDA) return 1;
  const ditattn_dtype dt = q->dev.dtype;
  dt_gpu_llsa g;
  memset(&g, 0, sizeof g);
  g.B = q->dev.shape[0], g.H = q->dev.shape[1], g.N = q->dev.shape[2], g.D = q->dev.shape[3];
  g.b = lp->block, g.L = lp->levels;
  g.scale = lp->scale > 0 ? lp->scale : (float)(1.0 / sqrt((double)g.D));
  g.n[0] = g.N, g.span[0] = 1;
  const double BH = (double)(g.B * g.H), es = (double)gc_dsize(dt), D = (double)g.D;
  int64_t pw = 1;
  void *bufs[5 * DITATTN_LLSA_MAX_LEVELS + 2] = {0};
  int nb = 0, ok = 1;
  size_t max_scratch = 1;
  for (int l = 1; l <= g.L; l++) {
    pw *= g.b;
    g.n[l] = (g.N + pw - 1) / pw;
    g.span[l] = pw < g.N ? pw : g.N;
    g.keff[l - 1] = lp->topk[l - 1] < g.n[l] ? lp->topk[l - 1] : g.n[l];
    g.blk_lo[l] = 0, g.blk_n[l] = g.n[l]; /* every query row: all blocks selected */
  }
  g.q_lo = 0, g.q_hi = g.N;
  for (int l = 1; ok && l <= g.L; l++) {
    const size_t rows = (size_t)(g.B * g.H * g.n[l]), d = (size_t)g.D;
    ok = gc_status(env, ditattn_malloc(env->gpu, rows * d * 8, &bufs[nb++]), env->gpu, "stage") &&
         gc_status(env, ditattn_malloc(env->gpu, rows * d * 8, &bufs[nb++]), env->gpu, "stage") &&
         gc_status(env, ditattn_malloc(env->gpu, rows * d * 4, &bufs[nb++]), env->gpu, "stage") &&
         gc_status(env, ditattn_malloc(env->gpu, rows * d * 4, &bufs[nb++]), env->gpu, "stage") &&
         gc_status(env, ditattn_malloc(env->gpu, rows * (size_t)g.keff[l - 1] * 4, &bufs[nb++]),
                   env->gpu, "stage");
    if (!ok) break;
    g.pq64[l - 1] = bufs[nb - 5], g.pk64[l - 1] = bufs[nb - 4];
    g.pk[l - 1] = bufs[nb - 3], g.pv[l - 1] = bufs[nb - 2], g.sel[l - 1] = bufs[nb - 1];
    const size_t cand = (size_t)dt_cuda_llsa_candidates(&g, l);
    if (rows * cand > max_scratch) max_scratch = rows * cand;
  }
  ok = ok &&
       gc_status(env, ditattn_malloc(env->gpu, max_scratch * 8, &bufs[nb++]), env->gpu, "stage") &&
       gc_status(env, ditattn_malloc(env->gpu, max_scratch * 4, &bufs[nb++]), env->gpu, "stage");
  gc_stage_call call = {&g, 0, q, k, v, o, ok ? bufs[nb - 2] : NULL, ok ? bufs[nb - 1] : NULL};
  /* One full forward first: selections of every level exist for the
   * stages timed after it (each stage alone is idempotent). */
  for (call.stage = 0; ok && call.stage <= g.L + 1; call.stage++) ok = gc_stage_run(&call) == 0;
  ok = ok && dt_cuda_stream_sync(NULL) == 0;
  const int reps = g.N >= 262144 ? 5 : 9;
  double pooled_bytes = 0.0, pooled_written = 0.0, keys = (double)g.n[g.L];
  for (int l = 1; l <= g.L; l++) {
    const double nl = (double)g.n[l];
    pooled_bytes += BH * nl * D * 8.0; /* f32 pooled k and v */
    pooled_written += BH * nl * D * 24.0;
    keys += (double)(g.b * g.keff[l - 1]);
  }
  /* Every level from q, k, v: read once per level at least (each level
   * sums the original tokens); pooled q, k (double) and k, v (f32) written. */
  call.stage = 0;
  if (ok)
    gc_stage_line(g.N, dt, "pool", gc_median_seconds(gc_stage_synchronized, &call, 0, reps),
                  3.0 * g.L * BH * (double)g.N * D * es + pooled_written,
                  3.0 * g.L * BH * (double)g.N * D);
  for (int l = g.L; ok && l >= 1; l--) {
    const double rows = BH * (double)g.n[l], cand = (double)dt_cuda_llsa_candidates(&g, l);
    char name[32];
    snprintf(name, sizeof name, "select%d", l);
    /* Pooled q, k (double) read, scores and indices written, picks written;
     * flops: the fp64 scores (2D per candidate). */
    call.stage = g.L + 1 - l;
    gc_stage_line(g.N, dt, name, gc_median_seconds(gc_stage_synchronized, &call, 0, reps),
                  2.0 * rows * D * 8.0 + rows * cand * 12.0 + rows * (double)g.keff[l - 1] * 4.0,
                  2.0 * rows * cand * D);
  }
  /* q, k, v read and out written once, the pooled k, v read once; flops:
   * 4·D per (query, key position) over the whole gathered list. */
  const double attend_bytes = 4.0 * BH * (double)g.N * D * es + pooled_bytes;
  const double attend_flops = 4.0 * BH * (double)g.N * keys * D;
  const char *paths[2];
  const int npaths = gc_attend_paths(env, dt, g.D, paths);
  for (int pi = 0; ok && pi < npaths; pi++) {
    char name[32];
    gc_path_op(name, sizeof name, "attend", paths[pi]);
    gc_set_attend_path(paths[pi]);
    call.stage = g.L + 1;
    gc_stage_line(g.N, dt, name, gc_median_seconds(gc_stage_synchronized, &call, 0, reps),
                  attend_bytes, attend_flops);
    gc_set_attend_path(NULL);
  }
  for (int i = 0; i < nb; i++)
    if (bufs[i]) ditattn_free(env->gpu, bufs[i]);
  if (!ok) printf("stage %-8lld %-5s failed\n", (long long)g.N, gc_dtype_name(dt));
  return ok;
}
#endif /* GC_CUDA_STAGE_TIMES */

/* The sizes: B = 2, H = 4, D = 64, b = 16, L = 2, K = 8, N = side²
 * for each of `sides` (default 128, 256, 512). */
static int64_t gc_sides[8] = {128, 256, 512};
static int gc_nsides = 3;

static int gc_time_all(gc_env *env) {
  const int64_t B = 2, H = 4, D = 64;
  ditattn_llsa_params lp = ditattn_llsa_params_default();
  printf("\n%-8s %-9s %-5s %10s %12s %s\n", "N", "op", "dtype", "ms", "TFLOP/s", "(flops counted)");
  for (int si = 0; si < gc_nsides; si++) {
    const int64_t N = gc_sides[si] * gc_sides[si];
    for (int di = 0; di < 2; di++) {
      const ditattn_dtype dt = di ? DITATTN_F32 : DITATTN_BF16;
      gc_tensor q, k, v, o;
      memset(&q, 0, sizeof q), memset(&k, 0, sizeof k), memset(&v, 0, sizeof v);
      memset(&o, 0, sizeof o);
      if (!(gc_tensor_new(env, &q, B, H, N, D, 0, 0, dt) &&
            gc_tensor_new(env, &k, B, H, N, D, 0, 0, dt) &&
            gc_tensor_new(env, &v, B, H, N, D, 0, 0, dt) &&
            gc_tensor_new(env, &o, B, H, N, D, 0, 0, dt))) {
        printf("%-8lld allocation failed\n", (long long)N);
        gc_attention_tensors_free(env, &q, &k, &v, &o);
        return 0;
      }
      gc_fill(&q), gc_fill(&k), gc_fill(&v);
      int ok = gc_upload(env, &q) && gc_upload(env, &k) && gc_upload(env, &v);
      /* op 0 dense, 1 LLSA (default kernels), 2 LLSA with the fp32 attention
       * kernel forced (CUDA, 16-bit: where the default is the mma kernel). */
      static const char *const op_names[3] = {"dense", "llsa", "llsa_simt"};
      const char *paths[2];
      const int npaths = gc_attend_paths(env, dt, D, paths);
      for (int op = 0; ok && op < 3; op++) {
        if (op == 0 && (dt == DITATTN_F32 && N > 65536)) continue; /* fp32 dense: too slow */
        if (op == 2 && npaths < 2) continue;
        gc_timing t = {env->gpu, op ? &lp : NULL, &q.dev, &k.dev, &v.dev, &o.dev};
        gc_set_attend_path(op == 2 ? "simt" : NULL);
        const double sec = gc_median_seconds(gc_forward_synchronized, &t, 1, N >= 262144 ? 3 : 7);
        gc_set_attend_path(NULL);
        /* spec §6: dense 4N²D; LLSA attention 4ND(K1·b + K2·b + n_L) + selection. */
        const double nL = (double)((N + 255) / 256);
        const double flops = op ? (double)(B * H) * (4.0 * N * D * (8 * 16 + 8 * 16 + nL) +
                                                     2.0 * D * nL * nL + 2.0 * N * 8 * D)
                                : (double)(B * H) * 4.0 * (double)N * (double)N * (double)D;
        if (sec < 0)
          printf("%-8lld %-9s %-5s %10s   failed: %s\n", (long long)N, op_names[op],
                 gc_dtype_name(dt), "-", ditattn_last_error(env->gpu));
        else
          printf("%-8lld %-9s %-5s %10.3f %12.2f\n", (long long)N, op_names[op], gc_dtype_name(dt),
                 1e3 * sec, flops / sec * 1e-12);
        fflush(stdout);
      }
#if defined(GC_CUDA_STAGE_TIMES)
      if (ok) gc_time_llsa_stages(env, &lp, &q, &k, &v, &o);
#endif
      gc_attention_tensors_free(env, &q, &k, &v, &o);
    }
  }
  return 1;
}

int main(int argc, char **argv) {
  static const char usage[] = "[--backend cuda|hip|cpu|ref] [--seed S] [--time] [--quiet]";
  const gc_list_option sides = {"--sides", gc_sides, &gc_nsides,
                                (int)(sizeof gc_sides / sizeof *gc_sides)};
  const gc_checker checker = {"gpu_check", gc_checks, GC_NCHECKS, gc_time_all, &sides, usage};
  return gc_checker_main(&checker, argc, argv);
}
#endif /* GC_NO_MAIN */
