/* CPU backend RoPeSLR forward against ref/ on random problems (partial
 * blocks, every policy and feature, shuffled positions, strided layouts):
 * out and lse_sparse within 1e-5, selections identical, 1 and 2 threads
 * bitwise equal. */
#include "test_ropeslr_fixture.h"

#include <math.h>

#define TOL 1e-5

static ditattn_context *make_ctx(ditattn_backend backend, int threads) {
  ditattn_context *ctx = NULL;
  assert_int_equal(ditattn_context_create(backend, &ctx), DITATTN_OK);
  assert_int_equal(ditattn_context_set_num_threads(ctx, threads), DITATTN_OK);
  return ctx;
}

static void expect(int ok, const char *what, const slr_problem *p, double err) {
  if (ok) return;
  char line[512];
  slr_describe(p, line, sizeof line);
  fail_msg("%s (err %.3e): %s", what, err, line);
}

static void check(slr_problem *p) {
  ditattn_context *ctx[3] = {make_ctx(DITATTN_BACKEND_REF, 0), make_ctx(DITATTN_BACKEND_CPU, 1),
                             make_ctx(DITATTN_BACKEND_CPU, 2)};
  const int64_t n = p->N / p->params.block + (p->N % p->params.block != 0);
  const int64_t K = ditattn_ropeslr_topk(&p->params, p->N);
  const size_t rows = (size_t)(p->B * p->H * p->N), nsel = (size_t)(p->B * p->H * n * K);
  tu_tensor out[3];
  float *lse[3];
  int32_t *sel[3];
  for (int i = 0; i < 3; i++) {
    out[i] = tu_tensor_new(p->B, p->H, p->N, p->D, p->pad, !p->layout_bnhd);
    lse[i] = malloc(rows * sizeof(float));
    sel[i] = malloc(nsel * sizeof(int32_t));
    assert_non_null(lse[i]);
    assert_non_null(sel[i]);
    tu_poison_floats(lse[i], rows);
    memset(sel[i], 0x7f, nsel * sizeof(int32_t));
    slr_forward(ctx[i], p, &out[i], lse[i], sel[i]);
  }
  const double err = tu_rel_err(&out[1].t, &out[0].t);
  expect(err <= TOL, "out vs ref", p, err);
  const double lerr = tu_rel_err_floats(lse[1], lse[0], rows);
  expect(lerr <= TOL, "lse_sparse vs ref", p, lerr);
  expect(memcmp(sel[1], sel[0], nsel * sizeof(int32_t)) == 0, "selection differs from ref", p, 0);
  expect(memcmp(sel[2], sel[0], nsel * sizeof(int32_t)) == 0, "selection (2 threads)", p, 0);
  expect(tu_rel_err(&out[2].t, &out[1].t) == 0.0 &&
             memcmp(lse[1], lse[2], rows * sizeof(float)) == 0,
         "1 vs 2 threads differ", p, 0);
  for (int i = 0; i < 3; i++) {
    tu_tensor_free(&out[i]);
    free(lse[i]);
    free(sel[i]);
    ditattn_context_destroy(ctx[i]);
  }
}

static void forward_matches_ref(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  for (int trial = 0; trial < 14; trial++) {
    tu_srand(seed + (uint64_t)trial);
    slr_problem p = slr_problem_make(tu_rand_int(1, 2), tu_rand_int(1, 2), tu_rand_int(2, 40),
                                     tu_rand_int(1, 12), tu_rand_int(1, 3), tu_rand_int(1, 6),
                                     tu_rand_int(1, 7), tu_rand_int(1, 9));
    p.params.policy = (ditattn_slr_policy)tu_rand_int(0, 2);
    p.params.rho = tu_uniform(0.05, 1.0);
    p.params.topk = tu_rand_int(1, 4);
    p.params.sqrt_c = tu_uniform(0.3, 2.0);
    p.params.force_own_block = (int)tu_rand_int(0, 1);
    p.params.feature = (ditattn_slr_feature)tu_rand_int(0, 1);
    p.pad = tu_rand_int(0, 2);
    p.layout_bnhd = (int)tu_rand_int(0, 1);
    p.shuffled = (int)tu_rand_int(0, 1);
    slr_problem_init(&p, seed + (uint64_t)trial);
    check(&p);
    slr_problem_free(&p);
  }
  /* The default block (64), several key chunks per query block, D = 64 (own kernels). */
  slr_problem big = slr_problem_make(1, 1, 64, 8, 2, 16, 24, 64);
  big.params.rho = 0.4;
  slr_problem_init(&big, seed + 100);
  check(&big);
  slr_problem_free(&big);
  /* A block larger than the query tile: several tiles per query block. */
  slr_problem wide = slr_problem_make(1, 1, 64, 4, 2, 16, 24, 150);
  wide.params.rho = 0.5;
  slr_problem_init(&wide, seed + 200);
  check(&wide);
  slr_problem_free(&wide);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(forward_matches_ref)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
