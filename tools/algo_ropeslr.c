/* `--algo ropeslr`: 3D-RoPE sparse + low-rank attention (spec ropeslr.md).
 * Weights come from --weights (a .npz or a directory of .npy files, see
 * weights.h) or, without it, are random of the right shapes (said on stderr
 * and in the params column). `run --sel-out F` also writes the selection. */
#include "algos.h"
#include "cli_args.h"
#include "npy.h"
#include "weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slr_state {
  ditattn_ropeslr_params params;
  const char *weights_path; /* NULL: random weights */
  int64_t weights_seed;
  int rank_given;
  const char *sel_out;
  dt_slr_weights_host host;
  float *device[DT_SLR_NWEIGHTS]; /* copies in the context's memory */
  ditattn_context *ctx;           /* that owns device[] */
  int32_t *sel;                   /* host selection when sel_out is set */
  int64_t K;                      /* resolved at prepare */
} slr_state;

static void slr_init(void *state) {
  slr_state *s = state;
  s->params = ditattn_ropeslr_params_default();
  s->weights_seed = 1;
}

static int bad_value(char *err, size_t err_size, const char *opt, const char *value,
                     const char *expected) {
  snprintf(err, err_size, "%s '%s': expected %s", opt, value, expected);
  return -1;
}

static int slr_parse_option(void *state, int argc, char **argv, int *i, char *err,
                            size_t err_size) {
  slr_state *s = state;
  ditattn_ropeslr_params *prm = &s->params;
  const char *value;
  int r;
  float f;
  if ((r = cli_opt(argc, argv, i, "--weights", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    s->weights_path = value;
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--weights-seed", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (!cli_parse_i64(value, 0, INT64_MAX, &s->weights_seed))
      return bad_value(err, err_size, "--weights-seed", value, "an integer >= 0");
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--block", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (!cli_parse_i64(value, 1, INT64_C(1) << 30, &prm->block))
      return bad_value(err, err_size, "--block", value, "an integer >= 1");
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--rho", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (!cli_parse_float(value, &f) || !(f > 0.0f && f <= 1.0f))
      return bad_value(err, err_size, "--rho", value, "a kept fraction in (0, 1]");
    prm->policy = DITATTN_SLR_KEEP_FRACTION;
    prm->rho = f;
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--topk", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (!cli_parse_i64(value, 1, INT64_C(1) << 30, &prm->topk))
      return bad_value(err, err_size, "--topk", value, "an integer >= 1");
    prm->policy = DITATTN_SLR_FIXED_K;
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--sqrt-c", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (!cli_parse_float(value, &f) || !(f > 0.0f))
      return bad_value(err, err_size, "--sqrt-c", value, "a number > 0");
    prm->policy = DITATTN_SLR_SQRT;
    prm->sqrt_c = f;
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--rank", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (!cli_parse_i64(value, 1, INT64_C(1) << 20, &prm->rank))
      return bad_value(err, err_size, "--rank", value, "an integer in [1, 2^20]");
    s->rank_given = 1;
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--feature", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (strcmp(value, "elu1") == 0)
      prm->feature = DITATTN_SLR_FEATURE_ELU1;
    else if (strcmp(value, "softmax") == 0)
      prm->feature = DITATTN_SLR_FEATURE_SOFTMAX;
    else
      return bad_value(err, err_size, "--feature", value, "elu1 or softmax");
    return 1;
  }
  if (strcmp(argv[*i], "--no-own-block") == 0) {
    prm->force_own_block = 0;
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--sel-out", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    s->sel_out = value;
    return 1;
  }
  return 0;
}

static void slr_release(void *state, ditattn_context *ctx) {
  slr_state *s = state;
  for (int a = 0; a < DT_SLR_NWEIGHTS; a++) {
    if (s->device[a] && s->device[a] != s->host.data[a])
      ditattn_free(s->ctx ? s->ctx : ctx, s->device[a]);
    s->device[a] = NULL;
  }
  dt_slr_weights_free(&s->host);
  free(s->sel);
  s->sel = NULL;
  s->ctx = NULL;
}

static int slr_branch_flops(const void *state, const dt_algo_problem *p, dt_algo_branch *out);

static ditattn_status slr_prepare(void *state, const dt_algo_problem *p, ditattn_context *ctx,
                                  char *err, size_t err_size) {
  slr_state *s = state;
  slr_release(s, ctx); /* a second prepare starts over */
  s->params.scale = p->scale;
  memcpy(s->params.grid, p->grid, sizeof s->params.grid);
  ditattn_status st;
  if (s->weights_path) {
    st = dt_slr_weights_load(s->weights_path, &s->host, err, err_size);
    if (st != DITATTN_OK) return st;
    if (s->rank_given && s->params.rank != s->host.r) {
      snprintf(err, err_size, "--rank %lld but the weights in %s have rank %lld",
               (long long)s->params.rank, s->weights_path, (long long)s->host.r);
      return DITATTN_ERR_SHAPE_MISMATCH;
    }
    s->params.rank = s->host.r;
  } else {
    st = dt_slr_weights_random(p->H, p->D, s->params.rank, p->grid, (uint64_t)s->weights_seed,
                               &s->host, err, err_size);
    if (st != DITATTN_OK) return st;
    fprintf(
        stderr,
        "ditattn: note: ropeslr: no --weights given, using random weights (seed %lld): "
        "A, B, W ~ U(-1,1)/sqrt(D), E ~ U(-0.5,0.5), H=%lld D=%lld r=%lld grid %lldx%lldx%lld\n",
        (long long)s->weights_seed, (long long)p->H, (long long)p->D, (long long)s->params.rank,
        (long long)p->grid[0], (long long)p->grid[1], (long long)p->grid[2]);
  }
  st = dt_slr_weights_check(&s->host, p->H, p->D, p->grid, err, err_size);
  if (st != DITATTN_OK) return st;
  s->K = ditattn_ropeslr_topk(&s->params, p->N);
  if (s->K < 1) {
    snprintf(err, err_size, "invalid RoPeSLR parameters");
    return DITATTN_ERR_INVALID_ARGUMENT;
  }
  if (!p->is_bench) { /* bench puts them in its table */
    dt_algo_branch br[DT_ALGO_MAX_BRANCHES];
    slr_branch_flops(s, p, br);
    fprintf(stderr,
            "ditattn: note: ropeslr: K = %lld of n = %lld blocks; GFLOP per forward: %s %.4g + "
            "%s %.4g + %s %.4g (spec ropeslr.md §6, plus 2ND² for Wᵀ)\n",
            (long long)s->K, (long long)((p->N + s->params.block - 1) / s->params.block),
            br[0].name, br[0].flops * 1e-9, br[1].name, br[1].flops * 1e-9, br[2].name,
            br[2].flops * 1e-9);
  }
  /* The weights live where the tensors do (device memory on GPUs). */
  s->ctx = ctx;
  for (int a = 0; a < DT_SLR_NWEIGHTS; a++) {
    const size_t bytes = (size_t)dt_slr_weight_count(&s->host, a) * sizeof(float);
    void *mem = NULL;
    st = ditattn_malloc(ctx, bytes, &mem);
    if (st == DITATTN_OK) {
      s->device[a] = mem;
      st = ditattn_copy_to_backend(ctx, mem, s->host.data[a], bytes);
    }
    if (st != DITATTN_OK) {
      snprintf(err, err_size, "weights to the backend: %s", ditattn_last_error(ctx));
      return st;
    }
  }
  if (s->sel_out && !p->is_bench) {
    const int64_t count = ditattn_ropeslr_selection_count(&s->params, p->B, p->H, p->N);
    s->sel = count > 0 ? malloc((size_t)count * sizeof(int32_t)) : NULL;
    if (!s->sel) {
      snprintf(err, err_size, "out of memory for the selection");
      return DITATTN_ERR_OUT_OF_MEMORY;
    }
  }
  return DITATTN_OK;
}

static ditattn_status slr_run(void *state, const dt_algo_problem *p, const dt_algo_io *io) {
  slr_state *s = state;
  ditattn_ropeslr_weights w = dt_slr_weights_views(&s->host, s->device);
  return ditattn_ropeslr_forward(io->ctx, &s->params, &w, p->pos, io->q, io->k, io->v, io->out,
                                 io->lse, s->sel);
}

/* [B, H, n, K] int32 (or [n, K] for [N, D] inputs). */
static ditattn_status slr_write_extras(void *state, const dt_algo_problem *p, char *err,
                                       size_t err_size) {
  slr_state *s = state;
  if (!s->sel) return DITATTN_OK;
  const int64_t n = (p->N + s->params.block - 1) / s->params.block;
  int64_t shape[4] = {p->B, p->H, n, s->K};
  const int rank4 = p->input_rank == 4;
  return dt_npy_write_i32(s->sel_out, rank4 ? 4 : 2, rank4 ? shape : shape + 2, s->sel, err,
                          err_size);
}

/* Spec §6 per head: sparse 4·N·(K·b)·D (K·b clamped to N); low-rank
 * 4·N·D·r (features) + 4·N·r·D (factors, readout) + n·K·r·D (selected
 * factors); projection 2·N·D² (the Wᵀ product, which §6 leaves out). */
static int slr_branch_flops(const void *state, const dt_algo_problem *p, dt_algo_branch *out) {
  const slr_state *s = state;
  const double N = (double)p->N, D = (double)p->D, r = (double)s->params.rank;
  const double b = (double)s->params.block, K = (double)s->K;
  const double n = ceil(N / b), keys = fmin(K * b, N), heads = (double)p->B * (double)p->H;
  out[0] = (dt_algo_branch){"sparse", 4.0 * N * keys * D * heads};
  out[1] =
      (dt_algo_branch){"low-rank", (4.0 * N * D * r + 4.0 * N * r * D + n * K * r * D) * heads};
  out[2] = (dt_algo_branch){"projection", 2.0 * N * D * D * heads};
  return 3;
}

static double slr_flops(const void *state, const dt_algo_problem *p) {
  dt_algo_branch br[DT_ALGO_MAX_BRANCHES];
  const int n = slr_branch_flops(state, p, br);
  double flops = 0.0;
  for (int i = 0; i < n; i++) flops += br[i].flops;
  return flops;
}

static void slr_note(const void *state, char *buf, size_t size) {
  const slr_state *s = state;
  if (s->weights_path)
    snprintf(buf, size, "weights from %s (r=%lld)", s->weights_path, (long long)s->params.rank);
  else
    snprintf(buf, size,
             "random weights (no --weights; seed %lld, r=%lld): A, B, W ~ U(-1,1)/sqrt(D), "
             "Et, Ey, Ex ~ U(-0.5,0.5)",
             (long long)s->weights_seed, (long long)s->params.rank);
}

static void slr_describe(const void *state, char *buf, size_t size) {
  const slr_state *s = state;
  const ditattn_ropeslr_params *prm = &s->params;
  /* Short enough for bench's params column (branch FLOPs and the weights'
   * origin have their own lines: slr_branch_flops, slr_note). */
  snprintf(buf, size, "b=%lld K=%lld r=%lld%s%s w=%s", (long long)prm->block, (long long)s->K,
           (long long)prm->rank, prm->feature == DITATTN_SLR_FEATURE_SOFTMAX ? " softmax" : "",
           prm->force_own_block ? "" : " no-own", s->weights_path ? "file" : "rand");
}

const dt_algo dt_algo_ropeslr = {
    .name = "ropeslr",
    .summary = "RoPeSLR: sparse top-K blocks + low-rank background with 3D PE (spec ropeslr.md)",
    .options_help =
        "  --weights P         weights: a .npz or a directory of A,B,Et,Ey,Ex,W .npy files\n"
        "                      ([H,D,r] [H,D,r] [H,T,r] [H,H,r] [H,W,r] [H,D,D]); without it\n"
        "                      random weights of the right shapes (a note says so)\n"
        "  --weights-seed S    seed of the random weights (default 1)\n"
        "  --rank R            rank r of random weights (default 64; must match --weights)\n"
        "  --block B           block size b >= 1 (default 64)\n"
        "  --rho R             kept fraction of key blocks, K = max(1, ceil(R*n)) (default 0.1)\n"
        "  --topk K            fixed K instead (clamped to n)\n"
        "  --sqrt-c C          K = max(1, ceil(C*sqrt(n))) instead\n"
        "  --feature F         elu1 (default) or softmax feature map\n"
        "  --no-own-block      pure top-K (default: the own block is always kept)\n"
        "  --sel-out F         (run) write the selection, int32 [B,H,n,K] or [n,K]\n"
        "  (--lse writes the sparse branch's LSE; --grid/--pos give the token positions)\n",
    .state_size = sizeof(slr_state),
    .init = slr_init,
    .parse_option = slr_parse_option,
    .prepare = slr_prepare,
    .run = slr_run,
    .write_extras = slr_write_extras,
    .flops = slr_flops,
    .describe = slr_describe,
    .release = slr_release,
    .branch_flops = slr_branch_flops,
    .note = slr_note,
};
