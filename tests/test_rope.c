/* 3D RoPE: rotation properties, inverse, relative positions, both pairings,
 * in place, untouched tail channels, presets. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_params(const char *what, const ditattn_rope_params *p, int64_t D, double err) {
  fprintf(stderr,
          "%s: D=%lld dims=(%lld,%lld,%lld) theta=%g pairing=%d grid=(%lld,%lld,%lld) err=%.3e\n",
          what, (long long)D, (long long)p->dims[0], (long long)p->dims[1], (long long)p->dims[2],
          p->theta, (int)p->pairing, (long long)p->grid[0], (long long)p->grid[1],
          (long long)p->grid[2], err);
}

/* Random even dims with sum <= D (sometimes < D, leaving a tail). */
static ditattn_rope_params random_params(int64_t D, ditattn_rope_pairing pairing) {
  ditattn_rope_params p = {
      {tu_rand_int(1, 6), tu_rand_int(1, 9), tu_rand_int(1, 9)}, {0, 0, 0}, 0.0, pairing};
  int64_t left = D / 2; /* pairs to hand out */
  for (int a = 0; a < 3; a++) {
    const int64_t pairs = tu_rand_int(0, left);
    p.dims[a] = 2 * pairs;
    left -= pairs;
  }
  if (tu_rand_int(0, 1)) p.dims[2] += 2 * left; /* often use all channels */
  p.theta = tu_uniform(2.0, 20000.0);
  return p;
}

static int32_t *random_positions(const ditattn_rope_params *p, int64_t N) {
  int32_t *pos = malloc((size_t)N * 3 * sizeof *pos);
  assert_non_null(pos);
  for (int64_t i = 0; i < N; i++)
    for (int a = 0; a < 3; a++) pos[3 * i + a] = (int32_t)tu_rand_int(0, p->grid[a] - 1);
  return pos;
}

/* Channel pairs (i0, i1) rotated together, in order; returns their count. */
static int64_t rope_pairs(const ditattn_rope_params *p, int64_t (*pairs)[2], int *axis,
                          int64_t *freq_index) {
  int64_t n = 0, begin = 0;
  for (int a = 0; a < 3; a++) {
    const int64_t dim = p->dims[a];
    for (int64_t j = 0; j < dim / 2; j++, n++) {
      if (p->pairing == DITATTN_ROPE_INTERLEAVED) {
        pairs[n][0] = begin + 2 * j;
        pairs[n][1] = begin + 2 * j + 1;
      } else {
        pairs[n][0] = begin + j;
        pairs[n][1] = begin + j + dim / 2;
      }
      axis[n] = a;
      freq_index[n] = j;
    }
    begin += dim;
  }
  return n;
}

typedef struct rope_case {
  ditattn_rope_params p;
  int64_t B, H, N, D;
  int32_t *pos;
  tu_tensor x, y;
} rope_case;

static rope_case rope_case_new(ditattn_rope_pairing pairing) {
  rope_case c;
  c.D = 2 * tu_rand_int(1, 12);
  c.p = random_params(c.D, pairing);
  c.B = tu_rand_int(1, 2);
  c.H = tu_rand_int(1, 3);
  c.N = tu_rand_int(1, 20);
  c.pos = random_positions(&c.p, c.N);
  const int64_t pad = tu_rand_int(0, 2);
  const int bnhd = (int)tu_rand_int(0, 1);
  c.x = tu_tensor_new(c.B, c.H, c.N, c.D, pad, bnhd);
  c.y = tu_tensor_new(c.B, c.H, c.N, c.D, pad, !bnhd);
  tu_fill_uniform(&c.x);
  return c;
}

static void rope_case_free(rope_case *c) {
  free(c->pos);
  tu_tensor_free(&c->x);
  tu_tensor_free(&c->y);
}

static ditattn_context *ref_context(void) {
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  return ctx;
}

static void apply_ok(ditattn_context *ctx, const rope_case *c, ditattn_direction dir,
                     const ditattn_tensor *x, ditattn_tensor *y) {
  ditattn_status st = ditattn_rope_apply(ctx, &c->p, c->pos, dir, x, y);
  if (st != DITATTN_OK) {
    print_params(ditattn_last_error(ctx), &c->p, c->D, 0.0);
    fail();
  }
}

/* Each pair is rotated by exactly pos_a · θ^(−2j/d_a) (spec §5), which also
 * means its norm is preserved; tail channels are copied bit for bit. */
static void rotates_each_pair_by_its_angle(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  for (int trial = 0; trial < 40; trial++) {
    rope_case c = rope_case_new((ditattn_rope_pairing)(trial % 2));
    const ditattn_direction dir = (ditattn_direction)(trial / 2 % 2);
    apply_ok(ctx, &c, dir, &c.x.t, &c.y.t);
    int64_t pairs[64][2], freq[64];
    int axis[64];
    const int64_t npairs = rope_pairs(&c.p, pairs, axis, freq);
    const int64_t rotated = c.p.dims[0] + c.p.dims[1] + c.p.dims[2];
    for (int64_t b = 0; b < c.B; b++)
      for (int64_t h = 0; h < c.H; h++)
        for (int64_t n = 0; n < c.N; n++) {
          for (int64_t k = 0; k < npairs; k++) {
            const int a = axis[k];
            const double phi = (dir == DITATTN_INVERSE ? -1.0 : 1.0) * c.pos[3 * n + a] *
                               pow(c.p.theta, -2.0 * (double)freq[k] / (double)c.p.dims[a]);
            const double x0 = *tu_at(&c.x.t, b, h, n, pairs[k][0]);
            const double x1 = *tu_at(&c.x.t, b, h, n, pairs[k][1]);
            const double y0 = *tu_at(&c.y.t, b, h, n, pairs[k][0]);
            const double y1 = *tu_at(&c.y.t, b, h, n, pairs[k][1]);
            const double e0 = x0 * cos(phi) - x1 * sin(phi), e1 = x0 * sin(phi) + x1 * cos(phi);
            const double err = fabs(y0 - e0) + fabs(y1 - e1);
            const double norm_err = fabs(hypot(y0, y1) - hypot(x0, x1));
            if (!(err <= 1e-6)) { /* NaN fails too */
              print_params("rope rotation angle", &c.p, c.D, err);
              fail();
            }
            if (!(norm_err <= 1e-6 * (1.0 + hypot(x0, x1)))) {
              print_params("rope changed a pair's norm", &c.p, c.D, norm_err);
              fail();
            }
          }
          for (int64_t d = rotated; d < c.D; d++)
            if (memcmp(tu_at(&c.y.t, b, h, n, d), tu_at(&c.x.t, b, h, n, d), sizeof(float))) {
              print_params("rope touched a tail channel", &c.p, c.D, 0.0);
              fail();
            }
        }
    rope_case_free(&c);
  }
  ditattn_context_destroy(ctx);
}

static void inverse_restores(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  for (int trial = 0; trial < 30; trial++) {
    rope_case c = rope_case_new((ditattn_rope_pairing)(trial % 2));
    apply_ok(ctx, &c, DITATTN_FORWARD, &c.x.t, &c.y.t);
    apply_ok(ctx, &c, DITATTN_INVERSE, &c.y.t, &c.y.t); /* in place */
    const double err = tu_rel_err(&c.y.t, &c.x.t);
    if (!(err <= 1e-6)) {
      print_params("inverse(rope(x)) != x", &c.p, c.D, err);
      fail();
    }
    rope_case_free(&c);
  }
  ditattn_context_destroy(ctx);
}

static void in_place_equals_out_of_place(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  for (int trial = 0; trial < 30; trial++) {
    rope_case c = rope_case_new((ditattn_rope_pairing)(trial % 2));
    const ditattn_direction dir = (ditattn_direction)(trial / 2 % 2);
    apply_ok(ctx, &c, dir, &c.x.t, &c.y.t);
    apply_ok(ctx, &c, dir, &c.x.t, &c.x.t);
    for (int64_t b = 0; b < c.B; b++)
      for (int64_t h = 0; h < c.H; h++)
        for (int64_t n = 0; n < c.N; n++)
          if (memcmp(tu_at(&c.x.t, b, h, n, 0), tu_at(&c.y.t, b, h, n, 0),
                     (size_t)c.D * sizeof(float))) {
            print_params("in place differs from out of place", &c.p, c.D, 0.0);
            fail();
          }
    rope_case_free(&c);
  }
  ditattn_context_destroy(ctx);
}

static double dot_rows(const ditattn_tensor *t, int64_t n0, int64_t n1, int64_t D) {
  double s = 0.0;
  for (int64_t d = 0; d < D; d++) s += (double)*tu_at(t, 0, 0, n0, d) * *tu_at(t, 0, 0, n1, d);
  return s;
}

/* q_m · k_n after RoPE depends on m − n only (per axis): tokens 0,1 hold
 * (q at m, k at n) and tokens 2,3 the same vectors at (m + s, n + s). */
static void dot_depends_on_relative_position(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  for (int trial = 0; trial < 30; trial++) {
    rope_case c = rope_case_new((ditattn_rope_pairing)(trial % 2));
    c.p.grid[0] = c.p.grid[1] = c.p.grid[2] = 64;
    const int64_t D = c.D;
    tu_tensor x = tu_tensor_new(1, 1, 4, D, 1, 0), y = tu_tensor_new(1, 1, 4, D, 1, 0);
    for (int64_t d = 0; d < D; d++) {
      *tu_at(&x.t, 0, 0, 0, d) = *tu_at(&x.t, 0, 0, 2, d) = (float)tu_uniform(-1, 1);
      *tu_at(&x.t, 0, 0, 1, d) = *tu_at(&x.t, 0, 0, 3, d) = (float)tu_uniform(-1, 1);
    }
    int32_t pos[12];
    for (int a = 0; a < 3; a++) {
      const int32_t m = (int32_t)tu_rand_int(0, 31), n = (int32_t)tu_rand_int(0, 31);
      const int32_t shift = (int32_t)tu_rand_int(0, 32);
      pos[a] = m;
      pos[3 + a] = n;
      pos[6 + a] = m + shift;
      pos[9 + a] = n + shift;
    }
    assert_int_equal(ditattn_rope_apply(ctx, &c.p, pos, DITATTN_FORWARD, &x.t, &y.t), DITATTN_OK);
    const double d01 = dot_rows(&y.t, 0, 1, D), d23 = dot_rows(&y.t, 2, 3, D);
    const double scale = sqrt(dot_rows(&x.t, 0, 0, D) * dot_rows(&x.t, 1, 1, D));
    if (!(fabs(d01 - d23) <= 1e-5 * scale)) {
      print_params("rope dot product not shift-invariant", &c.p, D, fabs(d01 - d23));
      fail();
    }
    tu_tensor_free(&x);
    tu_tensor_free(&y);
    rope_case_free(&c);
  }
  ditattn_context_destroy(ctx);
}

/* pos = NULL means raster order: same as passing the raster positions. */
static void null_positions_mean_raster(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  ditattn_rope_params p;
  assert_int_equal(ditattn_rope_params_preset(DITATTN_ROPE_PRESET_WAN21, 12, 2, 3, 4, &p),
                   DITATTN_OK);
  const int64_t N = 24;
  tu_tensor x = tu_tensor_new(1, 2, N, 12, 0, 1), y = tu_tensor_new(1, 2, N, 12, 0, 1);
  tu_tensor z = tu_tensor_new(1, 2, N, 12, 0, 1);
  tu_fill_uniform(&x);
  ditattn_order_params raster = {DITATTN_ORDER_RASTER, {2, 3, 4}, {1, 1, 1}};
  int32_t pos[3 * 24];
  assert_int_equal(ditattn_order_positions(&raster, pos), DITATTN_OK);
  assert_int_equal(ditattn_rope_apply(ctx, &p, NULL, DITATTN_FORWARD, &x.t, &y.t), DITATTN_OK);
  assert_int_equal(ditattn_rope_apply(ctx, &p, pos, DITATTN_FORWARD, &x.t, &z.t), DITATTN_OK);
  assert_true(tu_rel_err(&y.t, &z.t) == 0.0);
  assert_true(tu_rel_err(&y.t, &x.t) > 1e-3); /* it did rotate */
  tu_tensor_free(&x);
  tu_tensor_free(&y);
  tu_tensor_free(&z);
  ditattn_context_destroy(ctx);
}

static void presets_match_spec(void **state) {
  (void)state;
  ditattn_rope_params p;
  assert_int_equal(ditattn_rope_params_preset(DITATTN_ROPE_PRESET_WAN21, 128, 21, 30, 52, &p),
                   DITATTN_OK);
  assert_int_equal(p.dims[0], 44);
  assert_int_equal(p.dims[1], 42);
  assert_int_equal(p.dims[2], 42);
  assert_true(p.theta == 10000.0);
  assert_int_equal(p.pairing, DITATTN_ROPE_INTERLEAVED);
  assert_int_equal(p.grid[0], 21);
  assert_int_equal(p.grid[1], 30);
  assert_int_equal(p.grid[2], 52);
  assert_int_equal(ditattn_rope_params_preset(DITATTN_ROPE_PRESET_HUNYUAN, 128, 1, 2, 3, &p),
                   DITATTN_OK);
  assert_int_equal(p.dims[0], 16);
  assert_int_equal(p.dims[1], 56);
  assert_int_equal(p.dims[2], 56);
  assert_true(p.theta == 256.0);
  /* Other head sizes: even parts that fit in D. */
  for (int64_t D = 2; D <= 256; D += 2)
    for (int preset = 0; preset < 2; preset++) {
      assert_int_equal(ditattn_rope_params_preset((ditattn_rope_preset)preset, D, 1, 1, 1, &p),
                       DITATTN_OK);
      int64_t sum = 0;
      for (int a = 0; a < 3; a++) {
        assert_true(p.dims[a] >= 0 && p.dims[a] % 2 == 0);
        sum += p.dims[a];
      }
      assert_true(sum <= D);
    }
  assert_int_equal(ditattn_rope_params_preset(DITATTN_ROPE_PRESET_WAN21, 127, 1, 1, 1, &p),
                   DITATTN_ERR_INVALID_ARGUMENT);
  assert_int_equal(ditattn_rope_params_preset((ditattn_rope_preset)5, 128, 1, 1, 1, &p),
                   DITATTN_ERR_INVALID_ARGUMENT);
  assert_int_equal(ditattn_rope_params_preset(DITATTN_ROPE_PRESET_WAN21, 128, 1, 1, 1, NULL),
                   DITATTN_ERR_NULL_POINTER);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rotates_each_pair_by_its_angle),
      cmocka_unit_test(inverse_restores),
      cmocka_unit_test(in_place_equals_out_of_place),
      cmocka_unit_test(dot_depends_on_relative_position),
      cmocka_unit_test(null_positions_mean_raster),
      cmocka_unit_test(presets_match_spec),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
