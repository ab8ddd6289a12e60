/* ditattn_dist_gpu_rows: what one rank of P computes on the GPU route of
 * dist LLSA / RoPeSLR, measured on ONE GPU. After its q/k/v gather, rank r
 * of P runs the backend's forward restricted to its query rows
 * [N·r/P, N·(r+1)/P) (q_row0); this program times exactly that call for
 * every r, so the slowest rank's compute and the compute-only parallel
 * efficiency T1 / (P · max_r T_r) can be read off a machine with one GPU
 * (redundant whole-sequence work, such as pooling and RoPeSLR's low-rank
 * factors, and load imbalance show up here). It also times the gather's
 * device copies (what each rank copies in from its peers, here from the
 * same GPU) and prints the bytes a rank receives, for a link of known
 * bandwidth. Where the backend can split the key-side work (backend.h
 * dt_key_summary), a second table times what a rank computes with it: its
 * share of the key summary, then its rows reading the whole summary; and
 * the copies of the peers' summary units; and the same rank work with its
 * gather's k/v copies (from this GPU) queued on the side stream under it,
 * as dist/ overlaps them (the copies share this GPU's memory bandwidth with
 * the compute: on P GPUs they come over the link instead). --link-gbs G
 * emulates a link of G GB/s for those copies instead: they come from
 * page-locked host memory, each cut to the bytes that take as long over the
 * host link (measured first) as the whole copy would over G GB/s, so the
 * overlap is timed against a copy of the link's duration without the
 * same-GPU copy's load on memory (a link's writes into memory remain
 * unmodelled). Not a substitute for a run on P GPUs. Usage:
 *   ditattn_dist_gpu_rows [--n N] [--heads H] [--d D] [--dtype bf16|f32]
 *                         [--reps R] [--op llsa|ropeslr|both] [--max-p P]
 *                         [--link-gbs G] [--backend cuda|hip|ref] */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "backends/backend.h"
#include "dist_device.h" /* dt_dist_copy_rows: the gather's own copy */
#include "dist_ropeslr_bench.h"
#include "gpu_xfer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct opts {
  int64_t N, H, D;
  ditattn_dtype dtype;
  int reps, max_p, llsa, ropeslr;
  double link_gbs;         /* > 0: emulate the gather's link (see the top) */
  ditattn_backend backend; /* ref: a self-test of this program without a GPU */
} opts;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct problem {
  ditattn_context *ctx;
  const opts *o;
  ditattn_tensor q, k, v, out; /* out: N rows; a call writes its first M */
  dt_slr_bench_problem slr;
  /* --link-gbs: the overlapped copies' page-locked source (as big as k),
   * and the fraction of their rows copied (host link / emulated link). */
  void *link_src;
  double link_scale;
  /* The overlapped rank work's summary exchange: its layout and a copy
   * target (NULL: none), and whether the side copies are queued after the
   * exchange instead of before the share (side_late). */
  const dt_key_summary *layout;
  void *exchange_dst;
  int side_late;
} problem;

/* The op's problem over rows [row0, row0 + M) with key summary argument
 * sum, handed to the backend's forward, or (layout non-NULL) to its key
 * summary layout entry (UNSUPPORTED where it has none). Queued. */
static ditattn_status op_call(problem *pb, int is_llsa, int64_t row0, int64_t M,
                              const dt_summary_arg *sum, dt_key_summary *layout) {
  ditattn_context *ctx = pb->ctx;
  const dt_backend_ops *ops = ctx->ops;
  ditattn_tensor out = pb->out;
  out.shape[2] = M;
  if (is_llsa) {
    const dt_llsa_fwd p = {
        ditattn_llsa_params_default(), &pb->q, &pb->k, &pb->v, &out, NULL, NULL, row0, *sum};
    if (!layout) return ops->llsa_forward(ctx, &p);
    return ops->llsa_summary_layout ? ops->llsa_summary_layout(ctx, &p, layout)
                                    : DITATTN_ERR_UNSUPPORTED;
  }
  const dt_ropeslr_fwd p = {pb->slr.params,
                            ditattn_ropeslr_topk(&pb->slr.params, pb->o->N),
                            &pb->slr.weights,
                            pb->slr.pos,
                            &pb->q,
                            &pb->k,
                            &pb->v,
                            &out,
                            NULL,
                            NULL,
                            row0,
                            *sum};
  if (!layout) return ops->ropeslr_forward(ctx, &p);
  return ops->ropeslr_summary_layout ? ops->ropeslr_summary_layout(ctx, &p, layout)
                                     : DITATTN_ERR_UNSUPPORTED;
}

/* The op's key summary layout; 0 when the backend cannot split its keys. */
static int summary_layout(problem *pb, int is_llsa, dt_key_summary *layout) {
  const dt_summary_arg none = {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0};
  return op_call(pb, is_llsa, 0, pb->o->N, &none, layout) == DITATTN_OK;
}

/* The summary exchange's copies for the rank owning tokens [row0, row0 +
 * M): every unit it does not own, copied from src to dst as one batch of
 * strided copies (dt_dist_copy_2d_each, as dist_device_summary.c), queued;
 * *bytes (if not NULL) gets their size. */
static ditattn_status queue_summary_copy(problem *pb, const dt_key_summary *l, void *dst,
                                         const void *src, int64_t row0, int64_t M, double *bytes) {
  dt_copy_2d_desc descs[2 * DT_KEY_SUMMARY_MAX];
  int count = 0;
  for (int a = 0; a < l->arrays; a++) {
    const int64_t lo = (row0 + l->span[a] - 1) / l->span[a],
                  hi = (row0 + M + l->span[a] - 1) / l->span[a];
    const int64_t from[2] = {0, hi < l->units[a] ? hi : l->units[a]}, to[2] = {lo, l->units[a]};
    const size_t pitch = (size_t)l->units[a] * l->unit_bytes[a];
    for (int part = 0; part < 2; part++) {
      if (to[part] <= from[part]) continue;
      const size_t skip = l->offset[a] + (size_t)from[part] * l->unit_bytes[a],
                   width = (size_t)(to[part] - from[part]) * l->unit_bytes[a];
      if (bytes) *bytes += (double)width * (double)l->rows[a];
      descs[count++] = (dt_copy_2d_desc){
          (char *)dst + skip, (const char *)src + skip, pitch, pitch, width, (size_t)l->rows[a]};
    }
  }
  return dt_dist_copy_2d_each(pb->ctx, descs, count);
}

/* The rank's FILL share of the summary (tokens [row0, row0 + M)), then,
 * with `exchange` and a target pb->exchange_dst, the share waited for (the
 * peers read it) and the exchange's copies of the other units queued. */
static ditattn_status share(problem *pb, int is_llsa, int64_t row0, int64_t M, void *summary,
                            int exchange) {
  const dt_summary_arg fill = {DT_SUMMARY_FILL, summary, row0, row0 + M, 0, 0};
  TRY(op_call(pb, is_llsa, row0, M, &fill, NULL));
  if (!exchange || !pb->exchange_dst) return DITATTN_OK;
  TRY(ditattn_synchronize(pb->ctx));
  return queue_summary_copy(pb, pb->layout, pb->exchange_dst, summary, row0, M, NULL);
}

/* What rank r computes after its gather, waited for: without a summary
 * (summary NULL) the whole forward for its rows; with one, its FILL share
 * (tokens [row0, row0 + M)) and then the forward reading the summary
 * (which holds every unit: the share rewrites the same values). */
static ditattn_status rank_work(problem *pb, int is_llsa, int64_t row0, int64_t M, void *summary,
                                void *overlap_buf) {
  ditattn_status st = DITATTN_OK;
  ditattn_context *ctx = pb->ctx;
  if (summary) {
    /* overlap_buf: the gather's k/v copies of the other N − M rows queued
     * on the side stream first (into overlap_buf, from this GPU's k and v),
     * in chunks of heads with a side mark after each, waited for chunk by
     * chunk by the forward's attention, as dist/ does; then the share,
     * waited for (the peers read it), the summary exchange's copies
     * (pb->exchange_dst) queued, and the forward after them.
     * side_late: the side copies are queued after the exchange. */
    const int chunks = overlap_buf ? dt_dist_side_chunks(ctx, pb->o->H) : 0;
    const dt_summary_arg read = {
        DT_SUMMARY_READ, summary, 0, 0, chunks, ctx->ops->side_mark != NULL};
    const int late = overlap_buf && pb->side_late;
    if (late) st = share(pb, is_llsa, row0, M, summary, 1);
    if (overlap_buf && st == DITATTN_OK) st = ctx->ops->side_fork(ctx);
    for (int c = 0; c < chunks && st == DITATTN_OK; c++) {
      int64_t h_lo, h_hi;
      dt_side_chunk_bh(pb->o->H, chunks, c, &h_lo, &h_hi);
      for (int i = 1; i < 3 && st == DITATTN_OK; i++) {
        ditattn_tensor to = i == 1 ? pb->k : pb->v;
        to.data = (char *)overlap_buf + (size_t)i * (size_t)(pb->o->H * pb->o->N * pb->o->D) *
                                            ditattn_dtype_size(pb->o->dtype);
        const void *from = pb->link_src ? pb->link_src : i == 1 ? pb->k.data : pb->v.data;
        int64_t rows = pb->o->N - M;
        if (pb->link_src) rows = (int64_t)((double)rows * pb->link_scale) + 1;
        if (pb->o->N > M) st = dt_dist_copy_rows_of(ctx, &to, from, 0, rows, 1, h_lo, h_hi);
      }
      if (st == DITATTN_OK && ctx->ops->side_mark) st = ctx->ops->side_mark(ctx);
    }
    if (st == DITATTN_OK && !late) st = share(pb, is_llsa, row0, M, summary, overlap_buf != NULL);
    if (st == DITATTN_OK) st = op_call(pb, is_llsa, row0, M, &read, NULL);
    if (overlap_buf && st == DITATTN_OK) st = ctx->ops->side_join(ctx);
  } else {
    const dt_summary_arg none = {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0};
    st = op_call(pb, is_llsa, row0, M, &none, NULL);
  }
  return st == DITATTN_OK ? ditattn_synchronize(pb->ctx) : st;
}

/* Best of reps (after one warm-up) of rank_work, in seconds; < 0 on failure. */
static double time_rows(problem *pb, int is_llsa, int64_t row0, int64_t M, void *summary,
                        void *overlap_buf) {
  double best = 1e300;
  for (int rep = 0; rep <= pb->o->reps; rep++) {
    const double t0 = now_s();
    if (rank_work(pb, is_llsa, row0, M, summary, overlap_buf) != DITATTN_OK) return -1.0;
    const double t = now_s() - t0;
    if (rep > 0 && t < best) best = t;
  }
  return best;
}

/* The gather's copies for a rank holding M of N rows: the other N − M rows
 * of q, k and v copied device to device by dt_dist_copy_rows, the copy
 * dist_device_ipc.c makes of a peer's rows, best of reps, in seconds. An upper bound for q, of
 * which the gather copies only the rows near the rank's own. */
static double time_gather_copy(problem *pb, void *dst_buf, int64_t M) {
  const int64_t n = pb->o->N - M;
  if (n == 0) return 0.0;
  double best = 1e300;
  for (int rep = 0; rep <= pb->o->reps; rep++) {
    const double t0 = now_s();
    for (int i = 0; i < 3; i++) {
      const ditattn_tensor *src = i == 0 ? &pb->q : i == 1 ? &pb->k : &pb->v;
      ditattn_tensor to = *src; /* whole-sequence, like src, in the copy target */
      to.data = (char *)dst_buf + (size_t)i * (size_t)(pb->o->H * pb->o->N * pb->o->D) *
                                      ditattn_dtype_size(pb->o->dtype);
      if (dt_dist_copy_rows(pb->ctx, &to, src->data, 0, n, 0) != DITATTN_OK) return -1.0;
    }
    if (ditattn_synchronize(pb->ctx) != DITATTN_OK) return -1.0;
    const double t = now_s() - t0;
    if (rep > 0 && t < best) best = t;
  }
  return best;
}

/* How the own rows are copied (time_own_copy). */
enum { OWN_BATCH, OWN_COPY_2D, OWN_POOL, OWN_WAYS };

/* The rank's own rows [row0, row0 + M) of q, k and v copied into its
 * gather buffers (dst_buf, whole-sequence layout), as dist_device_gather.c
 * does before the peers read them: OWN_BATCH as it does now
 * (dt_dist_copy_tensors: one batched launch), OWN_COPY_2D one copy_2d per
 * tensor (sessions 15-16), OWN_POOL the element-wise ditattn_pool_mean at
 * block 1 (before session 14's fix). Best of reps, seconds; < 0 on failure. */
static double time_own_copy(problem *pb, void *dst_buf, int64_t row0, int64_t M, int way) {
  double best = 1e300;
  for (int rep = 0; rep <= pb->o->reps; rep++) {
    const double t0 = now_s();
    ditattn_tensor src[3], dst[3];
    for (int i = 0; i < 3; i++) {
      const ditattn_tensor *whole = i == 0 ? &pb->q : i == 1 ? &pb->k : &pb->v;
      src[i] = dt_dist_rows_at(whole, whole->data, row0, M);
      dst[i] =
          dt_dist_rows_at(whole,
                          (char *)dst_buf + (size_t)i * (size_t)(pb->o->H * pb->o->N * pb->o->D) *
                                                ditattn_dtype_size(pb->o->dtype),
                          row0, M);
    }
    ditattn_status st = DITATTN_OK;
    if (way == OWN_BATCH) st = dt_dist_copy_tensors(pb->ctx, src, dst, 3);
    for (int i = 0; i < 3 && way != OWN_BATCH && st == DITATTN_OK; i++)
      st = way == OWN_POOL ? ditattn_pool_mean(pb->ctx, &src[i], 1, &dst[i])
                           : dt_dist_copy_tensor(pb->ctx, &src[i], &dst[i], 0);
    if (st != DITATTN_OK || ditattn_synchronize(pb->ctx) != DITATTN_OK) return -1.0;
    const double t = now_s() - t0;
    if (rep > 0 && t < best) best = t;
  }
  return best;
}

/* queue_summary_copy, waited for: best of reps, seconds; < 0 on failure.
 * one_each: as one copy_2d per array and part instead of the batch. */
static double time_summary_copy(problem *pb, const dt_key_summary *l, void *dst, const void *src,
                                int64_t row0, int64_t M, int one_each, double *bytes) {
  double best = 1e300;
  *bytes = 0.0;
  /* The caller's DITATTN_DIST_COPY_BATCH=0 (every timing without the
   * batch) stays as it is. */
  const int toggle = one_each && !dt_dist_env_is("DITATTN_DIST_COPY_BATCH", "0");
  if (toggle) setenv("DITATTN_DIST_COPY_BATCH", "0", 1);
  for (int rep = 0; rep <= pb->o->reps && best >= 0; rep++) {
    const double t0 = now_s();
    if (queue_summary_copy(pb, l, dst, src, row0, M, rep == 0 ? bytes : NULL) != DITATTN_OK ||
        ditattn_synchronize(pb->ctx) != DITATTN_OK)
      best = -1.0;
    const double t = now_s() - t0;
    if (rep > 0 && t < best) best = t;
  }
  if (toggle) unsetenv("DITATTN_DIST_COPY_BATCH");
  return best;
}

/* One table line per P: without the key split, then (where the backend
 * has it) with it. */
static int run_op(problem *pb, int is_llsa, void *copy_buf) {
  const opts *o = pb->o;
  const char *name = is_llsa ? "llsa" : "ropeslr";
  const double row_bytes = (double)(3 * o->H * o->D) * (double)ditattn_dtype_size(o->dtype);
  dt_key_summary layout;
  void *summary[2] = {NULL, NULL}; /* the summary, and a copy target for the exchange */
  const int split = summary_layout(pb, is_llsa, &layout) && pb->ctx->ops->copy_2d &&
                    ditattn_malloc(pb->ctx, layout.bytes, &summary[0]) == DITATTN_OK &&
                    ditattn_malloc(pb->ctx, layout.bytes, &summary[1]) == DITATTN_OK &&
                    rank_work(pb, is_llsa, 0, o->N, summary[0], NULL) == DITATTN_OK;
  const int overlap = split && pb->ctx->ops->side_fork;
  int rc = 0;
  for (int with = 0; with <= split && rc == 0; with++) {
    double t1 = 0.0;
    for (int P = 1; P <= o->max_p && rc == 0; P *= 2) {
      double slowest = 0.0, sum = 0.0, copy_slowest = 0.0, sum_slowest[2] = {0, 0}, sum_mb = 0.0;
      double ov_slowest = 0.0, own_slowest[OWN_WAYS] = {0, 0, 0}, ox_slowest[2] = {0, 0};
      for (int r = 0; r < P && rc == 0; r++) {
        const int64_t row0 = o->N * r / P, M = o->N * (r + 1) / P - row0;
        /* P = 1 holds the whole sequence: the plain forward, no split. */
        const double t = time_rows(pb, is_llsa, row0, M, with && P > 1 ? summary[0] : NULL, NULL);
        const double ov =
            with && overlap && P > 1 ? time_rows(pb, is_llsa, row0, M, summary[0], copy_buf) : 0.0;
        /* The same with the summary exchange's copies, the side copies
         * queued before the share (as dist/ does) and after the exchange. */
        double ox[2] = {0.0, 0.0};
        pb->layout = &layout;
        pb->exchange_dst = summary[1];
        for (int late = 0; late < 2 && with && overlap && P > 1; late++) {
          pb->side_late = late;
          ox[late] = time_rows(pb, is_llsa, row0, M, summary[0], copy_buf);
          if (ox[late] < 0) ox[0] = -1.0;
        }
        pb->exchange_dst = NULL;
        pb->side_late = 0;
        const double c = time_gather_copy(pb, copy_buf, M);
        /* P = 1 copies nothing of its own: it reads the caller's tensors. */
        double own[OWN_WAYS] = {0, 0, 0}, own_min = 0.0;
        for (int way = 0; way < OWN_WAYS && P > 1; way++) {
          own[way] = time_own_copy(pb, copy_buf, row0, M, way);
          own_min = own[way] < own_min ? own[way] : own_min;
        }
        double sbytes = 0.0;
        double sc[2] = {0.0, 0.0}; /* the batch, one copy_2d each */
        for (int each = 0; each < 2 && with; each++)
          sc[each] = time_summary_copy(pb, &layout, summary[1], summary[0], row0, M, each, &sbytes);
        if (t < 0 || c < 0 || sc[0] < 0 || sc[1] < 0 || ov < 0 || own_min < 0 || ox[0] < 0) {
          fprintf(stderr, "gpu_rows: %s P=%d rank %d failed: %s\n", name, P, r,
                  ditattn_last_error(pb->ctx));
          rc = 1;
          break;
        }
        slowest = t > slowest ? t : slowest;
        ov_slowest = ov > ov_slowest ? ov : ov_slowest;
        copy_slowest = c > copy_slowest ? c : copy_slowest;
        for (int each = 0; each < 2; each++)
          sum_slowest[each] = sc[each] > sum_slowest[each] ? sc[each] : sum_slowest[each];
        for (int way = 0; way < OWN_WAYS; way++)
          own_slowest[way] = own[way] > own_slowest[way] ? own[way] : own_slowest[way];
        for (int late = 0; late < 2; late++)
          ox_slowest[late] = ox[late] > ox_slowest[late] ? ox[late] : ox_slowest[late];
        sum_mb = sbytes / 1e6 > sum_mb ? sbytes / 1e6 : sum_mb;
        sum += t;
      }
      if (rc) break;
      if (P == 1) t1 = slowest;
      const double mb = (double)(o->N - o->N / P) * row_bytes / 1e6;
      printf("rows %-7s %-4s D=%-4lld %-5s P=%-2d slowest rank %9.3f ms  mean %9.3f ms  compute "
             "eff %5.2f | gather %7.1f MB/rank, same-GPU copy %7.3f ms",
             name, o->dtype == DITATTN_BF16 ? "bf16" : "f32", (long long)o->D,
             with ? "split" : "whole", P, 1e3 * slowest, 1e3 * sum / P, t1 / (P * slowest), mb,
             1e3 * copy_slowest);
      if (with)
        printf(" | summary %7.1f MB/rank, copy %7.3f ms (one copy_2d each: %7.3f ms)", sum_mb,
               1e3 * sum_slowest[0], 1e3 * sum_slowest[1]);
      if (ov_slowest > 0 && o->link_gbs > 0)
        printf(" | with k/v copies overlapped at %.0f GB/s (emulated): slowest %9.3f ms, eff %5.2f",
               o->link_gbs, 1e3 * ov_slowest, t1 / (P * ov_slowest));
      else if (ov_slowest > 0)
        printf(" | with k/v copies overlapped: slowest %9.3f ms, eff %5.2f", 1e3 * ov_slowest,
               t1 / (P * ov_slowest));
      if (ox_slowest[0] > 0)
        printf(" | plus the summary exchange: slowest %9.3f ms, eff %5.2f (side copies after it: "
               "%9.3f ms, eff %5.2f)",
               1e3 * ox_slowest[0], t1 / (P * ox_slowest[0]), 1e3 * ox_slowest[1],
               t1 / (P * ox_slowest[1]));
      if (P > 1)
        printf(" | own rows into the gather buffer: batch %7.3f ms (copy_2d each: %7.3f ms, "
               "pool_mean: %7.3f ms)",
               1e3 * own_slowest[OWN_BATCH], 1e3 * own_slowest[OWN_COPY_2D],
               1e3 * own_slowest[OWN_POOL]);
      printf("\n");
      fflush(stdout);
    }
  }
  for (int i = 0; i < 2; i++) (void)ditattn_free(pb->ctx, summary[i]);
  return rc;
}

/* --link-gbs: a page-locked source as big as k, and the share of rows to
 * copy from it so that a copy over the host link lasts as long as the
 * whole copy over the emulated link: host GB/s (best of 3 copies of all of
 * k) over the link's. 0 on success. */
static int link_setup(problem *pb) {
  ditattn_context *ctx = pb->ctx;
  const size_t bytes = (size_t)(pb->o->H * pb->o->N * pb->o->D) * ditattn_dtype_size(pb->o->dtype);
  if (!ctx->ops->host_alloc || ctx->ops->host_alloc(ctx, bytes, &pb->link_src) != DITATTN_OK) {
    fprintf(stderr, "gpu_rows: --link-gbs needs page-locked host memory\n");
    pb->link_src = NULL;
    return 1;
  }
  memset(pb->link_src, 0, bytes); /* copied into a buffer nothing reads */
  double best = 1e300;
  for (int rep = 0; rep < 4; rep++) {
    const double t0 = now_s();
    if (ctx->ops->copy_2d(ctx, pb->out.data, bytes, pb->link_src, bytes, bytes, 1) != DITATTN_OK ||
        ditattn_synchronize(ctx) != DITATTN_OK)
      return 1;
    const double t = now_s() - t0;
    if (rep > 0 && t < best) best = t;
  }
  const double host_gbs = (double)bytes / best * 1e-9;
  pb->link_scale = host_gbs / pb->o->link_gbs < 1.0 ? host_gbs / pb->o->link_gbs : 1.0;
  printf("gpu_rows: host link %.1f GB/s measured; k/v copies overlapped at %.0f GB/s emulated "
         "(%.3f of their rows, from host memory)\n",
         host_gbs, pb->o->link_gbs, pb->link_scale);
  return 0;
}

static int parse(int argc, char **argv, opts *o) {
  *o = (opts){131072, 4, 64, DITATTN_BF16, 3, 8, 1, 1, 0.0, DITATTN_BACKEND_CUDA};
  for (int i = 1; i < argc; i += 2) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) return 0;
    if (!strcmp(a, "--n"))
      o->N = atoll(v);
    else if (!strcmp(a, "--heads"))
      o->H = atoll(v);
    else if (!strcmp(a, "--d"))
      o->D = atoll(v);
    else if (!strcmp(a, "--reps"))
      o->reps = atoi(v);
    else if (!strcmp(a, "--backend") && ditattn_backend_parse(v, &o->backend) == DITATTN_OK)
      ;
    else if (!strcmp(a, "--max-p"))
      o->max_p = atoi(v);
    else if (!strcmp(a, "--link-gbs"))
      o->link_gbs = atof(v);
    else if (!strcmp(a, "--dtype") && (!strcmp(v, "bf16") || !strcmp(v, "f32")))
      o->dtype = !strcmp(v, "bf16") ? DITATTN_BF16 : DITATTN_F32;
    else if (!strcmp(a, "--op") &&
             (!strcmp(v, "llsa") || !strcmp(v, "ropeslr") || !strcmp(v, "both"))) {
      o->llsa = strcmp(v, "ropeslr") != 0;
      o->ropeslr = strcmp(v, "llsa") != 0;
    } else
      return 0;
  }
  return o->N > 0 && o->H > 0 && o->D > 0 && o->reps > 0 && o->max_p > 0 && o->link_gbs >= 0;
}

int main(int argc, char **argv) {
  opts o;
  if (!parse(argc, argv, &o)) {
    fprintf(stderr, "usage: ditattn_dist_gpu_rows [--n N] [--heads H] [--d D] [--dtype bf16|f32] "
                    "[--reps R] [--op llsa|ropeslr|both] [--max-p P] [--link-gbs G] "
                    "[--backend cuda|hip|ref]\n");
    return 2;
  }
  ditattn_context *ctx = NULL;
  ditattn_status st = ditattn_context_create(o.backend, &ctx);
  /* The forward is called through the table (it takes a row range), so
   * the API's dtype check is this program's to make. */
  if (st == DITATTN_OK && (!ctx->ops->query_rows || !(ctx->ops->dtypes & (1u << o.dtype)))) {
    ditattn_context_destroy(ctx);
    st = DITATTN_ERR_UNSUPPORTED;
  }
  if (st != DITATTN_OK) {
    fprintf(stderr, "gpu_rows: no %s context that computes ranges of rows of this dtype: %s\n",
            ditattn_backend_name(o.backend), ditattn_strerror(st));
    return 1;
  }
  /* q, k, v ~ U(-1, 1), rounded to the dtype on upload; out; a copy target. */
  const size_t n = (size_t)(o.H * o.N * o.D);
  float *host = malloc(n * sizeof(float));
  void *dev[5] = {NULL};
  problem pb;
  memset(&pb, 0, sizeof pb);
  pb.ctx = ctx;
  pb.o = &o;
  int rc = host ? 0 : 1;
  dtu_rng rng = {20261123};
  for (int i = 0; i < 4 && rc == 0; i++) {
    for (size_t j = 0; j < n; j++) host[j] = (float)dtu_uniform(&rng, -1.0, 1.0);
    rc = gx_upload(ctx, host, n, o.dtype, &dev[i]) != DITATTN_OK;
  }
  if (rc == 0) rc = ditattn_malloc(ctx, 3 * n * ditattn_dtype_size(o.dtype), &dev[4]) != DITATTN_OK;
  if (rc == 0) {
    ditattn_tensor *t[4] = {&pb.q, &pb.k, &pb.v, &pb.out};
    for (int i = 0; i < 4; i++) *t[i] = ditattn_tensor_bhnd(dev[i], o.dtype, 1, o.H, o.N, o.D);
    rc = o.ropeslr && dt_slr_bench_problem_new(ctx, o.N, o.H, o.D, 0, o.N, &pb.slr) != DITATTN_OK;
  }
  if (rc)
    fprintf(stderr, "gpu_rows: setup failed: %s\n", ditattn_last_error(ctx));
  else {
    printf("gpu_rows: %s, N=%lld B=1 H=%lld D=%lld, best of %d; rank r of P computes rows "
           "[N*r/P, N*(r+1)/P)\n",
           ditattn_backend_name(ditattn_context_backend(ctx)), (long long)o.N, (long long)o.H,
           (long long)o.D, o.reps);
    if (o.link_gbs > 0) rc = link_setup(&pb);
    if (o.llsa && rc == 0) rc |= run_op(&pb, 1, dev[4]);
    if (o.ropeslr && rc == 0) rc |= run_op(&pb, 0, dev[4]);
  }
  if (pb.link_src) (void)ctx->ops->host_free(ctx, pb.link_src);
  if (o.ropeslr) dt_slr_bench_problem_free(&pb.slr);
  for (int i = 0; i < 5; i++) (void)ditattn_free(ctx, dev[i]);
  free(host);
  ditattn_context_destroy(ctx);
  return rc;
}
