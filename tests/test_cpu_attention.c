/* setenv */
#define _POSIX_C_SOURCE 200112L
/* CPU backend attention (dense and LLSA, forward and backward) against ref/
 * on random shapes: partial blocks, odd N, strided [B,N,H,D] layouts with
 * padding; 1 and 2 threads must agree bitwise; LLSA selections must be
 * identical to ref/'s. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

/* The second pass (OpenBLAS GEMMs) runs a third of the random trials. */
static int second_pass = 0;
static int trials(int n) { return second_pass ? (n + 2) / 3 : n; }

typedef struct problem {
  int64_t B, H, Nq, Nk, D, pad;
  int bnhd;
  float scale;
  ditattn_llsa_params llsa; /* levels = 0: dense */
} problem;

static void print_problem(const char *what, const problem *p, double err) {
  fprintf(stderr, "FAIL %s: B=%lld H=%lld Nq=%lld Nk=%lld D=%lld pad=%lld layout=%s scale=%g", what,
          (long long)p->B, (long long)p->H, (long long)p->Nq, (long long)p->Nk, (long long)p->D,
          (long long)p->pad, p->bnhd ? "bnhd" : "bhnd", (double)p->scale);
  if (p->llsa.levels > 0) {
    fprintf(stderr, " b=%lld L=%d K=(", (long long)p->llsa.block, p->llsa.levels);
    for (int l = 0; l < p->llsa.levels; l++)
      fprintf(stderr, "%s%lld", l ? "," : "", (long long)p->llsa.topk[l]);
    fprintf(stderr, ")");
  }
  fprintf(stderr, " err=%.3e (seed printed above)\n", err);
}

static problem random_dense(int64_t max_n) {
  problem p = {tu_rand_int(1, 2),
               tu_rand_int(1, 3),
               tu_rand_int(1, max_n),
               tu_rand_int(1, max_n),
               tu_rand_int(1, 70),
               tu_rand_int(0, 3),
               (int)tu_rand_int(0, 1),
               0.0f,
               {0}};
  if (tu_rand_int(0, 1)) p.scale = (float)tu_uniform(0.1, 1.0);
  return p;
}

static problem random_llsa(int64_t max_n) {
  problem p = random_dense(max_n);
  p.Nk = p.Nq;
  p.llsa = ditattn_llsa_params_default();
  p.llsa.block = tu_rand_int(2, 17);
  p.llsa.levels = (int)tu_rand_int(1, 3);
  for (int l = 0; l < p.llsa.levels; l++) p.llsa.topk[l] = tu_rand_int(1, 5);
  p.llsa.scale = p.scale;
  return p;
}

typedef struct tensors {
  tu_tensor q, k, v, out, dout, dq, dk, dv;
  float *lse;
  int32_t *sel[DITATTN_LLSA_MAX_LEVELS];
} tensors;

static int64_t lse_count(const problem *p) { return p->B * p->H * p->Nq; }

static void outputs_new(const problem *p, tensors *t) {
  t->out = tu_tensor_new(p->B, p->H, p->Nq, p->D, p->pad, p->bnhd);
  t->dq = tu_tensor_new(p->B, p->H, p->Nq, p->D, p->pad, !p->bnhd);
  t->dk = tu_tensor_new(p->B, p->H, p->Nk, p->D, p->pad, p->bnhd);
  t->dv = tu_tensor_new(p->B, p->H, p->Nk, p->D, 0, p->bnhd);
  t->lse = malloc((size_t)lse_count(p) * sizeof(float));
  assert_non_null(t->lse);
  tu_poison_floats(t->lse, (size_t)lse_count(p));
  for (int l = 0; l < p->llsa.levels; l++) {
    const int64_t n = ditattn_llsa_selection_count(&p->llsa, p->B, p->H, p->Nq, l + 1);
    t->sel[l] = malloc((size_t)n * sizeof(int32_t));
    assert_non_null(t->sel[l]);
    memset(t->sel[l], 0x5a, (size_t)n * sizeof(int32_t));
  }
}

static void outputs_free(const problem *p, tensors *t) {
  tu_tensor_free(&t->out);
  tu_tensor_free(&t->dq);
  tu_tensor_free(&t->dk);
  tu_tensor_free(&t->dv);
  free(t->lse);
  for (int l = 0; l < p->llsa.levels; l++) free(t->sel[l]);
}

static void inputs_new(const problem *p, tensors *t) {
  t->q = tu_tensor_new(p->B, p->H, p->Nq, p->D, p->pad, p->bnhd);
  t->k = tu_tensor_new(p->B, p->H, p->Nk, p->D, p->pad, !p->bnhd);
  t->v = tu_tensor_new(p->B, p->H, p->Nk, p->D, 0, p->bnhd);
  t->dout = tu_tensor_new(p->B, p->H, p->Nq, p->D, p->pad, p->bnhd);
  tu_fill_uniform(&t->q);
  tu_fill_uniform(&t->k);
  tu_fill_uniform(&t->v);
  tu_fill_uniform(&t->dout);
}

static void inputs_free(tensors *t) {
  tu_tensor_free(&t->q);
  tu_tensor_free(&t->k);
  tu_tensor_free(&t->v);
  tu_tensor_free(&t->dout);
}

static void run_forward(ditattn_context *ctx, const problem *p, const tensors *in, tensors *o) {
  ditattn_status st;
  if (p->llsa.levels == 0) {
    st = ditattn_dense_forward(ctx, &in->q.t, &in->k.t, &in->v.t, p->scale, &o->out.t, o->lse);
  } else {
    ditattn_llsa_selection sel = {{0}};
    for (int l = 0; l < p->llsa.levels; l++) sel.sel[l] = o->sel[l];
    st = ditattn_llsa_forward(ctx, &p->llsa, &in->q.t, &in->k.t, &in->v.t, &o->out.t, o->lse, &sel);
  }
  if (st != DITATTN_OK) {
    print_problem(ditattn_last_error(ctx), p, 0.0);
    fail();
  }
}

/* Backward uses the reference forward's out and lse (in `fwd`). */
static void run_backward(ditattn_context *ctx, const problem *p, const tensors *in,
                         const tensors *fwd, tensors *o) {
  ditattn_status st;
  if (p->llsa.levels == 0)
    st = ditattn_dense_backward(ctx, &in->q.t, &in->k.t, &in->v.t, &fwd->out.t, fwd->lse,
                                &in->dout.t, p->scale, &o->dq.t, &o->dk.t, &o->dv.t);
  else
    st = ditattn_llsa_backward(ctx, &p->llsa, &in->q.t, &in->k.t, &in->v.t, &fwd->out.t, fwd->lse,
                               &in->dout.t, &o->dq.t, &o->dk.t, &o->dv.t);
  if (st != DITATTN_OK) {
    print_problem(ditattn_last_error(ctx), p, 0.0);
    fail();
  }
}

static void expect_close(const char *what, const problem *p, double err) {
  if (!(err <= TOL)) {
    print_problem(what, p, err);
    fail();
  }
}

static void expect_same_bits(const char *what, const problem *p, const ditattn_tensor *a,
                             const ditattn_tensor *b) {
  for (int64_t ib = 0; ib < a->shape[0]; ib++)
    for (int64_t ih = 0; ih < a->shape[1]; ih++)
      for (int64_t n = 0; n < a->shape[2]; n++)
        if (memcmp(tu_at(a, ib, ih, n, 0), tu_at(b, ib, ih, n, 0),
                   (size_t)a->shape[3] * sizeof(float)) != 0) {
          print_problem(what, p, 0.0);
          fail();
        }
}

/* ref vs cpu with 1 and 2 threads, forward and (if asked) backward. */
static void check_problem(const problem *p, int backward) {
  tensors in = {0}, ref = {0}, c1 = {0}, c2 = {0};
  inputs_new(p, &in);
  outputs_new(p, &ref);
  outputs_new(p, &c1);
  outputs_new(p, &c2);
  ditattn_context *rctx = tu_context_new(DITATTN_BACKEND_REF, 0);
  ditattn_context *ctx1 = tu_context_new(DITATTN_BACKEND_CPU, 1);
  ditattn_context *ctx2 = tu_context_new(DITATTN_BACKEND_CPU, 2);
  run_forward(rctx, p, &in, &ref);
  run_forward(ctx1, p, &in, &c1);
  run_forward(ctx2, p, &in, &c2);
  expect_close("forward out vs ref", p, tu_rel_err(&c1.out.t, &ref.out.t));
  expect_close("forward lse vs ref", p, tu_rel_err_floats(c1.lse, ref.lse, (size_t)lse_count(p)));
  expect_same_bits("forward out 1 vs 2 threads", p, &c1.out.t, &c2.out.t);
  if (memcmp(c1.lse, c2.lse, (size_t)lse_count(p) * sizeof(float)) != 0) {
    print_problem("forward lse 1 vs 2 threads", p, 0.0);
    fail();
  }
  for (int l = 0; l < p->llsa.levels; l++) {
    const size_t n = (size_t)ditattn_llsa_selection_count(&p->llsa, p->B, p->H, p->Nq, l + 1);
    if (memcmp(c1.sel[l], ref.sel[l], n * sizeof(int32_t)) != 0 ||
        memcmp(c2.sel[l], ref.sel[l], n * sizeof(int32_t)) != 0) {
      fprintf(stderr, "selection of level %d differs from ref/\n", l + 1);
      print_problem("llsa selection", p, 0.0);
      fail();
    }
  }
  if (backward) {
    run_backward(rctx, p, &in, &ref, &ref);
    run_backward(ctx1, p, &in, &ref, &c1);
    run_backward(ctx2, p, &in, &ref, &c2);
    expect_close("backward dq vs ref", p, tu_rel_err(&c1.dq.t, &ref.dq.t));
    expect_close("backward dk vs ref", p, tu_rel_err(&c1.dk.t, &ref.dk.t));
    expect_close("backward dv vs ref", p, tu_rel_err(&c1.dv.t, &ref.dv.t));
    expect_same_bits("backward dq 1 vs 2 threads", p, &c1.dq.t, &c2.dq.t);
    expect_same_bits("backward dk 1 vs 2 threads", p, &c1.dk.t, &c2.dk.t);
    expect_same_bits("backward dv 1 vs 2 threads", p, &c1.dv.t, &c2.dv.t);
  }
  ditattn_context_destroy(rctx);
  ditattn_context_destroy(ctx1);
  ditattn_context_destroy(ctx2);
  outputs_free(p, &ref);
  outputs_free(p, &c1);
  outputs_free(p, &c2);
  inputs_free(&in);
}

static void dense_forward_matches_ref(void **state) {
  (void)state;
  tu_seed();
  for (int trial = 0; trial < trials(12); trial++) {
    problem p = random_dense(trial < 8 ? 40 : 300);
    check_problem(&p, 0);
  }
  /* Several key chunks and query tiles. */
  problem big = {1, 2, 700, 1100, 64, 1, 1, 0.0f, {0}};
  if (!second_pass) check_problem(&big, 0);
}

/* Backward problems have at least 2 keys: with one key dq is exactly 0 in
 * exact arithmetic (dS = p·(dO·v − o·dO) cancels), so a relative error
 * against ref/ measures only fp32 rounding of a zero. */
static void dense_backward_matches_ref(void **state) {
  (void)state;
  tu_seed();
  for (int trial = 0; trial < trials(10); trial++) {
    problem p = random_dense(trial < 6 ? 40 : 300);
    if (p.Nk < 2) p.Nk = 2;
    check_problem(&p, 1);
  }
  problem d64 = {1, 2, 300, 260, 64, 1, 1, 0.0f, {0}}; /* the own kernels need D % 64 == 0 */
  if (!second_pass) check_problem(&d64, 1);
}

static void llsa_forward_matches_ref(void **state) {
  (void)state;
  tu_seed();
  for (int trial = 0; trial < trials(16); trial++) {
    problem p = random_llsa(trial < 10 ? 60 : 600);
    check_problem(&p, 0);
  }
  problem big = {1, 1, 2000, 2000, 64, 0, 0, 0.0f, ditattn_llsa_params_default()};
  if (!second_pass) check_problem(&big, 0);
}

/* Exact ties of the selection scores: k repeats a few block patterns and
 * every value is a multiple of 1/4, so pooled means and scores are exact
 * and equal; the order must fall back to the smaller block index, as ref/. */
static void llsa_selection_ties_match_ref(void **state) {
  (void)state;
  tu_seed();
  for (int trial = 0; trial < trials(6); trial++) {
    problem p = random_llsa(400);
    p.llsa.block = tu_rand_int(2, 6);
    tensors in = {0}, ref = {0}, c2 = {0};
    inputs_new(&p, &in);
    const int64_t patterns = tu_rand_int(1, 3), blk = p.llsa.block;
    for (int64_t ib = 0; ib < p.B; ib++)
      for (int64_t ih = 0; ih < p.H; ih++)
        for (int64_t n = 0; n < p.Nq; n++)
          for (int64_t d = 0; d < p.D; d++) {
            const int64_t src = (n / blk) % patterns * blk + n % blk; /* same pattern per block */
            *tu_at(&in.q.t, ib, ih, n, d) = (float)tu_rand_int(-4, 4) * 0.25f;
            *tu_at(&in.k.t, ib, ih, n, d) = (float)((src * 7 + d * 3) % 9 - 4) * 0.25f;
          }
    outputs_new(&p, &ref);
    outputs_new(&p, &c2);
    ditattn_context *rctx = tu_context_new(DITATTN_BACKEND_REF, 0),
                    *ctx = tu_context_new(DITATTN_BACKEND_CPU, 2);
    run_forward(rctx, &p, &in, &ref);
    run_forward(ctx, &p, &in, &c2);
    for (int l = 0; l < p.llsa.levels; l++) {
      const size_t n = (size_t)ditattn_llsa_selection_count(&p.llsa, p.B, p.H, p.Nq, l + 1);
      if (memcmp(c2.sel[l], ref.sel[l], n * sizeof(int32_t)) != 0) {
        fprintf(stderr, "tied selection of level %d differs from ref/\n", l + 1);
        print_problem("llsa selection ties", &p, 0.0);
        fail();
      }
    }
    expect_close("forward out (ties) vs ref", &p, tu_rel_err(&c2.out.t, &ref.out.t));
    ditattn_context_destroy(rctx);
    ditattn_context_destroy(ctx);
    outputs_free(&p, &ref);
    outputs_free(&p, &c2);
    inputs_free(&in);
  }
}

static void llsa_backward_matches_ref(void **state) {
  (void)state;
  tu_seed();
  for (int trial = 0; trial < trials(12); trial++) {
    problem p = random_llsa(trial < 8 ? 60 : 400);
    if (p.Nq < 2) p.Nq = p.Nk = 2;
    check_problem(&p, 1);
  }
  /* Level-1 blocks wider than the query tile (split tiles), partial last block. */
  problem wide = {1, 2, 1000, 1000, 16, 1, 1, 0.0f, ditattn_llsa_params_default()};
  wide.llsa.block = 300;
  wide.llsa.topk[0] = 2;
  wide.llsa.topk[1] = 1;
  if (!second_pass) check_problem(&wide, 1);
  problem d128 = {2, 1, 700, 700, 128, 0, 1, 0.3f, ditattn_llsa_params_default()};
  d128.llsa.scale = d128.scale;
  if (!second_pass) check_problem(&d128, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(dense_forward_matches_ref), cmocka_unit_test(dense_backward_matches_ref),
      cmocka_unit_test(llsa_forward_matches_ref),  cmocka_unit_test(llsa_selection_ties_match_ref),
      cmocka_unit_test(llsa_backward_matches_ref),
  };
  /* Once with the default forward kernels, once with DITATTN_CPU_KERNEL=blas. */
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  setenv("DITATTN_CPU_KERNEL", "blas", 1);
  second_pass = 1;
  failed += cmocka_run_group_tests(tests, NULL, NULL);
  return failed;
}
