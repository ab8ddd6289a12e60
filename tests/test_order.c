/* Token orders: permutations, the spec's Morton table, tile order by hand,
 * positions, and the gather op applying them. */
#include "test_util.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at: allocation-failure paths */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t grid_count(const ditattn_order_params *p) {
  return p->grid[0] * p->grid[1] * p->grid[2];
}

static void print_params(const char *what, const ditattn_order_params *p) {
  fprintf(stderr, "%s: order kind=%d grid=(%lld,%lld,%lld) tile=(%lld,%lld,%lld)\n", what,
          (int)p->kind, (long long)p->grid[0], (long long)p->grid[1], (long long)p->grid[2],
          (long long)p->tile[0], (long long)p->tile[1], (long long)p->tile[2]);
}

static int64_t *permutation(const ditattn_order_params *p) {
  int64_t *perm = malloc((size_t)grid_count(p) * sizeof *perm);
  assert_non_null(perm);
  for (int64_t s = 0; s < grid_count(p); s++) perm[s] = -7; /* poison */
  assert_int_equal(ditattn_order_permutation(p, perm), DITATTN_OK);
  return perm;
}

/* Every raster index appears exactly once. */
static int is_permutation(const int64_t *perm, int64_t n) {
  char *seen = calloc((size_t)n, 1);
  assert_non_null(seen);
  int ok = 1;
  for (int64_t s = 0; s < n && ok; s++) {
    if (perm[s] < 0 || perm[s] >= n || seen[perm[s]])
      ok = 0;
    else
      seen[perm[s]] = 1;
  }
  free(seen);
  return ok;
}

/* Independent Morton key: walk bits from the top, appending t, y, x. */
static uint64_t test_morton_key(int64_t t, int64_t y, int64_t x) {
  uint64_t key = 0;
  for (int bit = 20; bit >= 0; bit--) {
    key = (key << 1) | (uint64_t)((t >> bit) & 1);
    key = (key << 1) | (uint64_t)((y >> bit) & 1);
    key = (key << 1) | (uint64_t)((x >> bit) & 1);
  }
  return key;
}

static ditattn_order_params random_params(ditattn_order_kind kind) {
  ditattn_order_params p = {kind,
                            {tu_rand_int(1, 4), tu_rand_int(1, 9), tu_rand_int(1, 9)},
                            {tu_rand_int(1, 3), tu_rand_int(1, 4), tu_rand_int(1, 5)}};
  return p;
}

static void every_order_is_a_permutation(void **state) {
  (void)state;
  for (int trial = 0; trial < 30; trial++)
    for (int kind = 0; kind < 3; kind++) {
      ditattn_order_params p = random_params((ditattn_order_kind)kind);
      int64_t *perm = permutation(&p);
      if (!is_permutation(perm, grid_count(&p))) {
        print_params("not a permutation", &p);
        fail();
      }
      if (kind == DITATTN_ORDER_RASTER)
        for (int64_t s = 0; s < grid_count(&p); s++) assert_int_equal(perm[s], s);
      free(perm);
    }
}

static void morton_matches_spec_table(void **state) {
  (void)state;
  /* llsa.md §5: raster → sequence position for a 4×4 image (T = 1). */
  static const int64_t table[4][4] = {{0, 1, 4, 5}, {2, 3, 6, 7}, {8, 9, 12, 13}, {10, 11, 14, 15}};
  ditattn_order_params p = {DITATTN_ORDER_MORTON, {1, 4, 4}, {1, 1, 1}};
  int64_t *perm = permutation(&p);
  for (int64_t s = 0; s < 16; s++) {
    const int64_t y = perm[s] / 4, x = perm[s] % 4;
    if (table[y][x] != s)
      fprintf(stderr, "morton 4x4: sequence %lld holds (y=%lld,x=%lld), spec says %lld\n",
              (long long)s, (long long)y, (long long)x, (long long)table[y][x]);
    assert_int_equal(table[y][x], s);
  }
  free(perm);
}

/* t is the most significant bit of each triple, so a 2×2×2 grid stays raster,
 * and in a 4×4×4 grid every aligned run of 8 tokens is an aligned 2×2×2 cube. */
static void morton_video_cubes(void **state) {
  (void)state;
  ditattn_order_params small = {DITATTN_ORDER_MORTON, {2, 2, 2}, {1, 1, 1}};
  int64_t *perm = permutation(&small);
  for (int64_t s = 0; s < 8; s++) assert_int_equal(perm[s], s);
  free(perm);

  ditattn_order_params cube = {DITATTN_ORDER_MORTON, {4, 4, 4}, {1, 1, 1}};
  perm = permutation(&cube);
  for (int64_t run = 0; run < 8; run++) {
    const int64_t r0 = perm[8 * run];
    const int64_t t0 = r0 / 16, y0 = r0 / 4 % 4, x0 = r0 % 4;
    assert_true(t0 % 2 == 0 && y0 % 2 == 0 && x0 % 2 == 0);
    for (int64_t i = 0; i < 8; i++) {
      const int64_t r = perm[8 * run + i];
      /* inside the run: t, y, x bits of i (t most significant) */
      assert_int_equal(r / 16, t0 + (i >> 2 & 1));
      assert_int_equal(r / 4 % 4, y0 + (i >> 1 & 1));
      assert_int_equal(r % 4, x0 + (i & 1));
    }
  }
  free(perm);
}

static void morton_non_power_of_two_is_sorted(void **state) {
  (void)state;
  const int64_t grids[][3] = {{3, 5, 6}, {1, 7, 3}, {5, 1, 9}, {2, 6, 6}, {7, 3, 1}};
  for (size_t g = 0; g < sizeof grids / sizeof grids[0]; g++) {
    ditattn_order_params p = {
        DITATTN_ORDER_MORTON, {grids[g][0], grids[g][1], grids[g][2]}, {1, 1, 1}};
    const int64_t H = p.grid[1], W = p.grid[2], n = grid_count(&p);
    int64_t *perm = permutation(&p);
    assert_true(is_permutation(perm, n));
    for (int64_t s = 1; s < n; s++) {
      const int64_t a = perm[s - 1], b = perm[s];
      const uint64_t ka = test_morton_key(a / (H * W), a / W % H, a % W);
      const uint64_t kb = test_morton_key(b / (H * W), b / W % H, b % W);
      if (!(ka < kb || (ka == kb && a < b))) {
        print_params("morton not stably sorted", &p);
        fail();
      }
    }
    free(perm);
  }
}

static void tile_order_by_hand(void **state) {
  (void)state;
  /* 3×5 image, 2×2 tiles: tiles (rows 0-1 | 2) × (cols 0-1 | 2-3 | 4), raster inside. */
  ditattn_order_params p2 = {DITATTN_ORDER_TILE, {1, 3, 5}, {1, 2, 2}};
  static const int64_t want2[15] = {0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14};
  int64_t *perm = permutation(&p2);
  for (int s = 0; s < 15; s++) assert_int_equal(perm[s], want2[s]);
  free(perm);
  /* T=3, H=2, W=3 with tiles (2,1,2): r = (t·2 + y)·3 + x; the t = 2 tiles are partial. */
  ditattn_order_params p3 = {DITATTN_ORDER_TILE, {3, 2, 3}, {2, 1, 2}};
  static const int64_t want3[18] = {0, 1, 6, 7, 2, 8, 3, 4, 9, 10, 5, 11, 12, 13, 14, 15, 16, 17};
  perm = permutation(&p3);
  for (int s = 0; s < 18; s++) assert_int_equal(perm[s], want3[s]);
  free(perm);
  /* A tile covering the whole grid is raster order. */
  ditattn_order_params big = {DITATTN_ORDER_TILE, {2, 3, 4}, {5, 5, 5}};
  perm = permutation(&big);
  for (int s = 0; s < 24; s++) assert_int_equal(perm[s], s);
  free(perm);
}

static void positions_agree_with_permutation(void **state) {
  (void)state;
  for (int trial = 0; trial < 20; trial++)
    for (int kind = 0; kind < 3; kind++) {
      ditattn_order_params p = random_params((ditattn_order_kind)kind);
      const int64_t H = p.grid[1], W = p.grid[2], n = grid_count(&p);
      int64_t *perm = permutation(&p);
      int32_t *pos = malloc((size_t)n * 3 * sizeof *pos);
      assert_non_null(pos);
      for (int64_t i = 0; i < 3 * n; i++) pos[i] = -1;
      assert_int_equal(ditattn_order_positions(&p, pos), DITATTN_OK);
      for (int64_t s = 0; s < n; s++) {
        if (pos[3 * s] != perm[s] / (H * W) || pos[3 * s + 1] != perm[s] / W % H ||
            pos[3 * s + 2] != perm[s] % W) {
          print_params("positions disagree", &p);
          fail();
        }
      }
      free(pos);
      free(perm);
    }
}

static void apply_gathers_and_inverts(void **state) {
  (void)state;
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  for (int trial = 0; trial < 12; trial++) {
    ditattn_order_params p = random_params((ditattn_order_kind)(trial % 3));
    const int64_t n = grid_count(&p), B = tu_rand_int(1, 2), Hh = tu_rand_int(1, 3);
    const int64_t D = tu_rand_int(1, 9), pad = tu_rand_int(0, 2);
    const int bnhd = (int)tu_rand_int(0, 1);
    tu_tensor x = tu_tensor_new(B, Hh, n, D, pad, bnhd);
    tu_tensor y = tu_tensor_new(B, Hh, n, D, pad, !bnhd);
    tu_tensor back = tu_tensor_new(B, Hh, n, D, pad, bnhd);
    tu_fill_uniform(&x);
    int64_t *perm = permutation(&p);
    assert_int_equal(ditattn_order_apply(ctx, &p, DITATTN_FORWARD, &x.t, &y.t), DITATTN_OK);
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < Hh; h++)
        for (int64_t s = 0; s < n; s++)
          for (int64_t d = 0; d < D; d++)
            if (*tu_at(&y.t, b, h, s, d) != *tu_at(&x.t, b, h, perm[s], d)) {
              print_params("forward gather wrong", &p);
              fail();
            }
    assert_int_equal(ditattn_order_apply(ctx, &p, DITATTN_INVERSE, &y.t, &back.t), DITATTN_OK);
    if (tu_rel_err(&back.t, &x.t) != 0.0) {
      print_params("inverse(forward(x)) != x", &p);
      fail();
    }
    free(perm);
    tu_tensor_free(&x);
    tu_tensor_free(&y);
    tu_tensor_free(&back);
  }
  ditattn_context_destroy(ctx);
}

static void allocation_failures_are_reported(void **state) {
  (void)state;
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  ditattn_order_params p = {DITATTN_ORDER_MORTON, {2, 3, 5}, {1, 1, 1}};
  tu_tensor x = tu_tensor_new(1, 1, 30, 4, 0, 0), y = tu_tensor_new(1, 1, 30, 4, 0, 0);
  tu_fill_uniform(&x);
  /* Allocation 1: the permutation; 2: Morton's sort buffer. */
  for (int k = 1; k <= 2; k++) {
    dt_debug_fail_alloc_at(k);
    assert_int_equal(ditattn_order_apply(ctx, &p, DITATTN_FORWARD, &x.t, &y.t),
                     DITATTN_ERR_OUT_OF_MEMORY);
    assert_true(strlen(ditattn_last_error(ctx)) > 0);
  }
  int32_t pos[90];
  for (int k = 1; k <= 2; k++) {
    dt_debug_fail_alloc_at(k);
    assert_int_equal(ditattn_order_positions(&p, pos), DITATTN_ERR_OUT_OF_MEMORY);
  }
  dt_debug_fail_alloc_at(0);
  assert_int_equal(ditattn_order_apply(ctx, &p, DITATTN_FORWARD, &x.t, &y.t), DITATTN_OK);
  tu_tensor_free(&x);
  tu_tensor_free(&y);
  ditattn_context_destroy(ctx);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_order_is_a_permutation),
      cmocka_unit_test(morton_matches_spec_table),
      cmocka_unit_test(morton_video_cubes),
      cmocka_unit_test(morton_non_power_of_two_is_sorted),
      cmocka_unit_test(tile_order_by_hand),
      cmocka_unit_test(positions_agree_with_permutation),
      cmocka_unit_test(apply_gathers_and_inverts),
      cmocka_unit_test(allocation_failures_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
