/* CPU backend RoPeSLR backward (and the forward's corner cases) against ref/
 * on random problems: partial blocks, r > D, both feature maps, both
 * own-block settings, rho = 1 and K = 1, strided and [B,N,H,D] inputs,
 * raster and permuted positions, blocks larger than the query tile. Every
 * gradient within TOL of ref's, 1 and 2 threads bitwise equal. */
#include "test_ropeslr_fixture.h"

#include <math.h>

#define FWD_TOL 1e-5
#define BWD_TOL 1e-5

/* ‖a − b‖ / ‖b‖, or (when b is all zeros, as the weight gradients with an
 * empty background) 0 if a is all zeros too and inf otherwise. */
static double rel_err_or_zero(const ditattn_tensor *a, const ditattn_tensor *b) {
  int all_zero = 1;
  for (int64_t i = 0; i < b->shape[0]; i++)
    for (int64_t h = 0; h < b->shape[1]; h++)
      for (int64_t n = 0; n < b->shape[2]; n++)
        for (int64_t d = 0; d < b->shape[3]; d++)
          all_zero &= *tu_at(b, i, h, n, d) == 0.0f && *tu_at(a, i, h, n, d) == 0.0f;
  return all_zero ? 0.0 : tu_rel_err(a, b);
}

/* dq, dk, dv and the six weight gradients of one backward run. */
typedef struct grads {
  tu_tensor t[9];
} grads;

static const char *const grad_names[9] = {"dq", "dk", "dv", "dA", "dBk", "dEt", "dEy", "dEx", "dW"};

static grads run_backward(ditattn_context *ctx, slr_problem *p, const tu_tensor *dout) {
  grads g;
  for (int i = 0; i < 3; i++)
    g.t[i] = tu_tensor_new(p->B, p->H, p->N, p->D, p->pad, !p->layout_bnhd);
  for (int a = 0; a < 6; a++) {
    int64_t rows, cols;
    slr_weight_dims(p, a, &rows, &cols);
    g.t[3 + a] = tu_tensor_new(1, p->H, rows, cols, a % 2, 0); /* some padded rows */
  }
  ditattn_ropeslr_weights w = slr_weights_of(p->w), dw = slr_weights_of(g.t + 3);
  ditattn_status st =
      ditattn_ropeslr_backward(ctx, &p->params, &w, p->pos, &p->q.t, &p->k.t, &p->v.t, &dout->t,
                               &g.t[0].t, &g.t[1].t, &g.t[2].t, &dw);
  if (st != DITATTN_OK) {
    char line[512];
    slr_describe(p, line, sizeof line);
    fail_msg("ropeslr_backward: %s (%s) [%s]", ditattn_strerror(st), ditattn_last_error(ctx), line);
  }
  return g;
}

static void check_backward(slr_problem *p) {
  ditattn_context *ctx[3] = {tu_context_new(DITATTN_BACKEND_REF, 0),
                             tu_context_new(DITATTN_BACKEND_CPU, 1),
                             tu_context_new(DITATTN_BACKEND_CPU, 2)};
  tu_tensor dout = tu_tensor_new(p->B, p->H, p->N, p->D, p->pad, p->layout_bnhd);
  tu_fill_uniform(&dout);
  grads g[3];
  for (int c = 0; c < 3; c++) g[c] = run_backward(ctx[c], p, &dout);
  for (int i = 0; i < 9; i++) {
    char what[96];
    const double err = rel_err_or_zero(&g[1].t[i].t, &g[0].t[i].t);
    snprintf(what, sizeof what, "%s vs ref", grad_names[i]);
    slr_expect(err <= BWD_TOL, what, p, err);
    snprintf(what, sizeof what, "%s: 1 vs 2 threads differ", grad_names[i]);
    slr_expect(rel_err_or_zero(&g[2].t[i].t, &g[1].t[i].t) == 0.0, what, p, 0);
  }
  for (int c = 0; c < 3; c++) {
    for (int i = 0; i < 9; i++) tu_tensor_free(&g[c].t[i]);
    ditattn_context_destroy(ctx[c]);
  }
  tu_tensor_free(&dout);
}

/* Problems whose exact gradients cancel to 0 (ref/ then returns double
 * rounding noise, which no f32 result matches relatively): r = 1 with
 * elu+1 (o_lr does not depend on f, so dA = 0), a background that can be a
 * single token (o_lr = v_j: no feature gradients), a sparse set of one key
 * (o_s = v_j: no sparse dq, dk). */
static int gradients_cancel(const slr_problem *p) {
  const int64_t N = p->N, b = p->params.block, n = N / b + (N % b != 0);
  const int64_t K = ditattn_ropeslr_topk(&p->params, N), last = N - (n - 1) * b;
  if (p->params.rank == 1 && p->params.feature == DITATTN_SLR_FEATURE_ELU1) return 1;
  if (n > K && (n - K - 1) * b + last == 1) return 1;
  return K == 1 && (b == 1 || last == 1);
}

/* A random problem from seed (redrawn while its gradients cancel). */
static slr_problem random_problem(uint64_t seed) {
  tu_srand(seed);
  for (;;) {
    slr_problem p = slr_problem_make(tu_rand_int(1, 2), tu_rand_int(1, 2), tu_rand_int(2, 24),
                                     tu_rand_int(1, 30), tu_rand_int(1, 3), tu_rand_int(1, 6),
                                     tu_rand_int(1, 7), tu_rand_int(1, 9));
    slr_draw_options(&p);
    p.N = p.params.grid[0] * p.params.grid[1] * p.params.grid[2];
    if (!gradients_cancel(&p)) return p;
  }
}

/* The named corner cases: (D, r, grid, block) and the knobs each sets. */
static slr_problem corner_case(int which) {
  slr_problem p;
  switch (which) {
  case 0: /* rho = 1: every block selected, empty background */
    p = slr_problem_make(1, 2, 8, 5, 2, 3, 5, 7);
    p.params.rho = 1.0;
    break;
  case 1: /* K = 1, no forced own block, softmax features */
    p = slr_problem_make(2, 1, 6, 4, 3, 3, 3, 4);
    p.params.policy = DITATTN_SLR_FIXED_K;
    p.params.topk = 1;
    p.params.force_own_block = 0;
    p.params.feature = DITATTN_SLR_FEATURE_SOFTMAX;
    break;
  case 2: /* K = 1 with the own block forced (every row selects itself) */
    p = slr_problem_make(1, 1, 4, 3, 2, 4, 4, 5);
    p.params.policy = DITATTN_SLR_FIXED_K;
    p.params.topk = 1;
    break;
  case 3: /* r > D, [B,N,H,D], padded rows, permuted positions */
    p = slr_problem_make(2, 2, 6, 19, 2, 3, 4, 5);
    p.layout_bnhd = 1;
    p.pad = 3;
    p.shuffled = 1;
    p.params.rho = 0.4;
    break;
  case 4: /* D = 64 (own kernels), block 64, several blocks */
    p = slr_problem_make(1, 1, 64, 16, 2, 8, 16, 64);
    p.params.rho = 0.3;
    p.shuffled = 1;
    break;
  case 5: /* block > query tile (two tiles per block), partial last block */
    p = slr_problem_make(1, 1, 16, 8, 2, 11, 17, 150);
    p.params.rho = 0.5;
    p.params.feature = DITATTN_SLR_FEATURE_SOFTMAX;
    break;
  default: /* block > key chunk (512): keys of one block in two chunks */
    p = slr_problem_make(1, 1, 8, 6, 1, 31, 40, 600);
    p.params.policy = DITATTN_SLR_FIXED_K;
    p.params.topk = 1;
    p.params.force_own_block = 0;
    break;
  }
  return p;
}
enum { CORNER_CASES = 7 };

static void forward_corner_cases(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  for (int c = 0; c < CORNER_CASES; c++) {
    slr_problem p = corner_case(c);
    slr_problem_init(&p, seed + (uint64_t)c);
    slr_check_cpu_forward(&p, FWD_TOL);
    slr_problem_free(&p);
  }
}

static void backward_matches_ref(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  for (int trial = 0; trial < 16; trial++) {
    slr_problem p = random_problem(seed + (uint64_t)trial);
    slr_problem_init(&p, seed + (uint64_t)trial);
    check_backward(&p);
    slr_problem_free(&p);
  }
}

/* r = 1, elu+1: dA is exactly 0 on the CPU (f·df = 0, so df = 0 when r = 1);
 * the other gradients match ref. */
static void rank_one_feature_gradient_is_zero(void **state) {
  (void)state;
  slr_problem p = slr_problem_make(1, 2, 5, 1, 2, 3, 4, 3);
  p.params.rho = 0.4;
  slr_problem_init(&p, tu_seed() + 7);
  ditattn_context *ref = tu_context_new(DITATTN_BACKEND_REF, 0),
                  *cpu = tu_context_new(DITATTN_BACKEND_CPU, 2);
  tu_tensor dout = tu_tensor_new(p.B, p.H, p.N, p.D, 0, 0);
  tu_fill_uniform(&dout);
  grads g[2] = {run_backward(ref, &p, &dout), run_backward(cpu, &p, &dout)};
  for (int i = 0; i < 9; i++) {
    if (i == 3) {
      for (int64_t h = 0; h < p.H; h++)
        for (int64_t d = 0; d < p.D; d++)
          slr_expect(*tu_at(&g[1].t[3].t, 0, h, d, 0) == 0.0f, "dA != 0 with r = 1", &p, 0);
      continue;
    }
    const double err = rel_err_or_zero(&g[1].t[i].t, &g[0].t[i].t);
    slr_expect(err <= BWD_TOL, grad_names[i], &p, err);
  }
  for (int c = 0; c < 2; c++)
    for (int i = 0; i < 9; i++) tu_tensor_free(&g[c].t[i]);
  tu_tensor_free(&dout);
  slr_problem_free(&p);
  ditattn_context_destroy(ref);
  ditattn_context_destroy(cpu);
}

static void backward_corner_cases(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  for (int c = 0; c < CORNER_CASES; c++) {
    slr_problem p = corner_case(c);
    slr_problem_init(&p, seed + 1000 + (uint64_t)c);
    check_backward(&p);
    slr_problem_free(&p);
  }
}

/* Tied scores: keys constant per block, alternating between two values,
 * so half the blocks share each score; selections must follow ref/'s tie
 * rule (index ascending) exactly. */
static void ties_select_like_ref(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  for (int own = 0; own <= 1; own++) {
    slr_problem p = slr_problem_make(1, 2, 8, 6, 2, 5, 7, 4);
    p.params.rho = 0.3;
    p.params.force_own_block = own;
    slr_problem_init(&p, seed + 50 + (uint64_t)own);
    for (int64_t h = 0; h < p.H; h++)
      for (int64_t j = 0; j < p.N; j++)
        for (int64_t d = 0; d < p.D; d++)
          *tu_at(&p.k.t, 0, h, j, d) = (j / p.params.block) % 2 ? 0.5f : -0.25f;
    slr_check_cpu_forward(&p, FWD_TOL);
    check_backward(&p);
    slr_problem_free(&p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(forward_corner_cases), cmocka_unit_test(backward_matches_ref),
      cmocka_unit_test(backward_corner_cases), cmocka_unit_test(rank_one_feature_gradient_is_zero),
      cmocka_unit_test(ties_select_like_ref)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
