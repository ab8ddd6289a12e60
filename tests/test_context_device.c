/* Device selection: ditattn_context_create_on_device and ditattn_device_count.
 * Host backends have the one device 0; a context made on it computes exactly
 * what a plain context does. GPU backends are checked here only for their
 * answers without a device (and for range checks where one exists); their
 * behaviour on devices is checked by dist/device/run.sh. */
#include "test_util.h"

#include "backends/backend.h"

static const ditattn_backend host_backends[2] = {DITATTN_BACKEND_REF, DITATTN_BACKEND_CPU};

static void host_backends_have_one_device(void **state) {
  (void)state;
  for (int i = 0; i < 2; i++) {
    int count = -1;
    assert_int_equal(ditattn_device_count(host_backends[i], &count), DITATTN_OK);
    assert_int_equal(count, 1);
  }
  int count = 7;
  assert_int_equal(ditattn_device_count((ditattn_backend)77, &count), DITATTN_ERR_INVALID_ARGUMENT);
  assert_int_equal(count, 0);
  assert_int_equal(ditattn_device_count(DITATTN_BACKEND_REF, NULL), DITATTN_ERR_NULL_POINTER);
}

static void host_backends_reject_other_devices(void **state) {
  (void)state;
  const int bad[4] = {1, 2, -1, 1 << 30};
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++) {
      ditattn_context *ctx = (ditattn_context *)&ctx; /* must come back NULL */
      assert_int_equal(ditattn_context_create_on_device(host_backends[i], bad[j], &ctx),
                       DITATTN_ERR_INVALID_ARGUMENT);
      assert_null(ctx);
    }
  ditattn_context *ctx = (ditattn_context *)&ctx;
  assert_int_equal(ditattn_context_create_on_device(DITATTN_BACKEND_REF, 0, NULL),
                   DITATTN_ERR_NULL_POINTER);
  assert_int_equal(ditattn_context_create_on_device((ditattn_backend)77, 0, &ctx),
                   DITATTN_ERR_INVALID_ARGUMENT);
  assert_null(ctx);
}

/* Device 0 of a host backend is the plain context: same backend, same
 * numbers on a random dense problem. */
static void host_device_zero_matches_plain_context(void **state) {
  (void)state;
  tu_srand(tu_seed());
  for (int i = 0; i < 2; i++) {
    const int64_t B = tu_rand_int(1, 2), H = tu_rand_int(1, 3), N = tu_rand_int(1, 40),
                  D = tu_rand_int(1, 24);
    ditattn_context *dev = NULL, *plain = tu_context_new(host_backends[i], 1);
    assert_int_equal(ditattn_context_create_on_device(host_backends[i], 0, &dev), DITATTN_OK);
    assert_non_null(dev);
    assert_int_equal(ditattn_context_backend(dev), host_backends[i]);
    assert_int_equal(ditattn_context_set_num_threads(dev, 1), DITATTN_OK);
    tu_tensor q = tu_tensor_new(B, H, N, D, 1, 0), k = tu_tensor_new(B, H, N, D, 0, 1),
              v = tu_tensor_new(B, H, N, D, 2, 0), o_dev = tu_tensor_new(B, H, N, D, 0, 0),
              o_plain = tu_tensor_new(B, H, N, D, 0, 0);
    tu_fill_uniform(&q);
    tu_fill_uniform(&k);
    tu_fill_uniform(&v);
    assert_int_equal(ditattn_dense_forward(dev, &q.t, &k.t, &v.t, 0.0f, &o_dev.t, NULL),
                     DITATTN_OK);
    assert_int_equal(ditattn_dense_forward(plain, &q.t, &k.t, &v.t, 0.0f, &o_plain.t, NULL),
                     DITATTN_OK);
    double err = tu_rel_err(&o_dev.t, &o_plain.t);
    if (!(err == 0.0))
      fail_msg("%s device 0 vs plain context: rel err %g (B=%lld H=%lld N=%lld D=%lld)",
               ditattn_backend_name(host_backends[i]), err, (long long)B, (long long)H,
               (long long)N, (long long)D);
    tu_tensor_free(&q);
    tu_tensor_free(&k);
    tu_tensor_free(&v);
    tu_tensor_free(&o_dev);
    tu_tensor_free(&o_plain);
    ditattn_context_destroy(dev);
    ditattn_context_destroy(plain);
  }
}

/* An allocation failure while creating leaves *ctx NULL. */
static void create_on_device_out_of_memory(void **state) {
  (void)state;
  ditattn_context *ctx = (ditattn_context *)&ctx;
  dt_debug_fail_alloc_at(1);
  ditattn_status st = ditattn_context_create_on_device(DITATTN_BACKEND_REF, 0, &ctx);
  dt_debug_fail_alloc_at(0);
  assert_int_equal(st, DITATTN_ERR_OUT_OF_MEMORY);
  assert_null(ctx);
}

/* GPU backends: without a device (or not compiled) every index answers
 * BACKEND_UNAVAILABLE; with devices, indices outside [0, count) answer
 * INVALID_ARGUMENT and each index inside gives a working context. */
static void gpu_backends_answer_by_device_count(void **state) {
  (void)state;
  const ditattn_backend gpus[2] = {DITATTN_BACKEND_CUDA, DITATTN_BACKEND_HIP};
  for (int i = 0; i < 2; i++) {
    int count = -1;
    ditattn_status cs = ditattn_device_count(gpus[i], &count);
    ditattn_context *ctx = (ditattn_context *)&ctx;
    if (cs != DITATTN_OK) {
      assert_int_equal(cs, DITATTN_ERR_BACKEND_UNAVAILABLE);
      assert_int_equal(count, 0);
      assert_int_equal(ditattn_context_create_on_device(gpus[i], 0, &ctx),
                       DITATTN_ERR_BACKEND_UNAVAILABLE);
      assert_null(ctx);
      continue;
    }
    assert_true(count >= 1);
    assert_int_equal(ditattn_context_create_on_device(gpus[i], count, &ctx),
                     DITATTN_ERR_INVALID_ARGUMENT);
    assert_null(ctx);
    assert_int_equal(ditattn_context_create_on_device(gpus[i], -1, &ctx),
                     DITATTN_ERR_INVALID_ARGUMENT);
    assert_null(ctx);
    for (int d = 0; d < count; d++) {
      assert_int_equal(ditattn_context_create_on_device(gpus[i], d, &ctx), DITATTN_OK);
      void *p = NULL;
      assert_int_equal(ditattn_malloc(ctx, 256, &p), DITATTN_OK);
      assert_int_equal(ditattn_free(ctx, p), DITATTN_OK);
      assert_int_equal(ditattn_synchronize(ctx), DITATTN_OK);
      ditattn_context_destroy(ctx);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(host_backends_have_one_device),
      cmocka_unit_test(host_backends_reject_other_devices),
      cmocka_unit_test(host_device_zero_matches_plain_context),
      cmocka_unit_test(create_on_device_out_of_memory),
      cmocka_unit_test(gpu_backends_answer_by_device_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
