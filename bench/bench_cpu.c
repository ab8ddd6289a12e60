/* CPU backend benchmark (issue 4): one program, several sections.
 *   bench_cpu all [--quick]   sections 1-4 and 6, tables on stdout,
 *                             scaling rows also as CSV (--csv PATH)
 *   bench_cpu backward N      forward and backward times, dense (N <= 16384) and LLSA
 *   bench_cpu ropeslr T       RoPeSLR forward on a T×32×32 grid, CPU vs ref
 *   bench_cpu memory dense|llsa N
 *                             one call at N tokens (D = 64, one head), then
 *                             the process's peak RSS (getrusage)
 * D = 64, B = 1, H = 1 (video-like token counts: T·H·W grids), inputs
 * uniform in [-1, 1). Times are the best of a few repetitions. */
#include "bench_cpu_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifdef DITATTN_BENCH_OPENBLAS
#include <cblas.h>
#endif

enum { D = 64 };

static uint64_t rng_state = 0x9e3779b97f4a7c15ull; /* inputs: the same every run */
static const char *const PROG = "bench_cpu";

/* One self-attention problem of N tokens, one head. */
typedef struct problem {
  int64_t N;
  float *q, *k, *v, *out, *lse;
} problem;

static problem problem_new(int64_t N) {
  problem p = {N,
               bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f),
               bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f),
               bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f),
               bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f),
               bench_rand_buf(PROG, &rng_state, (size_t)N, 1.0f)};
  return p;
}

static void problem_free(problem *p) {
  free(p->q);
  free(p->k);
  free(p->v);
  free(p->out);
  free(p->lse);
}

static ditattn_context *context(ditattn_backend backend, int threads) {
  ditattn_context *ctx = NULL;
  if (ditattn_context_create(backend, &ctx) != DITATTN_OK) {
    fprintf(stderr, "bench_cpu: backend %s not compiled\n", ditattn_backend_name(backend));
    exit(1);
  }
  bench_check(PROG, ditattn_context_set_num_threads(ctx, threads), ctx, "set_num_threads");
  return ctx;
}

static ditattn_llsa_params llsa_params(void) {
  ditattn_llsa_params prm = ditattn_llsa_params_default(); /* b = 16, L = 2, K = (8, 8) */
  return prm;
}

/* Seconds of one call (dense or LLSA). */
static double run_once(ditattn_context *ctx, const problem *p, int llsa, float *out) {
  ditattn_tensor q = ditattn_tensor_bhnd(p->q, DITATTN_F32, 1, 1, p->N, D);
  ditattn_tensor k = ditattn_tensor_bhnd(p->k, DITATTN_F32, 1, 1, p->N, D);
  ditattn_tensor v = ditattn_tensor_bhnd(p->v, DITATTN_F32, 1, 1, p->N, D);
  ditattn_tensor o = ditattn_tensor_bhnd(out, DITATTN_F32, 1, 1, p->N, D);
  const double t0 = bench_now_s();
  if (llsa) {
    ditattn_llsa_params prm = llsa_params();
    bench_check(PROG, ditattn_llsa_forward(ctx, &prm, &q, &k, &v, &o, p->lse, NULL), ctx,
                "llsa_forward");
  } else {
    bench_check(PROG, ditattn_dense_forward(ctx, &q, &k, &v, 0.0f, &o, p->lse), ctx,
                "dense_forward");
  }
  return bench_now_s() - t0;
}

/* Best of `reps` calls, but stop repeating once `budget_s` is spent. */
static double run_best(ditattn_context *ctx, const problem *p, int llsa, int reps,
                       double budget_s) {
  double best = INFINITY, spent = 0.0;
  for (int r = 0; r < reps && (r == 0 || spent < budget_s); r++) {
    const double t = run_once(ctx, p, llsa, p->out);
    spent += t;
    if (t < best) best = t;
  }
  return best;
}

static double dense_flops(int64_t N) { return 4.0 * (double)N * (double)N * D; }

/* §6 of the LLSA spec: attention 4ND·(K1·b + K2·b + n_L) + pooling and selection. */
static double llsa_flops(int64_t N) {
  const double b = 16, nL = ceil((double)N / 256.0), n1 = ceil((double)N / 16.0);
  return 4.0 * N * D * (8 * b + 8 * b + nL) + 3.0 * N * D * b / (b - 1) + 2.0 * D * nL * nL +
         2.0 * n1 * 8 * b * D;
}

static double rel_err(const float *a, const float *b, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return sqrt(num / (den > 0.0 ? den : 1.0));
}

#ifdef DITATTN_BENCH_OPENBLAS
/* GFLOP/s of a row-major SGEMM m×n×k with OpenBLAS's own threads. */
static double sgemm_gflops(int64_t m, int64_t n, int64_t k, int threads) {
  float *a = bench_rand_buf(PROG, &rng_state, (size_t)(m * k), 1.0f),
        *b = bench_rand_buf(PROG, &rng_state, (size_t)(k * n), 1.0f),
        *c = bench_rand_buf(PROG, &rng_state, (size_t)(m * n), 1.0f);
  openblas_set_num_threads(threads);
  double best = INFINITY;
  for (int r = 0; r < 5; r++) {
    const double t0 = bench_now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)m, (blasint)n, (blasint)k, 1.0f,
                a, (blasint)k, b, (blasint)k, 0.0f, c, (blasint)n);
    const double t = bench_now_s() - t0;
    if (t < best) best = t;
  }
  free(a);
  free(b);
  free(c);
  return 2.0 * (double)m * (double)n * (double)k / best * 1e-9;
}
#endif

/* RoPeSLR forward (defaults: b = 64, rho = 0.1, r = 64) on a T×32×32 grid, CPU vs ref. */
static void ropeslr_vs_ref(int64_t T, int threads) {
  const int64_t N = T * 32 * 32, r = 64;
  ditattn_ropeslr_params prm = ditattn_ropeslr_params_default();
  prm.rank = r;
  prm.grid[0] = T;
  prm.grid[1] = prm.grid[2] = 32;
  const int64_t rows[6] = {D, D, T, 32, 32, D}, cols[6] = {r, r, r, r, r, D};
  float *wbuf[6];
  ditattn_tensor wt[6];
  for (int a = 0; a < 6; a++) {
    wbuf[a] = bench_rand_buf(PROG, &rng_state, (size_t)(rows[a] * cols[a]), 1.0f);
    for (int64_t i = 0; i < rows[a] * cols[a]; i++) wbuf[a][i] *= 0.1f;
    wt[a] = ditattn_tensor_bhnd(wbuf[a], DITATTN_F32, 1, 1, rows[a], cols[a]);
  }
  ditattn_ropeslr_weights w = {wt[0], wt[1], wt[2], wt[3], wt[4], wt[5]};
  problem p = problem_new(N);
  float *ref_out = bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f);
  ditattn_tensor q = ditattn_tensor_bhnd(p.q, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor k = ditattn_tensor_bhnd(p.k, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor v = ditattn_tensor_bhnd(p.v, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor o = ditattn_tensor_bhnd(p.out, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor ro = ditattn_tensor_bhnd(ref_out, DITATTN_F32, 1, 1, N, D);
  ditattn_context *ref = context(DITATTN_BACKEND_REF, 1),
                  *cpu = context(DITATTN_BACKEND_CPU, threads);
  double t0 = bench_now_s();
  bench_check(PROG, ditattn_ropeslr_forward(ref, &prm, &w, NULL, &q, &k, &v, &ro, NULL, NULL), ref,
              "ropeslr");
  const double tr = bench_now_s() - t0;
  double tc = INFINITY;
  for (int rep = 0; rep < 3; rep++) {
    t0 = bench_now_s();
    bench_check(PROG, ditattn_ropeslr_forward(cpu, &prm, &w, NULL, &q, &k, &v, &o, NULL, NULL), cpu,
                "ropeslr");
    const double t = bench_now_s() - t0;
    tc = t < tc ? t : tc;
  }
  printf("%-8s %8lld %12.4f %12.4f %8.1fx %12.2e   (b=64, rho=0.1, r=64)\n", "ropeslr",
         (long long)N, tr, tc, tr / tc, rel_err(p.out, ref_out, (size_t)N * D));
  for (int a = 0; a < 6; a++) free(wbuf[a]);
  free(ref_out);
  problem_free(&p);
  ditattn_context_destroy(ref);
  ditattn_context_destroy(cpu);
}

static int cmd_all(int quick, const char *csv_path, int threads) {
  printf("# ditattn CPU backend benchmark: D = %d, one head, f32, %d threads (unless stated)\n", D,
         threads);
  ditattn_context *cpu = context(DITATTN_BACKEND_CPU, threads);

  /* (1) dense GFLOP/s vs OpenBLAS SGEMM in the same run. */
  printf("\n## (1) dense attention vs OpenBLAS SGEMM (%d threads)\n", threads);
#ifdef DITATTN_BENCH_OPENBLAS
  printf("openblas: %s, core %s\n", openblas_get_config(), openblas_get_corename());
  const double g_square = sgemm_gflops(2048, 2048, 2048, threads);
  const double g_qk = sgemm_gflops(8192, 8192, D, threads);
  printf("%-44s %10.1f GFLOP/s\n", "SGEMM 2048x2048x2048", g_square);
  printf("%-44s %10.1f GFLOP/s\n", "SGEMM 8192x8192x64 (the QK^T shape)", g_qk);
#else
  const double g_square = NAN, g_qk = NAN;
  printf("(built without OpenBLAS: no SGEMM baseline)\n");
#endif
  {
    problem p = problem_new(8192);
    const double t = run_best(cpu, &p, 0, 3, 10.0);
    const double gf = dense_flops(p.N) / t * 1e-9;
    printf("%-44s %10.1f GFLOP/s  (%.3f s)\n", "dense forward N=8192", gf, t);
    printf("dense / SGEMM(2048^3) = %.2f   dense / SGEMM(8192x8192x64) = %.2f   (target >= 0.5)\n",
           gf / g_square, gf / g_qk);
    problem_free(&p);
  }

  /* (2) LLSA vs dense. */
  printf("\n## (2) LLSA (b=16, L=2, K=8) vs CPU dense\n");
  printf("%8s %12s %12s %9s %10s\n", "N", "dense s", "llsa s", "speedup", "target");
  const int64_t cmp_n[2] = {16384, 65536};
  const double cmp_target[2] = {10, 40};
  for (int i = 0; i < 2; i++) {
    problem p = problem_new(cmp_n[i]);
    const double td = run_best(cpu, &p, 0, quick ? 1 : 2, 5.0);
    const double tl = run_best(cpu, &p, 1, 7, 3.0);
    printf("%8lld %12.4f %12.4f %8.1fx %9.0fx\n", (long long)p.N, td, tl, td / tl, cmp_target[i]);
    problem_free(&p);
  }

  /* (3) CPU vs ref on the same inputs. */
  printf("\n## (3) CPU backend vs ref/ (same inputs; ref is scalar double, 1 thread)\n");
  printf("%-8s %8s %12s %12s %9s %12s\n", "op", "N", "ref s", "cpu s", "speedup", "rel err");
  {
    ditattn_context *ref = context(DITATTN_BACKEND_REF, 1);
    const int64_t ns[2] = {2048, 8192};
    for (int llsa = 0; llsa <= 1; llsa++) {
      problem p = problem_new(ns[llsa]);
      float *ref_out = bench_rand_buf(PROG, &rng_state, (size_t)p.N * D, 1.0f);
      const double tr = run_once(ref, &p, llsa, ref_out);
      const double tc = run_best(cpu, &p, llsa, 3, 3.0);
      printf("%-8s %8lld %12.4f %12.4f %8.1fx %12.2e\n", llsa ? "llsa" : "dense", (long long)p.N,
             tr, tc, tr / tc, rel_err(p.out, ref_out, (size_t)p.N * D));
      free(ref_out);
      problem_free(&p);
    }
    ditattn_context_destroy(ref);
    ropeslr_vs_ref(4, threads);
  }

  /* (4) thread scaling. */
  printf("\n## (4) 2 threads vs 1 (target >= 1.8x)\n");
  printf("%-8s %8s %12s %12s %9s\n", "op", "N", "1 thread s", "2 threads s", "speedup");
  {
    ditattn_context *one = context(DITATTN_BACKEND_CPU, 1), *two = context(DITATTN_BACKEND_CPU, 2);
    const int64_t ns[2] = {8192, 65536};
    for (int llsa = 0; llsa <= 1; llsa++) {
      problem p = problem_new(ns[llsa]);
      /* Alternate the two so that a burst of load elsewhere hits both alike. */
      double t1 = INFINITY, t2 = INFINITY;
      for (int r = 0; r < (llsa ? 4 : 2); r++) {
        const double a = run_best(one, &p, llsa, 2, 5.0), b = run_best(two, &p, llsa, 2, 5.0);
        t1 = a < t1 ? a : t1;
        t2 = b < t2 ? b : t2;
      }
      printf("%-8s %8lld %12.4f %12.4f %8.2fx\n", llsa ? "llsa" : "dense", (long long)p.N, t1, t2,
             t1 / t2);
      problem_free(&p);
    }
    ditattn_context_destroy(one);
    ditattn_context_destroy(two);
  }

  /* (6) growth with N. */
  printf("\n## (6) time vs N (forward, %d threads); 'extrap' = dense time extrapolated as N^2 "
         "from the largest measured N, not measured\n",
         threads);
  printf("%8s %12s %8s %12s %12s %12s\n", "N", "dense s", "kind", "dense GF/s", "llsa s",
         "llsa GF/s");
  FILE *csv = csv_path ? fopen(csv_path, "w") : NULL;
  if (csv) fprintf(csv, "N,dense_s,dense_kind,llsa_s\n");
  const int64_t dense_max = quick ? 16384 : 131072;
  double last_dense = 0.0;
  int64_t last_n = 0;
  for (int64_t N = 4096; N <= 262144; N *= 2) {
    problem p = problem_new(N);
    double td;
    const char *kind = "measured";
    if (N <= dense_max) {
      td = run_best(cpu, &p, 0, N <= 16384 ? 3 : 1, 2.0);
      last_dense = td;
      last_n = N;
    } else {
      td = last_dense * ((double)N / (double)last_n) * ((double)N / (double)last_n);
      kind = "extrap";
    }
    const double tl = run_best(cpu, &p, 1, 7, 2.0);
    printf("%8lld %12.4f %8s %12.1f %12.4f %12.1f\n", (long long)N, td, kind,
           dense_flops(N) / td * 1e-9, tl, llsa_flops(N) / tl * 1e-9);
    if (csv) fprintf(csv, "%lld,%.6f,%s,%.6f\n", (long long)N, td, kind, tl);
    problem_free(&p);
  }
  if (csv) fclose(csv);
  ditattn_context_destroy(cpu);
  return 0;
}

static int cmd_memory(const char *what, int64_t N, int threads) {
  const int llsa = strcmp(what, "llsa") == 0;
  ditattn_context *cpu = context(DITATTN_BACKEND_CPU, threads);
  problem p = problem_new(N);
  const double t = run_once(cpu, &p, llsa, p.out);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  const double inputs_mib = 4.0 * (double)N * D * sizeof(float) / 1048576.0;
  printf("%-6s N=%lld: %.2f s, peak RSS %.1f MiB (q, k, v, out themselves: %.1f MiB)\n",
         llsa ? "llsa" : "dense", (long long)N, t, (double)ru.ru_maxrss / 1024.0, inputs_mib);
  problem_free(&p);
  ditattn_context_destroy(cpu);
  return 0;
}

/* Forward and backward times of dense (N <= 16384) and LLSA at N tokens. */
static int cmd_backward(int64_t N, int threads) {
  ditattn_context *cpu = context(DITATTN_BACKEND_CPU, threads);
  problem p = problem_new(N);
  float *dout = bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f),
        *dq = bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f);
  float *dk = bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f),
        *dv = bench_rand_buf(PROG, &rng_state, (size_t)N * D, 1.0f);
  ditattn_tensor q = ditattn_tensor_bhnd(p.q, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor k = ditattn_tensor_bhnd(p.k, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor v = ditattn_tensor_bhnd(p.v, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor o = ditattn_tensor_bhnd(p.out, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor g = ditattn_tensor_bhnd(dout, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor tq = ditattn_tensor_bhnd(dq, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor tk = ditattn_tensor_bhnd(dk, DITATTN_F32, 1, 1, N, D);
  ditattn_tensor tv = ditattn_tensor_bhnd(dv, DITATTN_F32, 1, 1, N, D);
  printf("%-6s %8s %12s %12s %14s\n", "op", "N", "forward s", "backward s", "bwd GFLOP/s");
  for (int llsa = N > 16384; llsa <= 1; llsa++) {
    const double tf = run_best(cpu, &p, llsa, 3, 5.0);
    double tb = INFINITY;
    for (int r = 0; r < 3; r++) {
      const double t0 = bench_now_s();
      if (llsa) {
        ditattn_llsa_params prm = llsa_params();
        bench_check(PROG,
                    ditattn_llsa_backward(cpu, &prm, &q, &k, &v, &o, p.lse, &g, &tq, &tk, &tv), cpu,
                    "llsa_backward");
      } else {
        bench_check(PROG,
                    ditattn_dense_backward(cpu, &q, &k, &v, &o, p.lse, &g, 0.0f, &tq, &tk, &tv),
                    cpu, "dense_backward");
      }
      const double t = bench_now_s() - t0;
      tb = t < tb ? t : tb;
    }
    /* Backward ≈ 2.5× the forward's FLOPs (5 matrix products instead of 2). */
    const double flops = 2.5 * (llsa ? llsa_flops(N) : dense_flops(N));
    printf("%-6s %8lld %12.4f %12.4f %14.1f\n", llsa ? "llsa" : "dense", (long long)N, tf, tb,
           flops / tb * 1e-9);
  }
  free(dout);
  free(dq);
  free(dk);
  free(dv);
  problem_free(&p);
  ditattn_context_destroy(cpu);
  return 0;
}

int main(int argc, char **argv) {
  int threads = 2;
  const char *env = getenv("DITATTN_BENCH_THREADS");
  if (env) threads = atoi(env);
  if (argc >= 2 && strcmp(argv[1], "all") == 0) {
    int quick = 0;
    const char *csv = NULL;
    for (int i = 2; i < argc; i++) {
      if (strcmp(argv[i], "--quick") == 0)
        quick = 1;
      else if (strcmp(argv[i], "--csv") == 0 && i + 1 < argc)
        csv = argv[++i];
    }
    return cmd_all(quick, csv, threads);
  }
  if (argc == 4 && strcmp(argv[1], "memory") == 0)
    return cmd_memory(argv[2], strtoll(argv[3], NULL, 10), threads);
  if (argc == 3 && strcmp(argv[1], "ropeslr") == 0) {
    ropeslr_vs_ref(strtoll(argv[2], NULL, 10), threads);
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "backward") == 0)
    return cmd_backward(strtoll(argv[2], NULL, 10), threads);
  fprintf(stderr, "usage: bench_cpu all [--quick] [--csv PATH] | bench_cpu memory dense|llsa N\n"
                  "       bench_cpu backward N | bench_cpu ropeslr T (grid T x 32 x 32)\n"
                  "  threads: DITATTN_BENCH_THREADS (default 2)\n");
  return 2;
}
