/* CPU backend memory-bound operations against ref/: mean pooling,
 * log-sum-exp merge, 3D RoPE (both pairings, both directions, in place) and
 * token orders; 1 and 2 threads must agree bitwise. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-6

typedef struct dims {
  int64_t B, H, N, D, pad;
  int bnhd;
} dims;

static dims random_dims(int64_t max_n, int64_t max_d) {
  dims s = {tu_rand_int(1, 2),     tu_rand_int(1, 3), tu_rand_int(1, max_n),
            tu_rand_int(1, max_d), tu_rand_int(0, 2), (int)tu_rand_int(0, 1)};
  return s;
}

static void report(const char *what, const dims *s, const char *extra, double err) {
  fprintf(stderr,
          "FAIL %s: B=%lld H=%lld N=%lld D=%lld pad=%lld layout=%s %s err=%.3e (seed above)\n",
          what, (long long)s->B, (long long)s->H, (long long)s->N, (long long)s->D,
          (long long)s->pad, s->bnhd ? "bnhd" : "bhnd", extra, err);
}

static int same_bits(const ditattn_tensor *a, const ditattn_tensor *b) {
  for (int64_t ib = 0; ib < a->shape[0]; ib++)
    for (int64_t ih = 0; ih < a->shape[1]; ih++)
      for (int64_t n = 0; n < a->shape[2]; n++)
        if (memcmp(tu_at(a, ib, ih, n, 0), tu_at(b, ib, ih, n, 0),
                   (size_t)a->shape[3] * sizeof(float)) != 0)
          return 0;
  return 1;
}

/* Checks out[0] (ref) against out[1], out[2] (cpu, 1 and 2 threads). */
static void compare3(const char *what, const dims *s, const char *extra, tu_tensor out[3]) {
  const double err = tu_rel_err(&out[1].t, &out[0].t);
  if (!(err <= TOL)) report(what, s, extra, err), fail();
  if (!same_bits(&out[1].t, &out[2].t)) report(what, s, "1 vs 2 threads differ", 0.0), fail();
}

static void pool_matches_ref(void **state) {
  (void)state;
  tu_seed();
  ditattn_context *ctx[3] = {tu_context_new(DITATTN_BACKEND_REF, 0),
                             tu_context_new(DITATTN_BACKEND_CPU, 1),
                             tu_context_new(DITATTN_BACKEND_CPU, 2)};
  for (int trial = 0; trial < 20; trial++) {
    dims s = random_dims(200, 40);
    const int64_t block = tu_rand_int(1, 20), nb = s.N / block + (s.N % block != 0);
    tu_tensor x = tu_tensor_new(s.B, s.H, s.N, s.D, s.pad, s.bnhd);
    tu_fill_uniform(&x);
    tu_tensor y[3];
    for (int i = 0; i < 3; i++) {
      y[i] = tu_tensor_new(s.B, s.H, nb, s.D, s.pad, !s.bnhd);
      assert_int_equal(ditattn_pool_mean(ctx[i], &x.t, block, &y[i].t), DITATTN_OK);
    }
    char extra[64];
    snprintf(extra, sizeof extra, "block=%lld", (long long)block);
    compare3("pool", &s, extra, y);
    for (int i = 0; i < 3; i++) tu_tensor_free(&y[i]);
    tu_tensor_free(&x);
  }
  for (int i = 0; i < 3; i++) ditattn_context_destroy(ctx[i]);
}

static void lse_merge_matches_ref(void **state) {
  (void)state;
  tu_seed();
  ditattn_context *ctx[3] = {tu_context_new(DITATTN_BACKEND_REF, 0),
                             tu_context_new(DITATTN_BACKEND_CPU, 1),
                             tu_context_new(DITATTN_BACKEND_CPU, 2)};
  for (int trial = 0; trial < 20; trial++) {
    dims s = random_dims(100, 40);
    const size_t rows = (size_t)(s.B * s.H * s.N);
    tu_tensor part = tu_tensor_new(s.B, s.H, s.N, s.D, s.pad, s.bnhd);
    tu_tensor acc0 = tu_tensor_new(s.B, s.H, s.N, s.D, s.pad, !s.bnhd);
    tu_fill_uniform(&part);
    tu_fill_uniform(&acc0);
    float *lse_part = malloc(rows * sizeof(float)), *lse0 = malloc(rows * sizeof(float));
    assert_non_null(lse_part);
    assert_non_null(lse0);
    for (size_t r = 0; r < rows; r++) {
      /* Some rows empty on one side (-inf), a few on both. */
      const int64_t kind = tu_rand_int(0, 9);
      lse_part[r] = kind == 0 || kind == 2 ? -INFINITY : (float)tu_uniform(-5, 5);
      lse0[r] = kind == 1 || kind == 2 ? -INFINITY : (float)tu_uniform(-5, 5);
    }
    tu_tensor acc[3];
    float *lse[3];
    for (int i = 0; i < 3; i++) {
      acc[i] = tu_tensor_new(s.B, s.H, s.N, s.D, s.pad, !s.bnhd);
      memcpy(acc[i].buf, acc0.buf, acc0.count * sizeof(float));
      lse[i] = malloc(rows * sizeof(float));
      assert_non_null(lse[i]);
      memcpy(lse[i], lse0, rows * sizeof(float));
      assert_int_equal(ditattn_lse_merge(ctx[i], &acc[i].t, lse[i], &part.t, lse_part), DITATTN_OK);
    }
    compare3("lse_merge out", &s, "", acc);
    for (size_t r = 0; r < rows; r++) {
      const int both_inf = lse[0][r] == -INFINITY && lse[1][r] == -INFINITY;
      if (!both_inf && !(fabs((double)lse[1][r] - lse[0][r]) <= 1e-6 * (1.0 + fabs(lse[0][r]))))
        report("lse_merge lse", &s, "", fabs((double)lse[1][r] - lse[0][r])), fail();
      if (memcmp(&lse[1][r], &lse[2][r], sizeof(float)) != 0)
        report("lse_merge lse", &s, "1 vs 2 threads differ", 0.0), fail();
    }
    for (int i = 0; i < 3; i++) {
      tu_tensor_free(&acc[i]);
      free(lse[i]);
    }
    tu_tensor_free(&part);
    tu_tensor_free(&acc0);
    free(lse_part);
    free(lse0);
  }
  for (int i = 0; i < 3; i++) ditattn_context_destroy(ctx[i]);
}

static void rope_matches_ref(void **state) {
  (void)state;
  tu_seed();
  ditattn_context *ctx[3] = {tu_context_new(DITATTN_BACKEND_REF, 0),
                             tu_context_new(DITATTN_BACKEND_CPU, 1),
                             tu_context_new(DITATTN_BACKEND_CPU, 2)};
  for (int trial = 0; trial < 20; trial++) {
    ditattn_rope_params prm;
    const int64_t T = tu_rand_int(1, 4), Hg = tu_rand_int(1, 6), W = tu_rand_int(1, 6);
    dims s = random_dims(1, 1);
    s.N = T * Hg * W;
    s.D = 2 * tu_rand_int(3, 40);
    assert_int_equal(
        ditattn_rope_params_preset((ditattn_rope_preset)tu_rand_int(0, 1), s.D, T, Hg, W, &prm),
        DITATTN_OK);
    prm.pairing = (ditattn_rope_pairing)tu_rand_int(0, 1);
    const ditattn_direction dir = (ditattn_direction)tu_rand_int(0, 1);
    const int in_place = (int)tu_rand_int(0, 1);
    tu_tensor x = tu_tensor_new(s.B, s.H, s.N, s.D, s.pad, s.bnhd);
    tu_fill_uniform(&x);
    tu_tensor y[3];
    for (int i = 0; i < 3; i++) {
      y[i] = tu_tensor_new(s.B, s.H, s.N, s.D, s.pad, in_place ? s.bnhd : !s.bnhd);
      if (in_place) memcpy(y[i].buf, x.buf, x.count * sizeof(float));
      assert_int_equal(
          ditattn_rope_apply(ctx[i], &prm, NULL, dir, in_place ? &y[i].t : &x.t, &y[i].t),
          DITATTN_OK);
    }
    char extra[96];
    snprintf(extra, sizeof extra, "grid=%lldx%lldx%lld pairing=%d dir=%d in_place=%d", (long long)T,
             (long long)Hg, (long long)W, (int)prm.pairing, (int)dir, in_place);
    compare3("rope", &s, extra, y);
    for (int i = 0; i < 3; i++) tu_tensor_free(&y[i]);
    tu_tensor_free(&x);
  }
  for (int i = 0; i < 3; i++) ditattn_context_destroy(ctx[i]);
}

static void order_matches_ref(void **state) {
  (void)state;
  tu_seed();
  ditattn_context *ctx[3] = {tu_context_new(DITATTN_BACKEND_REF, 0),
                             tu_context_new(DITATTN_BACKEND_CPU, 1),
                             tu_context_new(DITATTN_BACKEND_CPU, 2)};
  for (int trial = 0; trial < 20; trial++) {
    ditattn_order_params prm = {(ditattn_order_kind)tu_rand_int(0, 2),
                                {tu_rand_int(1, 4), tu_rand_int(1, 7), tu_rand_int(1, 7)},
                                {tu_rand_int(1, 3), tu_rand_int(1, 3), tu_rand_int(1, 3)}};
    dims s = random_dims(1, 40);
    s.N = prm.grid[0] * prm.grid[1] * prm.grid[2];
    const ditattn_direction dir = (ditattn_direction)tu_rand_int(0, 1);
    tu_tensor x = tu_tensor_new(s.B, s.H, s.N, s.D, s.pad, s.bnhd);
    tu_fill_uniform(&x);
    tu_tensor y[3];
    for (int i = 0; i < 3; i++) {
      y[i] = tu_tensor_new(s.B, s.H, s.N, s.D, s.pad, !s.bnhd);
      assert_int_equal(ditattn_order_apply(ctx[i], &prm, dir, &x.t, &y[i].t), DITATTN_OK);
    }
    char extra[64];
    snprintf(extra, sizeof extra, "kind=%d dir=%d", (int)prm.kind, (int)dir);
    compare3("order", &s, extra, y);
    if (tu_rel_err(&y[1].t, &y[0].t) != 0.0)
      report("order (must be exact)", &s, extra, 1.0), fail();
    for (int i = 0; i < 3; i++) tu_tensor_free(&y[i]);
    tu_tensor_free(&x);
  }
  for (int i = 0; i < 3; i++) ditattn_context_destroy(ctx[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pool_matches_ref),
      cmocka_unit_test(lse_merge_matches_ref),
      cmocka_unit_test(rope_matches_ref),
      cmocka_unit_test(order_matches_ref),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
