/* A second, naive LLSA model for the tests, written straight from the spec
 * (/work/shared/spec/llsa.md) and independent of ref/: one (batch, head) in
 * double, one query at a time, block sizes b^l computed directly. The
 * selection is an input (the library's, checked separately), so the model
 * is a smooth function of q, k, v for finite differences. */
#ifndef DITATTN_TEST_LLSA_NAIVE_H
#define DITATTN_TEST_LLSA_NAIVE_H

#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct llsa_case {
  int64_t B, H, N, D, b;
  int L;
  int64_t K[DITATTN_LLSA_MAX_LEVELS];
  float scale; /* as passed: <= 0 means 1/sqrt(D) */
  int64_t pad; /* extra floats per token row */
  int bnhd;    /* DiT layout [B,N,H,D] */
} llsa_case;

static inline void llsa_case_print(const char *what, const llsa_case *c, double err) {
  fprintf(stderr, "%s: B=%lld H=%lld N=%lld D=%lld b=%lld L=%d K=(", what, (long long)c->B,
          (long long)c->H, (long long)c->N, (long long)c->D, (long long)c->b, c->L);
  for (int l = 0; l < c->L; l++) fprintf(stderr, "%s%lld", l ? "," : "", (long long)c->K[l]);
  fprintf(stderr, ") scale=%g pad=%lld layout=%s err=%.3e (seed printed above)\n", (double)c->scale,
          (long long)c->pad, c->bnhd ? "bnhd" : "bhnd", err);
}

static inline ditattn_llsa_params llsa_case_params(const llsa_case *c) {
  ditattn_llsa_params p = {c->b, c->L, {0}, c->scale};
  for (int l = 0; l < c->L; l++) p.topk[l] = c->K[l];
  return p;
}

static inline double llsa_case_scale(const llsa_case *c) {
  return c->scale > 0.0f ? (double)c->scale : 1.0 / sqrt((double)c->D);
}

/* b^l (small test sizes only). */
static inline int64_t naive_pow(int64_t b, int l) {
  int64_t p = 1;
  for (int i = 0; i < l; i++) p *= b;
  return p;
}

static inline int64_t naive_blocks(const llsa_case *c, int l) {
  const int64_t w = naive_pow(c->b, l);
  return (c->N + w - 1) / w;
}

static inline int64_t naive_count(const llsa_case *c, int l, int64_t blk) {
  const int64_t w = naive_pow(c->b, l), start = blk * w;
  return c->N - start < w ? c->N - start : w;
}

/* Mean over level-l block blk of x (N × D, row-major) at channel d. */
static inline double naive_mean(const llsa_case *c, const double *x, int l, int64_t blk,
                                int64_t d) {
  const int64_t w = naive_pow(c->b, l), n = naive_count(c, l, blk);
  double s = 0.0;
  for (int64_t t = blk * w; t < blk * w + n; t++) s += x[t * c->D + d];
  return s / (double)n;
}

/* One head's inputs in double, (N × D) each, copied out of the tensors. */
static inline double *naive_head_copy(const ditattn_tensor *t, int64_t bi, int64_t hi) {
  const int64_t N = t->shape[2], D = t->shape[3];
  double *x = malloc((size_t)(N * D) * sizeof *x);
  assert_non_null(x);
  for (int64_t n = 0; n < N; n++)
    for (int64_t d = 0; d < D; d++) x[n * D + d] = *tu_at(t, bi, hi, n, d);
  return x;
}

/* Row of the library's selection output for (bh, level l, block blk). */
static inline const int32_t *naive_sel_row(const llsa_case *c, int32_t *const *sel, int64_t bh,
                                           int l, int64_t blk) {
  return sel[l - 1] + (bh * naive_blocks(c, l) + blk) * c->K[l - 1];
}

/* §3 for query i of head bh with the given selection: out (D doubles), LSE. */
static inline double naive_query(const llsa_case *c, const double *q, const double *k,
                                 const double *v, int32_t *const *sel, int64_t bh, int64_t i,
                                 double *out) {
  const int64_t D = c->D, N = c->N, b = c->b;
  const double scale = llsa_case_scale(c);
  /* Keys as (z, value) pairs, at most N fine + N pooled per level. */
  const int64_t cap = N * (c->L + 1);
  double *z = malloc((size_t)cap * sizeof *z);
  double *val = malloc((size_t)(cap * D) * sizeof *val);
  assert_non_null(z);
  assert_non_null(val);
  int64_t nk = 0;
  /* fine tokens of sel_1[i / b] */
  const int32_t *row1 = naive_sel_row(c, sel, bh, 1, i / b);
  for (int64_t r = 0; r < c->K[0]; r++) {
    if (row1[r] < 0) continue;
    for (int64_t j = row1[r] * b; j < row1[r] * b + b && j < N; j++) {
      double dot = 0.0;
      for (int64_t d = 0; d < D; d++) dot += q[i * D + d] * k[j * D + d];
      z[nk] = scale * dot;
      for (int64_t d = 0; d < D; d++) val[nk * D + d] = v[j * D + d];
      nk++;
    }
  }
  /* pooled tokens: children of sel_{l+1}[i / b^(l+1)] for l < L, all at L */
  for (int l = 1; l <= c->L; l++) {
    const int64_t nl = naive_blocks(c, l);
    for (int64_t blk = 0; blk < nl; blk++) {
      int used = l == c->L;
      if (!used) {
        const int32_t *prow = naive_sel_row(c, sel, bh, l + 1, i / naive_pow(b, l + 1));
        for (int64_t r = 0; r < c->K[l]; r++)
          if (prow[r] >= 0 && prow[r] == blk / b) used = 1;
      }
      if (!used) continue;
      double dot = 0.0;
      for (int64_t d = 0; d < D; d++) dot += q[i * D + d] * naive_mean(c, k, l, blk, d);
      z[nk] = scale * dot + log((double)naive_count(c, l, blk));
      for (int64_t d = 0; d < D; d++) val[nk * D + d] = naive_mean(c, v, l, blk, d);
      nk++;
    }
  }
  double zmax = -INFINITY, sum = 0.0;
  for (int64_t j = 0; j < nk; j++) zmax = z[j] > zmax ? z[j] : zmax;
  for (int64_t j = 0; j < nk; j++) sum += exp(z[j] - zmax);
  for (int64_t d = 0; d < D; d++) {
    double acc = 0.0;
    for (int64_t j = 0; j < nk; j++) acc += exp(z[j] - zmax) * val[j * D + d];
    out[d] = acc / sum;
  }
  free(z);
  free(val);
  return zmax + log(sum);
}

/* Selections for every level, allocated to ditattn_llsa_selection_count. */
static inline void naive_selection_alloc(const llsa_case *c, ditattn_llsa_selection *s) {
  const ditattn_llsa_params p = llsa_case_params(c);
  for (int l = 0; l < DITATTN_LLSA_MAX_LEVELS; l++) s->sel[l] = NULL;
  for (int l = 1; l <= c->L; l++) {
    const int64_t n = ditattn_llsa_selection_count(&p, c->B, c->H, c->N, l);
    assert_true(n > 0);
    s->sel[l - 1] = malloc((size_t)n * sizeof(int32_t));
    assert_non_null(s->sel[l - 1]);
    for (int64_t e = 0; e < n; e++) s->sel[l - 1][e] = -7; /* poison */
  }
}

static inline void naive_selection_free(ditattn_llsa_selection *s) {
  for (int l = 0; l < DITATTN_LLSA_MAX_LEVELS; l++) {
    free(s->sel[l]);
    s->sel[l] = NULL;
  }
}

#endif
