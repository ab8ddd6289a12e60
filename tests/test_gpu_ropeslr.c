/* RoPeSLR forward on the GPU backends (CUDA, HIP) against ref/, through the
 * cases of bench/gpu_check_ropeslr.c (one source for this CMocka test and
 * for the standalone checker the GPU machine runs). A backend that is not
 * compiled in or finds no device is skipped with the reason printed; the
 * same cases then run on the CPU backend, which checks the harness itself. */
#include "test_util.h"

#define GCR_NO_MAIN 1
#include "../bench/gpu_check_ropeslr.c"

static void run_check(ditattn_backend be) {
  gc_env env;
  const char *why = "";
  const uint64_t seed = tu_seed();
  if (!gc_env_open(&env, be, seed, &why)) {
    print_message("%s: ropeslr_forward: skipped (%s)\n", ditattn_backend_name(be), why);
    skip();
    return;
  }
  env.quiet = 1;
  for (int c = 0; c < GCR_NCHECKS; c++) gcr_checks[c].fn(&env);
  print_message("%s ropeslr_forward: %d cases, %d failed (seed %llu)\n", env.name, env.cases,
                env.failures, (unsigned long long)seed);
  const int failures = env.failures, cases = env.cases;
  gc_env_close(&env);
  assert_true(cases > 0);
  assert_int_equal(failures, 0);
}

static void cuda_ropeslr_forward_matches_ref(void **state) {
  (void)state;
  run_check(DITATTN_BACKEND_CUDA);
}
static void hip_ropeslr_forward_matches_ref(void **state) {
  (void)state;
  run_check(DITATTN_BACKEND_HIP);
}
/* The harness on a host backend (runs everywhere). */
static void cpu_harness_self_test(void **state) {
  (void)state;
  run_check(DITATTN_BACKEND_CPU);
}

/* A compiled GPU table offers the forward; without a device, context
 * creation fails cleanly with BACKEND_UNAVAILABLE. */
static void gpu_tables_offer_ropeslr_forward(void **state) {
  (void)state;
  const ditattn_backend gpus[2] = {DITATTN_BACKEND_CUDA, DITATTN_BACKEND_HIP};
  for (int g = 0; g < 2; g++) {
    if (!ditattn_backend_compiled(gpus[g])) {
      print_message("%s not compiled in\n", ditattn_backend_name(gpus[g]));
      continue;
    }
    assert_true(ditattn_backend_supports(gpus[g], DITATTN_OP_ROPESLR_FORWARD));
    ditattn_context *ctx = NULL;
    const ditattn_status st = ditattn_context_create(gpus[g], &ctx);
    if (st == DITATTN_OK) {
      ditattn_context_destroy(ctx);
    } else {
      assert_int_equal(st, DITATTN_ERR_BACKEND_UNAVAILABLE);
      assert_null(ctx);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(gpu_tables_offer_ropeslr_forward),
      cmocka_unit_test(cpu_harness_self_test),
      cmocka_unit_test(cuda_ropeslr_forward_matches_ref),
      cmocka_unit_test(hip_ropeslr_forward_matches_ref),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
