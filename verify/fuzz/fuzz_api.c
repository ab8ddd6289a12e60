/* libFuzzer harness for the public API's argument validation.
 *
 * The input bytes decode into an operation, its parameters and its tensor
 * views (shapes, strides, layouts, dtypes, NULLs, aliasing). Every view that
 * the API must accept (dims >= 1, strides >= 0, representable span) gets a
 * real heap buffer of exactly its span, so ASan flags any read or write past
 * it; every view the API must reject gets a 1-float buffer, so accepting it
 * by mistake is caught the same way. Oracles: the call returns a known
 * status, never crashes, and an OK result leaves every output finite (inputs
 * are finite and moderate) and every selection index in range. Cases whose
 * valid views would be large are skipped to keep executions fast. The calls
 * go to the ref backend, or to the CPU backend when it is compiled in. */
#include "ditattn/ditattn.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPAN 8192  /* floats per valid tensor */
#define MAX_WORK 20000 /* B·H·N·Nk·D budget per call */

typedef struct fz {
  const uint8_t *p;
  size_t n;
  uint64_t rng;
  int skip; /* a valid view was too large: do not call */
  void *allocs[64];
  int n_allocs;
} fz;

static uint8_t u8(fz *f) {
  if (!f->n) return 0;
  f->n--;
  return *f->p++;
}

static void *fz_alloc(fz *f, size_t bytes) {
  if (f->n_allocs == 64) {
    f->skip = 1;
    return NULL;
  }
  void *p = malloc(bytes ? bytes : 1);
  if (!p) abort();
  f->allocs[f->n_allocs++] = p;
  return p;
}

static float rnd(fz *f) { /* finite, in [-2, 2) */
  f->rng = f->rng * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((double)(f->rng >> 11) * 0x1.0p-53 * 4.0 - 2.0);
}

/* Mostly the hint; sometimes 0, negative, small or huge. */
static int64_t dim(fz *f, int64_t hint) {
  uint8_t m = u8(f);
  switch (m >> 5) {
  case 5: return m & 15;
  case 6: return -(int64_t)(m & 31) - (m & 16 ? INT64_C(1) << 62 : 0);
  case 7: return (m & 16) ? INT64_MAX - (m & 15) : INT64_C(1) << (16 + (m & 31));
  default: return hint;
  }
}

static float scale_value(fz *f) {
  static const float choices[8] = {0.0f, 0.0f, 0.5f, 1.0f, -1.0f, 3.0f, NAN, INFINITY};
  return choices[u8(f) & 7];
}

/* Exact span in elements of a view the API must accept, or 0 when the API
 * must reject it (the same rule the documentation states). */
static uint64_t valid_span(const ditattn_tensor *t) {
  if (ditattn_dtype_size(t->dtype) == 0) return 0;
  for (int i = 0; i < 4; i++)
    if (t->shape[i] < 1) return 0;
  for (int i = 0; i < 3; i++)
    if (t->stride[i] < 0) return 0;
  uint64_t last = (uint64_t)t->shape[3], term;
  for (int i = 0; i < 3; i++) {
    if (__builtin_mul_overflow((uint64_t)(t->shape[i] - 1), (uint64_t)t->stride[i], &term) ||
        __builtin_add_overflow(last, term, &last))
      return 0;
  }
  if (last > (uint64_t)(SIZE_MAX / ditattn_dtype_size(t->dtype))) return 0;
  return last;
}

static int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

/* A view of (B,H,N,D) decoded from the input; its buffer is sized as above. */
static ditattn_tensor *tensor(fz *f, ditattn_tensor *t, int64_t B, int64_t H, int64_t N,
                              int64_t D) {
  uint8_t mode = u8(f);
  if (mode == 0xff) return NULL;
  memset(t, 0, sizeof *t);
  t->dtype = mode == 0xfe ? DITATTN_BF16 : mode == 0xfd ? (ditattn_dtype)9 : DITATTN_F32;
  int64_t shape[4] = {B, H, N, D};
  if (mode & 0x40)
    for (int i = 0; i < 4; i++) shape[i] = dim(f, shape[i]);
  memcpy(t->shape, shape, sizeof shape);
  const int64_t pad = (mode >> 2) & 3;
  switch (mode & 3) {
  case 0: /* [B,H,N,D] + pad (wrapping: perturbed shapes may be huge) */
    t->stride[2] = (int64_t)((uint64_t)shape[3] + (uint64_t)pad),
    t->stride[1] = wrap_mul(shape[2], t->stride[2]);
    t->stride[0] = wrap_mul(shape[1], t->stride[1]);
    break;
  case 1: /* [B,N,H,D] */
    t->stride[1] = (int64_t)((uint64_t)shape[3] + (uint64_t)pad),
    t->stride[2] = wrap_mul(shape[1], t->stride[1]);
    t->stride[0] = wrap_mul(shape[2], t->stride[2]);
    break;
  default: /* decoded strides: zero (broadcast), negative, overlapping or huge */
    for (int i = 0; i < 3; i++) t->stride[i] = dim(f, (int64_t)(u8(f) & 31));
  }
  uint64_t span = valid_span(t);
  if (span > MAX_SPAN) {
    f->skip = 1;
    span = 1;
  }
  float *buf = fz_alloc(f, (span ? span : 1) * sizeof(float));
  if (!buf) return t;
  for (uint64_t i = 0; i < (span ? span : 1); i++) buf[i] = rnd(f);
  t->data = mode == 0xfc ? NULL : buf;
  return t;
}

static int finite_view(const ditattn_tensor *t) {
  if (!t || t->dtype != DITATTN_F32) return 1;
  const float *x = t->data;
  for (int64_t b = 0; b < t->shape[0]; b++)
    for (int64_t h = 0; h < t->shape[1]; h++)
      for (int64_t n = 0; n < t->shape[2]; n++)
        for (int64_t d = 0; d < t->shape[3]; d++)
          if (!isfinite(x[b * t->stride[0] + h * t->stride[1] + n * t->stride[2] + d])) return 0;
  return 1;
}

static int finite_floats(const float *x, int64_t n) {
  for (int64_t i = 0; x && i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

static void expect(int ok) {
  if (!ok) __builtin_trap();
}

#ifdef FUZZ_STATS /* -DFUZZ_STATS: how often each op got past validation */
#include <stdio.h>
static long g_calls[12], g_ok[12];
static int g_op;
static void print_stats(void) {
  for (int i = 0; i < 12; i++)
    fprintf(stderr, "op %2d: %ld calls, %ld OK\n", i, g_calls[i], g_ok[i]);
}
#endif

static void expect_status(ditattn_status st) {
  expect((int)st >= 0 && (int)st < DITATTN_STATUS_COUNT);
#ifdef FUZZ_STATS
  g_calls[g_op]++;
  g_ok[g_op] += st == DITATTN_OK;
#endif
}

/* Float buffer of n entries (lse) or NULL; n is trusted only if small. */
static float *floats(fz *f, int64_t n, int optional) {
  if (optional && (u8(f) & 3) == 0) return NULL;
  if (n < 1 || n > MAX_SPAN) {
    f->skip |= n > MAX_SPAN;
    return fz_alloc(f, sizeof(float));
  }
  float *x = fz_alloc(f, (size_t)n * sizeof(float));
  for (int64_t i = 0; x && i < n; i++) x[i] = rnd(f);
  return x;
}

/* B·H·N of a view, for sizing its [B][H][N] lse buffer (skips huge ones). */
static int64_t rows_of(fz *f, const ditattn_tensor *t) {
  if (!t || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[2] < 1) return 1;
  if (t->shape[0] > MAX_SPAN || t->shape[1] > MAX_SPAN || t->shape[2] > MAX_SPAN ||
      t->shape[0] * t->shape[1] * t->shape[2] > MAX_SPAN) {
    f->skip = 1;
    return 1;
  }
  return t->shape[0] * t->shape[1] * t->shape[2];
}

/* Token count of a view for sizing caller buffers (skips huge ones). */
static int64_t tokens(fz *f, const ditattn_tensor *t) {
  if (!t) return 1;
  if (t->shape[2] > MAX_SPAN) f->skip = 1;
  return t->shape[2] > 0 && t->shape[2] <= MAX_SPAN ? t->shape[2] : 1;
}

static int32_t *positions(fz *f, const int64_t grid[3], int64_t N) {
  if (N < 1 || N > MAX_SPAN) return NULL;
  int32_t *pos = fz_alloc(f, (size_t)N * 3 * sizeof(int32_t));
  for (int64_t i = 0; pos && i < 3 * N; i++) {
    uint8_t m = u8(f);
    int64_t extent = grid[i % 3] > 0 ? grid[i % 3] : 1;
    pos[i] = m == 0xff ? -1 : m == 0xfe ? (int32_t)extent : (int32_t)(m % extent);
  }
  return pos;
}

/* Whether a call on q (queries) and k (keys) is cheap enough to run; views
 * the API rejects anyway count as cheap. Broadcast strides (0) make huge
 * shapes valid with tiny buffers, hence the check on shapes, not spans. */
static int small_work(const ditattn_tensor *q, const ditattn_tensor *k, int64_t extra_d) {
  if (!q || !k) return 1;
  const int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2], Nk = k->shape[2];
  const int64_t D = q->shape[3];
  if (B < 1 || H < 1 || N < 1 || Nk < 1 || D < 1) return 1;
  if (B > 64 || H > 64 || N > 512 || Nk > 512 || D > 64) return 0;
  return B * H * N * Nk * (D + extra_d) <= MAX_WORK;
}

/* Linear operations: at most 2^16 elements (views the API rejects pass). */
static int small_view(const ditattn_tensor *t) {
  if (!t) return 1;
  for (int i = 0; i < 4; i++)
    if (t->shape[i] < 1) return 1;
  for (int i = 0; i < 4; i++)
    if (t->shape[i] > 65536) return 0;
  return t->shape[0] * t->shape[1] <= 65536 && t->shape[0] * t->shape[1] * t->shape[2] <= 65536 &&
         t->shape[0] * t->shape[1] * t->shape[2] * t->shape[3] <= 65536;
}

static int64_t rows_ok(const ditattn_tensor *t) { return t->shape[0] * t->shape[1] * t->shape[2]; }

static ditattn_llsa_params llsa_params(fz *f, float scale) {
  ditattn_llsa_params p = ditattn_llsa_params_default();
  p.block = dim(f, 2 + (u8(f) & 3));
  p.levels = (int)(u8(f) % 11) - 1;
  for (int l = 0; l < DITATTN_LLSA_MAX_LEVELS; l++) p.topk[l] = dim(f, 1 + (u8(f) & 3));
  p.scale = scale;
  return p;
}

static ditattn_ropeslr_params slr_params(fz *f, int64_t T, int64_t Hg, int64_t W) {
  static const double fractions[8] = {0.1, 0.5, 1.0, 0.0, -1.0, 1.5, NAN, 0.01};
  ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
  p.block = dim(f, 1 + (u8(f) & 3));
  p.policy = (ditattn_slr_policy)(u8(f) % 4);
  p.rho = fractions[u8(f) & 7];
  p.topk = dim(f, 1 + (u8(f) & 3));
  p.sqrt_c = fractions[u8(f) & 7] * 2.0;
  p.force_own_block = (int)(u8(f) % 3);
  p.rank = dim(f, 1 + (u8(f) & 3));
  p.feature = (ditattn_slr_feature)(u8(f) % 3);
  p.scale = scale_value(f);
  p.grid[0] = dim(f, T), p.grid[1] = dim(f, Hg), p.grid[2] = dim(f, W);
  return p;
}

static ditattn_context *g_ref, *g_cpu;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_ref) {
    if (ditattn_context_create(DITATTN_BACKEND_REF, &g_ref) != DITATTN_OK) abort();
    if (ditattn_backend_compiled(DITATTN_BACKEND_CPU) &&
        ditattn_context_create(DITATTN_BACKEND_CPU, &g_cpu) != DITATTN_OK)
      g_cpu = NULL;
  }
  /* The last byte's top bit picks the backend without shifting the decoding. */
  ditattn_context *const g_ctx = size && (data[size - 1] & 0x80) && g_cpu ? g_cpu : g_ref;
  fz f;
  memset(&f, 0, sizeof f);
  f.p = data, f.n = size, f.rng = size;
  const uint8_t op = u8(&f) % 12;
#ifdef FUZZ_STATS
  g_op = op;
  static int registered;
  if (!registered) registered = !atexit(print_stats);
#endif
  /* Shared shape hints keep most views consistent, so calls get past the
   * first shape check and reach the deeper rules. */
  const int64_t B = 1 + (u8(&f) & 1), H = 1 + (u8(&f) & 1), Nk = 1 + (u8(&f) & 31),
                D = 1 + (u8(&f) & 7);
  const int64_t T = 1 + (u8(&f) & 3), Hg = 1 + (u8(&f) & 3), Wg = 1 + (u8(&f) & 3);
  const int raster = u8(&f) & 1;
  const int64_t N = raster ? T * Hg * Wg : 1 + (u8(&f) & 31);
  ditattn_tensor tq, tk, tv, to, tdo, tdq, tdk, tdv, tx, ty;
  ditattn_status st = DITATTN_OK;
  ditattn_context *ctx = (u8(&f) == 0xff) ? NULL : g_ctx;

  switch (op) {
  case 0:
  case 1: { /* dense forward, then (op 1) backward on its results */
    ditattn_tensor *q = tensor(&f, &tq, B, H, N, D), *k = tensor(&f, &tk, B, H, Nk, D),
                   *v = tensor(&f, &tv, B, H, Nk, D), *out = tensor(&f, &to, B, H, N, D);
    float *lse = floats(&f, rows_of(&f, q), op == 0), scale = scale_value(&f);
    if (f.skip || !small_work(q, k, 0)) break;
    st = ditattn_dense_forward(ctx, q, k, v, scale, out, lse);
    expect_status(st);
    if (st == DITATTN_OK) expect(finite_view(out) && finite_floats(lse, rows_ok(q)));
    if (op == 0) break;
    const int forward_ok = st == DITATTN_OK;
    ditattn_tensor *dout = tensor(&f, &tdo, B, H, N, D), *dq = tensor(&f, &tdq, B, H, N, D),
                   *dk = tensor(&f, &tdk, B, H, Nk, D), *dv = tensor(&f, &tdv, B, H, Nk, D);
    if (f.skip) break;
    st = ditattn_dense_backward(ctx, q, k, v, out, lse, dout, scale, dq, dk, dv);
    expect_status(st);
    if (st == DITATTN_OK && forward_ok)
      expect(finite_view(dq) && finite_view(dk) && finite_view(dv));
    break;
  }
  case 2:
  case 3: { /* LLSA forward (+ selection), then (op 3) backward */
    ditattn_tensor *q = tensor(&f, &tq, B, H, N, D), *k = tensor(&f, &tk, B, H, N, D),
                   *v = tensor(&f, &tv, B, H, N, D), *out = tensor(&f, &to, B, H, N, D);
    float *lse = floats(&f, rows_of(&f, q), op == 2);
    const int64_t qB = q ? q->shape[0] : B, qH = q ? q->shape[1] : H, qN = q ? q->shape[2] : N;
    ditattn_llsa_params p = llsa_params(&f, scale_value(&f));
    ditattn_llsa_selection sel;
    memset(&sel, 0, sizeof sel);
    int64_t counts[DITATTN_LLSA_MAX_LEVELS] = {0};
    const int with_sel = u8(&f) & 1;
    for (int l = 0; with_sel && l < p.levels && l < DITATTN_LLSA_MAX_LEVELS; l++) {
      counts[l] = ditattn_llsa_selection_count(&p, qB, qH, qN, l + 1);
      if (counts[l] > 0 && counts[l] <= MAX_SPAN)
        sel.sel[l] = fz_alloc(&f, (size_t)counts[l] * sizeof(int32_t));
      else
        counts[l] = 0;
    }
    if (f.skip || !small_work(q, k, 0)) break;
    st = ditattn_llsa_forward(ctx, &p, q, k, v, out, lse, with_sel ? &sel : NULL);
    expect_status(st);
    if (st == DITATTN_OK) {
      expect(finite_view(out) && finite_floats(lse, rows_ok(q)));
      int64_t bl = 1;
      for (int l = 0; l < p.levels; l++) {
        if (bl <= q->shape[2])
          bl = p.block > q->shape[2] ? q->shape[2] + 1
                                     : bl * p.block; /* b^(l+1), saturated past N */
        const int64_t n_blocks = q->shape[2] / bl + (q->shape[2] % bl != 0);
        for (int64_t i = 0; sel.sel[l] && i < counts[l]; i++)
          expect(sel.sel[l][i] >= -1 && sel.sel[l][i] < n_blocks);
      }
    }
    if (op == 2) break;
    const int forward_ok = st == DITATTN_OK;
    ditattn_tensor *dout = tensor(&f, &tdo, B, H, N, D), *dq = tensor(&f, &tdq, B, H, N, D),
                   *dk = tensor(&f, &tdk, B, H, N, D), *dv = tensor(&f, &tdv, B, H, N, D);
    if (f.skip) break;
    st = ditattn_llsa_backward(ctx, &p, q, k, v, out, lse, dout, dq, dk, dv);
    expect_status(st);
    if (st == DITATTN_OK && forward_ok)
      expect(finite_view(dq) && finite_view(dk) && finite_view(dv));
    break;
  }
  case 4: { /* RoPE, raster (pos NULL) or given positions, sometimes in place */
    static const double thetas[8] = {10000.0, 256.0, 1.5, 0.0, -1.0, NAN, INFINITY, 1e30};
    ditattn_rope_params p = {
        {dim(&f, T), dim(&f, Hg), dim(&f, Wg)},
        {dim(&f, 2 * (u8(&f) & 1)), dim(&f, 2 * (u8(&f) & 1)), dim(&f, 2 * (u8(&f) & 1))},
        thetas[u8(&f) & 7],
        (ditattn_rope_pairing)(u8(&f) % 3)};
    ditattn_tensor *x = tensor(&f, &tx, B, H, N, 2 * D);
    const int in_place = u8(&f) & 1;
    ditattn_tensor *y = in_place ? x : tensor(&f, &ty, B, H, N, 2 * D);
    /* The caller contract: pos holds x's N triples. */
    const int32_t *pos = raster ? NULL : positions(&f, p.grid, tokens(&f, x));
    const ditattn_direction dir = (ditattn_direction)(u8(&f) % 3);
    if (f.skip || !small_view(x) || !small_view(y)) break;
    st = ditattn_rope_apply(ctx, &p, pos, dir, x, y);
    expect_status(st);
    if (st == DITATTN_OK) expect(finite_view(y));
    break;
  }
  case 5:
  case 6: { /* token orders */
    ditattn_order_params p = {(ditattn_order_kind)(u8(&f) % 4),
                              {dim(&f, T), dim(&f, Hg), dim(&f, Wg)},
                              {dim(&f, 1 + (u8(&f) & 1)), dim(&f, 2), dim(&f, 1)}};
    int64_t count = 1;
    for (int a = 0; a < 3; a++) count *= p.grid[a] > 0 && p.grid[a] < 64 ? p.grid[a] : 0;
    if (op == 6) {
      if (count < 1) { /* invalid or too large grids: the call must reject or be skipped */
        int64_t one;
        int32_t pos3[3];
        if (p.grid[0] < 1 || p.grid[1] < 1 || p.grid[2] < 1) {
          expect(ditattn_order_permutation(&p, &one) != DITATTN_OK);
          expect(ditattn_order_positions(&p, pos3) != DITATTN_OK);
        }
        break;
      }
      int64_t *perm = fz_alloc(&f, (size_t)count * sizeof *perm);
      int32_t *pos = fz_alloc(&f, (size_t)count * 3 * sizeof *pos);
      if (!perm || !pos) break;
      st = ditattn_order_permutation(&p, perm);
      expect_status(st);
      if (st == DITATTN_OK) {
        unsigned char *seen = calloc((size_t)count, 1);
        for (int64_t s = 0; s < count; s++) {
          expect(perm[s] >= 0 && perm[s] < count && !seen[perm[s]]);
          seen[perm[s]] = 1;
        }
        free(seen);
      }
      expect_status(ditattn_order_positions(&p, pos));
      break;
    }
    ditattn_tensor *x = tensor(&f, &tx, B, H, N, D), *y = tensor(&f, &ty, B, H, N, D);
    if (f.skip || !small_view(x) || !small_view(y)) break;
    st = ditattn_order_apply(ctx, &p, (ditattn_direction)(u8(&f) % 3), x, y);
    expect_status(st);
    if (st == DITATTN_OK) expect(finite_view(y));
    break;
  }
  case 7: { /* pooling */
    const int64_t block = dim(&f, 1 + (u8(&f) & 7));
    const int64_t n = block > 0 ? N / block + (N % block != 0) : 1;
    ditattn_tensor *x = tensor(&f, &tx, B, H, N, D), *y = tensor(&f, &ty, B, H, n, D);
    if (f.skip || !small_view(x) || !small_view(y)) break;
    st = ditattn_pool_mean(ctx, x, block, y);
    expect_status(st);
    if (st == DITATTN_OK) expect(finite_view(y));
    break;
  }
  case 8: { /* LSE merge; -inf accumulator entries are legal (empty) */
    ditattn_tensor *acc = tensor(&f, &to, B, H, N, D), *part = tensor(&f, &tx, B, H, N, D);
    float *lse_acc = floats(&f, rows_of(&f, acc), 1), *lse_part = floats(&f, rows_of(&f, acc), 1);
    if (f.skip || !small_view(acc) || !small_view(part)) break;
    if (lse_acc && (u8(&f) & 1)) lse_acc[0] = -INFINITY;
    st = ditattn_lse_merge(ctx, acc, lse_acc, part, lse_part);
    expect_status(st);
    if (st == DITATTN_OK) expect(finite_view(acc) && finite_floats(lse_acc, rows_ok(acc)));
    break;
  }
  case 9:
  case 10: { /* RoPeSLR forward / backward */
    ditattn_ropeslr_params p = slr_params(&f, T, Hg, Wg);
    const int64_t r = p.rank > 0 && p.rank < 64 ? p.rank : 1;
    const int64_t rows[6] = {D, D, p.grid[0], p.grid[1], p.grid[2], D};
    const int64_t cols[6] = {r, r, r, r, r, D};
    ditattn_tensor w[6], dw[6];
    ditattn_tensor *q = tensor(&f, &tq, B, H, N, D), *k = tensor(&f, &tk, B, H, N, D),
                   *v = tensor(&f, &tv, B, H, N, D);
    for (int i = 0; i < 6; i++) {
      int64_t rws = rows[i] > 0 && rows[i] < 64 ? rows[i] : 1;
      if (!tensor(&f, &w[i], 1, H, rws, cols[i])) memset(&w[i], 0, sizeof w[i]);
    }
    ditattn_ropeslr_weights weights = {w[0], w[1], w[2], w[3], w[4], w[5]};
    const int32_t *pos = raster ? NULL : positions(&f, p.grid, tokens(&f, q));
    if (op == 9) {
      ditattn_tensor *out = tensor(&f, &to, B, H, N, D);
      float *lse = floats(&f, rows_of(&f, q), 1);
      int64_t count =
          q ? ditattn_ropeslr_selection_count(&p, q->shape[0], q->shape[1], q->shape[2]) : 0;
      int32_t *sel = (u8(&f) & 1) && count > 0 && count <= MAX_SPAN
                         ? fz_alloc(&f, (size_t)count * sizeof(int32_t))
                         : NULL;
      if (f.skip || !small_work(q, k, r)) break;
      st = ditattn_ropeslr_forward(ctx, &p, &weights, pos, q, k, v, out, lse, sel);
      expect_status(st);
      if (st == DITATTN_OK) {
        expect(finite_view(out) && finite_floats(lse, rows_ok(q)));
        const int64_t n_blocks = q->shape[2] / p.block + (q->shape[2] % p.block != 0);
        for (int64_t i = 0; sel && i < count; i++) expect(sel[i] >= 0 && sel[i] < n_blocks);
      }
      break;
    }
    ditattn_tensor *dout = tensor(&f, &tdo, B, H, N, D), *dq = tensor(&f, &tdq, B, H, N, D),
                   *dk = tensor(&f, &tdk, B, H, N, D), *dv = tensor(&f, &tdv, B, H, N, D);
    for (int i = 0; i < 6; i++) {
      int64_t rws = rows[i] > 0 && rows[i] < 64 ? rows[i] : 1;
      if (!tensor(&f, &dw[i], 1, H, rws, cols[i])) memset(&dw[i], 0, sizeof dw[i]);
    }
    ditattn_ropeslr_weights dweights = {dw[0], dw[1], dw[2], dw[3], dw[4], dw[5]};
    if (f.skip || !small_work(q, k, r)) break;
    st = ditattn_ropeslr_backward(ctx, &p, &weights, pos, q, k, v, dout, dq, dk, dv, &dweights);
    expect_status(st);
    if (st == DITATTN_OK) {
      expect(finite_view(dq) && finite_view(dk) && finite_view(dv));
      for (int i = 0; i < 6; i++) expect(finite_view(&dw[i]));
    }
    break;
  }
  default: { /* small pure functions */
    ditattn_llsa_params lp = llsa_params(&f, 0.0f);
    int64_t c = ditattn_llsa_selection_count(&lp, dim(&f, B), dim(&f, H), dim(&f, N),
                                             (int)(u8(&f) % 12) - 1);
    expect(c >= 0);
    ditattn_ropeslr_params sp = slr_params(&f, T, Hg, Wg);
    int64_t K = ditattn_ropeslr_topk(&sp, dim(&f, N));
    expect(K >= 0);
    ditattn_rope_params rp;
    expect_status(ditattn_rope_params_preset((ditattn_rope_preset)(u8(&f) % 3), dim(&f, 2 * D), T,
                                             Hg, Wg, &rp));
    if (ctx) expect_status(ditattn_context_set_num_threads(ctx, (int)(int8_t)u8(&f)));
    expect(ditattn_strerror((ditattn_status)(int8_t)u8(&f)) != NULL);
    break;
  }
  }
  for (int i = 0; i < f.n_allocs; i++) free(f.allocs[i]);
  return 0;
}
