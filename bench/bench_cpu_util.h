/* Helpers shared by the CPU benchmark programs: wall clock, reproducible
 * inputs and fail-fast checks (a benchmark may print and exit; the library
 * never does). Header-only: each bench is one source file. */
#ifndef DITATTN_BENCH_CPU_UTIL_H
#define DITATTN_BENCH_CPU_UTIL_H

#include "ditattn/ditattn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* xorshift64*, uniform in [-1, 1). */
static inline float bench_rand_unit(uint64_t *state) {
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return (float)((double)((*state * 0x2545f4914f6cdd1dull) >> 40) / (double)(1 << 24) * 2.0 - 1.0);
}

/* n floats amp·uniform[-1, 1) from *state; exits (naming prog) when out of memory. */
static inline float *bench_rand_buf(const char *prog, uint64_t *state, size_t n, float amp) {
  float *x = malloc(n * sizeof(float));
  if (!x) {
    fprintf(stderr, "%s: out of memory (%zu floats)\n", prog, n);
    exit(1);
  }
  for (size_t i = 0; i < n; i++) x[i] = amp * bench_rand_unit(state);
  return x;
}

/* Exits with the library's message when a call failed. */
static inline void bench_check(const char *prog, ditattn_status st, ditattn_context *ctx,
                               const char *what) {
  if (st != DITATTN_OK) {
    fprintf(stderr, "%s: %s failed: %s (%s)\n", prog, what, ditattn_strerror(st),
            ditattn_last_error(ctx));
    exit(1);
  }
}

#endif
