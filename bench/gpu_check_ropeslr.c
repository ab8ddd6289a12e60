/* RoPeSLR forward on the GPU backends vs ref/ (spec ropeslr.md): random
 * shapes with partial blocks, r > D, both feature maps, both own-block
 * settings, ρ = 1 and K = 1, strided and DiT layouts, shuffled positions,
 * f32/bf16/f16 inputs; outputs, lse and selections poisoned before each run;
 * selections must equal ref/'s exactly. Also times the forward at N = 102400
 * (grid 16×80×80, b = 64, r = 64, ρ = 0.1) against dense attention (--time).
 *
 * Built on bench/gpu_check.c's harness (included) and its command line
 * (bench/gpu_check_driver.h), standalone so it runs on the GPU machine
 * (bench/device.sh); tests/test_gpu_ropeslr.c includes this file with
 * GCR_NO_MAIN defined to run the same cases under CMocka.
 *
 *   ditattn_gpu_check_ropeslr [--backend cuda|hip|cpu|ref] [--seed S]
 *                             [--time|--time-only] [--dims 64,128] [--quiet]
 * Exit status: 0 all cases passed, 1 a case failed, 2 no usable backend. */
#define GC_NO_MAIN 1
#include "gpu_check.c"

/* ------------------------------------------------------------ problem */
/* Everything of one RoPeSLR case, host images (ref) and device copies. */
typedef struct gcr_case {
  gc_shape s;
  ditattn_ropeslr_params params;
  gc_tensor q, k, v, out, w[6]; /* w: A, Bk, Et, Ey, Ex, W as (1, H, rows, cols) f32 */
  int32_t *pos;                 /* N triples, a shuffled grid */
  float *lse_dev, *lse_ref, *lse_got;
  int32_t *sel_ref, *sel_got;
  size_t lse_count, sel_count;
} gcr_case;

static ditattn_ropeslr_weights gcr_weights(gc_tensor w[6], int dev) {
  ditattn_ropeslr_weights r;
  ditattn_tensor *views[6] = {&r.A, &r.Bk, &r.Et, &r.Ey, &r.Ex, &r.W};
  for (int a = 0; a < 6; a++) *views[a] = dev ? w[a].dev : w[a].host;
  return r;
}

static void gcr_case_free(gc_env *env, gcr_case *c) {
  gc_attention_tensors_free(env, &c->q, &c->k, &c->v, &c->out);
  for (int a = 0; a < 6; a++) gc_tensor_free(env, &c->w[a]);
  if (c->lse_dev) ditattn_free(env->gpu, c->lse_dev);
  free(c->pos), free(c->lse_ref), free(c->lse_got), free(c->sel_ref), free(c->sel_got);
  memset(c, 0, sizeof *c);
}

/* Allocates, fills and uploads a case; the device output, lse and host
 * selection are poisoned. Weights are uniform [-1, 1) scaled so that the
 * feature pre-activations stay O(1). */
static int gcr_case_new(gc_env *env, gcr_case *c, const gc_shape *s,
                        const ditattn_ropeslr_params *params) {
  memset(c, 0, sizeof *c);
  c->s = *s;
  c->params = *params;
  const int64_t B = s->B, H = s->H, N = s->N, D = s->D, r = params->rank;
  const int64_t rows[6] = {D, D, params->grid[0], params->grid[1], params->grid[2], D};
  const int64_t cols[6] = {r, r, r, r, r, D};
  int ok = gc_tensor_new(env, &c->q, B, H, N, D, s->pad, s->bnhd, s->dt) &&
           gc_tensor_new(env, &c->k, B, H, N, D, s->pad, s->bnhd, s->dt) &&
           gc_tensor_new(env, &c->v, B, H, N, D, s->pad, s->bnhd, s->dt) &&
           gc_tensor_new(env, &c->out, B, H, N, D, s->pad, s->bnhd, s->dt);
  for (int a = 0; ok && a < 6; a++)
    ok = gc_tensor_new(env, &c->w[a], 1, H, rows[a], cols[a], a % 2 ? 0 : 5, 0, DITATTN_F32);
  if (!ok) return 0;
  gc_fill(&c->q), gc_fill(&c->k), gc_fill(&c->v);
  const double wscale[6] = {1.0 / sqrt((double)D), 1.0 / sqrt((double)D), 0.5, 0.5, 0.5,
                            1.0 / sqrt((double)D)};
  for (int a = 0; a < 6; a++) {
    gc_fill(&c->w[a]);
    for (size_t i = 0; i < c->w[a].count; i++) c->w[a].buf[i] *= (float)wscale[a];
  }
  /* A shuffled grid: position i of the sequence is grid cell perm[i]. */
  const int64_t Hg = params->grid[1], W = params->grid[2];
  c->pos = malloc((size_t)N * 3 * sizeof(int32_t));
  int64_t *perm = malloc((size_t)N * sizeof(int64_t));
  c->lse_count = (size_t)(B * H * N);
  c->sel_count = (size_t)ditattn_ropeslr_selection_count(params, B, H, N);
  c->lse_ref = malloc(c->lse_count * sizeof(float));
  c->lse_got = malloc(c->lse_count * sizeof(float));
  c->sel_ref = malloc(c->sel_count * sizeof(int32_t));
  c->sel_got = malloc(c->sel_count * sizeof(int32_t));
  if (!c->pos || !perm || !c->lse_ref || !c->lse_got || !c->sel_ref || !c->sel_got ||
      c->sel_count == 0) {
    free(perm);
    return 0;
  }
  for (int64_t i = 0; i < N; i++) perm[i] = i;
  for (int64_t i = N - 1; i > 0; i--) {
    const int64_t j = gc_int(0, i), t = perm[i];
    perm[i] = perm[j], perm[j] = t;
  }
  for (int64_t i = 0; i < N; i++) {
    c->pos[3 * i] = (int32_t)(perm[i] / (Hg * W));
    c->pos[3 * i + 1] = (int32_t)(perm[i] / W % Hg);
    c->pos[3 * i + 2] = (int32_t)(perm[i] % W);
  }
  free(perm);
  for (size_t i = 0; i < c->lse_count; i++) c->lse_got[i] = NAN;
  for (size_t i = 0; i < c->sel_count; i++) c->sel_got[i] = -7;
  c->lse_dev = gc_dev_floats(env, c->lse_count);
  ok = c->lse_dev && gc_put_floats(env, c->lse_dev, c->lse_got, c->lse_count);
  ok = ok && gc_upload(env, &c->q) && gc_upload(env, &c->k) && gc_upload(env, &c->v) &&
       gc_upload(env, &c->out); /* out's host image is still all NaN */
  for (int a = 0; ok && a < 6; a++) ok = gc_upload(env, &c->w[a]);
  return ok;
}

static void gcr_describe(char *buf, size_t size, const gcr_case *c, const char *op) {
  const ditattn_ropeslr_params *p = &c->params;
  char extra[256];
  snprintf(extra, sizeof extra,
           "r=%lld grid=%lldx%lldx%lld b=%lld policy=%d rho=%g topk=%lld sqrt_c=%g K=%lld own=%d "
           "feature=%s",
           (long long)p->rank, (long long)p->grid[0], (long long)p->grid[1], (long long)p->grid[2],
           (long long)p->block, (int)p->policy, p->rho, (long long)p->topk, p->sqrt_c,
           (long long)ditattn_ropeslr_topk(p, c->s.N), p->force_own_block,
           p->feature == DITATTN_SLR_FEATURE_SOFTMAX ? "softmax" : "elu1");
  gc_describe(buf, size, op, &c->s, extra);
}

/* The data must make the low-rank branch visible: ref/'s output with W = 0
 * differs from the full one by >= 1e-3 relative whenever the background is
 * not empty, so an error of 1% in that branch cannot pass the 1e-5 check. */
static int gcr_check_lowrank_share(gc_env *env, gcr_case *c, const char *what) {
  const int64_t H = c->s.H, D = c->s.D, n = (c->s.N + c->params.block - 1) / c->params.block;
  if (ditattn_ropeslr_topk(&c->params, c->s.N) >= n) return 1; /* empty background */
  float *zeros = calloc((size_t)(H * D * D), sizeof(float));
  float *out0 = malloc(c->out.count * sizeof(float));
  int ok = zeros && out0;
  if (ok) {
    ditattn_ropeslr_weights w0 = gcr_weights(c->w, 0);
    w0.W = ditattn_tensor_bhnd(zeros, DITATTN_F32, 1, H, D, D);
    ditattn_tensor o0 = c->out.host;
    o0.data = out0;
    ok = gc_status(env,
                   ditattn_ropeslr_forward(env->ref, &c->params, &w0, c->pos, &c->q.host,
                                           &c->k.host, &c->v.host, &o0, NULL, NULL),
                   env->ref, what);
  }
  if (ok) {
    char w2[600];
    const double share = gc_rel_err(&c->out.host, out0, c->out.buf);
    snprintf(w2, sizeof w2, "%s [low-rank share of ref output, want >= 1e-3]", what);
    ok = gc_report(env, share >= 1e-3 && isfinite(share), w2, share, 1e-3);
  }
  free(zeros);
  free(out0);
  return ok;
}

/* Runs one case on ref/ and on the backend, once per attention kernel
 * (gc_attend_paths: mma and simt on CUDA for bf16/f16, D in {64, 128}) with
 * out, lse and selection poisoned before each; compares all three. */
/* nan_key >= 0: key token nan_key is NaN in every (b, h, channel), so
 * every query block has a NaN score (its pooled key block's): only the
 * selections are compared (ref/'s K passes define their order). */
static int gcr_run_case_nan(gc_env *env, const gc_shape *s, const ditattn_ropeslr_params *params,
                            int64_t nan_key) {
  gcr_case c;
  char what[512];
  int ok = gcr_case_new(env, &c, s, params);
  gcr_describe(what, sizeof what, &c, nan_key >= 0 ? "ropeslr[nan key]" : "ropeslr");
  if (ok && nan_key >= 0) {
    for (int64_t bh = 0; bh < s->B * s->H; bh++)
      for (int64_t d = 0; d < s->D; d++) *gc_at(&c.k.host, bh / s->H, bh % s->H, nan_key, d) = NAN;
    ok = gc_upload(env, &c.k);
  }
  if (!ok) {
    gc_report(env, 0, what, INFINITY, 0.0);
    gcr_case_free(env, &c);
    return 0;
  }
  const ditattn_ropeslr_weights wh = gcr_weights(c.w, 0), wd = gcr_weights(c.w, 1);
  ok = gc_status(env,
                 ditattn_ropeslr_forward(env->ref, params, &wh, c.pos, &c.q.host, &c.k.host,
                                         &c.v.host, &c.out.host, c.lse_ref, c.sel_ref),
                 env->ref, what);
  if (ok && nan_key < 0) ok = gcr_check_lowrank_share(env, &c, what);
  const char *paths[2];
  const int npaths = gc_attend_paths(env, s->dt, s->D, paths);
  for (int pi = 0; ok && pi < npaths; pi++) {
    char op[32], pwhat[512], w2[600];
    gc_path_op(op, sizeof op, "ropeslr", paths[pi]);
    gcr_describe(pwhat, sizeof pwhat, &c, op);
    for (size_t i = 0; i < c.lse_count; i++) c.lse_got[i] = NAN;
    for (size_t i = 0; i < c.sel_count; i++) c.sel_got[i] = -7;
    ok = gc_poison_device(env, &c.out) && gc_put_floats(env, c.lse_dev, c.lse_got, c.lse_count);
    gc_set_attend_path(paths[pi]);
    ok = ok &&
         gc_status(env,
                   ditattn_ropeslr_forward(env->gpu, params, &wd, c.pos, &c.q.dev, &c.k.dev,
                                           &c.v.dev, &c.out.dev, c.lse_dev, c.sel_got),
                   env->gpu, pwhat) &&
         gc_status(env, ditattn_synchronize(env->gpu), env->gpu, pwhat);
    gc_set_attend_path(NULL);
    if (!ok) break;
    const double tol = gc_tol(s->dt);
    if (nan_key >= 0) goto selection;
    snprintf(w2, sizeof w2, "%s [out]", pwhat);
    gc_compare_out(env, &c.out, w2, tol);
    ok = gc_get_floats(env, c.lse_got, c.lse_dev, c.lse_count);
    const double lerr = ok ? gc_rel_err_flat(c.lse_got, c.lse_ref, c.lse_count) : INFINITY;
    snprintf(w2, sizeof w2, "%s [lse]", pwhat);
    gc_report(env, lerr <= tol, w2, lerr, tol);
  selection:;
    size_t differ = 0;
    for (size_t i = 0; i < c.sel_count; i++) differ += c.sel_got[i] != c.sel_ref[i];
    snprintf(w2, sizeof w2, "%s [sel: %zu of %zu entries differ]", pwhat, differ, c.sel_count);
    gc_report(env, differ == 0, w2, (double)differ, 0.0);
  }
  gcr_case_free(env, &c);
  return ok;
}

static int gcr_run_case(gc_env *env, const gc_shape *s, const ditattn_ropeslr_params *params) {
  return gcr_run_case_nan(env, s, params, -1);
}

/* Random params on a random grid; `kind` forces the edge cases in turn. */
static int gcr_check_forward(gc_env *env) {
  static const int64_t dims[] = {4, 16, 24, 64, 80, 128, 160};
  static const int64_t blocks[] = {1, 4, 7, 16, 64};
  for (int i = 0; i < 14; i++) {
    const int64_t T = gc_int(1, 4), Hg = gc_int(2, 7), W = gc_int(2, 9), N = T * Hg * W;
    const int64_t D = dims[gc_int(0, 6)];
    gc_shape s = gc_random_shape(N, D, gc_pick_dtype(i));
    ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
    p.grid[0] = T, p.grid[1] = Hg, p.grid[2] = W;
    p.block = blocks[gc_int(0, 4)];
    if (p.block >= N) p.block = gc_int(1, N); /* keep several blocks mostly */
    p.rho = gc_uniform(0.05, 0.6);
    p.force_own_block = i % 2;
    p.feature = (i / 2) % 2 ? DITATTN_SLR_FEATURE_SOFTMAX : DITATTN_SLR_FEATURE_ELU1;
    p.rank = i % 3 == 0 ? D + gc_int(1, 40) : gc_int(1, 48); /* r > D every third case */
    p.scale = i % 4 == 1 ? 0.3f : 0.0f;
    switch (i % 7) {
    case 2: p.rho = 1.0; break; /* every block: dense, empty background */
    case 3:
      p.policy = DITATTN_SLR_FIXED_K;
      p.topk = 1; /* the own block only (when forced) */
      break;
    case 5:
      p.policy = DITATTN_SLR_SQRT;
      p.sqrt_c = gc_uniform(0.3, 1.5);
      break;
    default: break;
    }
    gcr_run_case(env, &s, &p);
  }
  /* 16-bit inputs with D in {64, 128} (the CUDA tensor-core kernel): b = 64
   * (the 4 tiles of a block share one key list), b = 16 and b = 7 (a tile
   * per group, partial tiles), padded rows now and then. */
  static const int64_t mma_blocks[4] = {64, 16, 64, 7};
  for (int i = 0; i < 4; i++) {
    const int64_t T = gc_int(2, 4), Hg = gc_int(6, 12), W = gc_int(6, 12), N = T * Hg * W;
    const ditattn_dtype dt = gc_cur && gc_cur->f32_only ? DITATTN_F32
                             : i % 2                    ? DITATTN_F16
                                                        : DITATTN_BF16;
    gc_shape s = gc_random_shape(N, i < 2 ? 64 : 128, dt);
    ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
    p.grid[0] = T, p.grid[1] = Hg, p.grid[2] = W;
    p.block = mma_blocks[i];
    p.rho = gc_uniform(0.1, 0.6);
    p.force_own_block = i % 2;
    p.rank = gc_int(8, 48);
    gcr_run_case(env, &s, &p);
  }
  /* Selection paths of the GPU kernel: a NaN score (the K passes instead of
   * the sort), and n > 4096 blocks (passes for every row). */
  for (int i = 0; i < 2; i++) {
    const int64_t T = 2, Hg = i ? 50 : 9, W = i ? 43 : 11, N = T * Hg * W;
    gc_shape s = gc_random_shape(N, 16, gc_pick_dtype(i));
    ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
    p.grid[0] = T, p.grid[1] = Hg, p.grid[2] = W;
    p.block = i ? 1 : 4; /* n = 4300 blocks, then 50 */
    p.rho = i ? 0.02 : 0.3;
    p.force_own_block = 1;
    p.rank = 8;
    gcr_run_case_nan(env, &s, &p, i ? -1 : gc_int(0, N - 1));
  }
  return 1;
}

static const gc_check gcr_checks[] = {{"ropeslr_forward", gcr_check_forward}};
#define GCR_NCHECKS ((int)(sizeof gcr_checks / sizeof gcr_checks[0]))

#ifndef GCR_NO_MAIN
#include "gpu_check_driver.h"

/* ------------------------------------------------------------ timing */
typedef struct gcr_timing {
  gc_env *env;
  gcr_case *c;
  int dense;
} gcr_timing;

/* One RoPeSLR or dense forward of the case, synchronized (a gc_timed_call). */
static int gcr_forward_synchronized(const void *arg) {
  const gcr_timing *t = arg;
  gcr_case *c = t->c;
  const ditattn_ropeslr_weights wd = gcr_weights(c->w, 1);
  const ditattn_status st =
      t->dense ? ditattn_dense_forward(t->env->gpu, &c->q.dev, &c->k.dev, &c->v.dev, 0.0f,
                                       &c->out.dev, NULL)
               : ditattn_ropeslr_forward(t->env->gpu, &c->params, &wd, c->pos, &c->q.dev, &c->k.dev,
                                         &c->v.dev, &c->out.dev, NULL, NULL);
  return st == DITATTN_OK && ditattn_synchronize(t->env->gpu) == DITATTN_OK;
}

static int64_t gcr_dims[4] = {64, 128};
static int gcr_ndims = 2;

/* N = 16·80·80 = 102400, B = H = 1, b = 64, r = 64, ρ = 0.1 (K = 160 of n =
 * 1600): RoPeSLR vs dense, f32 and bf16. TFLOP/s by spec §6's counts. */
static int gcr_time_all(gc_env *env) {
  printf("\n%-8s %-4s %-8s %-5s %10s %12s\n", "N", "D", "op", "dtype", "ms", "TFLOP/s");
  for (int di = 0; di < gcr_ndims; di++) {
    for (int ti = 0; ti < 2; ti++) {
      const ditattn_dtype dt = ti ? DITATTN_F32 : DITATTN_BF16;
      gc_shape s = {1, 1, 102400, gcr_dims[di], 0, 0, dt};
      ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
      p.grid[0] = 16, p.grid[1] = 80, p.grid[2] = 80;
      gcr_case c;
      if (!gcr_case_new(env, &c, &s, &p)) {
        printf("allocation failed: %s\n", ditattn_last_error(env->gpu));
        gcr_case_free(env, &c);
        return 0;
      }
      const double N = (double)s.N, D = (double)s.D, r = (double)p.rank;
      const double K = (double)ditattn_ropeslr_topk(&p, s.N), n = N / 64.0;
      /* op 0 RoPeSLR (default kernels), 1 dense, 2 RoPeSLR with the fp32
       * attention kernel forced where the default is the mma kernel. */
      static const char *const op_names[3] = {"ropeslr", "dense", "slr_simt"};
      const char *paths[2];
      const int npaths = gc_attend_paths(env, dt, s.D, paths);
      for (int op = 0; op < 3; op++) {
        if (op == 2 && npaths < 2) continue;
        gcr_timing t = {env, &c, op == 1};
        gc_set_attend_path(op == 2 ? "simt" : NULL);
        const double sec = gc_median_seconds(gcr_forward_synchronized, &t, 1, 5);
        gc_set_attend_path(NULL);
        const double flops =
            op == 1 ? 4.0 * N * N * D : 4.0 * N * K * 64.0 * D + 8.0 * N * D * r + n * K * r * D;
        const char *name = op_names[op];
        if (sec < 0)
          printf("%-8lld %-4lld %-8s %-5s %10s   failed: %s\n", (long long)s.N, (long long)s.D,
                 name, gc_dtype_name(dt), "-", ditattn_last_error(env->gpu));
        else
          printf("%-8lld %-4lld %-8s %-5s %10.3f %12.2f\n", (long long)s.N, (long long)s.D, name,
                 gc_dtype_name(dt), 1e3 * sec, flops / sec * 1e-12);
        fflush(stdout);
      }
      gcr_case_free(env, &c);
    }
  }
  return 1;
}

int main(int argc, char **argv) {
  static const char usage[] =
      "[--backend cuda|hip|cpu|ref] [--seed S] [--time|--time-only] [--dims 64,128] [--quiet]";
  const gc_list_option dims = {"--dims", gcr_dims, &gcr_ndims,
                               (int)(sizeof gcr_dims / sizeof *gcr_dims)};
  const gc_checker checker = {"gpu_check_ropeslr", gcr_checks, GCR_NCHECKS,
                              gcr_time_all,        &dims,      usage};
  return gc_checker_main(&checker, argc, argv);
}
#endif /* GCR_NO_MAIN */
