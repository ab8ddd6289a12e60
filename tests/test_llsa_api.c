/* LLSA public API: every bad-argument path of backends/api_llsa.c returns
 * its status and a last_error that names the argument; outputs stay
 * untouched on failure. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 1, H = 2, N = 10, D = 3 };

typedef struct fixture {
  ditattn_context *ctx;
  ditattn_llsa_params p;
  tu_tensor q, k, v, out, dout, dq, dk, dv;
  float lse[B * H * N];
  int32_t sel1[B * H * 5 * 2], sel2[B * H * 3 * 2];
  ditattn_llsa_selection sel;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &f->ctx), DITATTN_OK);
  f->p = (ditattn_llsa_params){2, 2, {2, 2}, 0.0f};
  tu_tensor *ts[] = {&f->q, &f->k, &f->v, &f->out, &f->dout, &f->dq, &f->dk, &f->dv};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
    *ts[i] = tu_tensor_new(B, H, N, D, 0, 0);
    tu_fill_uniform(ts[i]);
  }
  f->sel.sel[0] = f->sel1;
  f->sel.sel[1] = f->sel2;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  tu_tensor *ts[] = {&f->q, &f->k, &f->v, &f->out, &f->dout, &f->dq, &f->dk, &f->dv};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) tu_tensor_free(ts[i]);
  ditattn_context_destroy(f->ctx);
  free(f);
  return 0;
}

static ditattn_status fwd(fixture *f, const ditattn_llsa_params *p, const ditattn_tensor *q,
                          const ditattn_tensor *k, const ditattn_tensor *v, ditattn_tensor *out,
                          float *lse, ditattn_llsa_selection *sel) {
  tu_poison(&f->out);
  return ditattn_llsa_forward(f->ctx, p, q, k, v, out, lse, sel);
}

/* The call failed with `status` and the message mentions `needle`. */
static void expect(fixture *f, ditattn_status got, ditattn_status status, const char *needle) {
  const char *msg = ditattn_last_error(f->ctx);
  if (got != status || !strstr(msg, needle))
    fprintf(stderr, "expected status %d mentioning \"%s\", got %d: \"%s\"\n", (int)status, needle,
            (int)got, msg);
  assert_int_equal(got, status);
  assert_non_null(strstr(msg, needle));
}

static void defaults_and_counts(void **state) {
  (void)state;
  const ditattn_llsa_params d = ditattn_llsa_params_default();
  assert_int_equal(d.block, 16);
  assert_int_equal(d.levels, 2);
  assert_int_equal(d.topk[0], 8);
  assert_int_equal(d.topk[1], 8);
  assert_true(d.scale <= 0.0f);
  const ditattn_llsa_params p = {3, 2, {4, 5}, 0.0f};
  /* N = 10, b = 3: n_1 = 4, n_2 = 2. */
  assert_int_equal(ditattn_llsa_selection_count(&p, 2, 3, 10, 1), 2 * 3 * 4 * 4);
  assert_int_equal(ditattn_llsa_selection_count(&p, 2, 3, 10, 2), 2 * 3 * 2 * 5);
  assert_int_equal(ditattn_llsa_selection_count(&p, 2, 3, 10, 0), 0);
  assert_int_equal(ditattn_llsa_selection_count(&p, 2, 3, 10, 3), 0);
  assert_int_equal(ditattn_llsa_selection_count(&p, 0, 3, 10, 1), 0);
  assert_int_equal(ditattn_llsa_selection_count(&p, 2, 3, 0, 1), 0);
  assert_int_equal(ditattn_llsa_selection_count(NULL, 2, 3, 10, 1), 0);
  const ditattn_llsa_params bad = {1, 2, {4, 5}, 0.0f};
  assert_int_equal(ditattn_llsa_selection_count(&bad, 2, 3, 10, 1), 0);
  const ditattn_llsa_params huge = {2, 1, {INT32_MAX}, 0.0f};
  assert_int_equal(ditattn_llsa_selection_count(&huge, INT64_MAX / 4, 4, 8, 1), 0);
}

static void forward_rejects_bad_params(void **state) {
  fixture *f = *state;
  const ditattn_tensor *q = &f->q.t, *k = &f->k.t, *v = &f->v.t;
  ditattn_tensor *o = &f->out.t;
  assert_int_equal(ditattn_llsa_forward(NULL, &f->p, q, k, v, o, f->lse, NULL),
                   DITATTN_ERR_NULL_POINTER);
  expect(f, fwd(f, NULL, q, k, v, o, NULL, NULL), DITATTN_ERR_NULL_POINTER, "params");
  ditattn_llsa_params p = f->p;
  p.block = 1;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "block size b");
  p.block = -4;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "block size b");
  p = f->p;
  p.levels = 0;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "levels L");
  p.levels = DITATTN_LLSA_MAX_LEVELS + 1;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "levels L");
  p = f->p;
  p.topk[1] = 0;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "top-K of level 2");
  p.topk[1] = -3;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "top-K of level 2");
  p = f->p;
  p.topk[0] = (int64_t)INT32_MAX + 1;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_OVERFLOW, "top-K of level 1");
  p = f->p;
  p.scale = NAN;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "scale");
  p.scale = INFINITY;
  expect(f, fwd(f, &p, q, k, v, o, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "scale");
  /* Entries past `levels` are ignored, even if invalid. */
  p = f->p;
  p.levels = 1;
  p.topk[1] = 0;
  assert_int_equal(fwd(f, &p, q, k, v, o, f->lse, NULL), DITATTN_OK);
  assert_string_equal(ditattn_last_error(f->ctx), "");
}

static void forward_rejects_bad_tensors(void **state) {
  fixture *f = *state;
  const ditattn_llsa_params *p = &f->p;
  const ditattn_tensor *q = &f->q.t, *k = &f->k.t, *v = &f->v.t;
  ditattn_tensor *o = &f->out.t;
  expect(f, fwd(f, p, NULL, k, v, o, NULL, NULL), DITATTN_ERR_NULL_POINTER, "q");
  expect(f, fwd(f, p, q, NULL, v, o, NULL, NULL), DITATTN_ERR_NULL_POINTER, "tensor k");
  expect(f, fwd(f, p, q, k, NULL, o, NULL, NULL), DITATTN_ERR_NULL_POINTER, "tensor v");
  expect(f, fwd(f, p, q, k, v, NULL, NULL, NULL), DITATTN_ERR_NULL_POINTER, "tensor out");
  ditattn_tensor t = *q;
  t.data = NULL;
  expect(f, fwd(f, p, &t, k, v, o, NULL, NULL), DITATTN_ERR_NULL_POINTER, "q.data");
  t = *k;
  t.shape[2] = N - 1;
  expect(f, fwd(f, p, q, &t, v, o, NULL, NULL), DITATTN_ERR_SHAPE_MISMATCH, "k.shape[2]");
  t = *v;
  t.shape[3] = D + 1;
  expect(f, fwd(f, p, q, k, &t, o, NULL, NULL), DITATTN_ERR_SHAPE_MISMATCH, "v.shape[3]");
  t = *q;
  t.shape[1] = 0;
  expect(f, fwd(f, p, &t, k, v, o, NULL, NULL), DITATTN_ERR_SHAPE_MISMATCH, "q.shape[1]");
  ditattn_tensor ot = *o;
  ot.shape[0] = B + 1;
  expect(f, fwd(f, p, q, k, v, &ot, NULL, NULL), DITATTN_ERR_SHAPE_MISMATCH, "out.shape[0]");
  t = *v;
  t.dtype = DITATTN_BF16;
  expect(f, fwd(f, p, q, k, &t, o, NULL, NULL), DITATTN_ERR_DTYPE, "v");
  t = *q;
  t.dtype = (ditattn_dtype)42;
  expect(f, fwd(f, p, &t, k, v, o, NULL, NULL), DITATTN_ERR_DTYPE, "q");
  t = *k;
  t.stride[2] = -1;
  expect(f, fwd(f, p, q, &t, v, o, NULL, NULL), DITATTN_ERR_BAD_STRIDE, "k.stride[2]");
  ot = *o;
  ot.stride[2] = 1; /* rows overlap */
  expect(f, fwd(f, p, q, k, v, &ot, NULL, NULL), DITATTN_ERR_BAD_STRIDE, "output out");
  /* out aliasing an input */
  ot = *o;
  ot.data = f->k.buf;
  expect(f, fwd(f, p, q, k, v, &ot, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "out overlaps k");
  ot.data = f->q.buf + 1;
  expect(f, fwd(f, p, q, k, v, &ot, NULL, NULL), DITATTN_ERR_INVALID_ARGUMENT, "out overlaps q");
}

static void forward_rejects_overlapping_buffers(void **state) {
  fixture *f = *state;
  const ditattn_llsa_params *p = &f->p;
  const ditattn_tensor *q = &f->q.t, *k = &f->k.t, *v = &f->v.t;
  ditattn_tensor *o = &f->out.t;
  expect(f, fwd(f, p, q, k, v, o, f->out.buf + 3, NULL), DITATTN_ERR_INVALID_ARGUMENT,
         "lse overlaps out");
  expect(f, fwd(f, p, q, k, v, o, f->v.buf, NULL), DITATTN_ERR_INVALID_ARGUMENT, "lse overlaps v");
  ditattn_llsa_selection s = f->sel;
  s.sel[1] = (int32_t *)f->out.buf;
  expect(f, fwd(f, p, q, k, v, o, f->lse, &s), DITATTN_ERR_INVALID_ARGUMENT,
         "selection->sel[1] overlaps out");
  s = f->sel;
  s.sel[0] = (int32_t *)(void *)f->lse + 2;
  expect(f, fwd(f, p, q, k, v, o, f->lse, &s), DITATTN_ERR_INVALID_ARGUMENT,
         "selection->sel[0] overlaps lse");
  s = f->sel;
  s.sel[1] = f->sel1 + 1;
  expect(f, fwd(f, p, q, k, v, o, f->lse, &s), DITATTN_ERR_INVALID_ARGUMENT,
         "selection->sel[1] overlaps selection->sel[0]");
  /* NULL entries, and entries past `levels`, are skipped. */
  s = f->sel;
  s.sel[0] = NULL;
  s.sel[2] = (int32_t *)f->q.buf;
  assert_int_equal(fwd(f, p, q, k, v, o, f->lse, &s), DITATTN_OK);
  assert_int_equal(fwd(f, p, q, k, v, o, NULL, &f->sel), DITATTN_OK);
}

/* A failed call leaves out untouched (still poison) and a later good call clears the error. */
static void failure_leaves_outputs_untouched(void **state) {
  fixture *f = *state;
  ditattn_llsa_params p = f->p;
  p.topk[0] = 0;
  for (int i = 0; i < B * H * N; i++) f->lse[i] = -123.0f;
  expect(f, fwd(f, &p, &f->q.t, &f->k.t, &f->v.t, &f->out.t, f->lse, &f->sel),
         DITATTN_ERR_INVALID_ARGUMENT, "top-K");
  for (size_t i = 0; i < f->out.count; i++) assert_true(isnan(f->out.buf[i]));
  for (int i = 0; i < B * H * N; i++) assert_true(f->lse[i] == -123.0f);
  assert_int_equal(fwd(f, &f->p, &f->q.t, &f->k.t, &f->v.t, &f->out.t, f->lse, &f->sel),
                   DITATTN_OK);
  assert_string_equal(ditattn_last_error(f->ctx), "");
  assert_true(isfinite(tu_rel_err(&f->out.t, &f->out.t)));
}

static ditattn_status bwd(fixture *f, const ditattn_llsa_params *p, const ditattn_tensor *out,
                          const float *lse, const ditattn_tensor *dout, ditattn_tensor *dq,
                          ditattn_tensor *dk, ditattn_tensor *dv) {
  return ditattn_llsa_backward(f->ctx, p, &f->q.t, &f->k.t, &f->v.t, out, lse, dout, dq, dk, dv);
}

static void backward_rejects_bad_arguments(void **state) {
  fixture *f = *state;
  const ditattn_llsa_params *p = &f->p;
  assert_int_equal(fwd(f, p, &f->q.t, &f->k.t, &f->v.t, &f->out.t, f->lse, NULL), DITATTN_OK);
  const ditattn_tensor *o = &f->out.t, *go = &f->dout.t;
  ditattn_tensor *dq = &f->dq.t, *dk = &f->dk.t, *dv = &f->dv.t;
  assert_int_equal(
      ditattn_llsa_backward(NULL, p, &f->q.t, &f->k.t, &f->v.t, o, f->lse, go, dq, dk, dv),
      DITATTN_ERR_NULL_POINTER);
  expect(f, bwd(f, NULL, o, f->lse, go, dq, dk, dv), DITATTN_ERR_NULL_POINTER, "params");
  ditattn_llsa_params bp = *p;
  bp.block = 0;
  expect(f, bwd(f, &bp, o, f->lse, go, dq, dk, dv), DITATTN_ERR_INVALID_ARGUMENT, "block");
  bp = *p;
  bp.levels = 9;
  expect(f, bwd(f, &bp, o, f->lse, go, dq, dk, dv), DITATTN_ERR_INVALID_ARGUMENT, "levels");
  bp = *p;
  bp.topk[0] = 0;
  expect(f, bwd(f, &bp, o, f->lse, go, dq, dk, dv), DITATTN_ERR_INVALID_ARGUMENT, "top-K");
  bp = *p;
  bp.scale = NAN;
  expect(f, bwd(f, &bp, o, f->lse, go, dq, dk, dv), DITATTN_ERR_INVALID_ARGUMENT, "scale");
  expect(f, bwd(f, p, o, NULL, go, dq, dk, dv), DITATTN_ERR_NULL_POINTER, "lse");
  expect(f, bwd(f, p, NULL, f->lse, go, dq, dk, dv), DITATTN_ERR_NULL_POINTER, "tensor out");
  expect(f, bwd(f, p, o, f->lse, NULL, dq, dk, dv), DITATTN_ERR_NULL_POINTER, "tensor dout");
  expect(f, bwd(f, p, o, f->lse, go, NULL, dk, dv), DITATTN_ERR_NULL_POINTER, "tensor dq");
  expect(f, bwd(f, p, o, f->lse, go, dq, NULL, dv), DITATTN_ERR_NULL_POINTER, "tensor dk");
  expect(f, bwd(f, p, o, f->lse, go, dq, dk, NULL), DITATTN_ERR_NULL_POINTER, "tensor dv");
  ditattn_tensor t = *o;
  t.shape[2] = N + 1;
  expect(f, bwd(f, p, &t, f->lse, go, dq, dk, dv), DITATTN_ERR_SHAPE_MISMATCH, "out.shape[2]");
  t = *go;
  t.shape[3] = 1;
  expect(f, bwd(f, p, o, f->lse, &t, dq, dk, dv), DITATTN_ERR_SHAPE_MISMATCH, "dout.shape[3]");
  t = *dv;
  t.shape[1] = 1;
  expect(f, bwd(f, p, o, f->lse, go, dq, dk, &t), DITATTN_ERR_SHAPE_MISMATCH, "dv.shape[1]");
  t = *go;
  t.dtype = DITATTN_F16;
  expect(f, bwd(f, p, o, f->lse, &t, dq, dk, dv), DITATTN_ERR_DTYPE, "dout");
  t = *dk;
  t.stride[1] = 0; /* heads would overlap */
  expect(f, bwd(f, p, o, f->lse, go, dq, &t, dv), DITATTN_ERR_BAD_STRIDE, "output dk");
  t = *dq;
  t.data = f->dk.buf;
  expect(f, bwd(f, p, o, f->lse, go, &t, dk, dv), DITATTN_ERR_INVALID_ARGUMENT, "dk overlaps dq");
  t = *dv;
  t.data = f->dout.buf;
  expect(f, bwd(f, p, o, f->lse, go, dq, dk, &t), DITATTN_ERR_INVALID_ARGUMENT, "dv overlaps dout");
  t = *dq;
  t.data = f->out.buf;
  expect(f, bwd(f, p, o, f->lse, go, &t, dk, dv), DITATTN_ERR_INVALID_ARGUMENT, "dq overlaps out");
  t = *dk;
  t.data = f->v.buf;
  expect(f, bwd(f, p, o, f->lse, go, dq, &t, dv), DITATTN_ERR_INVALID_ARGUMENT, "dk overlaps v");
  expect(f, bwd(f, p, o, f->dk.buf + 1, go, dq, dk, dv), DITATTN_ERR_INVALID_ARGUMENT,
         "lse overlaps dk");
  /* Inputs may alias each other (e.g. q = k): only outputs must be disjoint. */
  assert_int_equal(
      ditattn_llsa_backward(f->ctx, p, &f->q.t, &f->q.t, &f->q.t, o, f->lse, go, dq, dk, dv),
      DITATTN_OK);
  assert_string_equal(ditattn_last_error(f->ctx), "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(defaults_and_counts),
      cmocka_unit_test_setup_teardown(forward_rejects_bad_params, setup, teardown),
      cmocka_unit_test_setup_teardown(forward_rejects_bad_tensors, setup, teardown),
      cmocka_unit_test_setup_teardown(forward_rejects_overlapping_buffers, setup, teardown),
      cmocka_unit_test_setup_teardown(failure_leaves_outputs_untouched, setup, teardown),
      cmocka_unit_test_setup_teardown(backward_rejects_bad_arguments, setup, teardown),
  };
  tu_seed();
  return cmocka_run_group_tests(tests, NULL, NULL);
}
