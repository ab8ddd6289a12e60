/* LLSA forward (reference backend): the spec §7 vector, the dense limit
 * against ditattn_dense_forward over replicated pooled tokens, selection
 * invariants and a naive spec-direct model over many shapes, tie order,
 * strided layouts and allocation failures. */
#include "test_llsa_naive.h"

#include "backends/backend.h" /* dt_debug_fail_alloc_at */

#include <string.h>

typedef struct llsa_run {
  tu_tensor q, k, v, out;
  float *lse;
  ditattn_llsa_selection sel;
} llsa_run;

/* Fresh random inputs for case c; outputs poisoned. */
static llsa_run run_new(const llsa_case *c) {
  llsa_run r;
  r.q = tu_tensor_new(c->B, c->H, c->N, c->D, c->pad, c->bnhd);
  r.k = tu_tensor_new(c->B, c->H, c->N, c->D, c->pad, c->bnhd);
  r.v = tu_tensor_new(c->B, c->H, c->N, c->D, c->pad, c->bnhd);
  r.out = tu_tensor_new(c->B, c->H, c->N, c->D, c->pad, c->bnhd);
  tu_fill_uniform(&r.q);
  tu_fill_uniform(&r.k);
  tu_fill_uniform(&r.v);
  r.lse = malloc((size_t)(c->B * c->H * c->N) * sizeof(float));
  assert_non_null(r.lse);
  tu_poison_floats(r.lse, (size_t)(c->B * c->H * c->N));
  naive_selection_alloc(c, &r.sel);
  return r;
}

static void run_free(llsa_run *r) {
  tu_tensor_free(&r->q);
  tu_tensor_free(&r->k);
  tu_tensor_free(&r->v);
  tu_tensor_free(&r->out);
  free(r->lse);
  naive_selection_free(&r->sel);
}

static ditattn_context *ref_ctx(void) {
  ditattn_context *ctx = NULL;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  return ctx;
}

static ditattn_status run_forward(ditattn_context *ctx, const llsa_case *c, llsa_run *r) {
  const ditattn_llsa_params p = llsa_case_params(c);
  return ditattn_llsa_forward(ctx, &p, &r->q.t, &r->k.t, &r->v.t, &r->out.t, r->lse, &r->sel);
}

/* ---------------------------------------------------------------- §7 */
static void worked_example_matches_spec(void **state) {
  (void)state;
  float q[8] = {1, 0, 0, 1, -1, 0, 2, 1}, k[8] = {0.5f, 1, -1, 0, 2, 2, 0, -0.5f};
  float v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8], lse[8];
  const double o_want[8] = {5.05562, 4.7, 4.7, 5.05562, 4.24681, 4.3, 5.34781, 5.05562};
  const double lse_want[8] = {3.59898, 2.30259, 2.30259, 3.59898,
                              2.37947, 2.30259, 5.43505, 3.59898};
  const int32_t sel_want[4] = {2, 2, 1, 2};
  int32_t sel[4] = {-7, -7, -7, -7};
  tu_poison_floats(out, 8);
  tu_poison_floats(lse, 8);
  ditattn_tensor tq = ditattn_tensor_bhnd(q, DITATTN_F32, 1, 1, 8, 1);
  ditattn_tensor tk = ditattn_tensor_bhnd(k, DITATTN_F32, 1, 1, 8, 1);
  ditattn_tensor tv = ditattn_tensor_bhnd(v, DITATTN_F32, 1, 1, 8, 1);
  ditattn_tensor to = ditattn_tensor_bhnd(out, DITATTN_F32, 1, 1, 8, 1);
  ditattn_llsa_params p = {2, 1, {1}, 1.0f};
  ditattn_llsa_selection s = {{sel}};
  ditattn_context *ctx = ref_ctx();
  assert_int_equal(ditattn_llsa_forward(ctx, &p, &tq, &tk, &tv, &to, lse, &s), DITATTN_OK);
  for (int i = 0; i < 8; i++) {
    if (!(fabs(out[i] - o_want[i]) <= 1e-5 && fabs(lse[i] - lse_want[i]) <= 1e-5))
      fprintf(stderr, "spec §7 vector: i=%d o=%.6f (want %.5f) lse=%.6f (want %.5f)\n", i,
              (double)out[i], o_want[i], (double)lse[i], lse_want[i]);
    assert_true(fabs(out[i] - o_want[i]) <= 1e-5);
    assert_true(fabs(lse[i] - lse_want[i]) <= 1e-5);
  }
  assert_memory_equal(sel, sel_want, sizeof sel_want);
  ditattn_context_destroy(ctx);
}

/* ---------------------------------------------------------------- dense limit */
/* With every block selected, a pooled token of weight w is exactly w copies
 * of itself, so LLSA equals dense attention over the fine tokens plus, per
 * level, each pooled token replicated cnt times (N more keys per level). */
static void check_dense_limit(const llsa_case *c) {
  llsa_run r = run_new(c);
  ditattn_context *ctx = ref_ctx();
  assert_int_equal(run_forward(ctx, c, &r), DITATTN_OK);

  const int64_t Nx = c->N * (c->L + 1);
  tu_tensor kx = tu_tensor_new(c->B, c->H, Nx, c->D, 0, 0);
  tu_tensor vx = tu_tensor_new(c->B, c->H, Nx, c->D, 0, 0);
  tu_tensor dense_out = tu_tensor_new(c->B, c->H, c->N, c->D, 0, 0);
  float *dense_lse = malloc((size_t)(c->B * c->H * c->N) * sizeof(float));
  assert_non_null(dense_lse);
  for (int64_t bi = 0; bi < c->B; bi++)
    for (int64_t hi = 0; hi < c->H; hi++) {
      double *k = naive_head_copy(&r.k.t, bi, hi), *v = naive_head_copy(&r.v.t, bi, hi);
      int64_t row = 0;
      for (int64_t j = 0; j < c->N; j++, row++)
        for (int64_t d = 0; d < c->D; d++) {
          *tu_at(&kx.t, bi, hi, row, d) = (float)k[j * c->D + d];
          *tu_at(&vx.t, bi, hi, row, d) = (float)v[j * c->D + d];
        }
      for (int l = 1; l <= c->L; l++)
        for (int64_t blk = 0; blk < naive_blocks(c, l); blk++)
          for (int64_t copy = 0; copy < naive_count(c, l, blk); copy++, row++)
            for (int64_t d = 0; d < c->D; d++) {
              *tu_at(&kx.t, bi, hi, row, d) = (float)naive_mean(c, k, l, blk, d);
              *tu_at(&vx.t, bi, hi, row, d) = (float)naive_mean(c, v, l, blk, d);
            }
      assert_int_equal(row, Nx);
      free(k);
      free(v);
    }
  assert_int_equal(
      ditattn_dense_forward(ctx, &r.q.t, &kx.t, &vx.t, c->scale, &dense_out.t, dense_lse),
      DITATTN_OK);
  const double err_o = tu_rel_err(&r.out.t, &dense_out.t);
  const size_t n_lse = (size_t)(c->B * c->H * c->N);
  const double err_lse = tu_rel_err_floats(r.lse, dense_lse, n_lse);
  if (!(err_o <= 1e-5 && err_lse <= 1e-5)) {
    llsa_case_print("dense limit, out", c, err_o);
    llsa_case_print("dense limit, lse", c, err_lse);
  }
  assert_true(err_o <= 1e-5);
  assert_true(err_lse <= 1e-5);
  /* Every parent selects all its candidates, so every row holds all n_l blocks. */
  for (int l = 1; l <= c->L; l++) {
    const int64_t nl = naive_blocks(c, l);
    for (int64_t e = 0; e < c->B * c->H * nl; e++) {
      const int32_t *row = r.sel.sel[l - 1] + e * c->K[l - 1];
      int64_t valid = 0;
      for (int64_t x = 0; x < c->K[l - 1]; x++) valid += row[x] >= 0;
      assert_int_equal(valid, nl);
    }
  }
  tu_tensor_free(&kx);
  tu_tensor_free(&vx);
  tu_tensor_free(&dense_out);
  free(dense_lse);
  run_free(&r);
  ditattn_context_destroy(ctx);
}

static void dense_limit_one_level(void **state) {
  (void)state;
  tu_seed();
  /* N = 13, b = 4: blocks of 4, 4, 4, 1 tokens; K >= 4 selects them all. */
  llsa_case c = {2, 2, 13, 5, 4, 1, {4}, 0.0f, 0, 0};
  check_dense_limit(&c);
  c.K[0] = 9; /* K above the candidate count */
  c.scale = (float)tu_uniform(0.3, 1.5);
  c.bnhd = 1;
  c.pad = 2;
  check_dense_limit(&c);
}

static void dense_limit_two_levels(void **state) {
  (void)state;
  tu_seed();
  /* N = 29, b = 3: level 1 has 10 blocks (last of 2 tokens), level 2 has 4
   * blocks of 9, 9, 9, 2 tokens. K_2 >= 4 and K_1 >= 3·4 select everything. */
  llsa_case c = {2, 2, 29, 4, 3, 2, {12, 4}, 0.0f, 0, 0};
  check_dense_limit(&c);
  c.K[0] = 100;
  c.K[1] = 5;
  c.scale = (float)tu_uniform(0.3, 1.5);
  c.bnhd = 1;
  c.pad = 1;
  check_dense_limit(&c);
  llsa_case three = {1, 2, 30, 3, 2, 3, {30, 30, 30}, 0.0f, 0, 0}; /* L = 3, all dense */
  check_dense_limit(&three);
}

/* ---------------------------------------------------------------- invariants */
/* Checks every selection row of r against §2, using pooled means computed
 * here: size min(K, |cand|), candidates only, rank order with index ties,
 * no unselected candidate ranking above the last selected one, -1 padding. */
static void check_selection(const llsa_case *c, const llsa_run *r) {
  int64_t *cand = malloc((size_t)c->N * sizeof *cand);
  double *score = malloc((size_t)c->N * sizeof *score);
  char *chosen = malloc((size_t)c->N);
  assert_non_null(cand);
  assert_non_null(score);
  assert_non_null(chosen);
  for (int64_t bi = 0; bi < c->B; bi++)
    for (int64_t hi = 0; hi < c->H; hi++) {
      const int64_t bh = bi * c->H + hi;
      double *q = naive_head_copy(&r->q.t, bi, hi), *k = naive_head_copy(&r->k.t, bi, hi);
      for (int l = c->L; l >= 1; l--) {
        const int64_t nl = naive_blocks(c, l), K = c->K[l - 1];
        for (int64_t gq = 0; gq < nl; gq++) {
          int64_t nc = 0;
          if (l == c->L) {
            for (int64_t x = 0; x < nl; x++) cand[nc++] = x;
          } else {
            const int32_t *prow = naive_sel_row(c, r->sel.sel, bh, l + 1, gq / c->b);
            for (int64_t x = 0; x < c->K[l]; x++)
              for (int64_t t = 0; prow[x] >= 0 && t < c->b; t++)
                if (prow[x] * c->b + t < nl) cand[nc++] = prow[x] * c->b + t;
          }
          memset(chosen, 0, (size_t)nl);
          for (int64_t x = 0; x < nl; x++) {
            double s = 0.0;
            for (int64_t d = 0; d < c->D; d++)
              s += naive_mean(c, q, l, gq, d) * naive_mean(c, k, l, x, d);
            score[x] = s;
          }
          const int32_t *row = naive_sel_row(c, r->sel.sel, bh, l, gq);
          const int64_t want = K < nc ? K : nc;
          int ok = 1;
          for (int64_t x = 0; x < K && ok; x++) {
            if (x >= want) {
              ok = row[x] == -1;
              continue;
            }
            int is_cand = 0;
            for (int64_t y = 0; y < nc; y++) is_cand |= cand[y] == row[x];
            ok = is_cand && !chosen[row[x]];
            if (!ok) break;
            chosen[row[x]] = 1;
            if (x > 0) {
              const double prev = score[row[x - 1]], cur = score[row[x]];
              ok = prev > cur || (prev == cur && row[x - 1] < row[x]);
            }
          }
          /* No unselected candidate may outrank the last selected one. */
          for (int64_t y = 0; y < nc && ok && want > 0; y++) {
            if (chosen[cand[y]]) continue;
            const double last = score[row[want - 1]], s = score[cand[y]];
            ok = s < last || (s == last && cand[y] > row[want - 1]);
          }
          if (!ok) {
            fprintf(stderr, "selection invariant broken at b=%lld h=%lld level=%d block=%lld\n",
                    (long long)bi, (long long)hi, l, (long long)gq);
            llsa_case_print("selection", c, NAN);
          }
          assert_true(ok);
        }
      }
      free(q);
      free(k);
    }
  free(cand);
  free(score);
  free(chosen);
}

/* out and lse of r against the naive model driven by r's own selection. */
static void check_against_naive(const llsa_case *c, const llsa_run *r) {
  double num_o = 0, den_o = 0, num_l = 0, den_l = 0;
  double *o = malloc((size_t)c->D * sizeof *o);
  assert_non_null(o);
  for (int64_t bi = 0; bi < c->B; bi++)
    for (int64_t hi = 0; hi < c->H; hi++) {
      const int64_t bh = bi * c->H + hi;
      double *q = naive_head_copy(&r->q.t, bi, hi), *k = naive_head_copy(&r->k.t, bi, hi);
      double *v = naive_head_copy(&r->v.t, bi, hi);
      for (int64_t i = 0; i < c->N; i++) {
        const double lse = naive_query(c, q, k, v, r->sel.sel, bh, i, o);
        const double got_l = r->lse[bh * c->N + i];
        num_l += (got_l - lse) * (got_l - lse);
        den_l += lse * lse;
        if (!isfinite(got_l)) num_l = INFINITY;
        for (int64_t d = 0; d < c->D; d++) {
          const double got = *tu_at(&r->out.t, bi, hi, i, d);
          num_o += (got - o[d]) * (got - o[d]);
          den_o += o[d] * o[d];
          if (!isfinite(got)) num_o = INFINITY;
        }
      }
      free(q);
      free(k);
      free(v);
    }
  free(o);
  const double err_o = sqrt(num_o / (den_o > 0 ? den_o : 1)),
               err_l = sqrt(num_l / (den_l > 0 ? den_l : 1));
  if (!(err_o <= 1e-5 && err_l <= 1e-5)) {
    llsa_case_print("forward vs naive model, out", c, err_o);
    llsa_case_print("forward vs naive model, lse", c, err_l);
  }
  assert_true(err_o <= 1e-5);
  assert_true(err_l <= 1e-5);
}

static void check_case(const llsa_case *c) {
  llsa_run r = run_new(c);
  ditattn_context *ctx = ref_ctx();
  const ditattn_status st = run_forward(ctx, c, &r);
  if (st != DITATTN_OK) llsa_case_print(ditattn_last_error(ctx), c, NAN);
  assert_int_equal(st, DITATTN_OK);
  check_selection(c, &r);
  check_against_naive(c, &r);
  run_free(&r);
  ditattn_context_destroy(ctx);
}

static void shapes_match_naive_model(void **state) {
  (void)state;
  tu_seed();
  /* B, H, N, D, b, L, K, scale, pad, bnhd */
  const llsa_case fixed[] = {
      {1, 1, 1, 3, 2, 1, {1}, 0, 0, 0},              /* a single token */
      {2, 1, 3, 4, 4, 1, {2}, 0, 0, 0},              /* N < b */
      {1, 2, 5, 2, 16, 2, {3, 1}, 0, 1, 1},          /* N < b, two levels */
      {2, 2, 7, 3, 2, 2, {1, 1}, 0, 0, 0},           /* partial blocks at both levels */
      {1, 2, 37, 4, 2, 3, {2, 1, 2}, 0, 0, 1},       /* L = 3 */
      {2, 1, 50, 5, 4, 2, {3, 2}, 0.7f, 2, 0},       /* explicit scale */
      {1, 2, 64, 4, 4, 2, {2, 2}, 0, 0, 0},          /* N a multiple of b^L */
      {1, 1, 100, 3, 4, 3, {2, 3, 1}, 0, 0, 0},      /* L = 3, b = 4 */
      {1, 2, 300, 4, 16, 2, {2, 1}, 0, 0, 1},        /* b = 16, partial level-2 block */
      {1, 1, 600, 2, 16, 2, {8, 8}, 0, 0, 0},        /* official defaults, partial blocks */
      {2, 1, 17, 3, 2, 3, {8, 8, 8}, 0, 0, 0},       /* K above every candidate count */
      {1, 1, 40, 2, 2, 5, {3, 2, 2, 1, 1}, 0, 0, 0}, /* deep: L = 5 */
      {1, 1, 1000, 8, 16, 2, {8, 8}, 0, 0, 1},       /* official defaults, n_2 = 4 */
      {1, 1, 700, 4, 4, 3, {4, 3, 2}, 0, 0, 0},      /* L = 3, b = 4, larger N */
  };
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) check_case(&fixed[i]);
  for (int rep = 0; rep < 60; rep++) {
    const int64_t bs[3] = {2, 4, 16};
    llsa_case c = {tu_rand_int(1, 2),
                   tu_rand_int(1, 2),
                   tu_rand_int(1, 150),
                   tu_rand_int(1, 6),
                   bs[tu_rand_int(0, 2)],
                   (int)tu_rand_int(1, 3),
                   {0},
                   0.0f,
                   tu_rand_int(0, 2),
                   (int)tu_rand_int(0, 1)};
    for (int l = 0; l < c.L; l++) c.K[l] = tu_rand_int(1, 6);
    if (tu_rand_int(0, 1)) c.scale = (float)tu_uniform(0.2, 2.0);
    check_case(&c);
  }
}

/* Equal pooled keys tie every score: the selection must be the candidates in
 * index order (§2 tie rule). Dyadic values keep every mean exact. */
static void ties_rank_smaller_index_first(void **state) {
  (void)state;
  tu_seed();
  llsa_case c = {1, 2, 45, 3, 2, 3, {3, 2, 3}, 0, 0, 0};
  llsa_run r = run_new(&c);
  for (int64_t hi = 0; hi < c.H; hi++)
    for (int64_t n = 0; n < c.N; n++)
      for (int64_t d = 0; d < c.D; d++)
        *tu_at(&r.k.t, 0, hi, n, d) = (float)((double)(d + 1) * 0.25 * (double)(hi + 1));
  ditattn_context *ctx = ref_ctx();
  assert_int_equal(run_forward(ctx, &c, &r), DITATTN_OK);
  check_selection(&c, &r);
  for (int64_t hi = 0; hi < c.H; hi++)
    for (int l = c.L; l >= 1; l--)
      for (int64_t gq = 0; gq < naive_blocks(&c, l); gq++) {
        const int32_t *row = naive_sel_row(&c, r.sel.sel, hi, l, gq);
        /* Candidates in index order are the children of the parent row
         * sorted, so each valid row must be strictly increasing. */
        for (int64_t x = 1; x < c.K[l - 1] && row[x] >= 0; x++) assert_true(row[x - 1] < row[x]);
        if (l == c.L) assert_int_equal(row[0], 0);
      }
  check_against_naive(&c, &r);
  run_free(&r);
  ditattn_context_destroy(ctx);
}

/* [B,N,H,D] with padded rows gives bit-identical results to [B,H,N,D]. */
static void strided_layout_matches_contiguous(void **state) {
  (void)state;
  tu_seed();
  llsa_case c = {2, 3, 45, 5, 4, 2, {2, 2}, 0, 0, 0};
  llsa_run a = run_new(&c);
  llsa_case cs = c;
  cs.bnhd = 1;
  cs.pad = 3;
  llsa_run s = run_new(&cs);
  for (int64_t bi = 0; bi < c.B; bi++)
    for (int64_t hi = 0; hi < c.H; hi++)
      for (int64_t n = 0; n < c.N; n++)
        for (int64_t d = 0; d < c.D; d++) {
          *tu_at(&s.q.t, bi, hi, n, d) = *tu_at(&a.q.t, bi, hi, n, d);
          *tu_at(&s.k.t, bi, hi, n, d) = *tu_at(&a.k.t, bi, hi, n, d);
          *tu_at(&s.v.t, bi, hi, n, d) = *tu_at(&a.v.t, bi, hi, n, d);
        }
  ditattn_context *ctx = ref_ctx();
  assert_int_equal(run_forward(ctx, &c, &a), DITATTN_OK);
  assert_int_equal(run_forward(ctx, &cs, &s), DITATTN_OK);
  const double err = tu_rel_err(&s.out.t, &a.out.t);
  if (err != 0.0) llsa_case_print("strided vs contiguous", &cs, err);
  assert_true(err == 0.0);
  assert_memory_equal(s.lse, a.lse, (size_t)(c.B * c.H * c.N) * sizeof(float));
  const ditattn_llsa_params p = llsa_case_params(&cs);
  for (int l = 1; l <= c.L; l++)
    assert_memory_equal(s.sel.sel[l - 1], a.sel.sel[l - 1],
                        (size_t)ditattn_llsa_selection_count(&p, c.B, c.H, c.N, l) *
                            sizeof(int32_t));
  /* Without lse and selection the output is the same too. */
  tu_poison(&s.out);
  assert_int_equal(ditattn_llsa_forward(ctx, &p, &s.q.t, &s.k.t, &s.v.t, &s.out.t, NULL, NULL),
                   DITATTN_OK);
  assert_true(tu_rel_err(&s.out.t, &a.out.t) == 0.0);
  run_free(&a);
  run_free(&s);
  ditattn_context_destroy(ctx);
}

/* Only some levels' selections requested: the others stay untouched. */
static void partial_selection_request(void **state) {
  (void)state;
  tu_seed();
  llsa_case c = {1, 2, 33, 3, 2, 3, {2, 2, 2}, 0, 0, 0};
  llsa_run r = run_new(&c);
  ditattn_llsa_selection only_mid = {{NULL, r.sel.sel[1], NULL}};
  const ditattn_llsa_params p = llsa_case_params(&c);
  ditattn_context *ctx = ref_ctx();
  assert_int_equal(
      ditattn_llsa_forward(ctx, &p, &r.q.t, &r.k.t, &r.v.t, &r.out.t, r.lse, &only_mid),
      DITATTN_OK);
  assert_int_equal(r.sel.sel[0][0], -7);
  assert_int_equal(r.sel.sel[2][0], -7);
  assert_true(r.sel.sel[1][0] >= 0);
  int32_t *mid = malloc((size_t)ditattn_llsa_selection_count(&p, c.B, c.H, c.N, 2) * 4);
  assert_non_null(mid);
  memcpy(mid, r.sel.sel[1], (size_t)ditattn_llsa_selection_count(&p, c.B, c.H, c.N, 2) * 4);
  assert_int_equal(run_forward(ctx, &c, &r), DITATTN_OK);
  assert_memory_equal(mid, r.sel.sel[1],
                      (size_t)ditattn_llsa_selection_count(&p, c.B, c.H, c.N, 2) * 4);
  free(mid);
  run_free(&r);
  ditattn_context_destroy(ctx);
}

/* K far above any candidate count keeps every candidate (and allocates no
 * more than that); a block wider than N acts like one block of N tokens. */
static void huge_k_and_huge_b_are_bounded(void **state) {
  (void)state;
  tu_seed();
  llsa_case c = {1, 2, 23, 3, 2, 2, {12, 6}, 0, 0, 0}; /* n_1 = 12, n_2 = 6: everything kept */
  llsa_run r = run_new(&c);
  ditattn_context *ctx = ref_ctx();
  assert_int_equal(run_forward(ctx, &c, &r), DITATTN_OK);
  tu_tensor out2 = tu_tensor_new(c.B, c.H, c.N, c.D, 0, 0);
  ditattn_llsa_params huge = llsa_case_params(&c);
  huge.topk[0] = INT32_MAX;
  huge.topk[1] = INT32_MAX;
  assert_int_equal(ditattn_llsa_forward(ctx, &huge, &r.q.t, &r.k.t, &r.v.t, &out2.t, NULL, NULL),
                   DITATTN_OK);
  assert_true(tu_rel_err(&out2.t, &r.out.t) == 0.0);
  /* b = N and b = 2^62 give one block per level covering all N tokens. */
  ditattn_llsa_params wide = {c.N, 3, {1, 1, 1}, 0.0f};
  assert_int_equal(ditattn_llsa_forward(ctx, &wide, &r.q.t, &r.k.t, &r.v.t, &r.out.t, NULL, NULL),
                   DITATTN_OK);
  wide.block = (int64_t)1 << 62;
  tu_poison(&out2);
  assert_int_equal(ditattn_llsa_forward(ctx, &wide, &r.q.t, &r.k.t, &r.v.t, &out2.t, NULL, NULL),
                   DITATTN_OK);
  assert_true(tu_rel_err(&out2.t, &r.out.t) == 0.0);
  tu_tensor_free(&out2);
  run_free(&r);
  ditattn_context_destroy(ctx);
}

/* Every allocation of the forward can fail: status OUT_OF_MEMORY, a message,
 * no leak (ASan), and the next call still succeeds. */
static void allocation_failures_are_reported(void **state) {
  (void)state;
  tu_seed();
  llsa_case c = {1, 2, 21, 3, 2, 2, {2, 2}, 0, 0, 0};
  llsa_run r = run_new(&c);
  ditattn_context *ctx = ref_ctx();
  int64_t k = 1;
  for (; k < 1000; k++) {
    dt_debug_fail_alloc_at(k);
    const ditattn_status st = run_forward(ctx, &c, &r);
    if (st == DITATTN_OK) break;
    assert_int_equal(st, DITATTN_ERR_OUT_OF_MEMORY);
    assert_non_null(strstr(ditattn_last_error(ctx), "out of memory"));
  }
  dt_debug_fail_alloc_at(0);
  assert_true(k > 5); /* the forward allocates more than five buffers */
  check_against_naive(&c, &r);
  run_free(&r);
  ditattn_context_destroy(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(worked_example_matches_spec),
      cmocka_unit_test(dense_limit_one_level),
      cmocka_unit_test(dense_limit_two_levels),
      cmocka_unit_test(shapes_match_naive_model),
      cmocka_unit_test(ties_rank_smaller_index_first),
      cmocka_unit_test(strided_layout_matches_contiguous),
      cmocka_unit_test(partial_selection_request),
      cmocka_unit_test(huge_k_and_huge_b_are_bounded),
      cmocka_unit_test(allocation_failures_are_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
