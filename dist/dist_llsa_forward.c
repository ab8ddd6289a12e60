/* Distributed LLSA forward: global pooling (all-gather), local selection
 * with ref/'s helpers (identical to the single-process selection), pooled
 * enrichment keys locally, fine K/V slices around the ring. */
#include "dist_device.h"
#include "dist_llsa.h"
#include "dist_llsa_attend.h"
#include "dist_ring.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ditattn_status check_params(ditattn_context *ctx, const ditattn_llsa_params *params) {
  if (!params) return dt_fail(ctx, DITATTN_ERR_NULL_POINTER, "params is NULL");
  if (params->block < 2)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "block size b = %lld, must be >= 2",
                   (long long)params->block);
  if (params->levels < 1 || params->levels > DITATTN_LLSA_MAX_LEVELS)
    return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT, "levels L = %d, must be in [1, %d]",
                   params->levels, DITATTN_LLSA_MAX_LEVELS);
  for (int l = 0; l < params->levels; l++)
    if (params->topk[l] < 1 || params->topk[l] > INT32_MAX)
      return dt_fail(ctx, DITATTN_ERR_INVALID_ARGUMENT,
                     "top-K of level %d = %lld, must be in "
                     "[1, 2^31)",
                     l + 1, (long long)params->topk[l]);
  return DITATTN_OK;
}

ditattn_status dt_dist_llsa_check_params(ditattn_context *ctx, const ditattn_llsa_params *params,
                                         int64_t D, float *scale, int64_t prm[DT_DP_COUNT]) {
  TRY(check_params(ctx, params));
  TRY(dt_dist_scale_param(ctx, params->scale, D, scale, prm));
  prm[DT_DP_BLOCK] = params->block;
  prm[DT_DP_LEVELS] = params->levels;
  for (int l = 0; l < params->levels; l++) prm[DT_DP_TOPK0 + l] = params->topk[l];
  return DITATTN_OK;
}

void dt_dist_llsa_sel_layout(llsa_run *R) {
  R->sel_per_bh = 0;
  for (int l = 1; l <= R->pool.g.L; l++) {
    R->sel_base[l] = R->sel_per_bh;
    R->sel_per_bh += R->pool.g.n[l] * R->pool.g.width[l];
  }
}

void dt_dist_llsa_sel_of(const llsa_run *R, int64_t bh, int64_t *sel[DT_LLSA_LEVEL_SLOTS]) {
  sel[0] = NULL;
  for (int l = 1; l <= R->pool.g.L; l++) sel[l] = R->sel_data + bh * R->sel_per_bh + R->sel_base[l];
}

/* ref/'s selection score (llsa_select.c): the same sum order, so the same
 * rounding and the same selected sets. */
static double score_dot(const double *a, const double *b, int64_t D) {
  double s = 0.0;
  for (int64_t d = 0; d < D; d++) s += a[d] * b[d];
  return s;
}

/* §2 for the blocks this rank's queries touch (every level), coarse to fine;
 * a touched block's parent is touched too, so its row exists. */
void dt_dist_llsa_select(llsa_run *R, int64_t bh) {
  const dt_llsa_geom *g = &R->pool.g;
  int64_t *sel[DT_LLSA_LEVEL_SLOTS];
  dt_dist_llsa_sel_of(R, bh, sel);
  for (int l = g->L; l >= 1; l--) {
    const double *pq = dt_dist_pooled_at(&R->pool, bh, l, 0);
    const double *pk = dt_dist_pooled_at(&R->pool, bh, l, 1);
    for (int64_t gq = R->pool.lo[l]; gq <= R->pool.hi[l]; gq++) {
      const int64_t nc = dt_llsa_candidates(g, (const int64_t *const *)sel, l, gq, R->cand);
      for (int64_t i = 0; i < nc; i++) {
        R->scored[i].index = R->cand[i];
        R->scored[i].score = score_dot(pq + gq * g->D, pk + R->cand[i] * g->D, g->D);
      }
      const int64_t chosen = dt_llsa_topk(R->scored, nc, g->topk[l]);
      int64_t *row = sel[l] + gq * g->width[l];
      for (int64_t r = 0; r < g->width[l]; r++) row[r] = r < chosen ? R->scored[r].index : -1;
    }
  }
}

/* The local query rows of level-1 block g1 and their state. */
int64_t dt_dist_llsa_block_rows(const llsa_run *R, int64_t bh, int64_t g1, int64_t *row0,
                                dt_cpu_softmax_state *st) {
  const int64_t start = dt_llsa_block_start(&R->pool.g, 1, g1);
  const int64_t end = start + dt_llsa_block_count(&R->pool.g, 1, g1);
  const int64_t a = start > R->off ? start : R->off;
  const int64_t e = end < R->off + R->len ? end : R->off + R->len;
  *row0 = bh * R->len + (a - R->off);
  st->row_max = R->row_max + *row0;
  st->row_sum = R->row_sum + *row0;
  st->acc = R->acc + *row0 * R->D;
  return e - a;
}

/* Pooled keys (levels 1 .. L) of every local query block. */
void dt_dist_llsa_attend_pooled(llsa_run *R, int64_t bh) {
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t D = R->D;
  int64_t *sel[DT_LLSA_LEVEL_SLOTS];
  dt_dist_llsa_sel_of(R, bh, sel);
  for (int64_t g1 = R->pool.lo[1]; g1 <= R->pool.hi[1]; g1++) {
    const int64_t nk = dt_llsa_keys(g, (const int64_t *const *)sel, g1, R->keys, R->cand);
    int64_t np = 0;
    for (int64_t j = 0; j < nk; j++) {
      if (R->keys[j].level == 0) continue;
      const int l = R->keys[j].level;
      const double *pk = dt_dist_pooled_at(&R->pool, bh, l, 1) + R->keys[j].index * D;
      const double *pv = dt_dist_pooled_at(&R->pool, bh, l, 2) + R->keys[j].index * D;
      for (int64_t d = 0; d < D; d++) {
        R->kf[np * D + d] = (float)pk[d];
        R->vf[np * D + d] = (float)pv[d];
      }
      R->lnw[np++] = (float)R->keys[j].log_w;
    }
    int64_t row0;
    dt_cpu_softmax_state st;
    const int64_t rows = dt_dist_llsa_block_rows(R, bh, g1, &row0, &st);
    dt_dist_attend(R->use_cpu, rows, np, D, R->qs + row0 * D, R->kf, D, R->vf, D, R->lnw, R->tile,
                   &st);
  }
}

/* Fine tokens of the selected level-1 blocks that lie in rank src's slice. */
static ditattn_status llsa_step(void *user, int step, int src, const ditattn_tensor *k,
                                const ditattn_tensor *v) {
  llsa_run *R = user;
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t D = R->D, BH = R->pool.BH;
  const int64_t s_off = R->job->offset[src], s_end = s_off + R->job->length[src];
  for (int64_t bh = 0; bh < BH; bh++) {
    if (step == 0) dt_dist_llsa_attend_pooled(R, bh);
    const int64_t bi = bh / R->H, hi = bh % R->H;
    int64_t *sel[DT_LLSA_LEVEL_SLOTS];
    dt_dist_llsa_sel_of(R, bh, sel);
    for (int64_t g1 = R->pool.lo[1]; g1 <= R->pool.hi[1]; g1++) {
      int64_t row0;
      dt_cpu_softmax_state st;
      const int64_t rows = dt_dist_llsa_block_rows(R, bh, g1, &row0, &st);
      const int64_t *row = sel[1] + g1 * g->width[1];
      for (int64_t r = 0; r < g->width[1] && row[r] >= 0; r++) {
        const int64_t start = dt_llsa_block_start(g, 1, row[r]);
        const int64_t end = start + dt_llsa_block_count(g, 1, row[r]);
        const int64_t a = start > s_off ? start : s_off, e = end < s_end ? end : s_end;
        if (a >= e) continue;
        dt_dist_attend(R->use_cpu, rows, e - a, D, R->qs + row0 * D,
                       dt_f32_at(k, bi, hi, a - s_off, 0), k->stride[2],
                       dt_f32_at(v, bi, hi, a - s_off, 0), v->stride[2], NULL, R->tile, &st);
      }
    }
  }
  return DITATTN_OK;
}

static void run_free(llsa_run *R) {
  dt_dist_pool_free(&R->pool);
  void *bufs[] = {R->sel_data, R->cand, R->scored, R->qs, R->row_max, R->row_sum,
                  R->acc,      R->tile, R->kf,     R->vf, R->lnw,     R->keys};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dt_free(bufs[i]);
}

static ditattn_status run_alloc(llsa_run *R, const ditattn_llsa_params *params, int64_t N,
                                int64_t BH) {
  TRY(dt_dist_pool_alloc(R->job, params, N, BH, R->D, &R->pool));
  const dt_llsa_geom *g = &R->pool.g;
  dt_dist_llsa_sel_layout(R);
  const int64_t rows = BH * R->len, D = R->D;
  R->sel_data = dt_llsa_alloc(BH, R->sel_per_bh, sizeof(int64_t));
  R->cand = dt_llsa_alloc(g->max_cand, 1, sizeof(int64_t));
  R->scored = dt_llsa_alloc(g->max_cand, 1, sizeof(dt_llsa_scored));
  R->qs = dt_llsa_alloc(rows, D, sizeof(float));
  R->row_max = dt_llsa_alloc(rows, 1, sizeof(float));
  R->row_sum = dt_llsa_alloc(rows, 1, sizeof(float));
  R->acc = dt_llsa_alloc(rows, D, sizeof(float));
  R->tile = dt_llsa_alloc((int64_t)DT_CPU_ATTEND_SCRATCH(g->span[1], D), 1, sizeof(float));
  R->kf = dt_llsa_alloc(g->max_keys, D, sizeof(float));
  R->vf = dt_llsa_alloc(g->max_keys, D, sizeof(float));
  R->lnw = dt_llsa_alloc(g->max_keys, 1, sizeof(float));
  R->keys = dt_llsa_alloc(g->max_keys, 1, sizeof(dt_llsa_key));
  if (!R->sel_data || !R->cand || !R->scored || !R->qs || !R->row_max || !R->row_sum || !R->acc ||
      !R->tile || !R->kf || !R->vf || !R->lnw || !R->keys)
    return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "llsa workspace for %lld local rows of %lld and %lld keys per query",
                   (long long)rows, (long long)D, (long long)g->max_keys);
  return DITATTN_OK;
}

/* K/V bytes of the selected fine blocks outside this rank's slice: what a
 * fetch-only-what-is-selected scheme would receive (see docs/dist.md). */
static int64_t fetch_bytes(const llsa_run *R) {
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t lo = R->pool.lo[1], hi = R->pool.hi[1];
  unsigned char *seen = dt_calloc((size_t)g->n[1], 1);
  if (!seen) return -1;
  int64_t rows = 0;
  for (int64_t bh = 0; bh < R->pool.BH; bh++) {
    int64_t *sel[DT_LLSA_LEVEL_SLOTS];
    dt_dist_llsa_sel_of(R, bh, sel);
    memset(seen, 0, (size_t)g->n[1]);
    for (int64_t g1 = lo; g1 <= hi; g1++)
      for (int64_t r = 0; r < g->width[1]; r++) {
        const int64_t c = sel[1][g1 * g->width[1] + r];
        if (c < 0 || seen[c]) continue;
        seen[c] = 1;
        const int64_t start = dt_llsa_block_start(g, 1, c);
        const int64_t end = start + dt_llsa_block_count(g, 1, c);
        const int64_t a = start > R->off ? start : R->off;
        const int64_t e = end < R->off + R->len ? end : R->off + R->len;
        rows += (end - start) - (e > a ? e - a : 0);
      }
  }
  dt_free(seen);
  return 2 * rows * R->D * (int64_t)sizeof(float);
}

/* Ring or fetch, the same on every rank. DITATTN_DIST_LLSA=ring|fetch forces
 * one; otherwise fetch when every rank would receive under half of what the
 * ring brings it (measured on this call's selection). */
static int choose_fetch(llsa_run *R, int64_t fetch) {
  dt_dist_job *job = R->job;
  if (job->size == 1) return 0;
  const char *env = getenv("DITATTN_DIST_LLSA");
  int want;
  if (env && !strcmp(env, "ring"))
    want = 0;
  else if (env && !strcmp(env, "fetch"))
    want = 1;
  else {
    const int64_t ring = 2 * (R->pool.g.N - R->len) * R->pool.BH * R->D * (int64_t)sizeof(float);
    want = fetch >= 0 && 2 * fetch < ring;
  }
  int all = 0;
  double t0 = MPI_Wtime();
  if (MPI_Allreduce(&want, &all, 1, MPI_INT, MPI_MIN, job->comm) != MPI_SUCCESS) all = 0;
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  return all;
}

/* Local selection, scaled q, empty state. */
static void prepare(llsa_run *R, const ditattn_tensor *q, float scale) {
  const int64_t D = R->D;
  for (int64_t bh = 0; bh < R->pool.BH; bh++) {
    dt_dist_llsa_select(R, bh);
    for (int64_t n = 0; n < R->len; n++) {
      const float *src = dt_f32_at(q, bh / R->H, bh % R->H, n, 0);
      float *dst = R->qs + (bh * R->len + n) * D;
      for (int64_t d = 0; d < D; d++) dst[d] = src[d] * scale;
    }
  }
  const dt_cpu_softmax_state st = {R->row_max, R->row_sum, R->acc};
  dt_cpu_state_reset(&st, R->pool.BH * R->len, D);
}

static void finish(const llsa_run *R, ditattn_tensor *out, float *lse) {
  for (int64_t bh = 0; bh < R->pool.BH; bh++) {
    const int64_t r0 = bh * R->len;
    const dt_cpu_softmax_state st = {R->row_max + r0, R->row_sum + r0, R->acc + r0 * R->D};
    dt_cpu_state_finish(&st, R->len, R->D, dt_f32_at(out, bh / R->H, bh % R->H, 0, 0),
                        out->stride[2], lse ? lse + r0 : NULL);
  }
}

ditattn_status ditattn_dist_llsa_forward(ditattn_context *ctx, MPI_Comm comm,
                                         const ditattn_dist_slice *slice,
                                         const ditattn_llsa_params *params, const ditattn_tensor *q,
                                         const ditattn_tensor *k, const ditattn_tensor *v,
                                         ditattn_tensor *out, float *lse) {
  int64_t prm[DT_DP_COUNT];
  memset(prm, 0, sizeof prm);
  prm[DT_DP_OP] = DT_DIST_OP_LLSA_FWD;
  float scale = 0.0f;
  ditattn_status local = dt_dist_check_local(ctx, slice, q, k, v, out, lse, prm);
  if (local == DITATTN_OK) local = dt_dist_llsa_check_params(ctx, params, q->shape[3], &scale, prm);
  dt_dist_job job;
  TRY(dt_dist_begin(&job, ctx, comm, slice, local, prm));
  if (dt_dist_is_device(ctx)) {
    ditattn_llsa_params resolved = *params;
    resolved.scale = scale;
    return dt_dist_device_llsa_run(&job, &resolved, q, k, v, out, lse);
  }

  llsa_run R;
  memset(&R, 0, sizeof R);
  R.ctx = ctx;
  R.use_cpu = ctx->backend == DITATTN_BACKEND_CPU;
  R.job = &job;
  R.H = q->shape[1];
  R.D = q->shape[3];
  R.len = slice->length;
  R.off = slice->offset;
  ditattn_status st =
      dt_dist_agree(&job, run_alloc(&R, params, slice->n_global, q->shape[0] * q->shape[1]));
  if (st == DITATTN_OK) st = dt_dist_pool(&job, &R.pool, q, k, v);
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    int saved = R.use_cpu ? dt_cpu_blas_enter() : 0;
    prepare(&R, q, scale);
    job.stats.llsa_fetch_bytes = fetch_bytes(&R);
    dt_dist_tick(&t0, &job.stats.compute_s);
    job.stats.llsa_fetched = choose_fetch(&R, job.stats.llsa_fetch_bytes);
    st = job.stats.llsa_fetched ? dt_dist_llsa_fetch(&R, k, v)
                                : dt_ring_run(&job, k, v, llsa_step, &R);
    /* What the ring receives (or would have), for comparison with fetching. */
    job.stats.ring_bytes_received =
        2 * (R.pool.g.N - R.len) * R.pool.BH * R.D * (int64_t)sizeof(float);
    t0 = MPI_Wtime();
    if (st == DITATTN_OK) finish(&R, out, lse);
    if (R.use_cpu) dt_cpu_blas_leave(saved);
    dt_dist_tick(&t0, &job.stats.compute_s);
  }
  run_free(&R);
  return dt_dist_end(&job, st);
}
