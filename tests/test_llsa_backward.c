/* LLSA backward (reference backend) against central finite differences in
 * double of L = Σ out ∘ G, where out comes from the naive spec-direct model
 * with the library's selection held fixed (spec §4: no gradient through the
 * selection; pooled k, v gradients flow through the mean). */
#include "test_llsa_naive.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at */

#include <string.h>

typedef struct grad_run {
  tu_tensor q, k, v, out, dout, dq, dk, dv;
  float *lse;
  ditattn_llsa_selection sel;
} grad_run;

static ditattn_context *ref_ctx(void) {
  ditattn_context *ctx = NULL;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  return ctx;
}

static tu_tensor new_like(const llsa_case *c) {
  return tu_tensor_new(c->B, c->H, c->N, c->D, c->pad, c->bnhd);
}

/* Random inputs and dout; forward run to get out, lse and the selection. */
static grad_run grad_run_new(ditattn_context *ctx, const llsa_case *c) {
  grad_run r;
  r.q = new_like(c);
  r.k = new_like(c);
  r.v = new_like(c);
  r.out = new_like(c);
  r.dout = new_like(c);
  r.dq = new_like(c);
  r.dk = new_like(c);
  r.dv = new_like(c);
  tu_fill_uniform(&r.q);
  tu_fill_uniform(&r.k);
  tu_fill_uniform(&r.v);
  tu_fill_uniform(&r.dout);
  r.lse = malloc((size_t)(c->B * c->H * c->N) * sizeof(float));
  assert_non_null(r.lse);
  naive_selection_alloc(c, &r.sel);
  const ditattn_llsa_params p = llsa_case_params(c);
  assert_int_equal(ditattn_llsa_forward(ctx, &p, &r.q.t, &r.k.t, &r.v.t, &r.out.t, r.lse, &r.sel),
                   DITATTN_OK);
  return r;
}

static void grad_run_free(grad_run *r) {
  tu_tensor *ts[] = {&r->q, &r->k, &r->v, &r->out, &r->dout, &r->dq, &r->dk, &r->dv};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) tu_tensor_free(ts[i]);
  free(r->lse);
  naive_selection_free(&r->sel);
}

static ditattn_status run_backward(ditattn_context *ctx, const llsa_case *c, grad_run *r) {
  const ditattn_llsa_params p = llsa_case_params(c);
  return ditattn_llsa_backward(ctx, &p, &r->q.t, &r->k.t, &r->v.t, &r->out.t, r->lse, &r->dout.t,
                               &r->dq.t, &r->dk.t, &r->dv.t);
}

/* L = Σ_i Σ_d o_naive[i, d] · G[i, d] for head bh. */
static double loss(const llsa_case *c, const double *q, const double *k, const double *v,
                   const double *G, int32_t *const *sel, int64_t bh) {
  double *o = malloc((size_t)c->D * sizeof *o);
  assert_non_null(o);
  double total = 0.0;
  for (int64_t i = 0; i < c->N; i++) {
    naive_query(c, q, k, v, sel, bh, i, o);
    for (int64_t d = 0; d < c->D; d++) total += o[d] * G[i * c->D + d];
  }
  free(o);
  return total;
}

/* Library gradients of one case against central differences, all heads. */
static void check_gradients(const llsa_case *c) {
  ditattn_context *ctx = ref_ctx();
  grad_run r = grad_run_new(ctx, c);
  const ditattn_status st = run_backward(ctx, c, &r);
  if (st != DITATTN_OK) llsa_case_print(ditattn_last_error(ctx), c, NAN);
  assert_int_equal(st, DITATTN_OK);

  const double h = 1e-5;
  const char *names[3] = {"dq", "dk", "dv"};
  const ditattn_tensor *grads[3] = {&r.dq.t, &r.dk.t, &r.dv.t};
  double num[3] = {0, 0, 0}, den[3] = {0, 0, 0};
  for (int64_t bi = 0; bi < c->B; bi++)
    for (int64_t hi = 0; hi < c->H; hi++) {
      const int64_t bh = bi * c->H + hi;
      double *x[3] = {naive_head_copy(&r.q.t, bi, hi), naive_head_copy(&r.k.t, bi, hi),
                      naive_head_copy(&r.v.t, bi, hi)};
      double *G = naive_head_copy(&r.dout.t, bi, hi);
      for (int which = 0; which < 3; which++)
        for (int64_t n = 0; n < c->N; n++)
          for (int64_t d = 0; d < c->D; d++) {
            double *e = &x[which][n * c->D + d];
            const double saved = *e;
            *e = saved + h;
            const double up = loss(c, x[0], x[1], x[2], G, r.sel.sel, bh);
            *e = saved - h;
            const double down = loss(c, x[0], x[1], x[2], G, r.sel.sel, bh);
            *e = saved;
            const double fd = (up - down) / (2.0 * h);
            const double got = *tu_at(grads[which], bi, hi, n, d);
            num[which] += isfinite(got) ? (got - fd) * (got - fd) : INFINITY;
            den[which] += fd * fd;
          }
      for (int which = 0; which < 3; which++) free(x[which]);
      free(G);
    }
  for (int which = 0; which < 3; which++) {
    const double err = sqrt(num[which] / (den[which] > 0 ? den[which] : 1.0));
    if (!(err <= 2e-5)) llsa_case_print(names[which], c, err);
    assert_true(err <= 2e-5);
    /* Not trivially zero (one token attends only to itself: dq = dk = 0). */
    if (c->N > 1 || which == 2) assert_true(den[which] > 0.0);
  }
  grad_run_free(&r);
  ditattn_context_destroy(ctx);
}

static void gradients_match_finite_differences(void **state) {
  (void)state;
  tu_seed();
  /* B, H, N, D, b, L, K, scale, pad, bnhd */
  const llsa_case cases[] = {
      {1, 2, 8, 2, 2, 1, {1}, 1.0f, 0, 0},     /* the §7 geometry */
      {1, 2, 13, 3, 2, 2, {2, 1}, 0, 0, 0},    /* partial blocks, L = 2 */
      {2, 1, 21, 3, 3, 1, {2}, 0.8f, 2, 1},    /* b = 3, strided DiT layout */
      {1, 1, 30, 2, 2, 3, {2, 2, 1}, 0, 1, 0}, /* L = 3 */
      {1, 2, 3, 4, 4, 2, {1, 1}, 0, 0, 1},     /* N < b */
      {1, 1, 19, 2, 4, 2, {9, 9}, 0, 0, 0},    /* K above every candidate count */
      {1, 1, 1, 3, 2, 2, {1, 1}, 0, 0, 0},     /* a single token */
      {1, 1, 40, 2, 16, 2, {1, 1}, 0, 0, 0},   /* b = 16 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_gradients(&cases[i]);
  for (int rep = 0; rep < 10; rep++) {
    const int64_t bs[3] = {2, 3, 4};
    llsa_case c = {1,
                   tu_rand_int(1, 2),
                   tu_rand_int(1, 24),
                   tu_rand_int(1, 3),
                   bs[tu_rand_int(0, 2)],
                   (int)tu_rand_int(1, 3),
                   {0},
                   0.0f,
                   tu_rand_int(0, 1),
                   (int)tu_rand_int(0, 1)};
    for (int l = 0; l < c.L; l++) c.K[l] = tu_rand_int(1, 3);
    check_gradients(&c);
  }
}

/* Gradients are the same for [B,N,H,D] padded views and contiguous ones. */
static void strided_gradients_match_contiguous(void **state) {
  (void)state;
  tu_seed();
  llsa_case c = {2, 2, 27, 3, 3, 2, {2, 2}, 0, 0, 0};
  ditattn_context *ctx = ref_ctx();
  grad_run a = grad_run_new(ctx, &c);
  assert_int_equal(run_backward(ctx, &c, &a), DITATTN_OK);
  llsa_case cs = c;
  cs.bnhd = 1;
  cs.pad = 2;
  grad_run s = grad_run_new(ctx, &cs);
  tu_tensor *src[] = {&a.q, &a.k, &a.v, &a.dout}, *dst[] = {&s.q, &s.k, &s.v, &s.dout};
  for (int t = 0; t < 4; t++)
    for (int64_t bi = 0; bi < c.B; bi++)
      for (int64_t hi = 0; hi < c.H; hi++)
        for (int64_t n = 0; n < c.N; n++)
          for (int64_t d = 0; d < c.D; d++)
            *tu_at(&dst[t]->t, bi, hi, n, d) = *tu_at(&src[t]->t, bi, hi, n, d);
  const ditattn_llsa_params p = llsa_case_params(&cs);
  assert_int_equal(ditattn_llsa_forward(ctx, &p, &s.q.t, &s.k.t, &s.v.t, &s.out.t, s.lse, NULL),
                   DITATTN_OK);
  assert_int_equal(run_backward(ctx, &cs, &s), DITATTN_OK);
  const double e_q = tu_rel_err(&s.dq.t, &a.dq.t), e_k = tu_rel_err(&s.dk.t, &a.dk.t),
               e_v = tu_rel_err(&s.dv.t, &a.dv.t);
  if (!(e_q == 0.0 && e_k == 0.0 && e_v == 0.0))
    llsa_case_print("strided vs contiguous gradients", &cs, e_q + e_k + e_v);
  assert_true(e_q == 0.0 && e_k == 0.0 && e_v == 0.0);
  grad_run_free(&a);
  grad_run_free(&s);
  ditattn_context_destroy(ctx);
}

static void allocation_failures_are_reported(void **state) {
  (void)state;
  tu_seed();
  llsa_case c = {1, 2, 21, 3, 2, 2, {2, 2}, 0, 0, 0};
  ditattn_context *ctx = ref_ctx();
  grad_run r = grad_run_new(ctx, &c);
  int64_t k = 1;
  for (; k < 1000; k++) {
    dt_debug_fail_alloc_at(k);
    const ditattn_status st = run_backward(ctx, &c, &r);
    if (st == DITATTN_OK) break;
    assert_int_equal(st, DITATTN_ERR_OUT_OF_MEMORY);
    assert_non_null(strstr(ditattn_last_error(ctx), "out of memory"));
  }
  dt_debug_fail_alloc_at(0);
  assert_true(k > 5);
  assert_true(isfinite(tu_rel_err(&r.dk.t, &r.dk.t)));
  grad_run_free(&r);
  ditattn_context_destroy(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(gradients_match_finite_differences),
      cmocka_unit_test(strided_gradients_match_contiguous),
      cmocka_unit_test(allocation_failures_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
