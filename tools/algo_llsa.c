/* `--algo llsa`: log-linear sparse attention (spec llsa.md). Options set
 * ditattn_llsa_params; `run --sel-prefix P` also writes the selections. */
#include "algos.h"
#include "cli_args.h"
#include "npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct llsa_state {
  ditattn_llsa_params params;
  int levels_given, topk_count; /* what the user typed (0 = not given) */
  const char *sel_prefix;       /* NULL: no selection output */
  ditattn_llsa_selection sel;   /* host buffers when sel_prefix is set */
} llsa_state;

static void llsa_init(void *state) {
  llsa_state *s = state;
  s->params = ditattn_llsa_params_default();
}

static int llsa_parse_option(void *state, int argc, char **argv, int *i, char *err,
                             size_t err_size) {
  llsa_state *s = state;
  const char *value;
  int r;
  if ((r = cli_opt(argc, argv, i, "--block", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (!cli_parse_i64(value, 2, INT64_C(1) << 30, &s->params.block)) {
      snprintf(err, err_size, "--block '%s': expected an integer >= 2", value);
      return -1;
    }
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--levels", &value, err, err_size)) != 0) {
    int64_t levels;
    if (r < 0) return -1;
    if (!cli_parse_i64(value, 1, DITATTN_LLSA_MAX_LEVELS, &levels)) {
      snprintf(err, err_size, "--levels '%s': expected an integer in [1, %d]", value,
               DITATTN_LLSA_MAX_LEVELS);
      return -1;
    }
    s->params.levels = (int)levels;
    s->levels_given = 1;
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--topk", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    if (!cli_parse_i64_list(value, 1, INT64_C(1) << 30, s->params.topk, DITATTN_LLSA_MAX_LEVELS,
                            &s->topk_count)) {
      snprintf(err, err_size,
               "--topk '%s': expected 1 to %d comma-separated integers >= 1 (K_1..K_L, finest "
               "level first)",
               value, DITATTN_LLSA_MAX_LEVELS);
      return -1;
    }
    return 1;
  }
  if ((r = cli_opt(argc, argv, i, "--sel-prefix", &value, err, err_size)) != 0) {
    if (r < 0) return -1;
    s->sel_prefix = value;
    return 1;
  }
  return 0;
}

static ditattn_status llsa_prepare(void *state, const dt_algo_problem *p, ditattn_context *ctx,
                                   char *err, size_t err_size) {
  (void)ctx;
  llsa_state *s = state;
  ditattn_llsa_params *prm = &s->params;
  /* --topk alone sets L; --levels alone repeats the default K; both must agree. */
  if (s->topk_count && !s->levels_given) prm->levels = s->topk_count;
  if (s->topk_count && s->topk_count != prm->levels) {
    snprintf(err, err_size, "--topk has %d value(s) but --levels is %d (give K_1..K_L)",
             s->topk_count, prm->levels);
    return DITATTN_ERR_INVALID_ARGUMENT;
  }
  if (!s->topk_count)
    for (int l = 0; l < prm->levels; l++) prm->topk[l] = ditattn_llsa_params_default().topk[0];
  prm->scale = p->scale;
  if (!s->sel_prefix || p->is_bench) return DITATTN_OK;
  for (int l = 0; l < prm->levels; l++) {
    int64_t count = ditattn_llsa_selection_count(prm, p->B, p->H, p->N, l + 1);
    if (count <= 0) {
      snprintf(err, err_size, "invalid LLSA parameters for N = %lld", (long long)p->N);
      return DITATTN_ERR_INVALID_ARGUMENT;
    }
    s->sel.sel[l] = malloc((size_t)count * sizeof(int32_t));
    if (!s->sel.sel[l]) {
      snprintf(err, err_size, "out of memory for the level-%d selection", l + 1);
      return DITATTN_ERR_OUT_OF_MEMORY;
    }
  }
  return DITATTN_OK;
}

static ditattn_status llsa_run(void *state, const dt_algo_problem *p, const dt_algo_io *io) {
  (void)p;
  llsa_state *s = state;
  return ditattn_llsa_forward(io->ctx, &s->params, io->q, io->k, io->v, io->out, io->lse,
                              s->sel.sel[0] ? &s->sel : NULL);
}

static int64_t blocks_at(int64_t N, int64_t block, int level) {
  int64_t n = N;
  for (int l = 0; l < level; l++) n = (n + block - 1) / block;
  return n;
}

/* P1.npy .. PL.npy: [B, H, n_l, K_l] int32 (or [n_l, K_l] for [N, D] inputs). */
static ditattn_status llsa_write_extras(void *state, const dt_algo_problem *p, char *err,
                                        size_t err_size) {
  llsa_state *s = state;
  if (!s->sel.sel[0]) return DITATTN_OK;
  for (int l = 0; l < s->params.levels; l++) {
    char path[4096];
    snprintf(path, sizeof path, "%s%d.npy", s->sel_prefix, l + 1);
    int64_t shape[4] = {p->B, p->H, blocks_at(p->N, s->params.block, l + 1), s->params.topk[l]};
    int rank4 = p->input_rank == 4;
    ditattn_status st = dt_npy_write_i32(path, rank4 ? 4 : 2, rank4 ? shape : shape + 2,
                                         s->sel.sel[l], err, err_size);
    if (st != DITATTN_OK) return st;
  }
  return DITATTN_OK;
}

/* Spec llsa.md §6, per head: pooling 3ND·b/(b−1); coarsest selection
 * 2D·n_L²; finer selection 2D·(candidates) per level; attention
 * 4ND·(K_1·b + Σ_{l<L} K_{l+1}·b + n_L). Block counts clamp K. */
static int llsa_branch_flops(const void *state, const dt_algo_problem *p, dt_algo_branch *out) {
  const llsa_state *s = state;
  const ditattn_llsa_params *prm = &s->params;
  const double N = (double)p->N, D = (double)p->D, b = (double)prm->block;
  const double heads = (double)p->B * (double)p->H;
  const int L = prm->levels;
  double n_L = (double)blocks_at(p->N, prm->block, L);
  double pooling = 3.0 * N * D * b / (b - 1.0);
  double selection = 2.0 * D * n_L * n_L;
  double keys = n_L;
  for (int l = 1; l <= L; l++) {
    double n_l = (double)blocks_at(p->N, prm->block, l);
    double k_l = (double)prm->topk[l - 1] < n_l ? (double)prm->topk[l - 1] : n_l;
    keys += k_l * b; /* K_l selected blocks of b tokens (fine tokens or level-(l−1) pooled) */
    if (l < L) {
      double n_up = (double)blocks_at(p->N, prm->block, l + 1);
      double k_up = (double)prm->topk[l] < n_up ? (double)prm->topk[l] : n_up;
      selection += 2.0 * D * n_l * k_up * b; /* scores of level-l candidates */
    }
  }
  out[0] = (dt_algo_branch){"attention", 4.0 * N * D * keys * heads};
  out[1] = (dt_algo_branch){"pooling", pooling * heads};
  out[2] = (dt_algo_branch){"selection", selection * heads};
  return 3;
}

static double llsa_flops(const void *state, const dt_algo_problem *p) {
  dt_algo_branch br[DT_ALGO_MAX_BRANCHES] = {0};
  const int n = llsa_branch_flops(state, p, br);
  double flops = 0.0;
  for (int i = 0; i < n; i++) flops += br[i].flops;
  return flops;
}

static void llsa_describe(const void *state, char *buf, size_t size) {
  const llsa_state *s = state;
  int n = snprintf(buf, size, "b=%lld L=%d K=", (long long)s->params.block, s->params.levels);
  for (int l = 0; l < s->params.levels && n > 0 && (size_t)n < size; l++)
    n += snprintf(buf + n, size - (size_t)n, "%s%lld", l ? "," : "", (long long)s->params.topk[l]);
}

static void llsa_release(void *state, ditattn_context *ctx) {
  (void)ctx;
  llsa_state *s = state;
  for (int l = 0; l < DITATTN_LLSA_MAX_LEVELS; l++) {
    free(s->sel.sel[l]);
    s->sel.sel[l] = NULL;
  }
}

const dt_algo dt_algo_llsa = {
    .name = "llsa",
    .summary = "log-linear sparse attention (hierarchical top-K over pooled blocks)",
    .options_help = "  --block B           block size b >= 2 (default 16)\n"
                    "  --levels L          hierarchy levels (default 2, or the count of --topk)\n"
                    "  --topk K1,..,KL     blocks kept per level, finest first (default 8 each)\n"
                    "  --sel-prefix P      (run) write selections to P1.npy .. PL.npy (int32,\n"
                    "                      [B,H,n_l,K_l] or [n_l,K_l]; -1 pads missing entries)\n",
    .state_size = sizeof(llsa_state),
    .init = llsa_init,
    .parse_option = llsa_parse_option,
    .prepare = llsa_prepare,
    .run = llsa_run,
    .write_extras = llsa_write_extras,
    .flops = llsa_flops,
    .describe = llsa_describe,
    .release = llsa_release,
    .branch_flops = llsa_branch_flops,
};
