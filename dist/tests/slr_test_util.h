/* RoPeSLR problems for the dist tests (test_dist_ropeslr.c and
 * test_dist_ropeslr_backward.c): a case's shape and parameters, its random
 * weights and positions. */
#ifndef DITATTN_DIST_SLR_TEST_UTIL_H
#define DITATTN_DIST_SLR_TEST_UTIL_H

#include "dist_test_util.h"

enum { POS_NULL = 0, POS_MORTON = 1, POS_RANDOM = 2 };
extern const char *const slr_pos_names[3];

typedef struct slr_case {
  int64_t B, H, N, D, pad;
  int bnhd, reversed;
  int64_t block;
  ditattn_slr_policy policy;
  double rho; /* sqrt_c for the SQRT policy */
  int64_t topk;
  int force_own;
  int64_t rank;
  ditattn_slr_feature feature;
  int64_t grid[3];
  int pos_mode; /* N = T·H·W unless POS_RANDOM */
} slr_case;

/* The cases both RoPeSLR tests run (*count of them): uneven shapes, every
 * policy, both features, force_own 0/1, b = 1, b > N, rho = 1 (empty
 * background), r > D, strided and DiT layouts, reversed slices, NULL /
 * Morton / random positions. */
const slr_case *slr_test_cases(int *count);

/* The small case of the error tests: B = 1, H = 2, N = 45, D = 8, b = 4,
 * FIXED_K 3, own block, r = 5, ELU1, grid 3×3×5, Morton positions. */
slr_case slr_fault_case(void);

/* Weights (1, H, rows, cols), contiguous, random and nonzero (W included). */
typedef struct slr_weights {
  dtu_tensor t[6];
  ditattn_ropeslr_weights w;
} slr_weights;

slr_weights slr_weights_new(const slr_case *c, dtu_rng *rng);
/* Tensors of the weights' shapes filled with NaN (gradient outputs). */
slr_weights slr_weights_poisoned(const slr_case *c);
void slr_weights_free(slr_weights *sw);
ditattn_ropeslr_params slr_params_of(const slr_case *c);
/* Whole-sequence positions, malloc'd (NULL for raster order). */
int32_t *slr_positions(const slr_case *c, dtu_rng *rng);

#endif
