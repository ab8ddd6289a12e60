/* CPU backend RoPeSLR forward against ref/ on random problems (partial
 * blocks, every policy and feature, shuffled positions, strided layouts):
 * out and lse_sparse within 1e-5, selections identical, 1 and 2 threads
 * bitwise equal. */
#include "test_ropeslr_fixture.h"

#include <math.h>

#define TOL 1e-5

static void forward_matches_ref(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  for (int trial = 0; trial < 14; trial++) {
    tu_srand(seed + (uint64_t)trial);
    slr_problem p = slr_problem_make(tu_rand_int(1, 2), tu_rand_int(1, 2), tu_rand_int(2, 40),
                                     tu_rand_int(1, 12), tu_rand_int(1, 3), tu_rand_int(1, 6),
                                     tu_rand_int(1, 7), tu_rand_int(1, 9));
    slr_draw_options(&p);
    slr_problem_init(&p, seed + (uint64_t)trial);
    slr_check_cpu_forward(&p, TOL);
    slr_problem_free(&p);
  }
  /* The default block (64), several key chunks per query block, D = 64 (own kernels). */
  slr_problem big = slr_problem_make(1, 1, 64, 8, 2, 16, 24, 64);
  big.params.rho = 0.4;
  slr_problem_init(&big, seed + 100);
  slr_check_cpu_forward(&big, TOL);
  slr_problem_free(&big);
  /* A block larger than the query tile: several tiles per query block. */
  slr_problem wide = slr_problem_make(1, 1, 64, 4, 2, 16, 24, 150);
  wide.params.rho = 0.5;
  slr_problem_init(&wide, seed + 200);
  slr_check_cpu_forward(&wide, TOL);
  slr_problem_free(&wide);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(forward_matches_ref)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
