/* Allocation faults and non-finite inputs.
 *
 * Faults: for each public operation that allocates, fail its k-th library
 * allocation (dt_debug_fail_alloc_at) for k = 1, 2, ... until the call
 * succeeds. Every failing k must give DITATTN_ERR_OUT_OF_MEMORY with a
 * message, and the final run must equal an unfaulted run bit for bit (ref/
 * is deterministic). Leaks on the error paths are caught by ASan in CI.
 *
 * NaN/Inf (documented behaviour): inputs are not checked; IEEE arithmetic
 * propagates NaN/Inf into the outputs they reach, the call still returns
 * DITATTN_OK, and selections stay valid block indices (no crash, no index
 * out of range, no duplicates) whatever the scores are. */
#include "test_util.h"

#include "backends/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ fault sweep */
#define MAX_OUTS 12

/* Output buffers a run writes: poisoned before each run, compared after. */
typedef struct outputs {
  int n;
  void *buf[MAX_OUTS];
  size_t bytes[MAX_OUTS];
  int is_float[MAX_OUTS];
} outputs;

static void add_out(outputs *o, void *buf, size_t bytes, int is_float) {
  assert_true(o->n < MAX_OUTS);
  o->buf[o->n] = buf;
  o->bytes[o->n] = bytes;
  o->is_float[o->n] = is_float;
  o->n++;
}

static void add_tensor(outputs *o, tu_tensor *t) {
  add_out(o, t->buf, t->count * sizeof(float), 1);
}

/* ref/ is deterministic: bit-identical. Threaded backends may reduce in
 * another order: same NaN (padding) positions and 1e-5 relative error. */
static int same_output(const void *want, const void *got, size_t bytes, int is_float) {
  if (memcmp(want, got, bytes) == 0) return 1;
  if (!is_float) return 0;
  const float *w = want, *g = got;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < bytes / sizeof(float); i++) {
    if (isnan(w[i]) || isnan(g[i])) {
      if (isnan(w[i]) != isnan(g[i])) return 0;
      continue;
    }
    num += ((double)w[i] - g[i]) * ((double)w[i] - g[i]);
    den += (double)w[i] * w[i];
  }
  return num <= 1e-10 * den;
}

static void poison(const outputs *o) {
  for (int i = 0; i < o->n; i++) memset(o->buf[i], 0xff, o->bytes[i]); /* NaN / -1 */
}

typedef ditattn_status (*run_fn)(ditattn_context *ctx, void *state);

static int64_t g_points; /* allocation-failure points tried, all tests */

/* Fails allocation k = 1, 2, ... of run on one backend until it succeeds;
 * see the file comment. */
static void fault_sweep_on(ditattn_backend backend, const char *problem, run_fn run, void *state,
                           const outputs *outs) {
  char label[320];
  snprintf(label, sizeof label, "%s on %s", problem, ditattn_backend_name(backend));
  problem = label;
  ditattn_context *ctx;
  assert_int_equal(ditattn_context_create(backend, &ctx), DITATTN_OK);
  poison(outs);
  dt_debug_fail_alloc_at(0);
  ditattn_status st = run(ctx, state);
  const int64_t allocs = dt_debug_fail_alloc_at(0);
  if (st == DITATTN_ERR_UNSUPPORTED && backend != DITATTN_BACKEND_REF) {
    fprintf(stderr, "faults: %s: not implemented\n", problem);
    ditattn_context_destroy(ctx);
    return;
  }
  if (st != DITATTN_OK) {
    fprintf(stderr, "faults: %s: unfaulted run failed: %s (%s)\n", problem, ditattn_strerror(st),
            ditattn_last_error(ctx));
    fail();
  }
  void *want[MAX_OUTS];
  for (int i = 0; i < outs->n; i++) {
    want[i] = malloc(outs->bytes[i]);
    assert_non_null(want[i]);
    memcpy(want[i], outs->buf[i], outs->bytes[i]);
  }
  int64_t points = 0;
  for (int64_t k = 1;; k++) {
    poison(outs);
    dt_debug_fail_alloc_at(k);
    st = run(ctx, state);
    dt_debug_fail_alloc_at(0);
    if (st == DITATTN_OK) {
      if (k <= allocs) {
        fprintf(stderr, "faults: %s: allocation %lld of %lld failed but the call returned OK\n",
                problem, (long long)k, (long long)allocs);
        fail();
      }
      for (int i = 0; i < outs->n; i++) {
        if (!same_output(want[i], outs->buf[i], outs->bytes[i], outs->is_float[i])) {
          fprintf(stderr, "faults: %s on %s: output %d differs from the unfaulted run\n", problem,
                  ditattn_backend_name(backend), i);
          fail();
        }
      }
      break;
    }
    if (st != DITATTN_ERR_OUT_OF_MEMORY || ditattn_last_error(ctx)[0] == '\0') {
      fprintf(stderr, "faults: %s: failing allocation %lld gave '%s' (%s), want out of memory\n",
              problem, (long long)k, ditattn_strerror(st), ditattn_last_error(ctx));
      fail();
    }
    points++;
    if (k > allocs + 1) {
      fprintf(stderr, "faults: %s: still failing at k = %lld > %lld allocations\n", problem,
              (long long)k, (long long)allocs);
      fail();
    }
  }
  for (int i = 0; i < outs->n; i++) free(want[i]);
  fprintf(stderr, "faults: %s: %lld allocations, %lld failure points\n", problem, (long long)allocs,
          (long long)points);
  g_points += points;
  ditattn_context_destroy(ctx);
}

/* Every host backend compiled into this build (device backends need device memory). */
static void fault_sweep(const char *problem, run_fn run, void *state, const outputs *outs) {
  fault_sweep_on(DITATTN_BACKEND_REF, problem, run, state, outs);
  if (ditattn_backend_compiled(DITATTN_BACKEND_CPU))
    fault_sweep_on(DITATTN_BACKEND_CPU, problem, run, state, outs);
}

/* ------------------------------------------------------------------ order and RoPE */
typedef struct order_state {
  ditattn_order_params params;
  ditattn_direction dir;
  tu_tensor x, y;
} order_state;

static ditattn_status run_order(ditattn_context *ctx, void *s) {
  order_state *o = s;
  return ditattn_order_apply(ctx, &o->params, o->dir, &o->x.t, &o->y.t);
}

static void faults_order_apply(void **state) {
  (void)state;
  tu_srand(tu_seed());
  for (int kind = DITATTN_ORDER_MORTON; kind <= DITATTN_ORDER_TILE; kind++) {
    for (int dir = 0; dir < 2; dir++) {
      order_state o;
      memset(&o, 0, sizeof o);
      o.params.kind = (ditattn_order_kind)kind;
      o.params.grid[0] = tu_rand_int(1, 4);
      o.params.grid[1] = tu_rand_int(1, 6);
      o.params.grid[2] = tu_rand_int(1, 6);
      o.params.tile[0] = 2, o.params.tile[1] = 2, o.params.tile[2] = 3;
      o.dir = (ditattn_direction)dir;
      const int64_t N = o.params.grid[0] * o.params.grid[1] * o.params.grid[2];
      o.x = tu_tensor_new(2, 2, N, 3, 1, 1);
      o.y = tu_tensor_new(2, 2, N, 3, 1, 1);
      tu_fill_uniform(&o.x);
      outputs outs = {0};
      add_tensor(&outs, &o.y);
      char problem[160];
      snprintf(problem, sizeof problem, "order_apply kind=%d dir=%d grid=%lldx%lldx%lld", kind, dir,
               (long long)o.params.grid[0], (long long)o.params.grid[1],
               (long long)o.params.grid[2]);
      fault_sweep(problem, run_order, &o, &outs);
      tu_tensor_free(&o.x);
      tu_tensor_free(&o.y);
    }
  }
}

typedef struct rope_state {
  ditattn_rope_params params;
  const int32_t *pos;
  tu_tensor x, y;
} rope_state;

static ditattn_status run_rope(ditattn_context *ctx, void *s) {
  rope_state *r = s;
  return ditattn_rope_apply(ctx, &r->params, r->pos, DITATTN_FORWARD, &r->x.t, &r->y.t);
}

static void faults_rope(void **state) {
  (void)state;
  tu_srand(tu_seed());
  const int64_t T = tu_rand_int(1, 3), H = tu_rand_int(1, 4), W = tu_rand_int(1, 4), N = T * H * W;
  int32_t *pos = malloc((size_t)N * 3 * sizeof *pos);
  assert_non_null(pos);
  for (int64_t i = 0; i < N; i++) {
    pos[3 * i] = (int32_t)tu_rand_int(0, T - 1);
    pos[3 * i + 1] = (int32_t)tu_rand_int(0, H - 1);
    pos[3 * i + 2] = (int32_t)tu_rand_int(0, W - 1);
  }
  for (int with_pos = 0; with_pos < 2; with_pos++) {
    rope_state r;
    memset(&r, 0, sizeof r);
    ditattn_rope_params params = {{T, H, W}, {4, 2, 4}, 100.0, (ditattn_rope_pairing)with_pos};
    r.params = params;
    r.pos = with_pos ? pos : NULL;
    r.x = tu_tensor_new(1, 2, N, 12, 2, 0);
    r.y = tu_tensor_new(1, 2, N, 12, 2, 0);
    tu_fill_uniform(&r.x);
    outputs outs = {0};
    add_tensor(&outs, &r.y);
    char problem[128];
    snprintf(problem, sizeof problem, "rope pos=%s grid=%lldx%lldx%lld D=12",
             with_pos ? "given" : "NULL", (long long)T, (long long)H, (long long)W);
    fault_sweep(problem, run_rope, &r, &outs);
    tu_tensor_free(&r.x);
    tu_tensor_free(&r.y);
  }
  free(pos);
}

/* ------------------------------------------------------------------ dense, pool, merge */
typedef struct attn_state {
  tu_tensor q, k, v, out, dout, dq, dk, dv, acc;
  float *lse, *lse2;
  size_t n_lse;
  ditattn_llsa_params llsa;
  ditattn_llsa_selection sel;
  int64_t block;
} attn_state;

static ditattn_status run_dense_fwd(ditattn_context *ctx, void *s) {
  attn_state *a = s;
  return ditattn_dense_forward(ctx, &a->q.t, &a->k.t, &a->v.t, 0.0f, &a->out.t, a->lse);
}

static ditattn_status run_dense_bwd(ditattn_context *ctx, void *s) {
  attn_state *a = s;
  return ditattn_dense_backward(ctx, &a->q.t, &a->k.t, &a->v.t, &a->out.t, a->lse, &a->dout.t, 0.0f,
                                &a->dq.t, &a->dk.t, &a->dv.t);
}

static ditattn_status run_pool(ditattn_context *ctx, void *s) {
  attn_state *a = s;
  return ditattn_pool_mean(ctx, &a->q.t, a->block, &a->out.t);
}

/* The merge updates its accumulator in place: restore it first. */
static ditattn_status run_merge(ditattn_context *ctx, void *s) {
  attn_state *a = s;
  memcpy(a->acc.buf, a->out.buf, a->out.count * sizeof(float));
  memcpy(a->lse2, a->lse, a->n_lse * sizeof(float));
  return ditattn_lse_merge(ctx, &a->acc.t, a->lse2, &a->q.t, a->lse);
}

static attn_state attn_new(int64_t B, int64_t H, int64_t N, int64_t D) {
  attn_state a;
  memset(&a, 0, sizeof a);
  a.q = tu_tensor_new(B, H, N, D, 1, 0);
  a.k = tu_tensor_new(B, H, N, D, 0, 1);
  a.v = tu_tensor_new(B, H, N, D, 2, 0);
  a.dout = tu_tensor_new(B, H, N, D, 0, 0);
  a.out = tu_tensor_new(B, H, N, D, 0, 0);
  a.dq = tu_tensor_new(B, H, N, D, 0, 0);
  a.dk = tu_tensor_new(B, H, N, D, 0, 0);
  a.dv = tu_tensor_new(B, H, N, D, 0, 0);
  a.acc = tu_tensor_new(B, H, N, D, 0, 0);
  tu_fill_uniform(&a.q);
  tu_fill_uniform(&a.k);
  tu_fill_uniform(&a.v);
  tu_fill_uniform(&a.dout);
  a.n_lse = (size_t)(B * H * N);
  a.lse = malloc(a.n_lse * sizeof(float));
  a.lse2 = malloc(a.n_lse * sizeof(float));
  assert_non_null(a.lse);
  assert_non_null(a.lse2);
  return a;
}

static void attn_free(attn_state *a) {
  tu_tensor *ts[] = {&a->q, &a->k, &a->v, &a->out, &a->dout, &a->dq, &a->dk, &a->dv, &a->acc};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) tu_tensor_free(ts[i]);
  free(a->lse);
  free(a->lse2);
  for (int l = 0; l < DITATTN_LLSA_MAX_LEVELS; l++) free(a->sel.sel[l]);
}

/* One unfaulted call that the backward sweeps need as input. */
static void must(ditattn_status st, const char *what) {
  if (st != DITATTN_OK) fprintf(stderr, "faults: %s: %s\n", what, ditattn_strerror(st));
  assert_int_equal(st, DITATTN_OK);
}

static void faults_dense_pool_merge(void **state) {
  (void)state;
  tu_srand(tu_seed());
  attn_state a = attn_new(tu_rand_int(1, 2), tu_rand_int(1, 3), tu_rand_int(1, 40), 5);
  char shape[96], problem[160];
  snprintf(shape, sizeof shape, "B=%lld H=%lld N=%lld D=5", (long long)a.q.t.shape[0],
           (long long)a.q.t.shape[1], (long long)a.q.t.shape[2]);
  outputs fwd = {0}, bwd = {0}, merge = {0};
  add_tensor(&fwd, &a.out);
  add_out(&fwd, a.lse, a.n_lse * sizeof(float), 1);
  snprintf(problem, sizeof problem, "dense_forward %s", shape);
  fault_sweep(problem, run_dense_fwd, &a, &fwd);
  ditattn_context *ctx;
  must(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), "context");
  must(run_dense_fwd(ctx, &a), "dense forward");
  add_tensor(&bwd, &a.dq);
  add_tensor(&bwd, &a.dk);
  add_tensor(&bwd, &a.dv);
  snprintf(problem, sizeof problem, "dense_backward %s", shape);
  fault_sweep(problem, run_dense_bwd, &a, &bwd);
  add_tensor(&merge, &a.acc);
  add_out(&merge, a.lse2, a.n_lse * sizeof(float), 1);
  snprintf(problem, sizeof problem, "lse_merge %s", shape);
  fault_sweep(problem, run_merge, &a, &merge);
  ditattn_context_destroy(ctx);
  attn_free(&a);

  a = attn_new(1, 2, tu_rand_int(1, 40), 3);
  a.block = tu_rand_int(1, 7);
  tu_tensor_free(&a.out);
  a.out = tu_tensor_new(1, 2, (a.q.t.shape[2] + a.block - 1) / a.block, 3, 0, 0);
  outputs pool = {0};
  add_tensor(&pool, &a.out);
  snprintf(problem, sizeof problem, "pool N=%lld block=%lld", (long long)a.q.t.shape[2],
           (long long)a.block);
  fault_sweep(problem, run_pool, &a, &pool);
  attn_free(&a);
}

/* ------------------------------------------------------------------ LLSA */
static ditattn_status run_llsa_fwd(ditattn_context *ctx, void *s) {
  attn_state *a = s;
  return ditattn_llsa_forward(ctx, &a->llsa, &a->q.t, &a->k.t, &a->v.t, &a->out.t, a->lse, &a->sel);
}

static ditattn_status run_llsa_bwd(ditattn_context *ctx, void *s) {
  attn_state *a = s;
  return ditattn_llsa_backward(ctx, &a->llsa, &a->q.t, &a->k.t, &a->v.t, &a->out.t, a->lse,
                               &a->dout.t, &a->dq.t, &a->dk.t, &a->dv.t);
}

static void faults_llsa(void **state) {
  (void)state;
  tu_srand(tu_seed());
  for (int levels = 1; levels <= 3; levels++) {
    attn_state a = attn_new(tu_rand_int(1, 2), tu_rand_int(1, 2), tu_rand_int(1, 60), 4);
    a.llsa = ditattn_llsa_params_default();
    a.llsa.block = tu_rand_int(2, 4);
    a.llsa.levels = levels;
    for (int l = 0; l < levels; l++) a.llsa.topk[l] = tu_rand_int(1, 3);
    const int64_t B = a.q.t.shape[0], H = a.q.t.shape[1], N = a.q.t.shape[2];
    outputs fwd = {0}, bwd = {0};
    add_tensor(&fwd, &a.out);
    add_out(&fwd, a.lse, a.n_lse * sizeof(float), 1);
    for (int l = 0; l < levels; l++) {
      int64_t count = ditattn_llsa_selection_count(&a.llsa, B, H, N, l + 1);
      a.sel.sel[l] = malloc((size_t)count * sizeof(int32_t));
      assert_non_null(a.sel.sel[l]);
      add_out(&fwd, a.sel.sel[l], (size_t)count * sizeof(int32_t), 0);
    }
    char problem[160];
    snprintf(problem, sizeof problem, "llsa_%%s B=%lld H=%lld N=%lld D=4 b=%lld L=%d K1=%lld",
             (long long)B, (long long)H, (long long)N, (long long)a.llsa.block, levels,
             (long long)a.llsa.topk[0]);
    char label[200];
    snprintf(label, sizeof label, problem, "forward");
    fault_sweep(label, run_llsa_fwd, &a, &fwd);
    ditattn_context *ctx;
    must(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), "context");
    must(run_llsa_fwd(ctx, &a), "llsa forward");
    ditattn_context_destroy(ctx);
    add_tensor(&bwd, &a.dq);
    add_tensor(&bwd, &a.dk);
    add_tensor(&bwd, &a.dv);
    snprintf(label, sizeof label, problem, "backward");
    fault_sweep(label, run_llsa_bwd, &a, &bwd);
    attn_free(&a);
  }
}

/* ------------------------------------------------------------------ RoPeSLR */
typedef struct slr_state {
  ditattn_ropeslr_params params;
  ditattn_ropeslr_weights w, dw;
  tu_tensor wt[6], dwt[6];
  attn_state a;
  int32_t *pos, *sel;
} slr_state;

static ditattn_status run_slr_fwd(ditattn_context *ctx, void *s) {
  slr_state *r = s;
  return ditattn_ropeslr_forward(ctx, &r->params, &r->w, r->pos, &r->a.q.t, &r->a.k.t, &r->a.v.t,
                                 &r->a.out.t, r->a.lse, r->sel);
}

static ditattn_status run_slr_bwd(ditattn_context *ctx, void *s) {
  slr_state *r = s;
  return ditattn_ropeslr_backward(ctx, &r->params, &r->w, r->pos, &r->a.q.t, &r->a.k.t, &r->a.v.t,
                                  &r->a.dout.t, &r->a.dq.t, &r->a.dk.t, &r->a.dv.t, &r->dw);
}

static void faults_ropeslr(void **state) {
  (void)state;
  tu_srand(tu_seed());
  for (int with_pos = 0; with_pos < 2; with_pos++) {
    slr_state r;
    memset(&r, 0, sizeof r);
    r.params = ditattn_ropeslr_params_default();
    const int64_t T = tu_rand_int(1, 3), Hg = tu_rand_int(1, 3), Wg = tu_rand_int(1, 4);
    const int64_t N = with_pos ? tu_rand_int(1, 30) : T * Hg * Wg, D = 4, H = 2, rank = 3;
    r.params.grid[0] = T, r.params.grid[1] = Hg, r.params.grid[2] = Wg;
    r.params.block = tu_rand_int(1, 4);
    r.params.policy = DITATTN_SLR_FIXED_K;
    r.params.topk = tu_rand_int(1, 3);
    r.params.rank = rank;
    r.params.feature = (ditattn_slr_feature)with_pos;
    r.a = attn_new(1, H, N, D);
    const int64_t rows[6] = {D, D, T, Hg, Wg, D}, cols[6] = {rank, rank, rank, rank, rank, D};
    for (int i = 0; i < 6; i++) {
      r.wt[i] = tu_tensor_new(1, H, rows[i], cols[i], 0, 0);
      r.dwt[i] = tu_tensor_new(1, H, rows[i], cols[i], 0, 0);
      tu_fill_uniform(&r.wt[i]);
    }
    ditattn_ropeslr_weights w = {r.wt[0].t, r.wt[1].t, r.wt[2].t, r.wt[3].t, r.wt[4].t, r.wt[5].t};
    ditattn_ropeslr_weights dw = {r.dwt[0].t, r.dwt[1].t, r.dwt[2].t,
                                  r.dwt[3].t, r.dwt[4].t, r.dwt[5].t};
    r.w = w;
    r.dw = dw;
    r.pos = malloc((size_t)N * 3 * sizeof(int32_t));
    const int64_t sel_count = ditattn_ropeslr_selection_count(&r.params, 1, H, N);
    assert_true(sel_count > 0);
    r.sel = malloc((size_t)sel_count * sizeof(int32_t));
    assert_non_null(r.pos);
    assert_non_null(r.sel);
    for (int64_t i = 0; i < N; i++)
      for (int ax = 0; ax < 3; ax++)
        r.pos[3 * i + ax] = (int32_t)tu_rand_int(0, r.params.grid[ax] - 1);
    int32_t *given = r.pos;
    if (!with_pos) r.pos = NULL;
    outputs fwd = {0}, bwd = {0};
    add_tensor(&fwd, &r.a.out);
    add_out(&fwd, r.a.lse, r.a.n_lse * sizeof(float), 1);
    add_out(&fwd, r.sel, (size_t)sel_count * sizeof(int32_t), 0);
    add_tensor(&bwd, &r.a.dq);
    add_tensor(&bwd, &r.a.dk);
    add_tensor(&bwd, &r.a.dv);
    for (int i = 0; i < 6; i++) add_tensor(&bwd, &r.dwt[i]);
    char problem[200];
    snprintf(problem, sizeof problem,
             "ropeslr_%%s pos=%s N=%lld grid=%lldx%lldx%lld b=%lld K=%lld r=3 feature=%d",
             with_pos ? "given" : "NULL", (long long)N, (long long)T, (long long)Hg, (long long)Wg,
             (long long)r.params.block, (long long)r.params.topk, with_pos);
    char label[240];
    snprintf(label, sizeof label, problem, "forward");
    fault_sweep(label, run_slr_fwd, &r, &fwd);
    snprintf(label, sizeof label, problem, "backward");
    fault_sweep(label, run_slr_bwd, &r, &bwd);
    for (int i = 0; i < 6; i++) {
      tu_tensor_free(&r.wt[i]);
      tu_tensor_free(&r.dwt[i]);
    }
    free(given);
    free(r.sel);
    attn_free(&r.a);
  }
}

/* ------------------------------------------------------------------ NaN / Inf */
static int finite_row(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n) {
  for (int64_t d = 0; d < t->shape[3]; d++)
    if (!isfinite(*tu_at(t, b, h, n, d))) return 0;
  return 1;
}

/* Each row of a selection holds distinct indices in [0, n), then -1 padding. */
static void check_selection_rows(const char *what, const int32_t *sel, int64_t rows, int64_t K,
                                 int64_t n) {
  for (int64_t r = 0; r < rows; r++) {
    const int32_t *row = sel + r * K;
    int padding = 0;
    for (int64_t j = 0; j < K; j++) {
      int ok = row[j] == -1 ? 1 : !padding && row[j] >= 0 && row[j] < n;
      padding |= row[j] == -1;
      for (int64_t i = 0; i < j && ok; i++) ok = row[j] == -1 || row[i] != row[j];
      if (!ok) {
        fprintf(stderr, "nonfinite: %s: row %lld slot %lld = %d is not a valid index (n = %lld)\n",
                what, (long long)r, (long long)j, row[j], (long long)n);
        fail();
      }
    }
  }
}

static void nonfinite_dense_propagates(void **state) {
  (void)state;
  tu_srand(tu_seed());
  attn_state a = attn_new(1, 2, tu_rand_int(2, 20), 4);
  const int64_t N = a.q.t.shape[2], i0 = tu_rand_int(0, N - 1);
  ditattn_context *ctx;
  must(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), "context");
  /* NaN in one query: exactly that row (and its lse) is NaN. */
  *tu_at(&a.q.t, 0, 1, i0, 2) = NAN;
  must(run_dense_fwd(ctx, &a), "dense with a NaN query");
  for (int64_t h = 0; h < 2; h++)
    for (int64_t n = 0; n < N; n++) {
      int poisoned = h == 1 && n == i0;
      assert_int_equal(finite_row(&a.out.t, 0, h, n), !poisoned);
      assert_int_equal(isfinite(a.lse[h * N + n]) != 0, !poisoned);
    }
  /* +Inf in one value row reaches every query of that head. */
  *tu_at(&a.q.t, 0, 1, i0, 2) = 0.5f;
  *tu_at(&a.v.t, 0, 0, 0, 1) = INFINITY;
  must(run_dense_fwd(ctx, &a), "dense with an Inf value");
  for (int64_t n = 0; n < N; n++) {
    assert_false(finite_row(&a.out.t, 0, 0, n));
    assert_true(finite_row(&a.out.t, 0, 1, n));
  }
  ditattn_context_destroy(ctx);
  attn_free(&a);
}

static void nonfinite_llsa_selection_valid(void **state) {
  (void)state;
  tu_srand(tu_seed());
  for (int trial = 0; trial < 4; trial++) {
    attn_state a = attn_new(1, 1, tu_rand_int(8, 80), 3);
    const int64_t N = a.q.t.shape[2];
    a.llsa = ditattn_llsa_params_default();
    a.llsa.block = 2;
    a.llsa.levels = 3;
    a.llsa.topk[0] = a.llsa.topk[1] = a.llsa.topk[2] = 2;
    for (int l = 0; l < 3; l++) {
      a.sel.sel[l] = malloc((size_t)ditattn_llsa_selection_count(&a.llsa, 1, 1, N, l + 1) * 4);
      assert_non_null(a.sel.sel[l]);
    }
    /* NaN / Inf in some queries and keys: pooled scores become NaN or Inf. */
    const float bad[4] = {NAN, INFINITY, -INFINITY, NAN};
    *tu_at(&a.q.t, 0, 0, tu_rand_int(0, N - 1), 0) = bad[trial];
    *tu_at(&a.k.t, 0, 0, tu_rand_int(0, N - 1), 1) = bad[(trial + 1) % 4];
    ditattn_context *ctx;
    must(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), "context");
    must(run_llsa_fwd(ctx, &a), "llsa with non-finite q/k");
    for (int l = 0; l < 3; l++) {
      int64_t n = (N + (2 << l) - 1) / (2 << l);
      check_selection_rows("llsa", a.sel.sel[l], n, 2, n);
    }
    ditattn_context_destroy(ctx);
    attn_free(&a);
  }
}

static void nonfinite_ropeslr_selection_valid(void **state) {
  (void)state;
  tu_srand(tu_seed());
  for (int trial = 0; trial < 3; trial++) {
    const int64_t N = tu_rand_int(4, 40), D = 3, rank = 2;
    ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
    p.grid[0] = 1, p.grid[1] = 1, p.grid[2] = N;
    p.block = tu_rand_int(1, 4);
    p.policy = DITATTN_SLR_FIXED_K;
    p.topk = 2;
    p.rank = rank;
    p.force_own_block = trial % 2;
    attn_state a = attn_new(1, 1, N, D);
    const int64_t rows[6] = {D, D, 1, 1, N, D}, cols[6] = {rank, rank, rank, rank, rank, D};
    tu_tensor wt[6];
    for (int i = 0; i < 6; i++) {
      wt[i] = tu_tensor_new(1, 1, rows[i], cols[i], 0, 0);
      tu_fill_uniform(&wt[i]);
    }
    ditattn_ropeslr_weights w = {wt[0].t, wt[1].t, wt[2].t, wt[3].t, wt[4].t, wt[5].t};
    const int64_t count = ditattn_ropeslr_selection_count(&p, 1, 1, N);
    int32_t *sel = malloc((size_t)count * sizeof *sel);
    assert_non_null(sel);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    *tu_at(&a.q.t, 0, 0, tu_rand_int(0, N - 1), 0) = bad[trial];
    *tu_at(&a.k.t, 0, 0, tu_rand_int(0, N - 1), 2) = NAN;
    ditattn_context *ctx;
    must(ditattn_context_create(DITATTN_BACKEND_REF, &ctx), "context");
    must(ditattn_ropeslr_forward(ctx, &p, &w, NULL, &a.q.t, &a.k.t, &a.v.t, &a.out.t, a.lse, sel),
         "ropeslr with non-finite q/k");
    const int64_t n = (N + p.block - 1) / p.block;
    check_selection_rows("ropeslr", sel, n, count / n, n);
    ditattn_context_destroy(ctx);
    for (int i = 0; i < 6; i++) tu_tensor_free(&wt[i]);
    free(sel);
    attn_free(&a);
  }
}

static int group_teardown(void **state) {
  (void)state;
  fprintf(stderr, "faults: %lld allocation-failure points tried in total\n", (long long)g_points);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(faults_order_apply),
      cmocka_unit_test(faults_rope),
      cmocka_unit_test(faults_dense_pool_merge),
      cmocka_unit_test(faults_llsa),
      cmocka_unit_test(faults_ropeslr),
      cmocka_unit_test(nonfinite_dense_propagates),
      cmocka_unit_test(nonfinite_llsa_selection_valid),
      cmocka_unit_test(nonfinite_ropeslr_selection_valid),
  };
  return cmocka_run_group_tests(tests, NULL, group_teardown);
}
