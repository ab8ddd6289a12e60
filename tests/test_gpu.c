/* The GPU backends (CUDA, HIP) against ref/: every implemented operation on
 * random shapes, through the cases of bench/gpu_check.c (one source for this
 * CMocka test and for the standalone checker the GPU machine runs). A
 * backend that is not compiled in or finds no device is skipped with the
 * reason printed. The table checks run everywhere. */
#include "test_util.h"

#define GC_NO_MAIN 1
#include "../bench/gpu_check.c"

static void run_check(ditattn_backend be, const char *check) {
  gc_env env;
  const char *why = "";
  const uint64_t seed = tu_seed();
  if (!gc_env_open(&env, be, seed, &why)) {
    print_message("%s: %s: skipped (%s)\n", ditattn_backend_name(be), check, why);
    skip();
    return;
  }
  env.quiet = 1;
  for (int c = 0; c < GC_NCHECKS; c++)
    if (strcmp(gc_checks[c].name, check) == 0) gc_checks[c].fn(&env);
  print_message("%s %s: %d cases, %d failed (seed %llu)\n", env.name, check, env.cases,
                env.failures, (unsigned long long)seed);
  const int failures = env.failures, cases = env.cases;
  gc_env_close(&env);
  assert_true(cases > 0);
  assert_int_equal(failures, 0);
}

#define GPU_TEST(backend, check)                                                                   \
  static void backend##_##check(void **state) {                                                    \
    (void)state;                                                                                   \
    run_check(DITATTN_BACKEND_##backend, #check);                                                  \
  }
#define GPU_TESTS(backend)                                                                         \
  GPU_TEST(backend, pool)                                                                          \
  GPU_TEST(backend, rope)                                                                          \
  GPU_TEST(backend, order)                                                                         \
  GPU_TEST(backend, lse_merge)                                                                     \
  GPU_TEST(backend, dense)                                                                         \
  GPU_TEST(backend, error_recovery)                                                                \
  GPU_TEST(backend, dense_backward)                                                                \
  GPU_TEST(backend, llsa)                                                                          \
  GPU_TEST(backend, unsupported)
GPU_TESTS(CUDA)
GPU_TESTS(HIP)

/* Runs on every machine: a compiled GPU table lists exactly the finished
 * operations, and context creation without a device fails cleanly. */
static void gpu_tables_list_finished_ops(void **state) {
  (void)state;
  const ditattn_backend gpus[2] = {DITATTN_BACKEND_CUDA, DITATTN_BACKEND_HIP};
  const ditattn_op done[] = {DITATTN_OP_DENSE_FORWARD, DITATTN_OP_DENSE_BACKWARD,
                             DITATTN_OP_LLSA_FORWARD,  DITATTN_OP_ROPE,
                             DITATTN_OP_ORDER,         DITATTN_OP_POOL,
                             DITATTN_OP_LSE_MERGE,     DITATTN_OP_ROPESLR_FORWARD};
  const ditattn_op missing[] = {DITATTN_OP_LLSA_BACKWARD, DITATTN_OP_ROPESLR_BACKWARD};
  for (int g = 0; g < 2; g++) {
    if (!ditattn_backend_compiled(gpus[g])) {
      print_message("%s not compiled in\n", ditattn_backend_name(gpus[g]));
      continue;
    }
    for (size_t i = 0; i < sizeof done / sizeof done[0]; i++)
      assert_true(ditattn_backend_supports(gpus[g], done[i]));
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++)
      assert_false(ditattn_backend_supports(gpus[g], missing[i]));
    ditattn_context *ctx = NULL;
    ditattn_status st = ditattn_context_create(gpus[g], &ctx);
    if (st == DITATTN_OK) {
      assert_int_equal(ditattn_context_backend(ctx), gpus[g]);
      ditattn_context_destroy(ctx);
    } else {
      assert_int_equal(st, DITATTN_ERR_BACKEND_UNAVAILABLE);
      assert_null(ctx);
    }
  }
}

/* The host-side half-precision conversions the GPU cases rely on. */
static void host_half_conversions_round_to_nearest_even(void **state) {
  (void)state;
  tu_srand(tu_seed());
  /* Exact values survive; halfway cases go to even. */
  assert_true(gc_bf16_to_f32(gc_f32_to_bf16(1.5f)) == 1.5f);
  assert_true(gc_bf16_to_f32(gc_f32_to_bf16(1.0f + 1.0f / 256.0f)) == 1.0f);
  assert_true(gc_bf16_to_f32(gc_f32_to_bf16(1.0f + 3.0f / 256.0f)) == 1.0f + 4.0f / 256.0f);
  assert_true(gc_f16_to_f32(gc_f32_to_f16(1.0f + 1.0f / 2048.0f)) == 1.0f);
  assert_true(gc_f16_to_f32(gc_f32_to_f16(1.0f + 3.0f / 2048.0f)) == 1.0f + 4.0f / 2048.0f);
  assert_true(gc_f16_to_f32(gc_f32_to_f16(65504.0f)) == 65504.0f);
  assert_true(isinf(gc_f16_to_f32(gc_f32_to_f16(65520.0f))));
  assert_true(gc_f16_to_f32(gc_f32_to_f16(5.9604644775390625e-08f)) == 5.9604644775390625e-08f);
  assert_true(gc_f16_to_f32(gc_f32_to_f16(2.0e-8f)) == 0.0f);
  assert_true(isnan(gc_f16_to_f32(gc_f32_to_f16(NAN))));
  assert_true(isnan(gc_bf16_to_f32(gc_f32_to_bf16(NAN))));
  /* Every f16 value round-trips, and random values land on a nearest neighbour. */
  for (uint32_t h = 0; h < 0x10000u; h++) {
    if (((h >> 10) & 0x1fu) == 0x1fu) continue; /* inf/NaN */
    const float f = gc_f16_to_f32((uint16_t)h);
    assert_int_equal(gc_f32_to_f16(f), h);
  }
  for (int i = 0; i < 100000; i++) {
    const float x =
        (float)tu_uniform(-70000.0, 70000.0) * (float)pow(2.0, (double)tu_rand_int(-30, 0));
    const uint16_t h = gc_f32_to_f16(x);
    const float r = gc_f16_to_f32(h);
    if (isinf(r)) {
      assert_true(fabsf(x) >= 65520.0f);
      continue;
    }
    const float up = gc_f16_to_f32((uint16_t)(h + 1)), down = gc_f16_to_f32((uint16_t)(h - 1));
    /* No representable neighbour is strictly closer. */
    if (h != 0x7bffu && h != 0xfbffu && (h & 0x7fffu) != 0)
      assert_true(fabsf(r - x) <= fabsf(up - x) && fabsf(r - x) <= fabsf(down - x));
    const float rb = gc_bf16_to_f32(gc_f32_to_bf16(x));
    assert_true(fabsf(rb - x) <= fabsf(x) * (1.0f / 256.0f));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(gpu_tables_list_finished_ops),
      cmocka_unit_test(host_half_conversions_round_to_nearest_even),
      cmocka_unit_test(CUDA_pool),
      cmocka_unit_test(CUDA_rope),
      cmocka_unit_test(CUDA_order),
      cmocka_unit_test(CUDA_lse_merge),
      cmocka_unit_test(CUDA_dense),
      cmocka_unit_test(CUDA_error_recovery),
      cmocka_unit_test(CUDA_dense_backward),
      cmocka_unit_test(CUDA_llsa),
      cmocka_unit_test(CUDA_unsupported),
      cmocka_unit_test(HIP_pool),
      cmocka_unit_test(HIP_rope),
      cmocka_unit_test(HIP_order),
      cmocka_unit_test(HIP_lse_merge),
      cmocka_unit_test(HIP_dense),
      cmocka_unit_test(HIP_error_recovery),
      cmocka_unit_test(HIP_dense_backward),
      cmocka_unit_test(HIP_llsa),
      cmocka_unit_test(HIP_unsupported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
