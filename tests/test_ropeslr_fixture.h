/* Shared set-up of the RoPeSLR tests: one problem (shapes, params, random
 * q/k/v/weights/positions) that prints itself in one line. Header-only so
 * every tests/test_ropeslr*.c stays one executable. */
#ifndef DITATTN_TEST_ROPESLR_FIXTURE_H
#define DITATTN_TEST_ROPESLR_FIXTURE_H

#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slr_problem {
  int64_t B, H, N, D;
  ditattn_ropeslr_params params;
  int64_t pad;     /* extra floats per token row of q/k/v/out */
  int layout_bnhd; /* DiT layout for q/k/v/out */
  int shuffled;    /* positions: 1 = a random permutation of the grid, 0 = raster (pos NULL) */
  uint64_t seed;
  tu_tensor q, k, v;
  tu_tensor w[6]; /* A, Bk, Et, Ey, Ex, W as (1, H, rows, cols) */
  int32_t *pos;   /* N triples or NULL */
} slr_problem;

static inline void slr_describe(const slr_problem *p, char *buf, size_t size) {
  const ditattn_ropeslr_params *a = &p->params;
  snprintf(buf, size,
           "B=%lld H=%lld N=%lld D=%lld r=%lld grid=%lldx%lldx%lld block=%lld policy=%d rho=%g "
           "topk=%lld sqrt_c=%g own=%d feature=%d pad=%lld bnhd=%d shuffled=%d seed=%llu",
           (long long)p->B, (long long)p->H, (long long)p->N, (long long)p->D, (long long)a->rank,
           (long long)a->grid[0], (long long)a->grid[1], (long long)a->grid[2], (long long)a->block,
           (int)a->policy, a->rho, (long long)a->topk, a->sqrt_c, a->force_own_block,
           (int)a->feature, (long long)p->pad, p->layout_bnhd, p->shuffled,
           (unsigned long long)p->seed);
}

/* Rows and columns of weight a (0..5) for this problem. */
static inline void slr_weight_dims(const slr_problem *p, int a, int64_t *rows, int64_t *cols) {
  const int64_t r = p->params.rank;
  const int64_t R[6] = {p->D, p->D, p->params.grid[0], p->params.grid[1], p->params.grid[2], p->D};
  *rows = R[a];
  *cols = a == 5 ? p->D : r;
}

static inline ditattn_ropeslr_weights slr_weights_of(tu_tensor w[6]) {
  ditattn_ropeslr_weights out = {w[0].t, w[1].t, w[2].t, w[3].t, w[4].t, w[5].t};
  return out;
}

/* Allocates and fills everything; N = T·H·W of params.grid. */
static inline void slr_problem_init(slr_problem *p, uint64_t seed) {
  p->seed = seed;
  tu_srand(seed);
  p->N = p->params.grid[0] * p->params.grid[1] * p->params.grid[2];
  p->q = tu_tensor_new(p->B, p->H, p->N, p->D, p->pad, p->layout_bnhd);
  p->k = tu_tensor_new(p->B, p->H, p->N, p->D, p->pad, p->layout_bnhd);
  p->v = tu_tensor_new(p->B, p->H, p->N, p->D, p->pad, p->layout_bnhd);
  tu_fill_uniform(&p->q);
  tu_fill_uniform(&p->k);
  tu_fill_uniform(&p->v);
  for (int a = 0; a < 6; a++) {
    int64_t rows, cols;
    slr_weight_dims(p, a, &rows, &cols);
    p->w[a] = tu_tensor_new(1, p->H, rows, cols, 0, 0);
    tu_fill_uniform(&p->w[a]);
  }
  p->pos = NULL;
  if (p->shuffled) {
    int64_t *perm = malloc((size_t)p->N * sizeof *perm);
    p->pos = malloc((size_t)p->N * 3 * sizeof *p->pos);
    assert_non_null(perm);
    assert_non_null(p->pos);
    for (int64_t i = 0; i < p->N; i++) perm[i] = i;
    for (int64_t i = p->N - 1; i > 0; i--) {
      int64_t j = tu_rand_int(0, i), t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    const int64_t Hg = p->params.grid[1], Wg = p->params.grid[2];
    for (int64_t i = 0; i < p->N; i++) {
      p->pos[3 * i] = (int32_t)(perm[i] / (Hg * Wg));
      p->pos[3 * i + 1] = (int32_t)(perm[i] / Wg % Hg);
      p->pos[3 * i + 2] = (int32_t)(perm[i] % Wg);
    }
    free(perm);
  }
}

static inline void slr_problem_free(slr_problem *p) {
  tu_tensor_free(&p->q);
  tu_tensor_free(&p->k);
  tu_tensor_free(&p->v);
  for (int a = 0; a < 6; a++) tu_tensor_free(&p->w[a]);
  free(p->pos);
  p->pos = NULL;
}

/* A small problem with the given grid and defaults for the rest. */
static inline slr_problem slr_problem_make(int64_t B, int64_t H, int64_t D, int64_t r, int64_t T,
                                           int64_t Hg, int64_t Wg, int64_t block) {
  slr_problem p;
  memset(&p, 0, sizeof p);
  p.B = B;
  p.H = H;
  p.D = D;
  p.params = ditattn_ropeslr_params_default();
  p.params.rank = r;
  p.params.block = block;
  p.params.grid[0] = T;
  p.params.grid[1] = Hg;
  p.params.grid[2] = Wg;
  return p;
}

/* Runs the forward; fails the test with the problem line on error. */
/* Draws the selection policy, feature map, own-block rule and layout of p at
 * random (the same draws, in the same order, for every caller). */
static inline void slr_draw_options(slr_problem *p) {
  p->params.policy = (ditattn_slr_policy)tu_rand_int(0, 2);
  p->params.rho = tu_uniform(0.05, 1.0);
  p->params.topk = tu_rand_int(1, 4);
  p->params.sqrt_c = tu_uniform(0.3, 2.0);
  p->params.force_own_block = (int)tu_rand_int(0, 1);
  p->params.feature = (ditattn_slr_feature)tu_rand_int(0, 1);
  p->pad = tu_rand_int(0, 2);
  p->layout_bnhd = (int)tu_rand_int(0, 1);
  p->shuffled = (int)tu_rand_int(0, 1);
}

static inline void slr_forward(ditattn_context *ctx, slr_problem *p, tu_tensor *out, float *lse,
                               int32_t *sel) {
  ditattn_ropeslr_weights w = slr_weights_of(p->w);
  ditattn_status st = ditattn_ropeslr_forward(ctx, &p->params, &w, p->pos, &p->q.t, &p->k.t,
                                              &p->v.t, &out->t, lse, sel);
  if (st != DITATTN_OK) {
    char line[512];
    slr_describe(p, line, sizeof line);
    fail_msg("ropeslr_forward: %s (%s) [%s]", ditattn_strerror(st), ditattn_last_error(ctx), line);
  }
}

/* Fails the test with `what`, err and the problem line unless ok. */
static inline void slr_expect(int ok, const char *what, const slr_problem *p, double err) {
  if (ok) return;
  char line[512];
  slr_describe(p, line, sizeof line);
  fail_msg("%s (err %.3e): %s", what, err, line);
}

/* The CPU forward (1 and 2 threads) against ref/: out and lse_sparse within
 * tol, selections identical, 1 and 2 threads bitwise equal. */
static inline void slr_check_cpu_forward(slr_problem *p, double tol) {
  ditattn_context *ctx[3] = {tu_context_new(DITATTN_BACKEND_REF, 0),
                             tu_context_new(DITATTN_BACKEND_CPU, 1),
                             tu_context_new(DITATTN_BACKEND_CPU, 2)};
  const int64_t n = p->N / p->params.block + (p->N % p->params.block != 0);
  const int64_t K = ditattn_ropeslr_topk(&p->params, p->N);
  const size_t rows = (size_t)(p->B * p->H * p->N), nsel = (size_t)(p->B * p->H * n * K);
  tu_tensor out[3];
  float *lse[3];
  int32_t *sel[3];
  for (int i = 0; i < 3; i++) {
    out[i] = tu_tensor_new(p->B, p->H, p->N, p->D, p->pad, !p->layout_bnhd);
    lse[i] = malloc(rows * sizeof(float));
    sel[i] = malloc(nsel * sizeof(int32_t));
    assert_non_null(lse[i]);
    assert_non_null(sel[i]);
    tu_poison_floats(lse[i], rows);
    memset(sel[i], 0x7f, nsel * sizeof(int32_t));
    slr_forward(ctx[i], p, &out[i], lse[i], sel[i]);
  }
  double err = tu_rel_err(&out[1].t, &out[0].t);
  slr_expect(err <= tol, "out vs ref", p, err);
  err = tu_rel_err_floats(lse[1], lse[0], rows);
  slr_expect(err <= tol, "lse_sparse vs ref", p, err);
  slr_expect(memcmp(sel[1], sel[0], nsel * sizeof(int32_t)) == 0, "selection differs from ref", p,
             0);
  slr_expect(memcmp(sel[2], sel[0], nsel * sizeof(int32_t)) == 0,
             "selection differs from ref (2 threads)", p, 0);
  slr_expect(tu_rel_err(&out[2].t, &out[1].t) == 0.0 &&
                 memcmp(lse[1], lse[2], rows * sizeof(float)) == 0,
             "forward: 1 vs 2 threads differ", p, 0);
  for (int i = 0; i < 3; i++) {
    tu_tensor_free(&out[i]);
    free(lse[i]);
    free(sel[i]);
    ditattn_context_destroy(ctx[i]);
  }
}

#endif
