/* See bench_inputs.h. */
#include "bench_inputs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

/* splitmix64: small, fast, reproducible across platforms. */
static uint64_t next_u64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static double uniform(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }
static double gaussian(uint64_t *s) {
  double u = uniform(s), w = uniform(s);
  return sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * PI * w);
}

/* One smooth field per channel: two plane waves of at most ~1.5 cycles per
 * axis, amplitude 1 each (channel variance ≈ 1). */
enum { WAVES = 2 };
typedef struct wave {
  double ft, fy, fx, phase;
} wave;

static void make_waves(uint64_t *rng, int64_t D, wave *w) {
  for (int64_t i = 0; i < D * WAVES; i++) {
    w[i].ft = 2.0 * PI * (uniform(rng) * 3.0 - 1.5);
    w[i].fy = 2.0 * PI * (uniform(rng) * 3.0 - 1.5);
    w[i].fx = 2.0 * PI * (uniform(rng) * 3.0 - 1.5);
    w[i].phase = 2.0 * PI * uniform(rng);
  }
}

static double field(const wave *w, int64_t d, double t, double y, double x) {
  double s = 0;
  for (int m = 0; m < WAVES; m++) {
    const wave *a = &w[d * WAVES + m];
    s += sin(a->ft * t + a->fy * y + a->fx * x + a->phase);
  }
  return s;
}

/* q and k share the content field F (so q_i·k_j peaks where F_i ≈ F_j, i.e.
 * near i), v has its own field G; each gets independent noise. */
static void fill_raster(const bench_shape *s, uint64_t seed, float *q, float *k, float *v, wave *wf,
                        wave *wg) {
  const int64_t T = s->grid[0], Hg = s->grid[1], W = s->grid[2], D = s->D;
  const int64_t N = T * Hg * W;
  const double noise = 0.3;
  uint64_t rng = seed;
  for (int64_t bh = 0; bh < s->B * s->H; bh++) {
    make_waves(&rng, D, wf);
    make_waves(&rng, D, wg);
    for (int64_t n = 0; n < N; n++) {
      const double t = (double)(n / (Hg * W)) / (double)T;
      const double y = (double)(n / W % Hg) / (double)Hg;
      const double x = (double)(n % W) / (double)W;
      float *qr = q + (bh * N + n) * D, *kr = k + (bh * N + n) * D, *vr = v + (bh * N + n) * D;
      for (int64_t d = 0; d < D; d++) {
        const double f = field(wf, d, t, y, x);
        qr[d] = (float)(f + noise * gaussian(&rng));
        kr[d] = (float)(f + noise * gaussian(&rng));
        vr[d] = (float)(field(wg, d, t, y, x) + noise * gaussian(&rng));
      }
    }
  }
}

static void raster_positions(const int64_t grid[3], int32_t *pos) {
  const int64_t N = grid[0] * grid[1] * grid[2];
  for (int64_t n = 0; n < N; n++) {
    pos[3 * n + 0] = (int32_t)(n / (grid[1] * grid[2]));
    pos[3 * n + 1] = (int32_t)(n / grid[2] % grid[1]);
    pos[3 * n + 2] = (int32_t)(n % grid[2]);
  }
}

/* RoPE on q and k with the raster positions (the data is still raster). */
static ditattn_status apply_rope(ditattn_context *ctx, const bench_shape *s, float *q, float *k) {
  const int64_t N = s->grid[0] * s->grid[1] * s->grid[2];
  ditattn_rope_params rope;
  ditattn_status st = ditattn_rope_params_preset(DITATTN_ROPE_PRESET_WAN21, s->D, s->grid[0],
                                                 s->grid[1], s->grid[2], &rope);
  float *qk[2] = {q, k};
  for (int i = 0; i < 2 && st == DITATTN_OK; i++) {
    ditattn_tensor x = ditattn_tensor_bhnd(qk[i], DITATTN_F32, s->B, s->H, N, s->D);
    st = ditattn_rope_apply(ctx, &rope, NULL, DITATTN_FORWARD, &x, &x);
  }
  return st;
}

/* Raster → Morton order for q, k, v (through tmp); *permuted counts the
 * tensors done, so a failure part-way can be detected. */
static ditattn_status apply_morton(ditattn_context *ctx, const bench_shape *s,
                                   const ditattn_order_params *order, float *q, float *k, float *v,
                                   float *tmp, size_t count, int *permuted) {
  const int64_t N = s->grid[0] * s->grid[1] * s->grid[2];
  float *qkv[3] = {q, k, v};
  *permuted = 0;
  for (int i = 0; i < 3; i++) {
    ditattn_tensor x = ditattn_tensor_bhnd(qkv[i], DITATTN_F32, s->B, s->H, N, s->D);
    ditattn_tensor y = ditattn_tensor_bhnd(tmp, DITATTN_F32, s->B, s->H, N, s->D);
    ditattn_status st = ditattn_order_apply(ctx, order, DITATTN_FORWARD, &x, &y);
    if (st != DITATTN_OK) return st;
    memcpy(qkv[i], tmp, count * sizeof *tmp);
    ++*permuted;
  }
  return DITATTN_OK;
}

ditattn_status bench_make_inputs(const bench_shape *s, uint64_t seed, float *q, float *k, float *v,
                                 int32_t *pos, char *note, size_t note_size) {
  const int64_t N = s->grid[0] * s->grid[1] * s->grid[2];
  const size_t count = (size_t)(s->B * s->H * N * s->D);
  wave *wf = malloc((size_t)s->D * WAVES * sizeof *wf);
  wave *wg = malloc((size_t)s->D * WAVES * sizeof *wg);
  float *tmp = malloc(count * sizeof *tmp);
  ditattn_context *ctx = NULL;
  if (!wf || !wg || !tmp) {
    free(wf);
    free(wg);
    free(tmp);
    snprintf(note, note_size, "out of memory");
    return DITATTN_ERR_OUT_OF_MEMORY;
  }
  fill_raster(s, seed, q, k, v, wf, wg);
  raster_positions(s->grid, pos);

  char rope_note[200] = "3D RoPE (Wan2.1 preset) on q, k";
  char order_note[200] = "tokens in Morton order";
  ditattn_status st = ditattn_context_create(DITATTN_BACKEND_REF, &ctx);
  if (st != DITATTN_OK) {
    snprintf(rope_note, sizeof rope_note, "RoPE skipped (no ref context)");
    snprintf(order_note, sizeof order_note, "raster order (no ref context)");
    goto done;
  }
  st = apply_rope(ctx, s, q, k);
  if (st != DITATTN_OK) {
    const char *why = ditattn_last_error(ctx)[0] ? ditattn_last_error(ctx) : ditattn_strerror(st);
    snprintf(rope_note, sizeof rope_note, "RoPE skipped (%s)", why);
    fill_raster(s, seed, q, k, v, wf, wg); /* undo a partial rotation */
  }
  const ditattn_order_params order = {
      DITATTN_ORDER_MORTON, {s->grid[0], s->grid[1], s->grid[2]}, {1, 1, 1}};
  int permuted = 0;
  st = apply_morton(ctx, s, &order, q, k, v, tmp, count, &permuted);
  if (st == DITATTN_OK) st = ditattn_order_positions(&order, pos);
  if (st != DITATTN_OK) {
    const char *why = ditattn_last_error(ctx)[0] ? ditattn_last_error(ctx) : ditattn_strerror(st);
    snprintf(order_note, sizeof order_note, "raster order (Morton skipped: %s)", why);
    raster_positions(s->grid, pos);
    if (permuted > 0) { /* some tensors permuted, some not: back to consistent raster data */
      fill_raster(s, seed, q, k, v, wf, wg);
      snprintf(rope_note, sizeof rope_note, "RoPE not applied");
    }
  }
done:
  ditattn_context_destroy(ctx);
  free(wf);
  free(wg);
  free(tmp);
  snprintf(note, note_size,
           "video-like synthetic: q,k = shared smooth field of (t,y,x) + 0.3 noise, v = own "
           "field + noise; %s; %s; seed %llu",
           rope_note, order_note, (unsigned long long)seed);
  return DITATTN_OK;
}
