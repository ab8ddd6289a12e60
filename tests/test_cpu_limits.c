/* The CPU backend refuses head dims whose thread-buffer sizes would overflow,
 * before touching any tensor memory (the pointers below are never read). */
#include "test_util.h"

#include <string.h>

#define HUGE_D ((INT64_C(1) << 32) + 2)

static void huge_head_dim_is_an_overflow_not_a_crash(void **state) {
  (void)state;
  if (!ditattn_backend_compiled(DITATTN_BACKEND_CPU)) skip();
  ditattn_context *ctx = tu_context_new(DITATTN_BACKEND_CPU, 1);
  /* Distinct fake addresses, far enough apart that the views do not overlap. */
  char *base = (char *)(uintptr_t)(UINT64_C(1) << 40);
  const size_t span = (size_t)HUGE_D * sizeof(float);
  ditattn_tensor q = ditattn_tensor_bhnd(base, DITATTN_F32, 1, 1, 1, HUGE_D);
  ditattn_tensor k = ditattn_tensor_bhnd(base + span, DITATTN_F32, 1, 1, 1, HUGE_D);
  ditattn_tensor v = ditattn_tensor_bhnd(base + 2 * span, DITATTN_F32, 1, 1, 1, HUGE_D);
  ditattn_tensor out = ditattn_tensor_bhnd(base + 3 * span, DITATTN_F32, 1, 1, 1, HUGE_D);
  assert_int_equal(ditattn_dense_forward(ctx, &q, &k, &v, 0.0f, &out, NULL), DITATTN_ERR_OVERFLOW);
  assert_non_null(strstr(ditattn_last_error(ctx), "too large"));
  assert_int_equal(ditattn_pool_mean(ctx, &q, 1, &out), DITATTN_ERR_OVERFLOW);
  ditattn_context_destroy(ctx);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(huge_head_dim_is_an_overflow_not_a_crash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
