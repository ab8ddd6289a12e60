/* Mean pooling (partial last block) and the log-sum-exp merge of partial
 * attention results, including empty (-inf) sides. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ditattn_context *ref_context(void) {
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  return ctx;
}

static void pool_matches_direct_means(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  for (int trial = 0; trial < 40; trial++) {
    const int64_t B = tu_rand_int(1, 2), H = tu_rand_int(1, 3), N = tu_rand_int(1, 50);
    const int64_t D = tu_rand_int(1, 9), block = tu_rand_int(1, 12);
    const int64_t n = (N + block - 1) / block, pad = tu_rand_int(0, 2);
    const int bnhd = (int)tu_rand_int(0, 1);
    tu_tensor x = tu_tensor_new(B, H, N, D, pad, bnhd), y = tu_tensor_new(B, H, n, D, pad, !bnhd);
    tu_tensor want = tu_tensor_new(B, H, n, D, 0, 0);
    tu_fill_uniform(&x);
    assert_int_equal(ditattn_pool_mean(ctx, &x.t, block, &y.t), DITATTN_OK);
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t d = 0; d < D; d++)
          for (int64_t c = 0; c < n; c++) {
            /* Tokens of block c: those with floor(i / block) == c. */
            double sum = 0.0;
            int64_t count = 0;
            for (int64_t i = 0; i < N; i++)
              if (i / block == c) {
                sum += *tu_at(&x.t, b, h, i, d);
                count++;
              }
            *tu_at(&want.t, b, h, c, d) = (float)(sum / (double)count);
          }
    const double err = tu_rel_err(&y.t, &want.t);
    if (!(err <= 1e-6))
      fprintf(stderr, "pool: B=%lld H=%lld N=%lld D=%lld block=%lld err=%.3e\n", (long long)B,
              (long long)H, (long long)N, (long long)D, (long long)block, err);
    assert_true(err <= 1e-6);
    tu_tensor_free(&x);
    tu_tensor_free(&y);
    tu_tensor_free(&want);
  }
  ditattn_context_destroy(ctx);
}

/* A view of keys [begin, begin + count) of t. */
static ditattn_tensor key_range(const ditattn_tensor *t, int64_t begin, int64_t count) {
  ditattn_tensor r = *t;
  r.data = (float *)t->data + begin * t->stride[2];
  r.shape[2] = count;
  return r;
}

/* Attention over all keys == merge of attention over two disjoint halves. */
static void merge_of_halves_equals_dense(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  for (int trial = 0; trial < 30; trial++) {
    const int64_t B = tu_rand_int(1, 2), H = tu_rand_int(1, 3), Nq = tu_rand_int(1, 20);
    const int64_t Nk = tu_rand_int(2, 30), D = tu_rand_int(1, 12), split = tu_rand_int(1, Nk - 1);
    const int bnhd = (int)tu_rand_int(0, 1);
    const float scale = trial % 3 == 0 ? 6.0f : 0.0f;
    tu_tensor q = tu_tensor_new(B, H, Nq, D, 1, bnhd), k = tu_tensor_new(B, H, Nk, D, 0, bnhd);
    tu_tensor v = tu_tensor_new(B, H, Nk, D, 2, !bnhd), full = tu_tensor_new(B, H, Nq, D, 0, 0);
    tu_tensor acc = tu_tensor_new(B, H, Nq, D, 1, bnhd), part = tu_tensor_new(B, H, Nq, D, 0, 0);
    tu_fill_uniform(&q);
    tu_fill_uniform(&k);
    tu_fill_uniform(&v);
    const size_t rows = (size_t)(B * H * Nq);
    float *lse_full = malloc(rows * sizeof(float)), *lse_acc = malloc(rows * sizeof(float));
    float *lse_part = malloc(rows * sizeof(float));
    assert_true(lse_full && lse_acc && lse_part);
    tu_poison_floats(lse_full, rows);
    tu_poison_floats(lse_acc, rows);
    tu_poison_floats(lse_part, rows);
    ditattn_tensor k0 = key_range(&k.t, 0, split), k1 = key_range(&k.t, split, Nk - split);
    ditattn_tensor v0 = key_range(&v.t, 0, split), v1 = key_range(&v.t, split, Nk - split);
    assert_int_equal(ditattn_dense_forward(ctx, &q.t, &k.t, &v.t, scale, &full.t, lse_full),
                     DITATTN_OK);
    assert_int_equal(ditattn_dense_forward(ctx, &q.t, &k0, &v0, scale, &acc.t, lse_acc),
                     DITATTN_OK);
    assert_int_equal(ditattn_dense_forward(ctx, &q.t, &k1, &v1, scale, &part.t, lse_part),
                     DITATTN_OK);
    assert_int_equal(ditattn_lse_merge(ctx, &acc.t, lse_acc, &part.t, lse_part), DITATTN_OK);
    const double err = tu_rel_err(&acc.t, &full.t);
    const double err_lse = tu_rel_err_floats(lse_acc, lse_full, rows);
    if (!(err <= 1e-5 && err_lse <= 1e-5))
      fprintf(stderr, "merge: B=%lld H=%lld Nq=%lld Nk=%lld split=%lld D=%lld err=%.3e/%.3e\n",
              (long long)B, (long long)H, (long long)Nq, (long long)Nk, (long long)split,
              (long long)D, err, err_lse);
    assert_true(err <= 1e-5);
    assert_true(err_lse <= 1e-5);
    free(lse_full);
    free(lse_acc);
    free(lse_part);
    tu_tensor_free(&q);
    tu_tensor_free(&k);
    tu_tensor_free(&v);
    tu_tensor_free(&full);
    tu_tensor_free(&acc);
    tu_tensor_free(&part);
  }
  ditattn_context_destroy(ctx);
}

/* Rows 0..3: (acc, part) = (full, empty), (empty, full), (empty, empty), (full, full). */
static void merge_handles_empty_sides(void **state) {
  (void)state;
  ditattn_context *ctx = ref_context();
  const int64_t D = 5;
  tu_tensor acc = tu_tensor_new(1, 1, 4, D, 0, 0), part = tu_tensor_new(1, 1, 4, D, 0, 0);
  tu_tensor acc0 = tu_tensor_new(1, 1, 4, D, 0, 0);
  tu_fill_uniform(&acc);
  tu_fill_uniform(&part);
  float lse_acc[4] = {(float)tu_uniform(-2, 2), -INFINITY, -INFINITY, (float)tu_uniform(-2, 2)};
  float lse_part[4] = {-INFINITY, (float)tu_uniform(-2, 2), -INFINITY, (float)tu_uniform(-2, 2)};
  const float lse_acc0[4] = {lse_acc[0], lse_acc[1], lse_acc[2], lse_acc[3]};
  /* An empty accumulator's values are meaningless: poison them. */
  for (int64_t d = 0; d < D; d++) *tu_at(&acc.t, 0, 0, 1, d) = *tu_at(&acc.t, 0, 0, 2, d) = NAN;
  memcpy(acc0.buf, acc.buf, acc.count * sizeof(float));
  assert_int_equal(ditattn_lse_merge(ctx, &acc.t, lse_acc, &part.t, lse_part), DITATTN_OK);
  for (int64_t d = 0; d < D; d++) {
    assert_true(*tu_at(&acc.t, 0, 0, 0, d) == *tu_at(&acc0.t, 0, 0, 0, d)); /* unchanged */
    assert_true(*tu_at(&acc.t, 0, 0, 1, d) == *tu_at(&part.t, 0, 0, 1, d)); /* copied */
    assert_true(*tu_at(&acc.t, 0, 0, 2, d) == 0.0f);                        /* empty: zero */
  }
  assert_true(lse_acc[0] == lse_acc0[0]);
  assert_true(lse_acc[1] == lse_part[1]);
  assert_true(lse_acc[2] == -INFINITY);
  /* Row 3: the explicit weighted combination. */
  const double l = log(exp((double)lse_acc0[3]) + exp((double)lse_part[3]));
  assert_true(fabs(lse_acc[3] - l) <= 1e-6 * (1.0 + fabs(l)));
  for (int64_t d = 0; d < D; d++) {
    const double want = exp(lse_acc0[3] - l) * *tu_at(&acc0.t, 0, 0, 3, d) +
                        exp(lse_part[3] - l) * *tu_at(&part.t, 0, 0, 3, d);
    assert_true(fabs(*tu_at(&acc.t, 0, 0, 3, d) - want) <= 1e-6);
  }
  tu_tensor_free(&acc);
  tu_tensor_free(&part);
  tu_tensor_free(&acc0);
  ditattn_context_destroy(ctx);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pool_matches_direct_means),
      cmocka_unit_test(merge_of_halves_equals_dense),
      cmocka_unit_test(merge_handles_empty_sides),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
