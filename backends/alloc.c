/* Every library allocation passes here, so tests can fail the k-th one and
 * check that no error path leaks or reports partial output as success. */
#include "backend.h"

#include <stdatomic.h>
#include <stdlib.h>

static _Atomic int64_t alloc_count;   /* allocations since the last dt_debug_fail_alloc_at */
static _Atomic int64_t alloc_fail_at; /* 1-based index of the allocation to fail; 0 = never */

static int should_fail(void) {
  int64_t index = atomic_fetch_add(&alloc_count, 1) + 1;
  int64_t fail_at = atomic_load(&alloc_fail_at);
  return fail_at > 0 && index == fail_at;
}

void *dt_malloc(size_t bytes) {
  if (should_fail()) return NULL;
  return malloc(bytes ? bytes : 1);
}

void *dt_calloc(size_t count, size_t size) {
  if (should_fail()) return NULL;
  return calloc(count ? count : 1, size ? size : 1);
}

void dt_free(void *ptr) { free(ptr); }

int64_t dt_debug_fail_alloc_at(int64_t k) {
  int64_t seen = atomic_exchange(&alloc_count, 0);
  atomic_store(&alloc_fail_at, k > 0 ? k : 0);
  return seen;
}

int dt_mul_size(size_t a, size_t b, size_t *out) {
  if (a != 0 && b > SIZE_MAX / a) return 0;
  *out = a * b;
  return 1;
}
