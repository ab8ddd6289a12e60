/* `ditattn bench --dist`: strong scaling of dist dense and LLSA forward.
 * One launch of P ranks times sub-communicators of 1, 2, 4, ... <= P ranks
 * (the same N split evenly), so parallel efficiency T1 / (p·Tp) comes from
 * one run. Ranks outside the timed group wait in a sleeping barrier so they
 * do not steal cores from the workers. Timing goes to stdout on rank 0. */
#define _POSIX_C_SOURCE 200809L /* setenv, nanosleep */
#include "dist_bench.h"
#include "dist_ropeslr_bench.h"

#include "ditattn/ditattn_dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bench_opts {
  int64_t N, D, H;
  int threads, reps;
  ditattn_backend backend;
  int dense, llsa;
  int max_p;
  int smooth;            /* inputs with positional structure (local selections) */
  const char *llsa_mode; /* ring, fetch, auto or both */
  const char *json;
  ditattn_dtype dtype; /* GPU backends: f32 or bf16 (host backends: f32) */
  int ropeslr;         /* --op ropeslr */
} bench_opts;

static void usage(void) {
  printf(
      "usage: mpiexec -n P ditattn bench --dist [options]\n"
      "  --op dense|llsa|ropeslr|all  (default all = dense and llsa)\n"
      "  --n N                 global tokens (default 131072)\n"
      "  --d D                 head dimension (default 64)\n"
      "  --heads H             heads, B = 1 (default 1)\n"
      "  --backend ref|cpu|cuda|hip  (default cpu); cuda/hip: one GPU per rank\n"
      "                        (node-local rank modulo the device count)\n"
      "  --dtype f32|bf16      GPU backends: element type of q, k, v, out (default f32)\n"
      "  --threads T           threads per rank (default 1)\n"
      "  --reps R              repetitions, best kept (default 1)\n"
      "  --max-p P             largest group timed (default: all ranks)\n"
      "  --input random|smooth uniform random q, k, v (default), or q, k with positional\n"
      "                        structure (nearby tokens score high: local LLSA selections)\n"
      "  --json FILE           also write the results as JSON (rank 0)\n"
      "Times groups of 1, 2, 4, ... ranks (up to P) on the same problem: wall time (slowest\n"
      "rank), parallel efficiency T1/(p*Tp), share of wall time waiting on communication\n"
      "(mean over ranks), bytes sent per rank, and for LLSA fetch/ring: the K/V bytes of only\n"
      "the selected blocks vs all the ring moves (max over ranks). LLSA: b = 16, L = 2, K = 8.\n"
      "RoPeSLR: b = 64, rho = 0.1, r = 64, random weights, frames of 32x32 tokens; its fetch/ring\n"
      "column: the K/V bytes it fetched vs what the ring would move (max over ranks, as LLSA).\n");
}

static int bench_is_gpu(const bench_opts *o) {
  return o->backend == DITATTN_BACKEND_CUDA || o->backend == DITATTN_BACKEND_HIP;
}

static int parse(int argc, char **argv, bench_opts *o) {
  *o = (bench_opts){131072, 64, 1, 1,      1,    DITATTN_BACKEND_CPU, 1,
                    1,      0,  0, "both", NULL, DITATTN_F32,         0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
    if (!val) return -1;
    if (!strcmp(a, "--op")) {
      o->dense = !strcmp(val, "dense") || !strcmp(val, "all");
      o->llsa = !strcmp(val, "llsa") || !strcmp(val, "all");
      o->ropeslr = !strcmp(val, "ropeslr");
      if (!o->dense && !o->llsa && !o->ropeslr) return -1;
    } else if (!strcmp(a, "--n"))
      o->N = strtoll(val, NULL, 10);
    else if (!strcmp(a, "--d"))
      o->D = strtoll(val, NULL, 10);
    else if (!strcmp(a, "--heads"))
      o->H = strtoll(val, NULL, 10);
    else if (!strcmp(a, "--threads"))
      o->threads = atoi(val);
    else if (!strcmp(a, "--reps"))
      o->reps = atoi(val);
    else if (!strcmp(a, "--max-p"))
      o->max_p = atoi(val);
    else if (!strcmp(a, "--backend")) {
      if (ditattn_backend_parse(val, &o->backend) != DITATTN_OK) return -1;
    } else if (!strcmp(a, "--dtype")) {
      if (strcmp(val, "f32") && strcmp(val, "bf16")) return -1;
      o->dtype = strcmp(val, "bf16") ? DITATTN_F32 : DITATTN_BF16;
    } else if (!strcmp(a, "--llsa-mode")) {
      if (strcmp(val, "ring") && strcmp(val, "fetch") && strcmp(val, "auto") && strcmp(val, "both"))
        return -1;
      o->llsa_mode = val;
    } else if (!strcmp(a, "--input")) {
      o->smooth = !strcmp(val, "smooth");
      if (!o->smooth && strcmp(val, "random")) return -1;
    } else if (!strcmp(a, "--json"))
      o->json = val;
    else
      return -1;
    i++;
  }
  if (o->N < 1 || o->D < 1 || o->H < 1 || o->threads < 0 || o->reps < 1) return -1;
  if (o->dtype != DITATTN_F32 && !bench_is_gpu(o)) return -1;
  return 0;
}

/* Barrier that sleeps between polls (busy MPI waits would steal the
 * workers' cores on an oversubscribed node). */
static void sleepy_barrier(MPI_Comm comm) {
  MPI_Request req;
  MPI_Ibarrier(comm, &req);
  int done = 0;
  while (!done) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done) nanosleep(&(struct timespec){0, 2000000}, NULL);
  }
}

/* Smooth q, k: cosines of the global position over periods from 16 tokens
 * to N (a positional kernel: q_i · k_j is largest for j near i), plus
 * a little of the random values. */
static void fill_smooth(float *x, int64_t H, int64_t off, int64_t len, int64_t D, int64_t N) {
  for (int64_t h = 0; h < H; h++)
    for (int64_t n = 0; n < len; n++)
      for (int64_t d = 0; d < D; d++) {
        const double period = 16.0 * pow((double)N / 16.0, (double)(d / 2) / (double)(D / 2 + 1));
        const double phase = 6.283185307179586 * (double)(off + n) / period;
        float *e = &x[(h * len + n) * D + d];
        *e = (float)((d % 2 ? sin(phase) : cos(phase)) + 0.1 * (double)*e);
      }
}

/* Same values whatever the split: a hash of (tensor, head, global token, d). */
static void fill(float *x, int t, int64_t H, int64_t off, int64_t len, int64_t D) {
  for (int64_t h = 0; h < H; h++)
    for (int64_t n = 0; n < len; n++)
      for (int64_t d = 0; d < D; d++) {
        uint64_t z =
            ((uint64_t)t << 60) ^ ((uint64_t)h << 48) ^ ((uint64_t)(off + n) << 12) ^ (uint64_t)d;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        x[(h * len + n) * D + d] = (float)((double)(z >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
      }
}

/* f32 → bf16, round to nearest even (NaN stays NaN). */
static uint16_t bench_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* GPU backends: copies the four host tensors of t (n elements each) into one
 * device buffer *dev in o->dtype and points t at it. */
static ditattn_status bench_upload(ditattn_context *ctx, const bench_opts *o, const float *host,
                                   size_t n, int64_t len, ditattn_tensor t[4], void **dev) {
  const size_t esize = ditattn_dtype_size(o->dtype);
  ditattn_status st = ditattn_malloc(ctx, 4 * n * esize, dev);
  if (st != DITATTN_OK) return st;
  uint16_t *half = o->dtype == DITATTN_BF16 ? malloc(n * sizeof(uint16_t)) : NULL;
  if (o->dtype == DITATTN_BF16 && !half) return DITATTN_ERR_OUT_OF_MEMORY;
  for (int i = 0; i < 4 && st == DITATTN_OK; i++) {
    char *dst = (char *)*dev + (size_t)i * n * esize;
    if (half) {
      for (size_t j = 0; j < n; j++) half[j] = bench_bf16(host[(size_t)i * n + j]);
      st = ditattn_copy_to_backend(ctx, dst, half, n * esize);
    } else
      st = ditattn_copy_to_backend(ctx, dst, host + (size_t)i * n, n * esize);
    t[i] = ditattn_tensor_bhnd(dst, o->dtype, 1, o->H, len, o->D);
  }
  free(half);
  return st;
}

typedef struct result {
  const char *op;
  int p;
  double wall, wait_share, eff;
  int64_t bytes;
  double fetch_ratio; /* LLSA: selected-blocks bytes / ring bytes (max over ranks) */
  int ok;
} result;

/* Times one operation on `group` (all its ranks call). */
static result time_group(const bench_opts *o, MPI_Comm group, int is_llsa, ditattn_context *ctx,
                         const char *name) {
  int r = 0, p = 1;
  MPI_Comm_rank(group, &r);
  MPI_Comm_size(group, &p);
  const int64_t off = o->N * r / p, len = o->N * (r + 1) / p - off;
  const size_t n = (size_t)(o->H * len * o->D);
  float *buf = malloc(4 * n * sizeof(float));
  result res = {name, p, 0, 0, 0, 0, 0, 0};
  int ok = buf != NULL, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, group);
  if (!all_ok) {
    free(buf);
    return res;
  }
  ditattn_tensor t[4];
  for (int i = 0; i < 4; i++) {
    t[i] = ditattn_tensor_bhnd(buf + i * n, DITATTN_F32, 1, o->H, len, o->D);
    if (i < 3) fill(buf + i * n, i, o->H, off, len, o->D);
    if (i < 2 && o->smooth) fill_smooth(buf + i * n, o->H, off, len, o->D, o->N);
  }
  void *dev = NULL; /* GPU backends: q, k, v, out in device memory */
  ok = !bench_is_gpu(o) || bench_upload(ctx, o, buf, n, len, t, &dev) == DITATTN_OK;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, group);
  if (!all_ok) {
    if (r == 0) fprintf(stderr, "bench --dist: upload failed: %s\n", ditattn_last_error(ctx));
    ditattn_free(ctx, dev);
    free(buf);
    return res;
  }
  ditattn_dist_slice slice = {o->N, off, len};
  ditattn_llsa_params prm = ditattn_llsa_params_default();
  double best = 1e300, best_share = 0.0;
  ok = 1;
  for (int rep = 0; rep < o->reps && ok; rep++) {
    if (dev) ditattn_synchronize(ctx); /* nothing queued may leak into the timing */
    MPI_Barrier(group);
    ditattn_status st =
        is_llsa == 2 ? dt_dist_bench_ropeslr(ctx, group, &slice, &t[0], &t[1], &t[2], &t[3])
        : is_llsa
            ? ditattn_dist_llsa_forward(ctx, group, &slice, &prm, &t[0], &t[1], &t[2], &t[3], NULL)
            : ditattn_dist_dense_forward(ctx, group, &slice, &t[0], &t[1], &t[2], 0.0f, &t[3],
                                         NULL);
    if (dev && st == DITATTN_OK) st = ditattn_synchronize(ctx);
    ditattn_dist_stats s;
    ditattn_dist_last_stats(&s);
    if (st != DITATTN_OK) {
      ok = 0;
      if (r == 0) fprintf(stderr, "bench --dist: %s failed: %s\n", res.op, ditattn_last_error(ctx));
    }
    double wall = 0.0, share = s.wall_s > 0 ? s.comm_wait_s / s.wall_s : 0.0, share_sum = 0.0;
    MPI_Allreduce(&s.wall_s, &wall, 1, MPI_DOUBLE, MPI_MAX, group);
    MPI_Allreduce(&share, &share_sum, 1, MPI_DOUBLE, MPI_SUM, group);
    MPI_Allreduce(&s.bytes_sent, &res.bytes, 1, MPI_INT64_T, MPI_MAX, group);
    double ratio = s.ring_bytes_received > 0
                       ? (double)s.llsa_fetch_bytes / (double)s.ring_bytes_received
                       : 0.0;
    MPI_Allreduce(&ratio, &res.fetch_ratio, 1, MPI_DOUBLE, MPI_MAX, group);
    if (dev && r == 0 && rep == 0 && p > 1)
      fprintf(stderr, "bench --dist: %s P=%d: slices crossed %s%s; rank 0 received %.1f MB\n", name,
              p,
              s.gpu_transfer == 4   ? "between hosts by the ring, inside each host by IPC"
              : s.gpu_transfer == 3 ? "device to device by IPC"
              : s.gpu_transfer == 2 ? "MPI as device pointers (CUDA-aware MPI)"
                                    : "MPI staged through host memory",
              s.keys_split ? ", key-side work split across the ranks" : "",
              1e-6 * (double)s.ring_bytes_received);
    if (wall < best) {
      best = wall;
      best_share = share_sum / p;
    }
    /* DITATTN_BENCH_STATS=1 (the same on every rank): every rank's split
     * of its last call, on stderr (groups of up to 64 ranks). */
    const char *want_stats = getenv("DITATTN_BENCH_STATS");
    if (want_stats && !strcmp(want_stats, "1") && rep == o->reps - 1 && p <= 64) {
      double mine[3] = {s.wall_s, s.compute_s, s.comm_wait_s}, all[3 * 64];
      if (MPI_Gather(mine, 3, MPI_DOUBLE, all, 3, MPI_DOUBLE, 0, group) == MPI_SUCCESS && r == 0)
        for (int q = 0; q < p; q++)
          fprintf(stderr,
                  "bench --dist: %s P=%d rank %d: wall %.3f ms, compute %.3f ms, comm wait %.3f "
                  "ms, other %.3f ms\n",
                  name, p, q, 1e3 * all[3 * q], 1e3 * all[3 * q + 1], 1e3 * all[3 * q + 2],
                  1e3 * (all[3 * q] - all[3 * q + 1] - all[3 * q + 2]));
    }
  }
  res.wall = best;
  res.wait_share = best_share;
  res.ok = ok;
  /* The next group is another communicator: no mapping may outlive this one. */
  ditattn_dist_free_cache(ctx, group);
  ditattn_free(ctx, dev);
  free(buf);
  return res;
}

static void report(const bench_opts *o, const result *res, int nres, int world) {
  printf("dist (MPI) strong scaling: N = %lld, D = %lld, H = %lld, B = 1, backend %s, "
         "%d thread(s)/rank, %d ranks launched, best of %d\n",
         (long long)o->N, (long long)o->D, (long long)o->H, ditattn_backend_name(o->backend),
         o->threads, world, o->reps);
  printf("inputs: %s, %s\n", o->smooth ? "smooth (positional structure)" : "uniform random",
         o->dtype == DITATTN_BF16 ? "bf16" : "f32");
  printf("%-10s %3s %12s %11s %11s %14s %12s\n", "op", "P", "wall s", "efficiency", "comm wait",
         "MB sent/rank", "fetch/ring");
  for (int i = 0; i < nres; i++)
    printf("%-10s %3d %12.4f %10.1f%% %10.1f%% %14.1f %11.1f%%%s\n", res[i].op, res[i].p,
           res[i].wall, 100.0 * res[i].eff, 100.0 * res[i].wait_share, (double)res[i].bytes / 1e6,
           100.0 * res[i].fetch_ratio, res[i].ok ? "" : "  FAILED");
  if (!o->json) return;
  FILE *f = fopen(o->json, "w");
  if (!f) {
    fprintf(stderr, "bench --dist: cannot write %s\n", o->json);
    return;
  }
  fprintf(f,
          "{\"N\": %lld, \"D\": %lld, \"H\": %lld, \"backend\": \"%s\", \"threads\": %d, "
          "\"results\": [",
          (long long)o->N, (long long)o->D, (long long)o->H, ditattn_backend_name(o->backend),
          o->threads);
  for (int i = 0; i < nres; i++)
    fprintf(f,
            "%s{\"op\": \"%s\", \"P\": %d, \"wall_s\": %.6f, \"efficiency\": %.4f, "
            "\"comm_wait_share\": %.4f, \"bytes_sent\": %lld, \"fetch_ratio\": %.4f, \"ok\": %s}",
            i ? ", " : "", res[i].op, res[i].p, res[i].wall, res[i].eff, res[i].wait_share,
            (long long)res[i].bytes, res[i].fetch_ratio, res[i].ok ? "true" : "false");
  fprintf(f, "]}\n");
  fclose(f);
}

/* Host backends: a plain context. GPU backends: one device per rank, the
 * node-local rank modulo the node's device count (one rank per GPU when
 * launched so; ranks share GPUs round-robin when there are more). */
static ditattn_status bench_context(const bench_opts *o, int rank, ditattn_context **ctx) {
  if (!bench_is_gpu(o)) return ditattn_context_create(o->backend, ctx);
  MPI_Comm node;
  int local = 0, count = 0;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  ditattn_status st = ditattn_device_count(o->backend, &count);
  if (st != DITATTN_OK) {
    fprintf(stderr, "bench --dist: rank %d: no %s device (%s)\n", rank,
            ditattn_backend_name(o->backend), ditattn_strerror(st));
    return st;
  }
  st = ditattn_context_create_on_device(o->backend, local % count, ctx);
  if (st != DITATTN_OK)
    fprintf(stderr, "bench --dist: rank %d: %s device %d of %d: %s\n", rank,
            ditattn_backend_name(o->backend), local % count, count, ditattn_strerror(st));
  return st;
}

int dt_dist_bench_main(int argc, char **argv) {
  int was_init = 0;
  MPI_Initialized(&was_init);
  if (!was_init) MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  bench_opts o;
  int pr = parse(argc, argv, &o);
  if (pr != 0) {
    if (rank == 0) {
      if (pr < 0) fprintf(stderr, "bench --dist: bad arguments\n");
      usage();
    }
    if (!was_init) MPI_Finalize();
    return pr < 0 ? 2 : 0;
  }
  if (o.max_p <= 0 || o.max_p > world) o.max_p = world;
  ditattn_context *ctx = NULL;
  /* GPU contexts have one LLSA route (q/k/v gathered on the device). */
  if (bench_is_gpu(&o)) o.llsa_mode = "auto";
  int ok = bench_context(&o, rank, &ctx) == DITATTN_OK, all_ok = 0;
  if (ok) ditattn_context_set_num_threads(ctx, o.threads);
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all_ok) {
    if (rank == 0)
      fprintf(stderr, "bench --dist: backend %s unavailable\n", ditattn_backend_name(o.backend));
    ditattn_context_destroy(ctx);
    if (!was_init) MPI_Finalize();
    return 1;
  }
  result res[32];
  int nres = 0, failed = 0;
  /* Runs: dense, then LLSA in the requested fine-key mode(s). */
  const char *names[4] = {"dense", NULL, NULL, NULL}, *modes[4] = {NULL, NULL, NULL, NULL};
  int nruns = o.dense ? 1 : 0, first = nruns;
  if (o.llsa) {
    if (!strcmp(o.llsa_mode, "both")) {
      names[nruns] = "llsa/ring", modes[nruns++] = "ring";
      names[nruns] = "llsa/fetch", modes[nruns++] = "fetch";
    } else {
      names[nruns] = bench_is_gpu(&o)               ? "llsa/device"
                     : !strcmp(o.llsa_mode, "auto") ? "llsa/auto"
                     : !strcmp(o.llsa_mode, "ring") ? "llsa/ring"
                                                    : "llsa/fetch";
      modes[nruns++] = o.llsa_mode;
    }
  }
  if (o.ropeslr) names[nruns] = "ropeslr", modes[nruns++] = "ropeslr";
  for (int run = o.dense ? 0 : first; run < nruns; run++) {
    /* 0: dense, 1: LLSA, 2: RoPeSLR */
    const int is_llsa = !modes[run] ? 0 : !strcmp(modes[run], "ropeslr") ? 2 : 1;
    if (is_llsa == 1 && strcmp(modes[run], "auto"))
      setenv("DITATTN_DIST_LLSA", modes[run], 1);
    else
      unsetenv("DITATTN_DIST_LLSA");
    double t1 = 0.0;
    for (int p = 1; p <= o.max_p && nres < 32; p *= 2) {
      MPI_Comm group;
      MPI_Comm_split(MPI_COMM_WORLD, rank < p ? 0 : MPI_UNDEFINED, rank, &group);
      result r = {names[run], p, 0, 0, 0, 0, 0, 0};
      if (rank < p) {
        r = time_group(&o, group, is_llsa, ctx, names[run]);
        MPI_Comm_free(&group);
      }
      sleepy_barrier(MPI_COMM_WORLD);
      if (p == 1) t1 = r.wall;
      r.eff = r.wall > 0 ? t1 / (p * r.wall) : 0.0;
      failed |= !r.ok && rank < p;
      res[nres++] = r;
      if (rank == 0) fprintf(stderr, "bench --dist: %s P=%d %.3f s\n", r.op, p, r.wall);
    }
  }
  if (rank == 0) report(&o, res, nres, world);
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ditattn_context_destroy(ctx);
  if (!was_init) MPI_Finalize();
  return any_failed ? 1 : 0;
}
