/* RoPeSLR forward: the four properties of spec §7, an independent oracle of
 * the whole definition, K policies, partial blocks, r > D, both feature maps
 * and both own-block settings, allocation failures. */
#include "test_ropeslr_fixture.h"

#include "ref/ropeslr_internal.h"

#include <math.h>

#define FP32_TOL 1e-5

/* ------------------------------------------------------------ oracle */
/* Written from the spec independently of ref/: selection by a full
 * insertion sort, features from scratch. os, olr: [B][H][N][D]; sel:
 * [B][H][n][K]. */
static double oracle_phi(ditattn_slr_feature feature, const double *u, int64_t r, int64_t m) {
  if (feature == DITATTN_SLR_FEATURE_ELU1) return u[m] > 0 ? u[m] + 1.0 : exp(u[m]);
  double mx = u[0], sum = 0.0;
  for (int64_t e = 1; e < r; e++) mx = fmax(mx, u[e]);
  for (int64_t e = 0; e < r; e++) sum += exp(u[e] - mx);
  return exp(u[m] - mx) / sum;
}

static void oracle_feature(const slr_problem *p, const tu_tensor *proj, const tu_tensor *x,
                           int64_t b, int64_t h, int64_t i, double *u, double *f) {
  const int64_t r = p->params.rank, Hg = p->params.grid[1], Wg = p->params.grid[2];
  int64_t t, y, xx;
  if (p->pos) {
    t = p->pos[3 * i], y = p->pos[3 * i + 1], xx = p->pos[3 * i + 2];
  } else {
    t = i / (Hg * Wg), y = i / Wg % Hg, xx = i % Wg;
  }
  for (int64_t m = 0; m < r; m++) {
    u[m] = (double)*tu_at(&p->w[2].t, 0, h, t, m) + *tu_at(&p->w[3].t, 0, h, y, m) +
           *tu_at(&p->w[4].t, 0, h, xx, m);
    for (int64_t d = 0; d < p->D; d++)
      u[m] += (double)*tu_at(&x->t, b, h, i, d) * *tu_at(&proj->t, 0, h, d, m);
  }
  for (int64_t m = 0; m < r; m++) f[m] = oracle_phi(p->params.feature, u, r, m);
}

static void oracle(const slr_problem *p, double *os, double *olr, int32_t *sel) {
  const int64_t N = p->N, D = p->D, r = p->params.rank, bs = p->params.block;
  const int64_t n = (N + bs - 1) / bs, K = ditattn_ropeslr_topk(&p->params, N);
  double *pq = calloc((size_t)(n * D), sizeof(double)), *pk = calloc((size_t)(n * D), 8);
  double *score = malloc((size_t)n * 8), *f = malloc((size_t)(N * r) * 8);
  double *g = malloc((size_t)(N * r) * 8), *u = malloc((size_t)r * 8), *z = malloc((size_t)N * 8);
  int64_t *order = malloc((size_t)n * 8);
  char *chosen = malloc((size_t)n);
  for (int64_t b = 0; b < p->B; b++)
    for (int64_t h = 0; h < p->H; h++) {
      const int64_t head = b * p->H + h;
      memset(pq, 0, (size_t)(n * D) * 8);
      memset(pk, 0, (size_t)(n * D) * 8);
      for (int64_t i = 0; i < N; i++) {
        const int64_t cnt = (i / bs == n - 1) ? N - (n - 1) * bs : bs;
        for (int64_t d = 0; d < D; d++) {
          pq[i / bs * D + d] += *tu_at(&p->q.t, b, h, i, d) / (double)cnt;
          pk[i / bs * D + d] += *tu_at(&p->k.t, b, h, i, d) / (double)cnt;
        }
      }
      for (int64_t i = 0; i < N; i++) {
        oracle_feature(p, &p->w[0], &p->q, b, h, i, u, f + i * r);
        oracle_feature(p, &p->w[1], &p->k, b, h, i, u, g + i * r);
      }
      for (int64_t G = 0; G < n; G++) {
        for (int64_t C = 0; C < n; C++) {
          score[C] = 0;
          for (int64_t d = 0; d < D; d++) score[C] += pq[G * D + d] * pk[C * D + d];
          order[C] = C;
        }
        for (int64_t a = 1; a < n; a++) /* insertion sort: score desc, index asc */
          for (int64_t c = a; c > 0; c--) {
            int64_t x = order[c - 1], y = order[c];
            if (score[y] > score[x] || (score[y] == score[x] && y < x)) {
              order[c - 1] = y;
              order[c] = x;
            }
          }
        int32_t *row = sel + (head * n + G) * K;
        int own = 0;
        for (int64_t s = 0; s < K; s++) row[s] = (int32_t)order[s], own |= order[s] == G;
        if (p->params.force_own_block && !own) row[K - 1] = (int32_t)G;
        memset(chosen, 0, (size_t)n);
        for (int64_t s = 0; s < K; s++) chosen[row[s]] = 1;
        for (int64_t i = G * bs; i < N && i < (G + 1) * bs; i++) {
          double mx = -INFINITY, sum = 0, den = 0;
          for (int64_t j = 0; j < N; j++) {
            z[j] = 0;
            for (int64_t d = 0; d < D; d++)
              z[j] += (double)*tu_at(&p->q.t, b, h, i, d) * *tu_at(&p->k.t, b, h, j, d);
            z[j] /= sqrt((double)D); /* default scale */
            if (chosen[j / bs]) mx = fmax(mx, z[j]);
          }
          double *o_s = os + (head * N + i) * D, *o_l = olr + (head * N + i) * D;
          memset(o_s, 0, (size_t)D * 8);
          memset(o_l, 0, (size_t)D * 8);
          for (int64_t j = 0; j < N; j++) {
            double a = 0;
            for (int64_t m = 0; m < r; m++) a += f[i * r + m] * g[j * r + m];
            const double e = chosen[j / bs] ? exp(z[j] - mx) : 0.0;
            const double l = chosen[j / bs] ? 0.0 : a;
            sum += e;
            den += l;
            for (int64_t d = 0; d < D; d++) {
              o_s[d] += e * *tu_at(&p->v.t, b, h, j, d);
              o_l[d] += l * *tu_at(&p->v.t, b, h, j, d);
            }
          }
          for (int64_t d = 0; d < D; d++) {
            o_s[d] /= sum;
            o_l[d] = den > 0 ? o_l[d] / den : 0.0;
          }
        }
      }
    }
  free(pq), free(pk), free(score), free(f), free(g), free(u), free(z), free(order), free(chosen);
}

/* ‖out − (os + Wᵀ olr)‖ / ‖·‖ (with_lowrank = 0 drops the low-rank term). */
static double oracle_rel_err(const slr_problem *p, const tu_tensor *out, const double *os,
                             const double *olr, int with_lowrank) {
  double num = 0, den = 0;
  for (int64_t b = 0; b < p->B; b++)
    for (int64_t h = 0; h < p->H; h++)
      for (int64_t i = 0; i < p->N; i++)
        for (int64_t e = 0; e < p->D; e++) {
          const int64_t row = ((b * p->H + h) * p->N + i) * p->D;
          double want = os[row + e];
          if (with_lowrank)
            for (int64_t d = 0; d < p->D; d++)
              want += (double)*tu_at(&p->w[5].t, 0, h, d, e) * olr[row + d];
          const double got = *tu_at(&out->t, b, h, i, e);
          if (!isfinite(got)) return INFINITY;
          num += (got - want) * (got - want);
          den += want * want;
        }
  return sqrt(num / den);
}

static ditattn_context *make_ctx(void) {
  ditattn_context *ctx = NULL;
  assert_int_equal(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), DITATTN_OK);
  return ctx;
}

/* A spread of problems: partial blocks, r > D, strided views, both feature
 * maps, both own-block settings, every K policy, K = 1 and K = n. */
#define N_CASES 10
static slr_problem make_case(int c) {
  slr_problem p;
  switch (c) {
  case 0: p = slr_problem_make(1, 2, 8, 5, 2, 3, 5, 7); break;   /* N = 30, partial last block */
  case 1: p = slr_problem_make(2, 1, 4, 12, 2, 2, 4, 3); break;  /* r > D */
  case 2: p = slr_problem_make(1, 2, 6, 3, 1, 5, 7, 4); break;   /* N = 35 */
  case 3: p = slr_problem_make(2, 2, 8, 8, 3, 2, 3, 6); break;   /* N = 18, n = 3 */
  case 4: p = slr_problem_make(1, 1, 4, 2, 2, 4, 4, 1); break;   /* block 1 */
  case 5: p = slr_problem_make(1, 3, 8, 16, 1, 6, 6, 40); break; /* block > N: n = 1 */
  case 6: p = slr_problem_make(1, 2, 2, 1, 4, 3, 3, 5); break;   /* r = 1, D = 2 */
  case 7: p = slr_problem_make(2, 1, 8, 4, 2, 5, 5, 8); break;
  case 8: p = slr_problem_make(1, 2, 4, 6, 3, 3, 3, 2); break;
  default: p = slr_problem_make(1, 1, 16, 7, 2, 3, 4, 5); break;
  }
  p.params.feature = (c % 2) ? DITATTN_SLR_FEATURE_SOFTMAX : DITATTN_SLR_FEATURE_ELU1;
  p.params.force_own_block = (c / 2) % 2;
  p.pad = c % 3;
  p.layout_bnhd = c % 4 == 1;
  p.shuffled = c % 3 != 2;
  switch (c % 5) {
  case 0: p.params.rho = 0.3; break;
  case 1: p.params.policy = DITATTN_SLR_FIXED_K, p.params.topk = 1; break; /* K = 1 */
  case 2: p.params.policy = DITATTN_SLR_SQRT, p.params.sqrt_c = 0.7; break;
  case 3: p.params.policy = DITATTN_SLR_FIXED_K, p.params.topk = 2; break;
  default: p.params.rho = 1.0; break; /* K = n: empty background */
  }
  return p;
}

static void forward_matches_oracle(void **state) {
  (void)state;
  ditattn_context *ctx = make_ctx();
  for (int c = 0; c < N_CASES; c++) {
    for (int zero_w = 0; zero_w < 2; zero_w++) {
      slr_problem p = make_case(c);
      slr_problem_init(&p, tu_seed() + (uint64_t)c);
      /* W = 0 (spec §7): the output must be the sparse branch alone. */
      if (zero_w)
        for (size_t e = 0; e < p.w[5].count; e++) p.w[5].buf[e] = 0.0f;
      const int64_t n = (p.N + p.params.block - 1) / p.params.block;
      const int64_t K = ditattn_ropeslr_topk(&p.params, p.N);
      const int64_t count = ditattn_ropeslr_selection_count(&p.params, p.B, p.H, p.N);
      assert_int_equal(count, p.B * p.H * n * K);
      tu_tensor out = tu_tensor_new(p.B, p.H, p.N, p.D, p.pad, p.layout_bnhd);
      float *lse = malloc((size_t)(p.B * p.H * p.N) * sizeof(float));
      int32_t *sel = malloc((size_t)count * sizeof(int32_t)),
              *want_sel = malloc((size_t)count * sizeof(int32_t));
      double *os = malloc((size_t)(p.B * p.H * p.N * p.D) * 8);
      double *olr = malloc((size_t)(p.B * p.H * p.N * p.D) * 8);
      tu_poison_floats(lse, (size_t)(p.B * p.H * p.N));
      for (int64_t e = 0; e < count; e++) sel[e] = -7;
      slr_forward(ctx, &p, &out, lse, sel);
      oracle(&p, os, olr, want_sel);
      char line[512];
      slr_describe(&p, line, sizeof line);
      const double err = oracle_rel_err(&p, &out, os, olr, !zero_w);
      if (!(err <= FP32_TOL))
        fail_msg("output vs oracle: rel err %.3g, W=0: %d [%s]", err, zero_w, line);
      if (memcmp(sel, want_sel, (size_t)count * sizeof(int32_t)) != 0)
        fail_msg("selection differs from the oracle's [%s]", line);
      for (int64_t e = 0; e < p.B * p.H * p.N; e++)
        if (!isfinite(lse[e])) fail_msg("lse_sparse[%lld] not written [%s]", (long long)e, line);
      if (zero_w) {
        /* And the low-rank weights then have no influence at all. */
        tu_tensor out2 = tu_tensor_new(p.B, p.H, p.N, p.D, p.pad, p.layout_bnhd);
        for (int a = 0; a < 5; a++) tu_fill_uniform(&p.w[a]);
        slr_forward(ctx, &p, &out2, NULL, NULL);
        if (tu_rel_err(&out2.t, &out.t) != 0.0)
          fail_msg("W = 0 but A/B/E change the output [%s]", line);
        tu_tensor_free(&out2);
      }
      free(lse), free(sel), free(want_sel), free(os), free(olr);
      tu_tensor_free(&out);
      slr_problem_free(&p);
    }
  }
  ditattn_context_destroy(ctx);
}

/* Spec §7: ρ = 1 selects every block, the background is empty, o = dense. */
static void rho_one_is_dense_attention(void **state) {
  (void)state;
  ditattn_context *ctx = make_ctx();
  for (int c = 0; c < N_CASES; c++) {
    slr_problem p = make_case(c);
    p.params.policy = DITATTN_SLR_KEEP_FRACTION;
    p.params.rho = 1.0;
    p.params.scale = 0.37f;
    slr_problem_init(&p, tu_seed() + 100u + (uint64_t)c);
    tu_tensor out = tu_tensor_new(p.B, p.H, p.N, p.D, p.pad, p.layout_bnhd);
    tu_tensor dense = tu_tensor_new(p.B, p.H, p.N, p.D, 0, 0);
    const size_t rows = (size_t)(p.B * p.H * p.N);
    float *lse = malloc(rows * 4), *dense_lse = malloc(rows * 4);
    tu_poison_floats(lse, rows);
    slr_forward(ctx, &p, &out, lse, NULL);
    char line[512];
    slr_describe(&p, line, sizeof line);
    ditattn_status st =
        ditattn_dense_forward(ctx, &p.q.t, &p.k.t, &p.v.t, 0.37f, &dense.t, dense_lse);
    if (st != DITATTN_OK) fail_msg("dense_forward: %s [%s]", ditattn_last_error(ctx), line);
    double err = tu_rel_err(&out.t, &dense.t), lse_err = tu_rel_err_floats(lse, dense_lse, rows);
    if (!(err <= FP32_TOL) || !(lse_err <= FP32_TOL))
      fail_msg("rho = 1 vs dense: out rel err %.3g, lse rel err %.3g [%s]", err, lse_err, line);
    free(lse), free(dense_lse);
    tu_tensor_free(&out);
    tu_tensor_free(&dense);
    slr_problem_free(&p);
  }
  ditattn_context_destroy(ctx);
}

/* Spec §7: the block-factor form (S_bg = S − Σ_sel S_C) equals the direct
 * O(N²·r) sum, checked per head in double and through the whole forward. */
static void factors_equal_direct_sum(void **state) {
  (void)state;
  tu_seed();
  for (int c = 0; c < 40; c++) {
    dt_slr_shape s;
    s.N = tu_rand_int(1, 40);
    s.D = tu_rand_int(1, 9);
    s.r = tu_rand_int(1, 12);
    s.block = tu_rand_int(1, 9);
    s.n = (s.N + s.block - 1) / s.block;
    s.K = tu_rand_int(1, s.n);
    double *f = malloc((size_t)(s.N * s.r) * 8), *g = malloc((size_t)(s.N * s.r) * 8);
    double *v = malloc((size_t)(s.N * s.D) * 8), *o1 = malloc((size_t)(s.N * s.D) * 8);
    double *o2 = malloc((size_t)(s.N * s.D) * 8), *d1 = malloc((size_t)s.N * 8);
    double *d2 = malloc((size_t)s.N * 8);
    int32_t *sel = malloc((size_t)(s.n * s.K) * 4);
    for (int64_t e = 0; e < s.N * s.r; e++) f[e] = tu_uniform(0.01, 2), g[e] = tu_uniform(0.01, 2);
    for (int64_t e = 0; e < s.N * s.D; e++) v[e] = tu_uniform(-1, 1);
    int32_t *shuffle = malloc((size_t)s.n * 4); /* K distinct random blocks per row */
    for (int64_t G = 0; G < s.n; G++) {
      for (int64_t C = 0; C < s.n; C++) shuffle[C] = (int32_t)C;
      for (int64_t C = s.n - 1; C > 0; C--) {
        int64_t j = tu_rand_int(0, C);
        int32_t t = shuffle[C];
        shuffle[C] = shuffle[j], shuffle[j] = t;
      }
      for (int64_t t = 0; t < s.K; t++) sel[G * s.K + t] = shuffle[t];
    }
    free(shuffle);
    dt_slr_lowrank_direct(&s, sel, f, g, v, o1, d1);
    assert_int_equal(dt_slr_lowrank_factors(NULL, &s, sel, f, g, v, o2, d2), DITATTN_OK);
    double num = 0, den = 0;
    for (int64_t e = 0; e < s.N * s.D; e++)
      num += (o1[e] - o2[e]) * (o1[e] - o2[e]), den += o1[e] * o1[e];
    const int empty = s.K == s.n;
    if (empty ? (num != 0.0 || den != 0.0) : !(sqrt(num / den) <= 1e-12))
      fail_msg("factors vs direct: N=%lld D=%lld r=%lld b=%lld K=%lld: err^2 %.3g of %.3g",
               (long long)s.N, (long long)s.D, (long long)s.r, (long long)s.block, (long long)s.K,
               num, den);
    free(f), free(g), free(v), free(o1), free(o2), free(d1), free(d2), free(sel);
  }
  /* Whole forward, both forms. */
  ditattn_context *ctx = make_ctx();
  for (int c = 0; c < N_CASES; c++) {
    slr_problem p = make_case(c);
    slr_problem_init(&p, tu_seed() + 200u + (uint64_t)c);
    if (!p.pos) { /* the entry needs positions */
      ditattn_order_params raster = {
          DITATTN_ORDER_RASTER, {p.params.grid[0], p.params.grid[1], p.params.grid[2]}, {1, 1, 1}};
      p.pos = malloc((size_t)(p.N * 3) * 4);
      assert_int_equal(ditattn_order_positions(&raster, p.pos), DITATTN_OK);
    }
    tu_tensor o1 = tu_tensor_new(p.B, p.H, p.N, p.D, 0, 0),
              o2 = tu_tensor_new(p.B, p.H, p.N, p.D, 0, 0);
    ditattn_ropeslr_weights w = slr_weights_of(p.w);
    dt_ropeslr_fwd prob = {p.params, ditattn_ropeslr_topk(&p.params, p.N),
                           &w,       p.pos,
                           &p.q.t,   &p.k.t,
                           &p.v.t,   &o1.t,
                           NULL,     NULL,
                           0,        {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0}};
    prob.params.scale = (float)(1.0 / sqrt((double)p.D));
    assert_int_equal(dt_ref_ropeslr_forward_mode(ctx, &prob, DT_SLR_LOWRANK_DIRECT), DITATTN_OK);
    prob.out = &o2.t;
    assert_int_equal(dt_ref_ropeslr_forward_mode(ctx, &prob, DT_SLR_LOWRANK_FACTORS), DITATTN_OK);
    char line[512];
    slr_describe(&p, line, sizeof line);
    const double err = tu_rel_err(&o2.t, &o1.t);
    if (!(err <= 1e-6)) fail_msg("forward, factors vs direct: rel err %.3g [%s]", err, line);
    tu_tensor_free(&o1);
    tu_tensor_free(&o2);
    slr_problem_free(&p);
  }
  ditattn_context_destroy(ctx);
}

/* Spec §7: permuting tokens together with their positions permutes the
 * output. Blocks are runs of consecutive tokens, so an arbitrary permutation
 * changes which tokens share a block (and so the selection); the property is
 * exact only for permutations that keep the block structure: (a) block = 1,
 * any permutation (each token is its own block, scores q_i·k_j move with the
 * tokens, the own-block rule follows the token); (b) N a multiple of b and a
 * permutation of whole blocks (block means move with their blocks); (c)
 * ρ = 1, any permutation (everything selected: dense attention). Ties would
 * break by index and could differ; random data has none. The permuted run
 * sums in another order, so equality is to fp32 rounding. */
static void permuting_tokens_permutes_output(void **state) {
  (void)state;
  ditattn_context *ctx = make_ctx();
  for (int c = 0; c < 9; c++) {
    const int kind = c % 3;
    slr_problem p = slr_problem_make(1 + c % 2, 2, 6, 5, 2, 3, 4, kind == 0 ? 1 : 4);
    p.params.rho = kind == 2 ? 1.0 : 0.3;
    if (kind == 2) p.params.block = 5; /* partial blocks are fine at ρ = 1 */
    p.params.feature = c % 2 ? DITATTN_SLR_FEATURE_SOFTMAX : DITATTN_SLR_FEATURE_ELU1;
    p.params.force_own_block = c < 5;
    p.shuffled = 1;
    slr_problem_init(&p, tu_seed() + 300u + (uint64_t)c);
    const int64_t N = p.N, bs = p.params.block, n = N / bs;
    int64_t *perm = malloc((size_t)N * 8); /* new token s is old token perm[s] */
    if (kind == 1) {
      int64_t *bperm = malloc((size_t)n * 8);
      for (int64_t C = 0; C < n; C++) bperm[C] = C;
      for (int64_t C = n - 1; C > 0; C--) {
        int64_t j = tu_rand_int(0, C), t = bperm[C];
        bperm[C] = bperm[j], bperm[j] = t;
      }
      for (int64_t s = 0; s < N; s++) perm[s] = bperm[s / bs] * bs + s % bs;
      free(bperm);
    } else {
      for (int64_t s = 0; s < N; s++) perm[s] = s;
      for (int64_t s = N - 1; s > 0; s--) {
        int64_t j = tu_rand_int(0, s), t = perm[s];
        perm[s] = perm[j], perm[j] = t;
      }
    }
    slr_problem pp = p; /* same weights, permuted tokens */
    pp.q = tu_tensor_new(p.B, p.H, N, p.D, 0, 0);
    pp.k = tu_tensor_new(p.B, p.H, N, p.D, 0, 0);
    pp.v = tu_tensor_new(p.B, p.H, N, p.D, 0, 0);
    pp.pos = malloc((size_t)N * 12);
    for (int64_t s = 0; s < N; s++) {
      for (int a = 0; a < 3; a++) pp.pos[3 * s + a] = p.pos[3 * perm[s] + a];
      for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
          for (int64_t d = 0; d < p.D; d++) {
            *tu_at(&pp.q.t, b, h, s, d) = *tu_at(&p.q.t, b, h, perm[s], d);
            *tu_at(&pp.k.t, b, h, s, d) = *tu_at(&p.k.t, b, h, perm[s], d);
            *tu_at(&pp.v.t, b, h, s, d) = *tu_at(&p.v.t, b, h, perm[s], d);
          }
    }
    tu_tensor out = tu_tensor_new(p.B, p.H, N, p.D, 0, 0),
              pout = tu_tensor_new(p.B, p.H, N, p.D, 0, 0);
    tu_tensor back = tu_tensor_new(p.B, p.H, N, p.D, 0, 0);
    slr_forward(ctx, &p, &out, NULL, NULL);
    slr_forward(ctx, &pp, &pout, NULL, NULL);
    for (int64_t s = 0; s < N; s++)
      for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++)
          for (int64_t d = 0; d < p.D; d++)
            *tu_at(&back.t, b, h, perm[s], d) = *tu_at(&pout.t, b, h, s, d);
    char line[512];
    slr_describe(&p, line, sizeof line);
    const double err = tu_rel_err(&back.t, &out.t);
    if (!(err <= FP32_TOL)) fail_msg("permutation kind %d: rel err %.3g [%s]", kind, err, line);
    tu_tensor_free(&out), tu_tensor_free(&pout), tu_tensor_free(&back);
    tu_tensor_free(&pp.q), tu_tensor_free(&pp.k), tu_tensor_free(&pp.v);
    free(pp.pos);
    free(perm);
    slr_problem_free(&p);
  }
  ditattn_context_destroy(ctx);
}

/* K from each policy, and the selection's own-block rule at K = 1. */
static void topk_policies(void **state) {
  (void)state;
  ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
  assert_int_equal(p.block, 64);
  assert_int_equal(p.policy, DITATTN_SLR_KEEP_FRACTION);
  assert_true(p.rho == 0.10);
  assert_int_equal(p.force_own_block, 1);
  assert_int_equal(p.feature, DITATTN_SLR_FEATURE_ELU1);
  assert_true(p.scale <= 0.0f);
  assert_int_equal(ditattn_ropeslr_topk(&p, 640), 1); /* n = 10, 0.1·10 = 1 */
  assert_int_equal(ditattn_ropeslr_topk(&p, 641), 2); /* n = 11 → ceil(1.1) */
  assert_int_equal(ditattn_ropeslr_topk(&p, 1), 1);   /* at least 1 */
  p.rho = 0.3;
  assert_int_equal(ditattn_ropeslr_topk(&p, 640), 3); /* 0.3·10 rounds to 3.0000000000000004 */
  p.rho = 0.7;
  assert_int_equal(ditattn_ropeslr_topk(&p, 640), 7);
  p.rho = 1.0;
  assert_int_equal(ditattn_ropeslr_topk(&p, 6400), 100);
  p.policy = DITATTN_SLR_FIXED_K;
  p.topk = 5;
  assert_int_equal(ditattn_ropeslr_topk(&p, 64 * 3), 3); /* clamped to n */
  assert_int_equal(ditattn_ropeslr_topk(&p, 64 * 30), 5);
  p.policy = DITATTN_SLR_SQRT;
  p.sqrt_c = 1.0;
  assert_int_equal(ditattn_ropeslr_topk(&p, 64 * 16), 4);
  p.sqrt_c = 0.5;
  assert_int_equal(ditattn_ropeslr_topk(&p, 64 * 10), 2);
  p.sqrt_c = 100.0;
  assert_int_equal(ditattn_ropeslr_topk(&p, 64 * 10), 10);
  assert_int_equal(ditattn_ropeslr_selection_count(&p, 2, 3, 64 * 10), 2 * 3 * 10 * 10);
  p.sqrt_c = -1.0;
  assert_int_equal(ditattn_ropeslr_topk(&p, 640), 0);
  assert_int_equal(ditattn_ropeslr_topk(NULL, 640), 0);
  p = ditattn_ropeslr_params_default();
  assert_int_equal(ditattn_ropeslr_topk(&p, 0), 0);
  assert_int_equal(ditattn_ropeslr_selection_count(&p, 0, 1, 64), 0);
  assert_int_equal(ditattn_ropeslr_selection_count(&p, INT64_MAX, INT64_MAX, 64), 0);

  /* K = 1: with the own block forced, every query block keeps only itself. */
  ditattn_context *ctx = make_ctx();
  slr_problem s = slr_problem_make(1, 2, 4, 3, 2, 3, 5, 4);
  s.params.policy = DITATTN_SLR_FIXED_K;
  s.params.topk = 1;
  slr_problem_init(&s, tu_seed() + 400u);
  const int64_t n = (s.N + 3) / 4, count = ditattn_ropeslr_selection_count(&s.params, 1, 2, s.N);
  assert_int_equal(count, 2 * n);
  int32_t *sel = malloc((size_t)count * 4);
  tu_tensor out = tu_tensor_new(1, 2, s.N, 4, 0, 0);
  slr_forward(ctx, &s, &out, NULL, sel);
  for (int64_t e = 0; e < count; e++) assert_int_equal(sel[e], e % n);
  tu_tensor_free(&out);
  free(sel);
  slr_problem_free(&s);
  ditattn_context_destroy(ctx);
}

/* Equal scores rank by smaller block index: all key blocks identical makes
 * every score of a row equal. */
static void ties_break_by_smaller_index(void **state) {
  (void)state;
  ditattn_context *ctx = make_ctx();
  for (int own = 0; own < 2; own++) {
    slr_problem p = slr_problem_make(1, 1, 4, 3, 1, 3, 4, 3); /* N = 12, n = 4 */
    p.params.policy = DITATTN_SLR_FIXED_K;
    p.params.topk = 2;
    p.params.force_own_block = own;
    slr_problem_init(&p, tu_seed() + 450u);
    for (int64_t j = 3; j < p.N; j++)
      for (int64_t d = 0; d < p.D; d++) *tu_at(&p.k.t, 0, 0, j, d) = *tu_at(&p.k.t, 0, 0, j % 3, d);
    int32_t sel[8];
    tu_tensor out = tu_tensor_new(1, 1, p.N, p.D, 0, 0);
    slr_forward(ctx, &p, &out, NULL, sel);
    for (int G = 0; G < 4; G++) {
      assert_int_equal(sel[2 * G], 0);
      assert_int_equal(sel[2 * G + 1], own && G > 1 ? G : 1);
    }
    tu_tensor_free(&out);
    slr_problem_free(&p);
  }
  ditattn_context_destroy(ctx);
}

/* Every allocation of forward and backward may fail: OUT_OF_MEMORY, no leak
 * (ASan builds check), and success once nothing fails. */
static void allocation_failures_are_clean(void **state) {
  (void)state;
  ditattn_context *ctx = make_ctx();
  slr_problem p = make_case(0);
  slr_problem_init(&p, tu_seed() + 500u);
  free(p.pos); /* raster: the API allocates positions too */
  p.pos = NULL;
  tu_tensor out = tu_tensor_new(p.B, p.H, p.N, p.D, p.pad, p.layout_bnhd);
  tu_tensor g[3], dw[6];
  for (int i = 0; i < 3; i++) g[i] = tu_tensor_new(p.B, p.H, p.N, p.D, 0, 0);
  for (int a = 0; a < 6; a++) {
    int64_t rows, cols;
    slr_weight_dims(&p, a, &rows, &cols);
    dw[a] = tu_tensor_new(1, p.H, rows, cols, 0, 0);
  }
  ditattn_ropeslr_weights w = slr_weights_of(p.w), dws = slr_weights_of(dw);
  for (int pass = 0; pass < 2; pass++) {
    int64_t k = 1;
    for (;; k++) {
      dt_debug_fail_alloc_at(k);
      ditattn_status st =
          pass == 0 ? ditattn_ropeslr_forward(ctx, &p.params, &w, NULL, &p.q.t, &p.k.t, &p.v.t,
                                              &out.t, NULL, NULL)
                    : ditattn_ropeslr_backward(ctx, &p.params, &w, NULL, &p.q.t, &p.k.t, &p.v.t,
                                               &p.q.t, &g[0].t, &g[1].t, &g[2].t, &dws);
      const int64_t seen = dt_debug_fail_alloc_at(0);
      if (st == DITATTN_OK) {
        assert_true(seen < k); /* the k-th allocation never happened */
        break;
      }
      assert_int_equal(st, DITATTN_ERR_OUT_OF_MEMORY);
      assert_true(k < 50);
    }
    assert_true(k > 2); /* positions plus the workspace at least */
  }
  tu_tensor_free(&out);
  for (int i = 0; i < 3; i++) tu_tensor_free(&g[i]);
  for (int a = 0; a < 6; a++) tu_tensor_free(&dw[a]);
  slr_problem_free(&p);
  ditattn_context_destroy(ctx);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(forward_matches_oracle),
      cmocka_unit_test(rho_one_is_dense_attention),
      cmocka_unit_test(factors_equal_direct_sum),
      cmocka_unit_test(permuting_tokens_permutes_output),
      cmocka_unit_test(topk_policies),
      cmocka_unit_test(ties_break_by_smaller_index),
      cmocka_unit_test(allocation_failures_are_clean),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
