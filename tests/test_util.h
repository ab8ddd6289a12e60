/* Shared helpers for the CMocka tests: seeded random data, poisoned outputs,
 * relative errors that never let NaN pass, strided tensor allocation. */
#ifndef DITATTN_TEST_UTIL_H
#define DITATTN_TEST_UTIL_H

#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ditattn/ditattn.h"

/* Seed from DITATTN_TEST_SEED or the clock; printed to stderr once. */
uint64_t tu_seed(void);
/* Re-seeds the generator (each test calls tu_seed once at start). */
void tu_srand(uint64_t seed);
uint64_t tu_rand_u64(void);
/* Uniform in [lo, hi). */
double tu_uniform(double lo, double hi);
/* Uniform integer in [lo, hi]. */
int64_t tu_rand_int(int64_t lo, int64_t hi);

/* A context of `backend` with num_threads threads (0: the backend's
 * default); fails the test if either call fails. */
ditattn_context *tu_context_new(ditattn_backend backend, int num_threads);

/* A host f32 tensor that owns its buffer. `pad` extra elements per token row
 * (stride[2] = D + pad) exercise strided layouts; layout_bnhd picks the DiT
 * layout. The buffer is filled with NaN (poison). */
typedef struct tu_tensor {
  ditattn_tensor t;
  float *buf;
  size_t count; /* floats in buf */
} tu_tensor;
tu_tensor tu_tensor_new(int64_t B, int64_t H, int64_t N, int64_t D, int64_t pad, int layout_bnhd);
void tu_tensor_free(tu_tensor *t);
/* Fills every element of the view with uniform [-1, 1) (padding stays NaN). */
void tu_fill_uniform(tu_tensor *t);
void tu_poison(tu_tensor *t);
void tu_poison_floats(float *x, size_t n);
/* ‖a − b‖ / ‖b‖ over the view's elements; +inf if any NaN/Inf appears or an
 * element of a is still poison. */
double tu_rel_err(const ditattn_tensor *a, const ditattn_tensor *b);
double tu_rel_err_floats(const float *a, const float *b, size_t n);
/* Element (b,h,n,d) of an f32 view. */
float *tu_at(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n, int64_t d);

#endif
