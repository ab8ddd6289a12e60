#include "slr_test_util.h"

#include <math.h>
#include <stdlib.h>

const char *const slr_pos_names[3] = {"NULL", "morton", "random"};

static slr_weights weights_of(const slr_case *c, dtu_rng *rng) {
  slr_weights sw;
  const int64_t rows[6] = {c->D, c->D, c->grid[0], c->grid[1], c->grid[2], c->D};
  const int64_t cols[6] = {c->rank, c->rank, c->rank, c->rank, c->rank, c->D};
  for (int a = 0; a < 6; a++) {
    sw.t[a] = dtu_tensor_new(1, c->H, rows[a], cols[a], 0, 0); /* NaN */
    const double amp = (a < 2 || a == 5) ? 1.0 / sqrt((double)c->D) : 0.5;
    for (size_t i = 0; rng && i < sw.t[a].count; i++)
      sw.t[a].buf[i] = (float)dtu_uniform(rng, -amp, amp);
  }
  sw.w =
      (ditattn_ropeslr_weights){sw.t[0].t, sw.t[1].t, sw.t[2].t, sw.t[3].t, sw.t[4].t, sw.t[5].t};
  return sw;
}

slr_weights slr_weights_new(const slr_case *c, dtu_rng *rng) { return weights_of(c, rng); }

slr_weights slr_weights_poisoned(const slr_case *c) { return weights_of(c, NULL); }

void slr_weights_free(slr_weights *sw) {
  for (int a = 0; a < 6; a++) dtu_tensor_free(&sw->t[a]);
}

ditattn_ropeslr_params slr_params_of(const slr_case *c) {
  ditattn_ropeslr_params p = ditattn_ropeslr_params_default();
  p.block = c->block;
  p.policy = c->policy;
  p.rho = c->rho;
  if (c->policy == DITATTN_SLR_SQRT) p.sqrt_c = c->rho; /* the case's rho column holds sqrt_c */
  p.topk = c->topk;
  p.force_own_block = c->force_own;
  p.rank = c->rank;
  p.feature = c->feature;
  for (int a = 0; a < 3; a++) p.grid[a] = c->grid[a];
  return p;
}

int32_t *slr_positions(const slr_case *c, dtu_rng *rng) {
  if (c->pos_mode == POS_NULL) return NULL;
  int32_t *pos = malloc((size_t)c->N * 3 * sizeof(int32_t));
  if (!pos) {
    dtu_check(0, "positions of %lld tokens: out of memory", (long long)c->N);
    return NULL;
  }
  if (c->pos_mode == POS_MORTON) {
    ditattn_order_params op = {
        DITATTN_ORDER_MORTON, {c->grid[0], c->grid[1], c->grid[2]}, {1, 1, 1}};
    if (ditattn_order_positions(&op, pos) != DITATTN_OK) dtu_check(0, "morton positions failed");
  } else {
    for (int64_t i = 0; i < 3 * c->N; i++) pos[i] = (int32_t)dtu_int(rng, 0, c->grid[i % 3] - 1);
  }
  return pos;
}
