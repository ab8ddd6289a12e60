/* ditattn_dist_gpu_check: ditattn_dist_dense_forward on device memory vs the
 * single-process ditattn_dense_forward on the whole sequence, computed by
 * every rank on its GPU and on the CPU backend. Plain C (no CMocka: the GPU
 * machine has none); run under mpirun by dist/device/run.sh.
 *
 * Each case draws from one seed (printed): B, H with B·H > 1, N_global,
 * D, dtype (f32, bf16), uneven slices handed to ranks in a random order,
 * strided layouts (padded rows, the DiT [B,N,H,D] layout; input padding is
 * NaN so a read of it shows), scale, lse requested or not. Outputs are
 * poisoned with NaN first. Every case runs once per transfer mode: host
 * staged always, device pointers when this MPI is CUDA-aware. One line per
 * case on rank 0 (max error over ranks); exit 0 only if every case passed.
 *
 * Then the LLSA and RoPeSLR forwards on device memory (gpu_check_sparse.c).
 * At an even P >= 4 on a GPU backend, dense and sparse once more with the
 * ranks as two pretend hosts (DITATTN_DIST_RANKS_PER_HOST = P/2): the
 * hierarchical gather (ring between hosts, IPC inside), on one machine.
 *
 * usage: mpirun -n P ditattn_dist_gpu_check [--cases C] [--sparse-cases S2] [--seed S]
 *                                           [--backend cuda|hip]
 * Self-test of the harness and of the device-path ring logic without a GPU:
 *   DITATTN_DIST_DEVICE_PATH=1 mpirun -n P ditattn_dist_gpu_check --backend cpu \
 *     --force-device-ptr 1   (host pointers are valid "device pointers" there) */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "dist_test_util.h"
#include "gpu_check_copy.h"
#include "gpu_check_sparse.h"
#include "gpu_xfer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F32_TOL  1e-5
#define BF16_TOL 1e-2

static int g_rank, g_size;
static int g_host_backend; /* --backend ref|cpu: harness self-test, f32 only */

typedef struct case_desc {
  uint64_t seed;
  int64_t B, H, N, D, pad_in, pad_out;
  int bnhd_in, bnhd_out, want_lse;
  ditattn_dtype dtype;
  float scale;
} case_desc;

static case_desc draw_case(uint64_t seed, int index) {
  dtu_rng rng = {seed};
  case_desc c;
  memset(&c, 0, sizeof c);
  c.seed = seed;
  static const int64_t dims[6] = {16, 32, 64, 128, 24, 80};
  do {
    c.B = dtu_int(&rng, 1, 2);
    c.H = dtu_int(&rng, 1, 4);
  } while (c.B * c.H < 2);
  c.D = dims[dtu_int(&rng, 0, 5)];
  c.dtype = dtu_int(&rng, 0, 1) && !g_host_backend ? DITATTN_BF16 : DITATTN_F32;
  /* Every fourth case is long (many key tiles per slice, the tensor-core path). */
  c.N = index % 4 == 3 ? dtu_int(&rng, 1500, 4000) : dtu_int(&rng, g_size, 400);
  if (c.N < g_size) c.N = g_size;
  c.pad_in = dtu_int(&rng, 0, 1) ? dtu_int(&rng, 1, 8) : 0;
  c.pad_out = dtu_int(&rng, 0, 1) ? dtu_int(&rng, 1, 8) : 0;
  /* bf16 tensor-core rows must stay 16-byte aligned: pad by multiples of 8. */
  if (c.dtype == DITATTN_BF16) {
    c.pad_in = (c.pad_in + 7) / 8 * 8;
    c.pad_out = (c.pad_out + 7) / 8 * 8;
  }
  c.bnhd_in = (int)dtu_int(&rng, 0, 1);
  c.bnhd_out = (int)dtu_int(&rng, 0, 1);
  c.want_lse = dtu_int(&rng, 0, 3) != 0;
  c.scale = dtu_int(&rng, 0, 1) ? 0.0f : (float)dtu_uniform(&rng, 0.05, 0.3);
  return c;
}

static ditattn_dist_slice draw_slice(uint64_t seed, int64_t N) {
  return gx_draw_slice(seed, N, g_rank, g_size);
}

typedef struct case_result {
  double err[4]; /* out vs cpu, out vs gpu, lse vs cpu, lse vs gpu (gx_slice_errors) */
  int transfer;  /* stats.gpu_transfer */
  int failed;    /* a call failed (message printed by that rank) */
} case_result;

#define CALL(what, expr)                                                                           \
  do {                                                                                             \
    ditattn_status call_st_ = (expr);                                                              \
    if (call_st_ != DITATTN_OK) {                                                                  \
      fprintf(stderr, "rank %d: seed %llu: %s failed: %s (%s)\n", g_rank,                          \
              (unsigned long long)c->seed, what, ditattn_strerror(call_st_), msg_of(what));        \
      res->failed = 1;                                                                             \
      goto done;                                                                                   \
    }                                                                                              \
  } while (0)

static ditattn_context *g_gpu, *g_cpu;
static const char *msg_of(const char *what) {
  return ditattn_last_error(strstr(what, "cpu") ? g_cpu : g_gpu);
}

static void run_case(const case_desc *c, case_result *res) {
  memset(res, 0, sizeof *res);
  for (int j = 0; j < 4; j++) res->err[j] = INFINITY;
  const int64_t B = c->B, H = c->H, N = c->N, D = c->D, BH = B * H;
  dtu_rng rng = {c->seed * 0x9E3779B97F4A7C15ull + 1};
  dtu_tensor gq = dtu_tensor_new(B, H, N, D, 0, 0), gk = dtu_tensor_new(B, H, N, D, 0, 0),
             gv = dtu_tensor_new(B, H, N, D, 0, 0), go_cpu = dtu_tensor_new(B, H, N, D, 0, 0),
             go_gpu = dtu_tensor_new(B, H, N, D, 0, 0);
  dtu_fill_uniform(&gq, &rng);
  dtu_fill_uniform(&gk, &rng);
  dtu_fill_uniform(&gv, &rng);
  if (c->dtype == DITATTN_BF16) {
    gx_round_bf16(gq.buf, gq.count);
    gx_round_bf16(gk.buf, gk.count);
    gx_round_bf16(gv.buf, gv.count);
  }
  float *glse_cpu = malloc((size_t)(BH * N) * sizeof(float));
  float *glse_gpu = malloc((size_t)(BH * N) * sizeof(float));
  const ditattn_dist_slice sl = draw_slice(c->seed, N);
  dtu_tensor lq = dtu_tensor_new(B, H, sl.length, D, c->pad_in, c->bnhd_in),
             lk = dtu_tensor_new(B, H, sl.length, D, c->pad_in, !c->bnhd_in),
             lv = dtu_tensor_new(B, H, sl.length, D, c->pad_in, c->bnhd_in),
             lo = dtu_tensor_new(B, H, sl.length, D, c->pad_out, c->bnhd_out);
  float *llse = malloc((size_t)(BH * sl.length) * sizeof(float));
  void *d_gq = NULL, *d_gk = NULL, *d_gv = NULL, *d_go = NULL, *d_glse = NULL;
  void *d_lq = NULL, *d_lk = NULL, *d_lv = NULL, *d_lo = NULL, *d_llse = NULL;
  if (!glse_cpu || !glse_gpu || !llse || !gq.buf || !gk.buf || !gv.buf || !go_cpu.buf ||
      !go_gpu.buf || !lq.buf || !lk.buf || !lv.buf || !lo.buf) {
    fprintf(stderr, "rank %d: seed %llu: host allocation failed\n", g_rank,
            (unsigned long long)c->seed);
    res->failed = 1;
    goto done;
  }
  /* Single process, whole sequence: CPU (f32 on the same values) and GPU. */
  CALL("cpu dense_forward",
       ditattn_dense_forward(g_cpu, &gq.t, &gk.t, &gv.t, c->scale, &go_cpu.t, glse_cpu));
  {
    CALL("gpu upload", gx_upload(g_gpu, gq.buf, gq.count, c->dtype, &d_gq));
    CALL("gpu upload", gx_upload(g_gpu, gk.buf, gk.count, c->dtype, &d_gk));
    CALL("gpu upload", gx_upload(g_gpu, gv.buf, gv.count, c->dtype, &d_gv));
    CALL("gpu upload", gx_upload(g_gpu, go_gpu.buf, go_gpu.count, c->dtype, &d_go)); /* NaN */
    CALL("gpu malloc", ditattn_malloc(g_gpu, (size_t)(BH * N) * sizeof(float), &d_glse));
    ditattn_tensor q = gx_device_view(&gq, d_gq, c->dtype), k = gx_device_view(&gk, d_gk, c->dtype),
                   v = gx_device_view(&gv, d_gv, c->dtype),
                   o = gx_device_view(&go_gpu, d_go, c->dtype);
    CALL("gpu dense_forward (single process)",
         ditattn_dense_forward(g_gpu, &q, &k, &v, c->scale, &o, d_glse));
    CALL("gpu download", gx_download(g_gpu, d_go, go_gpu.count, c->dtype, go_gpu.buf));
    CALL("gpu download",
         ditattn_copy_to_host(g_gpu, glse_gpu, d_glse, (size_t)(BH * N) * sizeof(float)));
  }
  /* The dist call on this rank's slice, outputs poisoned. */
  dtu_copy_slice(&lq, &gq, sl.offset);
  dtu_copy_slice(&lk, &gk, sl.offset);
  dtu_copy_slice(&lv, &gv, sl.offset);
  for (int64_t i = 0; i < BH * sl.length; i++) llse[i] = NAN;
  CALL("gpu upload", gx_upload(g_gpu, lq.buf, lq.count, c->dtype, &d_lq));
  CALL("gpu upload", gx_upload(g_gpu, lk.buf, lk.count, c->dtype, &d_lk));
  CALL("gpu upload", gx_upload(g_gpu, lv.buf, lv.count, c->dtype, &d_lv));
  CALL("gpu upload", gx_upload(g_gpu, lo.buf, lo.count, c->dtype, &d_lo));
  CALL("gpu upload", gx_upload(g_gpu, llse, (size_t)(BH * sl.length), DITATTN_F32, &d_llse));
  {
    ditattn_tensor q = gx_device_view(&lq, d_lq, c->dtype), k = gx_device_view(&lk, d_lk, c->dtype),
                   v = gx_device_view(&lv, d_lv, c->dtype), o = gx_device_view(&lo, d_lo, c->dtype);
    CALL("gpu ditattn_dist_dense_forward",
         ditattn_dist_dense_forward(g_gpu, MPI_COMM_WORLD, &sl, &q, &k, &v, c->scale, &o,
                                    c->want_lse ? (float *)d_llse : NULL));
    ditattn_dist_stats stats;
    ditattn_dist_last_stats(&stats);
    res->transfer = stats.gpu_transfer;
    CALL("gpu download", gx_download(g_gpu, d_lo, lo.count, c->dtype, lo.buf));
    CALL("gpu download",
         ditattn_copy_to_host(g_gpu, llse, d_llse, (size_t)(BH * sl.length) * sizeof(float)));
  }
  gx_slice_errors(&lo.t, &go_cpu.t, &go_gpu.t, llse, glse_cpu, glse_gpu, c->want_lse, &sl,
                  res->err);
done:;
  void *dev[10] = {d_gq, d_gk, d_gv, d_go, d_glse, d_lq, d_lk, d_lv, d_lo, d_llse};
  for (int i = 0; i < 10; i++) ditattn_free(g_gpu, dev[i]);
  dtu_tensor *host[9] = {&gq, &gk, &gv, &go_cpu, &go_gpu, &lq, &lk, &lv, &lo};
  for (int i = 0; i < 9; i++) dtu_tensor_free(host[i]);
  free(glse_cpu);
  free(glse_gpu);
  free(llse);
}

static const char *transfer_name(int t) {
  return t == 4 ? "hosts" : t == 3 ? "ipc" : t == 2 ? "device-ptr" : t == 1 ? "staged" : "host?";
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  int cases = 24, sparse_cases = 16, force_device_ptr = 0;
  ditattn_backend backend = DITATTN_BACKEND_CUDA;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--cases"))
      cases = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--sparse-cases"))
      sparse_cases = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--seed"))
      setenv("DITATTN_TEST_SEED", argv[i + 1], 1);
    else if (!strcmp(argv[i], "--force-device-ptr"))
      force_device_ptr = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--backend") &&
             ditattn_backend_parse(argv[i + 1], &backend) == DITATTN_OK)
      ;
    else {
      if (g_rank == 0) fprintf(stderr, "gpu_check: unknown argument %s\n", argv[i]);
      MPI_Finalize();
      return 2;
    }
  }
  g_host_backend = backend == DITATTN_BACKEND_REF || backend == DITATTN_BACKEND_CPU;
  if (g_size > 64) {
    if (g_rank == 0) fprintf(stderr, "gpu_check: at most 64 ranks\n");
    MPI_Finalize();
    return 2;
  }
  /* One device per rank: node-local rank modulo the node's device count. */
  MPI_Comm node;
  int local = 0, count = 0, ok = 1, all_ok = 0;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  ditattn_status st = ditattn_device_count(backend, &count);
  if (st == DITATTN_OK) st = ditattn_context_create_on_device(backend, local % count, &g_gpu);
  if (st != DITATTN_OK) {
    fprintf(stderr, "rank %d: no %s context (local rank %d, %d devices): %s\n", g_rank,
            ditattn_backend_name(backend), local, count, ditattn_strerror(st));
    ok = 0;
  }
  if (ok && ditattn_context_create(DITATTN_BACKEND_CPU, &g_cpu) != DITATTN_OK &&
      ditattn_context_create(DITATTN_BACKEND_REF, &g_cpu) != DITATTN_OK) {
    fprintf(stderr, "rank %d: no host context\n", g_rank);
    ok = 0;
  }
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all_ok) {
    ditattn_context_destroy(g_gpu);
    ditattn_context_destroy(g_cpu);
    MPI_Finalize();
    return 1;
  }
  if (g_rank == 0)
    printf("gpu_check: P = %d, backend %s, rank 0 on device %d of %d, host reference %s\n", g_size,
           ditattn_backend_name(backend), local % count, count,
           ditattn_backend_name(ditattn_context_backend(g_cpu)));
  const uint64_t base = dtu_seed(MPI_COMM_WORLD);
  /* The summary exchange's batched copy, on every rank's own GPU. */
  int copy_ok = gcc_check_copy_batch(g_gpu, base, g_rank), copy_all = 0;
  MPI_Allreduce(&copy_ok, &copy_all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);

  /* Transfer modes: staged always; device pointers when MPI is CUDA-aware
   * (what the library picks on its own, DITATTN_DIST_CUDA_AWARE unset). */
  unsetenv("DITATTN_DIST_CUDA_AWARE");
  setenv("DITATTN_DIST_IPC", "0", 1); /* the probe asks MPI, not IPC */
  case_desc probe = draw_case(base, 0);
  case_result pr;
  run_case(&probe, &pr);
  int aware = pr.transfer == 2 || force_device_ptr, all_aware = 0;
  MPI_Allreduce(&aware, &all_aware, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (g_rank == 0)
    printf("gpu_check: CUDA-aware MPI %s\n",
           all_aware ? "detected on every rank: both modes checked"
                     : "not detected: the ring checked host-staged only (IPC separately)");
  const char *modes[2] = {"0", "1"};
  int failed = !copy_all, total = 1;
  /* Host contexts take the device path only under DITATTN_DIST_DEVICE_PATH=1. */
  const char *dp = getenv("DITATTN_DIST_DEVICE_PATH");
  const int device_path = !g_host_backend || (dp && !strcmp(dp, "1"));
  /* Modes 0 (staged) and 1 (device pointers, CUDA-aware MPI only) run the
   * K/V ring with IPC off; mode 2 lets ranks of this host gather k, v by
   * IPC (a GPU backend at P > 1 must; host contexts have no IPC: ring);
   * mode 3 (a GPU backend, P even and >= 4) makes the ranks two pretend
   * hosts of P/2 (DITATTN_DIST_RANKS_PER_HOST): the ring between them,
   * then IPC inside each. */
  const int two_hosts = !g_host_backend && g_size >= 4 && g_size % 2 == 0;
  char half[16];
  snprintf(half, sizeof half, "%d", g_size / 2);
  for (int m = 0; m < 4; m++) {
    if ((m == 1 && !all_aware) || (m == 3 && !two_hosts)) continue;
    const int want_transfer = !device_path ? 0
                              : m == 3     ? 4
                              : m == 2     ? (!g_host_backend && g_size > 1 ? 3 : 1)
                                           : m + 1;
    if (m < 2) {
      setenv("DITATTN_DIST_IPC", "0", 1);
      setenv("DITATTN_DIST_CUDA_AWARE", modes[m], 1);
    } else {
      unsetenv("DITATTN_DIST_IPC");
      setenv("DITATTN_DIST_CUDA_AWARE", "0", 1);
    }
    if (m == 3) setenv("DITATTN_DIST_RANKS_PER_HOST", half, 1);
    for (int i = 0; i < cases; i++) {
      const uint64_t seed = base + (uint64_t)i;
      case_desc c = draw_case(seed, i);
      case_result r;
      run_case(&c, &r);
      const double tol = c.dtype == DITATTN_BF16 ? BF16_TOL : F32_TOL;
      double e[4] = {r.err[0], r.err[1], r.err[2], r.err[3]}, emax[4];
      for (int j = 0; j < 4; j++)
        if (!(e[j] <= tol)) e[j] = INFINITY; /* NaN never passes */
      MPI_Allreduce(e, emax, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      int bad = r.failed || r.transfer != want_transfer, any_bad = 0;
      if (r.transfer != want_transfer)
        fprintf(stderr, "rank %d: seed %llu: stats.gpu_transfer = %d, expected %d\n", g_rank,
                (unsigned long long)seed, r.transfer, want_transfer);
      MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
      /* Errors printed are the true maxima; a failure is any over tol. */
      double raw[4] = {r.err[0], r.err[1], r.err[2], r.err[3]}, rawmax[4];
      for (int j = 0; j < 4; j++)
        if (isnan(raw[j])) raw[j] = INFINITY;
      MPI_Allreduce(raw, rawmax, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      int pass = !any_bad;
      for (int j = 0; j < 4; j++) pass &= emax[j] <= tol;
      failed += !pass;
      total++;
      if (g_rank == 0)
        printf("%s case %2d seed %llu P=%d %-10s %-4s B=%lld H=%lld N=%lld D=%lld in=%s+%lld "
               "out=%s+%lld scale=%g lse=%d | vs cpu %.2e vs gpu %.2e lse %.2e/%.2e (tol %.0e)\n",
               pass ? "PASS" : "FAIL", i, (unsigned long long)seed, g_size,
               transfer_name(want_transfer ? want_transfer : m + 1),
               c.dtype == DITATTN_BF16 ? "bf16" : "f32", (long long)c.B, (long long)c.H,
               (long long)c.N, (long long)c.D, c.bnhd_in ? "bnhd" : "bhnd", (long long)c.pad_in,
               c.bnhd_out ? "bnhd" : "bhnd", (long long)c.pad_out, (double)c.scale, c.want_lse,
               rawmax[0], rawmax[1], rawmax[2], rawmax[3], tol);
      fflush(stdout);
    }
    unsetenv("DITATTN_DIST_RANKS_PER_HOST");
  }
  /* LLSA and RoPeSLR on device memory, in every transfer mode (not on a
   * CPU context: it cannot compute a range of query rows). */
  if (backend == DITATTN_BACKEND_CPU && g_rank == 0)
    printf("gpu_check: LLSA/RoPeSLR device route skipped on the cpu backend (use --backend ref)\n");
  /* Ring modes with IPC off, then IPC (ranks share this host): a GPU
   * backend at P > 1 must take it (3); host contexts and P = 1 fall back
   * to the staged ring (1). */
  setenv("DITATTN_DIST_IPC", "0", 1);
  for (int m = 0; m < 1 + all_aware && backend != DITATTN_BACKEND_CPU; m++) {
    setenv("DITATTN_DIST_CUDA_AWARE", modes[m], 1);
    failed +=
        gs_check_sparse(g_gpu, g_cpu, base, sparse_cases, g_host_backend, m == 0 ? 1 : 2, &total);
  }
  unsetenv("DITATTN_DIST_IPC");
  setenv("DITATTN_DIST_CUDA_AWARE", "0", 1);
  if (backend != DITATTN_BACKEND_CPU) {
    if (g_rank == 0) printf("gpu_check: LLSA/RoPeSLR gather by IPC\n");
    failed += gs_check_sparse(g_gpu, g_cpu, base, sparse_cases, g_host_backend,
                              !g_host_backend && g_size > 1 ? 3 : 1, &total);
  }
  if (two_hosts) {
    setenv("DITATTN_DIST_RANKS_PER_HOST", half, 1);
    if (g_rank == 0)
      printf("gpu_check: LLSA/RoPeSLR gather across 2 pretend hosts of %d ranks\n", g_size / 2);
    failed += gs_check_sparse(g_gpu, g_cpu, base, sparse_cases, g_host_backend, 4, &total);
    unsetenv("DITATTN_DIST_RANKS_PER_HOST");
  }
  if (g_rank == 0) printf("gpu_check: P = %d: %d of %d checks failed\n", g_size, failed, total);
  ditattn_dist_free_cache(g_gpu, MPI_COMM_WORLD); /* peers unmap before owners free */
  ditattn_context_destroy(g_gpu);
  ditattn_context_destroy(g_cpu);
  MPI_Finalize();
  return failed ? 1 : 0;
}
