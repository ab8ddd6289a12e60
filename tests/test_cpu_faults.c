/* CPU backend under allocation failures: every dt_malloc an entry makes is
 * failed in turn; the entry must answer OUT_OF_MEMORY with a message (or
 * succeed once past its last allocation) and free everything (LeakSanitizer
 * checks that in the sanitizer build). */
#include "test_ropeslr_fixture.h"

#include "backends/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct case_data {
  tu_tensor q, k, v, out, dout, dq, dk, dv, y;
  float *lse;
  int32_t *sel[2];
  ditattn_llsa_params llsa;
} case_data;

static ditattn_status run_op(ditattn_context *ctx, int op, case_data *c) {
  ditattn_llsa_selection sel = {{c->sel[0], c->sel[1]}};
  switch (op) {
  case 0: return ditattn_dense_forward(ctx, &c->q.t, &c->k.t, &c->v.t, 0.0f, &c->out.t, c->lse);
  case 1:
    return ditattn_dense_backward(ctx, &c->q.t, &c->k.t, &c->v.t, &c->out.t, c->lse, &c->dout.t,
                                  0.0f, &c->dq.t, &c->dk.t, &c->dv.t);
  case 2:
    return ditattn_llsa_forward(ctx, &c->llsa, &c->q.t, &c->k.t, &c->v.t, &c->out.t, c->lse, &sel);
  case 3:
    return ditattn_llsa_backward(ctx, &c->llsa, &c->q.t, &c->k.t, &c->v.t, &c->out.t, c->lse,
                                 &c->dout.t, &c->dq.t, &c->dk.t, &c->dv.t);
  case 4: return ditattn_pool_mean(ctx, &c->q.t, 3, &c->y.t);
  default: {
    ditattn_rope_params prm;
    assert_int_equal(ditattn_rope_params_preset(DITATTN_ROPE_PRESET_WAN21, 16, 1, 5, 13, &prm),
                     DITATTN_OK);
    return ditattn_rope_apply(ctx, &prm, NULL, DITATTN_FORWARD, &c->q.t, &c->out.t);
  }
  }
}

static const char *const op_names[] = {"dense_forward", "dense_backward", "llsa_forward",
                                       "llsa_backward", "pool",           "rope"};

static void every_allocation_failure_is_clean(void **state) {
  (void)state;
  tu_seed();
  const int64_t B = 1, H = 2, N = 65, D = 16;
  case_data c;
  memset(&c, 0, sizeof c);
  c.q = tu_tensor_new(B, H, N, D, 1, 1);
  c.k = tu_tensor_new(B, H, N, D, 0, 0);
  c.v = tu_tensor_new(B, H, N, D, 2, 1);
  c.dout = tu_tensor_new(B, H, N, D, 0, 0);
  tu_fill_uniform(&c.q);
  tu_fill_uniform(&c.k);
  tu_fill_uniform(&c.v);
  tu_fill_uniform(&c.dout);
  c.out = tu_tensor_new(B, H, N, D, 0, 0);
  c.dq = tu_tensor_new(B, H, N, D, 0, 0);
  c.dk = tu_tensor_new(B, H, N, D, 0, 0);
  c.dv = tu_tensor_new(B, H, N, D, 0, 0);
  c.y = tu_tensor_new(B, H, (N + 2) / 3, D, 0, 0);
  c.lse = malloc((size_t)(B * H * N) * sizeof(float));
  assert_non_null(c.lse);
  c.llsa = ditattn_llsa_params_default();
  c.llsa.block = 4;
  c.llsa.topk[0] = 2;
  c.llsa.topk[1] = 3;
  for (int l = 0; l < 2; l++) {
    c.sel[l] = malloc((size_t)ditattn_llsa_selection_count(&c.llsa, B, H, N, l + 1) * 4);
    assert_non_null(c.sel[l]);
  }
  ditattn_context *ctx = NULL;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_CPU, &ctx), DITATTN_OK);
  assert_int_equal(ditattn_context_set_num_threads(ctx, 2), DITATTN_OK);
  for (int op = 0; op < 6; op++) {
    /* Forward first so that the backward sees a valid out and lse. */
    if (op == 1) assert_int_equal(run_op(ctx, 0, &c), DITATTN_OK);
    if (op == 3) assert_int_equal(run_op(ctx, 2, &c), DITATTN_OK);
    int64_t k = 1;
    for (;; k++) {
      dt_debug_fail_alloc_at(k);
      const ditattn_status st = run_op(ctx, op, &c);
      dt_debug_fail_alloc_at(0);
      if (st == DITATTN_OK) break;
      if (st != DITATTN_ERR_OUT_OF_MEMORY || ditattn_last_error(ctx)[0] == '\0') {
        fprintf(stderr, "FAIL %s with allocation %lld failing: status %d (%s)\n", op_names[op],
                (long long)k, (int)st, ditattn_last_error(ctx));
        fail();
      }
      if (k > 1000) fail_msg("%s: still failing after 1000 allocations", op_names[op]);
    }
    fprintf(stderr, "%s: %lld allocation(s) each failed cleanly\n", op_names[op],
            (long long)(k - 1));
    if (op <= 3) assert_true(k > 1); /* these entries do allocate: the sweep tested something */
  }
  ditattn_context_destroy(ctx);
  tu_tensor *all[] = {&c.q, &c.k, &c.v, &c.out, &c.dout, &c.dq, &c.dk, &c.dv, &c.y};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) tu_tensor_free(all[i]);
  free(c.lse);
  free(c.sel[0]);
  free(c.sel[1]);
}

static void ropeslr_allocation_failures_are_clean(void **state) {
  (void)state;
  slr_problem p = slr_problem_make(1, 2, 16, 5, 2, 3, 7, 4);
  slr_problem_init(&p, tu_seed());
  tu_tensor out = tu_tensor_new(p.B, p.H, p.N, p.D, 0, 0);
  ditattn_ropeslr_weights w = slr_weights_of(p.w);
  ditattn_context *ctx = NULL;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_CPU, &ctx), DITATTN_OK);
  int64_t k = 1;
  for (;; k++) {
    dt_debug_fail_alloc_at(k);
    const ditattn_status st = ditattn_ropeslr_forward(ctx, &p.params, &w, p.pos, &p.q.t, &p.k.t,
                                                      &p.v.t, &out.t, NULL, NULL);
    dt_debug_fail_alloc_at(0);
    if (st == DITATTN_OK) break;
    if (st != DITATTN_ERR_OUT_OF_MEMORY || ditattn_last_error(ctx)[0] == '\0')
      fail_msg("ropeslr_forward, allocation %lld failing: status %d (%s)", (long long)k, (int)st,
               ditattn_last_error(ctx));
    if (k > 1000) fail_msg("ropeslr_forward: still failing after 1000 allocations");
  }
  fprintf(stderr, "ropeslr_forward: %lld allocation(s) each failed cleanly\n", (long long)(k - 1));
  assert_true(k > 1);
  ditattn_context_destroy(ctx);
  tu_tensor_free(&out);
  slr_problem_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(every_allocation_failure_is_clean),
                                     cmocka_unit_test(ropeslr_allocation_failures_are_clean)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
