/* The command line and timer both GPU checkers share (bench/gpu_check.c,
 * bench/gpu_check_ropeslr.c): options, the loop over backends that runs a
 * checker's cases and timings, and the median of synchronized calls.
 *
 * Not a standalone header: each checker includes it after gpu_check.c's
 * harness (gc_env, gc_env_open, gc_check), in the part it compiles only
 * with a main (the CMocka tests that include the checkers leave it out). */
#ifndef DITATTN_BENCH_GPU_CHECK_DRIVER_H
#define DITATTN_BENCH_GPU_CHECK_DRIVER_H

/* ------------------------------------------------------------ timing */
static double gc_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static int gc_cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* One call to time, synchronized before it returns; 1 on success. */
typedef int (*gc_timed_call)(const void *arg);

/* Median seconds per call over `reps` calls (16 at most) after `warmups`
 * untimed ones; -1 if any call fails. */
static double gc_median_seconds(gc_timed_call call, const void *arg, int warmups, int reps) {
  double samples[16];
  if (reps > 16) reps = 16;
  for (int w = 0; w < warmups; w++)
    if (!call(arg)) return -1.0;
  for (int r = 0; r < reps; r++) {
    const double t0 = gc_now();
    if (!call(arg)) return -1.0;
    samples[r] = gc_now() - t0;
  }
  qsort(samples, (size_t)reps, sizeof(double), gc_cmp_double);
  return samples[reps / 2];
}

/* ------------------------------------------------------------ command line */
/* A checker's one list option ("--sides 128,256"): up to max
 * comma-separated integers into values, their count into *count. */
typedef struct gc_list_option {
  const char *flag;
  int64_t *values;
  int *count;
  int max;
} gc_list_option;

/* What one checker adds to the common options and loop. */
typedef struct gc_checker {
  const char *name; /* the first output line: "ditattn <version> <name> seed=S" */
  const gc_check *checks;
  int nchecks;
  int (*time_all)(gc_env *env); /* --time, --time-only */
  const gc_list_option *list;
  const char *usage; /* the options, after "usage: <program> " */
} gc_checker;

/* Parses the options, then on each chosen backend runs the checks, prints
 * "<backend>: C cases, F failed" and the timings if asked. Exit status: 0
 * all cases passed, 1 a case failed, 2 bad options or no usable backend. */
static int gc_checker_main(const gc_checker *checker, int argc, char **argv) {
  uint64_t seed = (uint64_t)time(NULL);
  int timing = 0, quiet = 0, only = -1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      seed = strtoull(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
      ditattn_backend be;
      if (ditattn_backend_parse(argv[++i], &be) != DITATTN_OK) {
        fprintf(stderr, "unknown backend %s\n", argv[i]);
        return 2;
      }
      only = (int)be;
    } else if (strcmp(argv[i], "--time") == 0) {
      timing = 1;
    } else if (strcmp(argv[i], "--time-only") == 0) {
      timing = 2;
    } else if (strcmp(argv[i], checker->list->flag) == 0 && i + 1 < argc) {
      const gc_list_option *list = checker->list;
      char *p = argv[++i];
      for (*list->count = 0; *list->count < list->max && *p;) {
        list->values[(*list->count)++] = strtoll(p, &p, 10);
        if (*p == ',') p++;
      }
    } else if (strcmp(argv[i], "--quiet") == 0) {
      quiet = 1;
    } else {
      fprintf(stderr, "usage: %s %s\n", argv[0], checker->usage);
      return 2;
    }
  }
  printf("ditattn %s %s seed=%llu\n", ditattn_version(), checker->name, (unsigned long long)seed);
  int used = 0, failures = 0;
  /* By default the GPU backends; --backend ref|cpu self-tests the harness. */
  for (int be = 0; be < DITATTN_BACKEND_COUNT; be++) {
    if (only >= 0 ? be != only : be != DITATTN_BACKEND_CUDA && be != DITATTN_BACKEND_HIP) continue;
    gc_env env;
    const char *why = "";
    if (!gc_env_open(&env, (ditattn_backend)be, seed, &why)) {
      printf("skip %-5s %s\n", ditattn_backend_name((ditattn_backend)be), why);
      continue;
    }
    used++;
    env.quiet = quiet;
    for (int c = 0; timing < 2 && c < checker->nchecks; c++) checker->checks[c].fn(&env);
    if (timing < 2) printf("%s: %d cases, %d failed\n", env.name, env.cases, env.failures);
    failures += env.failures;
    if (timing) {
      if (env.failures)
        printf("WARNING: %s failed checks above; timings follow anyway\n", env.name);
      checker->time_all(&env);
    }
    gc_env_close(&env);
  }
  if (!used) return 2;
  return failures ? 1 : 0;
}

#endif /* DITATTN_BENCH_GPU_CHECK_DRIVER_H */
