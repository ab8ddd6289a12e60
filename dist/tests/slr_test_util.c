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

/* Short names for the table's columns. */
#define KF  DITATTN_SLR_KEEP_FRACTION
#define FK  DITATTN_SLR_FIXED_K
#define SQ  DITATTN_SLR_SQRT
#define ELU DITATTN_SLR_FEATURE_ELU1
#define SMX DITATTN_SLR_FEATURE_SOFTMAX

const slr_case *slr_test_cases(int *count) {
  static const slr_case cases[] = {
      /* B  H    N   D pad bnhd rev  b  policy rho K own  r  feature  grid  pos */
      {1, 1, 30, 8, 0, 0, 0, 4, KF, 0.3, 0, 1, 4, ELU, {2, 3, 5}, POS_NULL},
      {2, 2, 64, 16, 2, 1, 0, 8, FK, 0.0, 3, 0, 8, SMX, {4, 4, 4}, POS_MORTON},
      {1, 3, 101, 12, 1, 0, 1, 5, KF, 0.2, 0, 1, 20, ELU, {3, 5, 7}, POS_RANDOM},
      {1, 1, 97, 32, 0, 0, 0, 16, FK, 0.0, 2, 1, 16, SMX, {2, 8, 8}, POS_RANDOM},
      {1, 2, 48, 8, 0, 1, 1, 1, KF, 0.1, 0, 0, 3, ELU, {3, 4, 4}, POS_NULL},
      {1, 1, 40, 8, 0, 0, 0, 64, KF, 0.1, 0, 1, 6, SMX, {2, 4, 5}, POS_RANDOM},
      {1, 1, 50, 8, 0, 0, 0, 7, KF, 1.0, 0, 1, 5, ELU, {2, 5, 5}, POS_NULL},
      {1, 2, 256, 64, 0, 1, 0, 16, KF, 0.25, 0, 1, 32, ELU, {4, 8, 8}, POS_MORTON},
      {2, 1, 90, 16, 3, 0, 1, 6, FK, 0.0, 4, 0, 12, SMX, {2, 5, 9}, POS_NULL},
      {1, 2, 120, 8, 0, 0, 0, 3, SQ, 0.7, 0, 1, 6, ELU, {3, 6, 6}, POS_RANDOM},
  };

  *count = (int)(sizeof cases / sizeof cases[0]);
  return cases;
}
#undef KF
#undef FK
#undef SQ
#undef ELU
#undef SMX

slr_case slr_fault_case(void) {
  const slr_case c = {.B = 1,
                      .H = 2,
                      .N = 45,
                      .D = 8,
                      .block = 4,
                      .policy = DITATTN_SLR_FIXED_K,
                      .rho = 0.1,
                      .topk = 3,
                      .force_own = 1,
                      .rank = 5,
                      .feature = DITATTN_SLR_FEATURE_ELU1,
                      .grid = {3, 3, 5},
                      .pos_mode = POS_MORTON};
  return c;
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
