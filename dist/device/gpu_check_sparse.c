/* The LLSA and RoPeSLR half of ditattn_dist_gpu_check: the device-memory
 * ditattn_dist_llsa_forward / ditattn_dist_ropeslr_forward on this rank's
 * slice vs the single-process forward on the whole sequence, computed by
 * every rank on its GPU (same kernels: expected equal) and on the CPU
 * backend (f32 on the same, bf16-rounded values).
 *
 * Each case draws from one seed: the op, B, H, D, dtype, N (RoPeSLR: a
 * T×H×W grid, raster or Morton positions), uneven shuffled slices, strided
 * layouts, the op's parameters (LLSA: b, L, K_l; RoPeSLR: b, policy, r,
 * feature, own block), lse requested or not. Outputs are poisoned with
 * NaN first. One line per case on rank 0 (max error over ranks). */
#include "gpu_check_sparse.h"

#include "gpu_xfer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32_TOL  1e-5
#define BF16_TOL 1e-2

enum { OP_LLSA = 0, OP_ROPESLR = 1 };

typedef struct sparse_case {
  uint64_t seed;
  int op;
  int64_t B, H, N, D, pad;
  int bnhd, want_lse, morton;
  ditattn_dtype dtype;
  ditattn_llsa_params llsa;
  ditattn_ropeslr_params slr;
} sparse_case;

static sparse_case draw(uint64_t seed, int index, int rank_count, int host_backend) {
  dtu_rng rng = {seed * 0xD1B54A32D192ED03ull + 7};
  sparse_case c;
  memset(&c, 0, sizeof c);
  c.seed = seed;
  c.op = index % 2;
  c.B = dtu_int(&rng, 1, 2);
  c.H = dtu_int(&rng, 1, 3);
  static const int64_t dims[4] = {64, 128, 64, 32};
  c.D = dims[dtu_int(&rng, 0, 3)];
  c.dtype = dtu_int(&rng, 0, 2) && !host_backend ? DITATTN_BF16 : DITATTN_F32;
  c.pad = dtu_int(&rng, 0, 1) ? 8 * dtu_int(&rng, 1, 2) : 0; /* keeps bf16 rows 16-byte aligned */
  c.bnhd = (int)dtu_int(&rng, 0, 1);
  c.want_lse = dtu_int(&rng, 0, 3) != 0;
  if (c.op == OP_LLSA) {
    c.llsa = ditattn_llsa_params_default();
    static const int64_t blocks[3] = {8, 16, 32};
    c.llsa.block = blocks[dtu_int(&rng, 0, 2)];
    c.llsa.levels = (int)dtu_int(&rng, 1, 3);
    for (int l = 0; l < c.llsa.levels; l++) c.llsa.topk[l] = dtu_int(&rng, 1, 8);
    c.llsa.scale = dtu_int(&rng, 0, 1) ? 0.0f : (float)dtu_uniform(&rng, 0.05, 0.3);
    c.N = dtu_int(&rng, 200, index % 4 == 2 ? 6000 : 1500);
  } else {
    c.slr = ditattn_ropeslr_params_default();
    static const int64_t blocks[3] = {16, 32, 64};
    c.slr.block = blocks[dtu_int(&rng, 0, 2)];
    c.slr.policy = dtu_int(&rng, 0, 1) ? DITATTN_SLR_KEEP_FRACTION : DITATTN_SLR_FIXED_K;
    c.slr.rho = dtu_uniform(&rng, 0.05, 0.3);
    c.slr.topk = dtu_int(&rng, 1, 6);
    c.slr.force_own_block = (int)dtu_int(&rng, 0, 1);
    c.slr.rank = 8 * dtu_int(&rng, 1, 4);
    c.slr.feature = dtu_int(&rng, 0, 1) ? DITATTN_SLR_FEATURE_SOFTMAX : DITATTN_SLR_FEATURE_ELU1;
    c.slr.grid[0] = dtu_int(&rng, 1, 4);
    c.slr.grid[1] = dtu_int(&rng, 4, 16);
    c.slr.grid[2] = dtu_int(&rng, 4, 24);
    c.N = c.slr.grid[0] * c.slr.grid[1] * c.slr.grid[2];
    c.morton = (int)dtu_int(&rng, 0, 1);
  }
  if (c.N < rank_count) c.N = rank_count;
  return c;
}

/* RoPeSLR weights on the host, f32 (1, H, rows, cols) each: A, Bk, Et, Ey,
 * Ex, W; small values so that the features stay tame. */
typedef struct host_weights {
  dtu_tensor w[6];
} host_weights;

static void weight_shape(const sparse_case *c, int i, int64_t *rows, int64_t *cols) {
  const int64_t r = c->slr.rank;
  const int64_t R[6] = {c->D, c->D, c->slr.grid[0], c->slr.grid[1], c->slr.grid[2], c->D};
  *rows = R[i];
  *cols = i == 5 ? c->D : r;
}

static host_weights weights_new(const sparse_case *c, dtu_rng *rng) {
  host_weights hw;
  for (int i = 0; i < 6; i++) {
    int64_t rows, cols;
    weight_shape(c, i, &rows, &cols);
    hw.w[i] = dtu_tensor_new(1, c->H, rows, cols, 0, 0);
    dtu_fill_uniform(&hw.w[i], rng);
    for (size_t e = 0; e < hw.w[i].count; e++) hw.w[i].buf[e] *= 0.1f;
  }
  return hw;
}

static ditattn_ropeslr_weights weight_views(const host_weights *hw, void *const dev[6]) {
  ditattn_ropeslr_weights w;
  ditattn_tensor *v[6] = {&w.A, &w.Bk, &w.Et, &w.Ey, &w.Ex, &w.W};
  for (int i = 0; i < 6; i++)
    *v[i] = dev ? gx_device_view(&hw->w[i], dev[i], DITATTN_F32) : hw->w[i].t;
  return w;
}

typedef struct sparse_result {
  double err[4]; /* out vs cpu, out vs gpu, lse vs cpu, lse vs gpu (gx_slice_errors) */
  int transfer;
  int failed;
} sparse_result;

typedef struct sparse_env {
  ditattn_context *gpu, *cpu;
  int rank, size;
} sparse_env;

#define SCALL(ctx, what, expr)                                                                     \
  do {                                                                                             \
    ditattn_status call_st_ = (expr);                                                              \
    if (call_st_ != DITATTN_OK) {                                                                  \
      fprintf(stderr, "rank %d: seed %llu: %s failed: %s (%s)\n", env->rank,                       \
              (unsigned long long)c->seed, what, ditattn_strerror(call_st_),                       \
              ditattn_last_error(ctx));                                                            \
      res->failed = 1;                                                                             \
      goto done;                                                                                   \
    }                                                                                              \
  } while (0)

/* One forward of c's op on ctx: whole sequence (slice NULL) or dist. */
static ditattn_status forward(const sparse_env *env, ditattn_context *ctx, const sparse_case *c,
                              const ditattn_dist_slice *slice, const ditattn_ropeslr_weights *w,
                              const int32_t *pos, const ditattn_tensor *q, const ditattn_tensor *k,
                              const ditattn_tensor *v, ditattn_tensor *o, float *lse) {
  if (c->op == OP_LLSA)
    return slice ? ditattn_dist_llsa_forward(ctx, MPI_COMM_WORLD, slice, &c->llsa, q, k, v, o, lse)
                 : ditattn_llsa_forward(ctx, &c->llsa, q, k, v, o, lse, NULL);
  (void)env;
  return slice ? ditattn_dist_ropeslr_forward(ctx, MPI_COMM_WORLD, slice, &c->slr, w,
                                              pos ? pos + 3 * slice->offset : NULL, q, k, v, o, lse)
               : ditattn_ropeslr_forward(ctx, &c->slr, w, pos, q, k, v, o, lse, NULL);
}

static void run_case(const sparse_env *env, const sparse_case *c, sparse_result *res) {
  memset(res, 0, sizeof *res);
  for (int j = 0; j < 4; j++) res->err[j] = INFINITY;
  const int64_t B = c->B, H = c->H, N = c->N, D = c->D, BH = B * H;
  dtu_rng rng = {c->seed * 0x9E3779B97F4A7C15ull + 3};
  dtu_tensor g[5];
  for (int i = 0; i < 5; i++) g[i] = dtu_tensor_new(B, H, N, D, 0, 0); /* q k v out_cpu out_gpu */
  for (int i = 0; i < 3; i++) {
    dtu_fill_uniform(&g[i], &rng);
    if (c->dtype == DITATTN_BF16) gx_round_bf16(g[i].buf, g[i].count);
  }
  host_weights hw;
  memset(&hw, 0, sizeof hw);
  int32_t *pos = NULL;
  if (c->op == OP_ROPESLR) {
    hw = weights_new(c, &rng);
    if (c->morton) {
      ditattn_order_params op = {DITATTN_ORDER_MORTON, {0, 0, 0}, {1, 1, 1}};
      memcpy(op.grid, c->slr.grid, sizeof op.grid);
      pos = malloc((size_t)N * 3 * sizeof(int32_t));
      if (pos && ditattn_order_positions(&op, pos) != DITATTN_OK) {
        free(pos);
        pos = NULL;
      }
    }
  }
  const ditattn_dist_slice sl = gx_draw_slice(c->seed, N, env->rank, env->size);
  dtu_tensor l[4];
  for (int i = 0; i < 4; i++) l[i] = dtu_tensor_new(B, H, sl.length, D, c->pad, (c->bnhd + i) % 2);
  float *glse_cpu = malloc((size_t)(BH * N) * sizeof(float));
  float *glse_gpu = malloc((size_t)(BH * N) * sizeof(float));
  float *llse = malloc((size_t)(BH * sl.length) * sizeof(float));
  void *dg[5] = {NULL}, *dl[5] = {NULL}, *dw[6] = {NULL};
  ditattn_ropeslr_weights w_host = weight_views(&hw, NULL), w_dev;
  if (!glse_cpu || !glse_gpu || !llse || (c->op == OP_ROPESLR && c->morton && !pos)) {
    fprintf(stderr, "rank %d: seed %llu: host allocation failed\n", env->rank,
            (unsigned long long)c->seed);
    res->failed = 1;
    goto done;
  }
  for (int i = 0; i < 6 && c->op == OP_ROPESLR; i++)
    SCALL(env->gpu, "weights upload",
          gx_upload(env->gpu, hw.w[i].buf, hw.w[i].count, DITATTN_F32, &dw[i]));
  w_dev = weight_views(&hw, dw);
  /* Single process, whole sequence: CPU (f32, same values) and GPU. */
  SCALL(
      env->cpu, "cpu forward (single process)",
      forward(env, env->cpu, c, NULL, &w_host, pos, &g[0].t, &g[1].t, &g[2].t, &g[3].t, glse_cpu));
  {
    for (int i = 0; i < 3; i++)
      SCALL(env->gpu, "upload", gx_upload(env->gpu, g[i].buf, g[i].count, c->dtype, &dg[i]));
    SCALL(env->gpu, "upload", gx_upload(env->gpu, g[4].buf, g[4].count, c->dtype, &dg[3]));
    SCALL(env->gpu, "malloc", ditattn_malloc(env->gpu, (size_t)(BH * N) * sizeof(float), &dg[4]));
    ditattn_tensor q = gx_device_view(&g[0], dg[0], c->dtype),
                   k = gx_device_view(&g[1], dg[1], c->dtype),
                   v = gx_device_view(&g[2], dg[2], c->dtype),
                   o = gx_device_view(&g[4], dg[3], c->dtype);
    SCALL(env->gpu, "gpu forward (single process)",
          forward(env, env->gpu, c, NULL, &w_dev, pos, &q, &k, &v, &o, (float *)dg[4]));
    SCALL(env->gpu, "download", gx_download(env->gpu, dg[3], g[4].count, c->dtype, g[4].buf));
    SCALL(env->gpu, "download",
          ditattn_copy_to_host(env->gpu, glse_gpu, dg[4], (size_t)(BH * N) * sizeof(float)));
  }
  /* The dist call on this rank's slice, outputs poisoned (NaN). */
  for (int i = 0; i < 3; i++) dtu_copy_slice(&l[i], &g[i], sl.offset);
  for (int64_t i = 0; i < BH * sl.length; i++) llse[i] = NAN;
  for (int i = 0; i < 4; i++)
    SCALL(env->gpu, "upload", gx_upload(env->gpu, l[i].buf, l[i].count, c->dtype, &dl[i]));
  SCALL(env->gpu, "upload",
        gx_upload(env->gpu, llse, (size_t)(BH * sl.length), DITATTN_F32, &dl[4]));
  {
    ditattn_tensor q = gx_device_view(&l[0], dl[0], c->dtype),
                   k = gx_device_view(&l[1], dl[1], c->dtype),
                   v = gx_device_view(&l[2], dl[2], c->dtype),
                   o = gx_device_view(&l[3], dl[3], c->dtype);
    SCALL(env->gpu, "gpu dist forward",
          forward(env, env->gpu, c, &sl, &w_dev, pos, &q, &k, &v, &o,
                  c->want_lse ? (float *)dl[4] : NULL));
    ditattn_dist_stats stats;
    ditattn_dist_last_stats(&stats);
    res->transfer = stats.gpu_transfer;
    SCALL(env->gpu, "download", gx_download(env->gpu, dl[3], l[3].count, c->dtype, l[3].buf));
    SCALL(env->gpu, "download",
          ditattn_copy_to_host(env->gpu, llse, dl[4], (size_t)(BH * sl.length) * sizeof(float)));
  }
  gx_slice_errors(&l[3].t, &g[3].t, &g[4].t, llse, glse_cpu, glse_gpu, c->want_lse, &sl, res->err);
done:
  for (int i = 0; i < 5; i++) {
    ditattn_free(env->gpu, dg[i]);
    ditattn_free(env->gpu, dl[i]);
  }
  for (int i = 0; i < 6; i++) ditattn_free(env->gpu, dw[i]);
  for (int i = 0; i < 5; i++) dtu_tensor_free(&g[i]);
  for (int i = 0; i < 4; i++) dtu_tensor_free(&l[i]);
  if (c->op == OP_ROPESLR)
    for (int i = 0; i < 6; i++) dtu_tensor_free(&hw.w[i]);
  free(pos);
  free(glse_cpu);
  free(glse_gpu);
  free(llse);
}

int gs_check_sparse(ditattn_context *gpu, ditattn_context *cpu, uint64_t base, int cases,
                    int host_backend, int expect_transfer, int *total) {
  sparse_env env = {gpu, cpu, 0, 1};
  MPI_Comm_rank(MPI_COMM_WORLD, &env.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &env.size);
  int failed = 0;
  for (int i = 0; i < cases; i++) {
    const uint64_t seed = base + 1000u + (uint64_t)i;
    const sparse_case c = draw(seed, i, env.size, host_backend);
    sparse_result r;
    run_case(&env, &c, &r);
    const double tol = c.dtype == DITATTN_BF16 ? BF16_TOL : F32_TOL;
    double raw[4] = {r.err[0], r.err[1], r.err[2], r.err[3]}, rawmax[4];
    for (int j = 0; j < 4; j++)
      if (isnan(raw[j])) raw[j] = INFINITY; /* NaN never passes */
    MPI_Allreduce(raw, rawmax, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (r.transfer != expect_transfer && !r.failed)
      fprintf(stderr, "rank %d: seed %llu: stats.gpu_transfer = %d, expected %d\n", env.rank,
              (unsigned long long)seed, r.transfer, expect_transfer);
    int bad = r.failed || r.transfer != expect_transfer, any_bad = 0;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    int pass = !any_bad;
    for (int j = 0; j < 4; j++) pass &= rawmax[j] <= tol;
    failed += !pass;
    (*total)++;
    if (env.rank == 0) {
      char prm[96];
      if (c.op == OP_LLSA)
        snprintf(prm, sizeof prm, "b=%lld L=%d K=%lld,%lld,%lld", (long long)c.llsa.block,
                 c.llsa.levels, (long long)c.llsa.topk[0], (long long)c.llsa.topk[1],
                 (long long)c.llsa.topk[2]);
      else
        snprintf(prm, sizeof prm, "b=%lld K=%lld r=%lld %s%s grid=%lldx%lldx%lld",
                 (long long)c.slr.block, (long long)ditattn_ropeslr_topk(&c.slr, c.N),
                 (long long)c.slr.rank,
                 c.slr.feature == DITATTN_SLR_FEATURE_SOFTMAX ? "softmax" : "elu1",
                 c.morton ? " morton" : "", (long long)c.slr.grid[0], (long long)c.slr.grid[1],
                 (long long)c.slr.grid[2]);
      printf(
          "%s sparse %2d seed %llu P=%d %-7s %-4s B=%lld H=%lld N=%lld D=%lld %s lse=%d | vs cpu "
          "%.2e vs gpu %.2e lse %.2e/%.2e (tol %.0e)\n",
          pass ? "PASS" : "FAIL", i, (unsigned long long)seed, env.size,
          c.op == OP_LLSA ? "llsa" : "ropeslr", c.dtype == DITATTN_BF16 ? "bf16" : "f32",
          (long long)c.B, (long long)c.H, (long long)c.N, (long long)c.D, prm, c.want_lse,
          rawmax[0], rawmax[1], rawmax[2], rawmax[3], tol);
      fflush(stdout);
    }
  }
  return failed;
}
