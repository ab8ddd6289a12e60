/* Context lifetime, status strings and the dispatch seam. */
#include "test_util.h"

#include <string.h>

static void strerror_names_every_status(void **state) {
  (void)state;
  for (int s = 0; s < DITATTN_STATUS_COUNT; s++) {
    const char *msg = ditattn_strerror((ditattn_status)s);
    assert_non_null(msg);
    assert_true(strlen(msg) > 0);
    assert_string_not_equal(msg, "unknown status");
  }
  assert_string_equal(ditattn_strerror((ditattn_status)999), "unknown status");
}

static void ref_context_roundtrip(void **state) {
  (void)state;
  ditattn_context *ctx = NULL;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  assert_non_null(ctx);
  assert_int_equal(ditattn_context_backend(ctx), DITATTN_BACKEND_REF);
  assert_string_equal(ditattn_last_error(ctx), "");
  ditattn_context_destroy(ctx);
  ditattn_context_destroy(NULL); /* harmless */
}

static void create_rejects_bad_arguments(void **state) {
  (void)state;
  ditattn_context *ctx = (ditattn_context *)&ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, NULL), DITATTN_ERR_NULL_POINTER);
  assert_int_equal(ditattn_context_create((ditattn_backend)77, &ctx), DITATTN_ERR_INVALID_ARGUMENT);
  assert_null(ctx);
}

static void backend_names_parse_back(void **state) {
  (void)state;
  for (int b = 0; b < DITATTN_BACKEND_COUNT; b++) {
    ditattn_backend parsed;
    assert_int_equal(ditattn_backend_parse(ditattn_backend_name((ditattn_backend)b), &parsed),
                     DITATTN_OK);
    assert_int_equal(parsed, b);
  }
  ditattn_backend parsed;
  assert_int_equal(ditattn_backend_parse("tpu", &parsed), DITATTN_ERR_INVALID_ARGUMENT);
  assert_int_equal(ditattn_backend_parse(NULL, &parsed), DITATTN_ERR_NULL_POINTER);
  assert_true(ditattn_backend_compiled(DITATTN_BACKEND_REF));
}

static void uncompiled_backend_is_unavailable(void **state) {
  (void)state;
  for (int b = 0; b < DITATTN_BACKEND_COUNT; b++) {
    if (ditattn_backend_compiled((ditattn_backend)b)) continue;
    ditattn_context *ctx = NULL;
    assert_int_equal(ditattn_context_create((ditattn_backend)b, &ctx),
                     DITATTN_ERR_BACKEND_UNAVAILABLE);
    assert_null(ctx);
    assert_false(ditattn_backend_supports((ditattn_backend)b, DITATTN_OP_DENSE_FORWARD));
  }
}

static void host_memory_roundtrip(void **state) {
  (void)state;
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  float src[5] = {1, 2, 3, 4, 5}, back[5] = {0};
  void *dev = NULL;
  assert_int_equal(ditattn_malloc(ctx, sizeof src, &dev), DITATTN_OK);
  assert_int_equal(ditattn_copy_to_backend(ctx, dev, src, sizeof src), DITATTN_OK);
  assert_int_equal(ditattn_copy_to_host(ctx, back, dev, sizeof src), DITATTN_OK);
  assert_memory_equal(src, back, sizeof src);
  assert_int_equal(ditattn_copy_to_host(ctx, NULL, dev, 4), DITATTN_ERR_NULL_POINTER);
  assert_non_null(strstr(ditattn_last_error(ctx), "dst"));
  assert_int_equal(ditattn_malloc(ctx, 8, NULL), DITATTN_ERR_NULL_POINTER);
  assert_int_equal(ditattn_free(ctx, dev), DITATTN_OK);
  assert_int_equal(ditattn_context_set_num_threads(ctx, -1), DITATTN_ERR_INVALID_ARGUMENT);
  assert_int_equal(ditattn_context_set_stream(ctx, NULL), DITATTN_ERR_UNSUPPORTED);
  ditattn_context_destroy(ctx);
}

static void tensor_views_have_expected_strides(void **state) {
  (void)state;
  float x;
  ditattn_tensor a = ditattn_tensor_bhnd(&x, DITATTN_F32, 2, 3, 5, 7);
  assert_int_equal(a.stride[0], 3 * 5 * 7);
  assert_int_equal(a.stride[1], 5 * 7);
  assert_int_equal(a.stride[2], 7);
  ditattn_tensor b = ditattn_tensor_bnhd(&x, DITATTN_F32, 2, 3, 5, 7);
  assert_int_equal(b.stride[0], 5 * 3 * 7);
  assert_int_equal(b.stride[1], 7);
  assert_int_equal(b.stride[2], 3 * 7);
  assert_int_equal(ditattn_dtype_size(DITATTN_BF16), 2);
  assert_int_equal(ditattn_dtype_size((ditattn_dtype)9), 0);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(strerror_names_every_status),
      cmocka_unit_test(ref_context_roundtrip),
      cmocka_unit_test(create_rejects_bad_arguments),
      cmocka_unit_test(backend_names_parse_back),
      cmocka_unit_test(uncompiled_backend_is_unavailable),
      cmocka_unit_test(host_memory_roundtrip),
      cmocka_unit_test(tensor_views_have_expected_strides),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
