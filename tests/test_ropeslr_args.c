/* RoPeSLR argument validation: every check of backends/api_ropeslr.c gives
 * its status and a message naming the argument; a valid call still works
 * after each rejected one. */
#include "test_ropeslr_fixture.h"

#include <math.h>

typedef struct fixture {
  ditattn_context *ctx;
  slr_problem p;
  tu_tensor out, dout, g[3], dw[6];
  float *lse;
  int32_t *sel;
} fixture;

static fixture make_fixture(void) {
  fixture f;
  memset(&f, 0, sizeof f);
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &f.ctx), DITATTN_OK);
  f.p = slr_problem_make(1, 2, 4, 3, 2, 2, 3, 4); /* N = 12, n = 3 */
  f.p.params.rho = 0.5;
  f.p.shuffled = 1;
  slr_problem_init(&f.p, tu_seed());
  f.out = tu_tensor_new(1, 2, 12, 4, 0, 0);
  f.dout = tu_tensor_new(1, 2, 12, 4, 0, 0);
  tu_fill_uniform(&f.dout);
  for (int i = 0; i < 3; i++) f.g[i] = tu_tensor_new(1, 2, 12, 4, 0, 0);
  for (int a = 0; a < 6; a++) {
    int64_t rows, cols;
    slr_weight_dims(&f.p, a, &rows, &cols);
    f.dw[a] = tu_tensor_new(1, 2, rows, cols, 0, 0);
  }
  f.lse = malloc(2 * 12 * sizeof(float));
  f.sel = malloc((size_t)ditattn_ropeslr_selection_count(&f.p.params, 1, 2, 12) * 4);
  return f;
}

static void free_fixture(fixture *f) {
  tu_tensor_free(&f->out);
  tu_tensor_free(&f->dout);
  for (int i = 0; i < 3; i++) tu_tensor_free(&f->g[i]);
  for (int a = 0; a < 6; a++) tu_tensor_free(&f->dw[a]);
  free(f->lse);
  free(f->sel);
  slr_problem_free(&f->p);
  ditattn_context_destroy(f->ctx);
}

/* Arguments of one call, copied from the fixture and then broken. */
typedef struct call_args {
  ditattn_ropeslr_params params;
  ditattn_ropeslr_weights w, dw;
  const int32_t *pos;
  ditattn_tensor q, k, v, out, dout, dq, dk, dv;
  float *lse;
  int32_t *sel;
  int null_params, null_weights, null_dweights, null_q, null_out;
} call_args;

static call_args args_of(const fixture *f) {
  call_args a;
  memset(&a, 0, sizeof a);
  a.params = f->p.params;
  a.w = slr_weights_of((tu_tensor *)f->p.w);
  a.dw = slr_weights_of((tu_tensor *)f->dw);
  a.pos = f->p.pos;
  a.q = f->p.q.t, a.k = f->p.k.t, a.v = f->p.v.t, a.out = f->out.t, a.dout = f->dout.t;
  a.dq = f->g[0].t, a.dk = f->g[1].t, a.dv = f->g[2].t;
  a.lse = f->lse;
  a.sel = f->sel;
  return a;
}

static ditattn_status run_forward(ditattn_context *ctx, call_args *a) {
  return ditattn_ropeslr_forward(ctx, a->null_params ? NULL : &a->params,
                                 a->null_weights ? NULL : &a->w, a->pos, a->null_q ? NULL : &a->q,
                                 &a->k, &a->v, a->null_out ? NULL : &a->out, a->lse, a->sel);
}

static ditattn_status run_backward(ditattn_context *ctx, call_args *a) {
  return ditattn_ropeslr_backward(ctx, a->null_params ? NULL : &a->params,
                                  a->null_weights ? NULL : &a->w, a->pos, a->null_q ? NULL : &a->q,
                                  &a->k, &a->v, &a->dout, &a->dq, &a->dk, &a->dv,
                                  a->null_dweights ? NULL : &a->dw);
}

/* Expects `status` and a message containing `word` (NULL: any message). */
static void expect(fixture *f, int backward, call_args *a, ditattn_status status, const char *word,
                   const char *what) {
  ditattn_status st = backward ? run_backward(f->ctx, a) : run_forward(f->ctx, a);
  const char *msg = ditattn_last_error(f->ctx);
  if (st != status || (word && !strstr(msg, word)))
    fail_msg("%s %s: got %s (\"%s\"), expected %s mentioning \"%s\"",
             backward ? "backward" : "forward", what, ditattn_strerror(st), msg,
             ditattn_strerror(status), word ? word : "");
}

#define CASE(bwd, status, word, what, mutation)                                                    \
  do {                                                                                             \
    call_args a = args_of(&f);                                                                     \
    mutation;                                                                                      \
    expect(&f, bwd, &a, status, word, what);                                                       \
  } while (0)

/* Checks shared by forward and backward. */
static void shared_checks(fixture *f_ptr, int bwd) {
  fixture f = *f_ptr;
  const ditattn_status INV = DITATTN_ERR_INVALID_ARGUMENT, SHAPE = DITATTN_ERR_SHAPE_MISMATCH;
  CASE(bwd, DITATTN_OK, NULL, "valid call", (void)0);
  assert_int_equal(bwd ? run_backward(NULL, &(call_args){0}) : run_forward(NULL, &(call_args){0}),
                   DITATTN_ERR_NULL_POINTER);
  CASE(bwd, DITATTN_ERR_NULL_POINTER, "params", "params NULL", a.null_params = 1);
  CASE(bwd, INV, "block", "block 0", a.params.block = 0);
  CASE(bwd, INV, "rho", "rho 0", a.params.rho = 0.0);
  CASE(bwd, INV, "rho", "rho > 1", a.params.rho = 1.5);
  CASE(bwd, INV, "rho", "rho NaN", a.params.rho = NAN);
  CASE(bwd, INV, "topk", "FIXED_K 0", (a.params.policy = DITATTN_SLR_FIXED_K, a.params.topk = 0));
  CASE(bwd, INV, "sqrt_c", "SQRT c 0", (a.params.policy = DITATTN_SLR_SQRT, a.params.sqrt_c = 0));
  CASE(bwd, INV, "sqrt_c", "SQRT c inf",
       (a.params.policy = DITATTN_SLR_SQRT, a.params.sqrt_c = INFINITY));
  CASE(bwd, INV, "policy", "unknown policy", a.params.policy = (ditattn_slr_policy)7);
  CASE(bwd, INV, "force_own_block", "force_own 2", a.params.force_own_block = 2);
  CASE(bwd, INV, "rank", "rank 0", a.params.rank = 0);
  CASE(bwd, INV, "feature", "unknown feature", a.params.feature = (ditattn_slr_feature)5);
  CASE(bwd, INV, "grid", "grid unset", a.params.grid[1] = 0);
  CASE(bwd, INV, "grid", "grid > int32", a.params.grid[2] = (int64_t)INT32_MAX + 1);
  CASE(bwd, DITATTN_ERR_OVERFLOW, "grid", "grid product",
       a.params.grid[0] = a.params.grid[1] = a.params.grid[2] = INT32_MAX);
  CASE(bwd, INV, "scale", "scale NaN", a.params.scale = NAN);
  CASE(bwd, DITATTN_ERR_NULL_POINTER, "q", "q NULL", a.null_q = 1);
  CASE(bwd, DITATTN_ERR_NULL_POINTER, "k.data", "k data NULL", a.k.data = NULL);
  CASE(bwd, SHAPE, "k", "k N", a.k.shape[2] = 11);
  CASE(bwd, SHAPE, "v", "v D", a.v.shape[3] = 3);
  CASE(bwd, SHAPE, "v", "v H", a.v.shape[1] = 1);
  CASE(bwd, DITATTN_ERR_DTYPE, "k", "k bf16", a.k.dtype = DITATTN_BF16);
  CASE(bwd, DITATTN_ERR_DTYPE, "q", "q bf16 (ref takes f32)", a.q.dtype = DITATTN_BF16);
  CASE(bwd, DITATTN_ERR_BAD_STRIDE, "v", "negative stride", a.v.stride[2] = -4);
  CASE(bwd, DITATTN_ERR_NULL_POINTER, "weights", "weights NULL", a.null_weights = 1);
  CASE(bwd, SHAPE, "A", "A rank", a.w.A.shape[3] = 4);
  CASE(bwd, SHAPE, "Bk", "Bk D", a.w.Bk.shape[2] = 3);
  CASE(bwd, SHAPE, "Et", "Et rows != T", a.w.Et.shape[2] = 3);
  CASE(bwd, SHAPE, "Ey", "Ey rows != H", a.w.Ey.shape[2] = 3);
  CASE(bwd, SHAPE, "Ex", "Ex rows != W", a.w.Ex.shape[2] = 2);
  CASE(bwd, SHAPE, "W", "W cols != D", a.w.W.shape[3] = 3);
  CASE(bwd, SHAPE, "W", "W shape[0] != 1", a.w.W.shape[0] = 2);
  CASE(bwd, SHAPE, "Ex", "Ex heads", a.w.Ex.shape[1] = 3);
  CASE(bwd, DITATTN_ERR_DTYPE, "Ey", "Ey bf16", a.w.Ey.dtype = DITATTN_BF16);
  CASE(bwd, DITATTN_ERR_NULL_POINTER, "Et", "Et data NULL", a.w.Et.data = NULL);
  CASE(bwd, SHAPE, "raster", "raster N != T*H*W",
       (a.pos = NULL, a.q.shape[2] = a.k.shape[2] = a.v.shape[2] = a.out.shape[2] = 11,
        a.dout.shape[2] = a.dq.shape[2] = a.dk.shape[2] = a.dv.shape[2] = 11));
  int32_t bad_pos[36];
  memcpy(bad_pos, f.p.pos, sizeof bad_pos);
  bad_pos[3 * 5 + 1] = 2; /* y = H */
  CASE(bwd, INV, "pos[5]", "position outside grid", a.pos = bad_pos);
  bad_pos[3 * 5 + 1] = -1;
  CASE(bwd, INV, "pos[5]", "negative position", a.pos = bad_pos);
  /* Raster order needs no positions when N = T·H·W. */
  CASE(bwd, DITATTN_OK, NULL, "raster positions", a.pos = NULL);
}

static void forward_rejects_bad_arguments(void **state) {
  (void)state;
  fixture f = make_fixture();
  shared_checks(&f, 0);
  const ditattn_status INV = DITATTN_ERR_INVALID_ARGUMENT;
  CASE(0, DITATTN_ERR_NULL_POINTER, "out", "out NULL", a.null_out = 1);
  CASE(0, DITATTN_ERR_SHAPE_MISMATCH, "out", "out N", a.out.shape[2] = 11);
  CASE(0, DITATTN_ERR_DTYPE, "out", "out bf16", a.out.dtype = DITATTN_BF16);
  CASE(0, DITATTN_ERR_BAD_STRIDE, "out", "out overlaps itself", a.out.stride[2] = 2);
  CASE(0, INV, "out", "out = q", a.out = a.q);
  float *shared = malloc(200 * sizeof(float)); /* one buffer holding two arguments */
  CASE(0, INV, "A", "out over A", (a.w.A.data = shared, a.out.data = shared + 10));
  CASE(0, INV, "lse_sparse", "lse inside out", a.lse = (float *)a.out.data + 3);
  CASE(0, INV, "lse_sparse", "lse inside k", a.lse = (float *)a.k.data);
  CASE(0, INV, "sel", "sel inside v", a.sel = (int32_t *)a.v.data + 1);
  CASE(0, INV, "sel", "sel overlaps lse", a.sel = (int32_t *)(void *)(a.lse + 4));
  CASE(0, INV, "pos", "out over pos", a.lse = (float *)(void *)f.p.pos);
  CASE(0, DITATTN_OK, NULL, "no lse, no sel", (a.lse = NULL, a.sel = NULL));
  free(shared);
  free_fixture(&f);
}

static void backward_rejects_bad_arguments(void **state) {
  (void)state;
  fixture f = make_fixture();
  shared_checks(&f, 1);
  const ditattn_status INV = DITATTN_ERR_INVALID_ARGUMENT, SHAPE = DITATTN_ERR_SHAPE_MISMATCH;
  CASE(1, SHAPE, "dout", "dout N", a.dout.shape[2] = 10);
  CASE(1, DITATTN_ERR_DTYPE, "dout", "dout bf16", a.dout.dtype = DITATTN_BF16);
  CASE(1, SHAPE, "dk", "dk N", a.dk.shape[2] = 11);
  CASE(1, DITATTN_ERR_BAD_STRIDE, "dv", "dv overlaps itself", a.dv.stride[1] = 4);
  CASE(1, INV, "dq", "dq = q", a.dq = a.q);
  CASE(1, INV, "dout", "dv = dout", a.dv = a.dout);
  CASE(1, INV, "dk", "dk = dq", a.dk = a.dq);
  CASE(1, DITATTN_ERR_NULL_POINTER, "dweights", "dweights NULL", a.null_dweights = 1);
  CASE(1, SHAPE, "dA", "dA rank", a.dw.A.shape[3] = 2);
  CASE(1, SHAPE, "dEy", "dEy rows", a.dw.Ey.shape[2] = 1);
  CASE(1, DITATTN_ERR_DTYPE, "dW", "dW bf16", a.dw.W.dtype = DITATTN_BF16);
  CASE(1, DITATTN_ERR_BAD_STRIDE, "dBk", "dBk overlaps itself", a.dw.Bk.stride[2] = 1);
  CASE(1, INV, "dW", "dW = W", a.dw.W = a.w.W);
  CASE(1, INV, "dEt", "dEt = dEy (same shape here)", a.dw.Et = a.dw.Ey);
  CASE(1, INV, "dA", "dA inside dq", (a.dw.A.data = a.dq.data));
  float *shared = malloc(200 * sizeof(float)); /* positions and dq in one buffer */
  memcpy(shared, f.p.pos, 36 * sizeof(int32_t));
  CASE(1, INV, "pos", "dq over pos",
       (a.pos = (const int32_t *)(void *)shared, a.dq.data = shared + 20));
  free(shared);
  free_fixture(&f);
}

/* A backend without RoPeSLR answers UNSUPPORTED after validation. */
static void unsupported_backend(void **state) {
  (void)state;
  for (int b = 0; b < DITATTN_BACKEND_COUNT; b++) {
    if (!ditattn_backend_compiled((ditattn_backend)b) ||
        ditattn_backend_supports((ditattn_backend)b, DITATTN_OP_ROPESLR_FORWARD))
      continue;
    fixture f = make_fixture();
    ditattn_context *ctx = NULL;
    if (ditattn_context_create((ditattn_backend)b, &ctx) != DITATTN_OK) {
      free_fixture(&f);
      continue; /* no device */
    }
    call_args a = args_of(&f);
    ditattn_status st = run_forward(ctx, &a);
    /* Host backends accept host tensors; device backends may reject dtype. */
    if (st != DITATTN_ERR_UNSUPPORTED && b <= DITATTN_BACKEND_CPU)
      fail_msg("backend %s: forward gives %s (%s), expected unsupported",
               ditattn_backend_name((ditattn_backend)b), ditattn_strerror(st),
               ditattn_last_error(ctx));
    ditattn_context_destroy(ctx);
    free_fixture(&f);
  }
  assert_true(ditattn_backend_supports(DITATTN_BACKEND_REF, DITATTN_OP_ROPESLR_FORWARD));
  assert_true(ditattn_backend_supports(DITATTN_BACKEND_REF, DITATTN_OP_ROPESLR_BACKWARD));
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(forward_rejects_bad_arguments),
      cmocka_unit_test(backward_rejects_bad_arguments),
      cmocka_unit_test(unsupported_backend),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
