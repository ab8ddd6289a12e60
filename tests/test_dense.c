/* Dense attention: forward against a naive two-pass implementation written
 * here, backward against central finite differences in double. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct shape {
  int64_t B, H, Nq, Nk, D, pad;
  int bnhd;
  float scale; /* as passed: <= 0 means 1/sqrt(D) */
} shape;

static void print_shape(const char *what, const shape *s, double err) {
  fprintf(stderr,
          "%s: B=%lld H=%lld Nq=%lld Nk=%lld D=%lld pad=%lld layout=%s scale=%g err=%.3e (seed "
          "printed above)\n",
          what, (long long)s->B, (long long)s->H, (long long)s->Nq, (long long)s->Nk,
          (long long)s->D, (long long)s->pad, s->bnhd ? "bnhd" : "bhnd", (double)s->scale, err);
}

static shape random_shape(int64_t max_n, int64_t max_d) {
  shape s = {
      tu_rand_int(1, 2),     tu_rand_int(1, 3), tu_rand_int(1, max_n),  tu_rand_int(1, max_n),
      tu_rand_int(1, max_d), tu_rand_int(0, 3), (int)tu_rand_int(0, 1), 0.0f};
  if (tu_rand_int(0, 1)) s.scale = (float)tu_uniform(0.1, 2.0);
  return s;
}

static double resolved_scale(const shape *s) {
  return s->scale > 0.0f ? (double)s->scale : 1.0 / sqrt((double)s->D);
}

/* Naive attention for one query row in double: max, normalizer, weighted sum.
 * Inputs are read through accessors so the FD test can perturb copies. */
typedef double (*elem_fn)(const void *ctx, int which, int64_t b, int64_t h, int64_t n, int64_t d);
enum { Q = 0, K = 1, V = 2 };

static void naive_row(elem_fn at, const void *src, const shape *s, int64_t b, int64_t h, int64_t i,
                      double *out_row, double *lse) {
  const double scale = resolved_scale(s);
  double *score = malloc((size_t)s->Nk * sizeof *score);
  assert_non_null(score);
  double max = -INFINITY;
  for (int64_t j = 0; j < s->Nk; j++) {
    double dot = 0.0;
    for (int64_t d = 0; d < s->D; d++) dot += at(src, Q, b, h, i, d) * at(src, K, b, h, j, d);
    score[j] = scale * dot;
    if (score[j] > max) max = score[j];
  }
  double denom = 0.0;
  for (int64_t j = 0; j < s->Nk; j++) denom += exp(score[j] - max);
  for (int64_t d = 0; d < s->D; d++) {
    double num = 0.0;
    for (int64_t j = 0; j < s->Nk; j++) num += exp(score[j] - max) * at(src, V, b, h, j, d);
    out_row[d] = num / denom;
  }
  *lse = max + log(denom);
  free(score);
}

typedef struct f32_inputs {
  const ditattn_tensor *t[3];
} f32_inputs;

static double f32_elem(const void *ctx, int which, int64_t b, int64_t h, int64_t n, int64_t d) {
  const f32_inputs *in = ctx;
  return *tu_at(in->t[which], b, h, n, d);
}

static void forward_matches_naive(void **state) {
  (void)state;
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  for (int trial = 0; trial < 40; trial++) {
    shape s = random_shape(trial < 30 ? 24 : 70, 20);
    tu_tensor q = tu_tensor_new(s.B, s.H, s.Nq, s.D, s.pad, s.bnhd);
    tu_tensor k = tu_tensor_new(s.B, s.H, s.Nk, s.D, s.pad, !s.bnhd);
    tu_tensor v = tu_tensor_new(s.B, s.H, s.Nk, s.D, s.pad, s.bnhd);
    tu_tensor out = tu_tensor_new(s.B, s.H, s.Nq, s.D, s.pad, s.bnhd);
    tu_tensor want = tu_tensor_new(s.B, s.H, s.Nq, s.D, 0, 0);
    tu_fill_uniform(&q);
    tu_fill_uniform(&k);
    tu_fill_uniform(&v);
    /* Larger logits on some trials: the max subtraction must matter. */
    if (trial % 4 == 3) s.scale = 8.0f;
    const size_t rows = (size_t)(s.B * s.H * s.Nq);
    float *lse = malloc(rows * sizeof *lse), *want_lse = malloc(rows * sizeof *want_lse);
    assert_non_null(lse);
    assert_non_null(want_lse);
    tu_poison_floats(lse, rows);
    ditattn_status st = ditattn_dense_forward(ctx, &q.t, &k.t, &v.t, s.scale, &out.t, lse);
    if (st != DITATTN_OK) fprintf(stderr, "%s\n", ditattn_last_error(ctx));
    assert_int_equal(st, DITATTN_OK);

    f32_inputs in = {{&q.t, &k.t, &v.t}};
    double *row = malloc((size_t)s.D * sizeof *row);
    assert_non_null(row);
    for (int64_t b = 0; b < s.B; b++)
      for (int64_t h = 0; h < s.H; h++)
        for (int64_t i = 0; i < s.Nq; i++) {
          double l;
          naive_row(f32_elem, &in, &s, b, h, i, row, &l);
          for (int64_t d = 0; d < s.D; d++) *tu_at(&want.t, b, h, i, d) = (float)row[d];
          want_lse[(b * s.H + h) * s.Nq + i] = (float)l;
        }
    const double err_out = tu_rel_err(&out.t, &want.t);
    const double err_lse = tu_rel_err_floats(lse, want_lse, rows);
    if (!(err_out <= 1e-5)) print_shape("dense forward out", &s, err_out);
    if (!(err_lse <= 1e-5)) print_shape("dense forward lse", &s, err_lse);
    assert_true(err_out <= 1e-5);
    assert_true(err_lse <= 1e-5);
    /* Without lse the output is the same. */
    tu_poison(&out);
    assert_int_equal(ditattn_dense_forward(ctx, &q.t, &k.t, &v.t, s.scale, &out.t, NULL),
                     DITATTN_OK);
    assert_true(tu_rel_err(&out.t, &want.t) <= 1e-5);
    free(row);
    free(lse);
    free(want_lse);
    tu_tensor_free(&q);
    tu_tensor_free(&k);
    tu_tensor_free(&v);
    tu_tensor_free(&out);
    tu_tensor_free(&want);
  }
  ditattn_context_destroy(ctx);
}

/* Double copies of q, k, v that finite differences perturb. */
typedef struct f64_inputs {
  double *x[3];
  int64_t n[3];
  const shape *s;
} f64_inputs;

static double *f64_ptr(const f64_inputs *in, int which, int64_t b, int64_t h, int64_t n,
                       int64_t d) {
  const shape *s = in->s;
  return in->x[which] + ((b * s->H + h) * in->n[which] + n) * s->D + d;
}

static double f64_elem(const void *ctx, int which, int64_t b, int64_t h, int64_t n, int64_t d) {
  return *f64_ptr(ctx, which, b, h, n, d);
}

/* L = Σ out ∘ G over head (b, h) (other heads do not depend on its inputs). */
static double head_loss(const f64_inputs *in, const tu_tensor *G, int64_t b, int64_t h) {
  const shape *s = in->s;
  double *row = malloc((size_t)s->D * sizeof *row);
  assert_non_null(row);
  double loss = 0.0;
  for (int64_t i = 0; i < s->Nq; i++) {
    double l;
    naive_row(f64_elem, in, s, b, h, i, row, &l);
    for (int64_t d = 0; d < s->D; d++) loss += row[d] * (double)*tu_at(&G->t, b, h, i, d);
  }
  free(row);
  return loss;
}

/* The loss is evaluated in double on the exact f32 input values, so a central
 * difference with step 1e-4 has truncation error ~1e-8 and round-off ~1e-12
 * relative: it is an exact gradient for our purposes. What remains is the
 * library's f32 storage (out and lse from the f32 forward, f32 gradients),
 * about 1e-7 relative; hence the tolerance 1e-5 on ‖grad − fd‖/‖fd‖. */
#define FD_STEP 1e-4
#define FD_TOL  1e-5

static void backward_matches_finite_differences(void **state) {
  (void)state;
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  for (int trial = 0; trial < 12; trial++) {
    shape s = random_shape(9, 6);
    if (trial == 0) s.Nq = 1;
    if (trial == 1) s.Nk = 1;
    tu_tensor q = tu_tensor_new(s.B, s.H, s.Nq, s.D, s.pad, s.bnhd);
    tu_tensor k = tu_tensor_new(s.B, s.H, s.Nk, s.D, s.pad, !s.bnhd);
    tu_tensor v = tu_tensor_new(s.B, s.H, s.Nk, s.D, s.pad, s.bnhd);
    tu_tensor out = tu_tensor_new(s.B, s.H, s.Nq, s.D, 0, s.bnhd);
    tu_tensor G = tu_tensor_new(s.B, s.H, s.Nq, s.D, s.pad, !s.bnhd); /* = dout */
    tu_tensor grads[3] = {tu_tensor_new(s.B, s.H, s.Nq, s.D, s.pad, s.bnhd),
                          tu_tensor_new(s.B, s.H, s.Nk, s.D, 1, !s.bnhd),
                          tu_tensor_new(s.B, s.H, s.Nk, s.D, s.pad, 0)};
    tu_tensor fd[3] = {tu_tensor_new(s.B, s.H, s.Nq, s.D, 0, 0),
                       tu_tensor_new(s.B, s.H, s.Nk, s.D, 0, 0),
                       tu_tensor_new(s.B, s.H, s.Nk, s.D, 0, 0)};
    tu_fill_uniform(&q);
    tu_fill_uniform(&k);
    tu_fill_uniform(&v);
    tu_fill_uniform(&G);
    const size_t rows = (size_t)(s.B * s.H * s.Nq);
    float *lse = malloc(rows * sizeof *lse);
    assert_non_null(lse);
    tu_poison_floats(lse, rows);
    assert_int_equal(ditattn_dense_forward(ctx, &q.t, &k.t, &v.t, s.scale, &out.t, lse),
                     DITATTN_OK);
    ditattn_status st = ditattn_dense_backward(ctx, &q.t, &k.t, &v.t, &out.t, lse, &G.t, s.scale,
                                               &grads[0].t, &grads[1].t, &grads[2].t);
    if (st != DITATTN_OK) fprintf(stderr, "%s\n", ditattn_last_error(ctx));
    assert_int_equal(st, DITATTN_OK);

    const tu_tensor *src[3] = {&q, &k, &v};
    f64_inputs in = {{NULL, NULL, NULL}, {s.Nq, s.Nk, s.Nk}, &s};
    for (int w = 0; w < 3; w++) {
      in.x[w] = malloc((size_t)(s.B * s.H * in.n[w] * s.D) * sizeof(double));
      assert_non_null(in.x[w]);
      for (int64_t b = 0; b < s.B; b++)
        for (int64_t h = 0; h < s.H; h++)
          for (int64_t n = 0; n < in.n[w]; n++)
            for (int64_t d = 0; d < s.D; d++)
              *f64_ptr(&in, w, b, h, n, d) = *tu_at(&src[w]->t, b, h, n, d);
    }
    for (int w = 0; w < 3; w++)
      for (int64_t b = 0; b < s.B; b++)
        for (int64_t h = 0; h < s.H; h++)
          for (int64_t n = 0; n < in.n[w]; n++)
            for (int64_t d = 0; d < s.D; d++) {
              double *x = f64_ptr(&in, w, b, h, n, d);
              const double x0 = *x;
              *x = x0 + FD_STEP;
              const double plus = head_loss(&in, &G, b, h);
              *x = x0 - FD_STEP;
              const double minus = head_loss(&in, &G, b, h);
              *x = x0;
              *tu_at(&fd[w].t, b, h, n, d) = (float)((plus - minus) / (2.0 * FD_STEP));
            }
    static const char *const names[3] = {"dense backward dq", "dense backward dk",
                                         "dense backward dv"};
    for (int w = 0; w < 3; w++) {
      const double err = tu_rel_err(&grads[w].t, &fd[w].t);
      if (getenv("DITATTN_TEST_VERBOSE") || !(err <= FD_TOL)) print_shape(names[w], &s, err);
      assert_true(err <= FD_TOL);
    }
    for (int w = 0; w < 3; w++) {
      free(in.x[w]);
      tu_tensor_free(&grads[w]);
      tu_tensor_free(&fd[w]);
    }
    free(lse);
    tu_tensor_free(&q);
    tu_tensor_free(&k);
    tu_tensor_free(&v);
    tu_tensor_free(&out);
    tu_tensor_free(&G);
  }
  ditattn_context_destroy(ctx);
}

/* Huge logits: a one-pass exp without the max would overflow to inf/NaN. */
static void forward_survives_large_logits(void **state) {
  (void)state;
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  shape s = {1, 2, 5, 7, 4, 0, 0, 400.0f};
  tu_tensor q = tu_tensor_new(s.B, s.H, s.Nq, s.D, 0, 0),
            k = tu_tensor_new(s.B, s.H, s.Nk, s.D, 0, 0);
  tu_tensor v = tu_tensor_new(s.B, s.H, s.Nk, s.D, 0, 0),
            out = tu_tensor_new(s.B, s.H, s.Nq, s.D, 0, 0);
  tu_tensor want = tu_tensor_new(s.B, s.H, s.Nq, s.D, 0, 0);
  tu_fill_uniform(&q);
  tu_fill_uniform(&k);
  tu_fill_uniform(&v);
  float lse[10];
  assert_int_equal(ditattn_dense_forward(ctx, &q.t, &k.t, &v.t, s.scale, &out.t, lse), DITATTN_OK);
  f32_inputs in = {{&q.t, &k.t, &v.t}};
  double row[4], l;
  for (int64_t h = 0; h < s.H; h++)
    for (int64_t i = 0; i < s.Nq; i++) {
      naive_row(f32_elem, &in, &s, 0, h, i, row, &l);
      for (int d = 0; d < 4; d++) *tu_at(&want.t, 0, h, i, d) = (float)row[d];
      assert_true(fabs(lse[h * s.Nq + i] - l) <= 1e-5 * fabs(l));
    }
  assert_true(tu_rel_err(&out.t, &want.t) <= 1e-5);
  tu_tensor_free(&q);
  tu_tensor_free(&k);
  tu_tensor_free(&v);
  tu_tensor_free(&out);
  tu_tensor_free(&want);
  ditattn_context_destroy(ctx);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(forward_matches_naive),
      cmocka_unit_test(forward_survives_large_logits),
      cmocka_unit_test(backward_matches_finite_differences),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
