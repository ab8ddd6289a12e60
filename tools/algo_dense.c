/* `--algo dense`: exact softmax attention, the baseline of every comparison. */
#include "algos.h"

static ditattn_status dense_run(void *state, const dt_algo_problem *p, const dt_algo_io *io) {
  (void)state;
  return ditattn_dense_forward(io->ctx, io->q, io->k, io->v, p->scale, io->out, io->lse);
}

/* Spec llsa.md §6: dense attention 4·N²·D per head. */
static double dense_flops(const void *state, const dt_algo_problem *p) {
  (void)state;
  return 4.0 * (double)p->N * (double)p->N * (double)p->D * (double)p->B * (double)p->H;
}

static int dense_branch_flops(const void *state, const dt_algo_problem *p, dt_algo_branch *out) {
  out[0] = (dt_algo_branch){"attention", dense_flops(state, p)};
  return 1;
}

const dt_algo dt_algo_dense = {
    .name = "dense",
    .summary = "exact softmax attention (the baseline)",
    .options_help = "",
    .state_size = 1,
    .run = dense_run,
    .flops = dense_flops,
    .branch_flops = dense_branch_flops,
};
