/* Distributed LLSA backward (spec §4): the forward's global pooling and
 * selection, then
 *   dq: local (every key a local query attends to contributes);
 *   fine dk/dv: the gradient ring (dist_llsa_backward_ring.c) carries each
 *     K/V slice with a dK/dV accumulator; every rank adds its queries'
 *     contributions to the parts of their selected level-1 blocks that lie
 *     in the visiting slice;
 *   pooled dk/dv: every rank's contributions to the pooled keys of every
 *     level are summed over ranks (MPI_Allreduce, double), then pushed back
 *     to this rank's tokens through the mean (d_pooled / cnt).
 * Pooled q only selects, so it gets no gradient. Everything in double, as
 * ref/ does (scores, probabilities, all gradient sums) on REF contexts; on
 * CPU contexts the CPU backend's tile kernels (float tiles, as the
 * single-process CPU backward), each tile added to double accumulators. */
#include "dist_llsa.h"
#include "dist_llsa_backward.h"

#include <limits.h>
#include <math.h>
#include <string.h>

typedef struct llsa_bwd {
  llsa_run R; /* ctx, use_cpu, job, pooled q/k/v, selection (shared with the forward) */
  const ditattn_tensor *q, *out, *dout;
  const float *lse;
  float scale;
  double *delta;  /* BH × len: Δ_i = o_i · dO_i */
  float *delta_f; /* the same, float (CPU tile kernel) */
  double *dq;     /* BH × len × D */
  double *home;   /* 2 × BH × len × D: fine dk then dv of this rank's tokens */
  double *dpool;  /* BH × dpool_per_bh: pooled dk, dv of every level */
  int64_t dpool_base[DT_LLSA_LEVEL_SLOTS], dpool_per_bh;
  dt_llsa_key *keys;                /* max_keys */
  float *qf, *gf;                   /* span_1 × D: one block's q and dO rows */
  double *kd, *vd, *dkd, *dvd, *lw; /* list rows: one key list (double) */
  float *kf, *vf, *lwf;             /* list rows: pooled keys in float (CPU) */
  float *cpu_buf;                   /* dt_dist_bwd_cpu_scratch_floats(D) */
  dt_bwd_cpu_scratch cpu;
} llsa_bwd;

/* Pooled dk (x = 0) or dv (x = 1) of level l for bh: n_l × D. */
static double *dpool_at(const llsa_bwd *W, int64_t bh, int l, int x) {
  return W->dpool + bh * W->dpool_per_bh + W->dpool_base[l] +
         (int64_t)x * W->R.pool.g.n[l] * W->R.D;
}

static void bwd_free(llsa_bwd *W) {
  dt_dist_pool_free(&W->R.pool);
  void *bufs[] = {W->R.sel_data, W->R.cand, W->R.scored, W->delta, W->dq,  W->home, W->dpool,
                  W->keys,       W->kd,     W->vd,       W->dkd,   W->dvd, W->lw};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dt_free(bufs[i]);
}

static ditattn_status bwd_alloc(llsa_bwd *W, const ditattn_llsa_params *params, int64_t N,
                                int64_t BH) {
  llsa_run *R = &W->R;
  TRY(dt_dist_pool_alloc(R->job, params, N, BH, R->D, &R->pool));
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t D = R->D, rows = BH * R->len;
  dt_dist_llsa_sel_layout(R);
  W->dpool_per_bh = 0;
  for (int l = 1; l <= g->L; l++) {
    W->dpool_base[l] = W->dpool_per_bh;
    W->dpool_per_bh += 2 * g->n[l] * D; /* <= the pooled q, k, v that exist */
  }
  const int64_t list = g->max_keys > g->span[1] ? g->max_keys : g->span[1];
  R->sel_data = dt_llsa_alloc(BH, R->sel_per_bh, sizeof(int64_t));
  R->cand = dt_llsa_alloc(g->max_cand, 1, sizeof(int64_t));
  R->scored = dt_llsa_alloc(g->max_cand, 1, sizeof(dt_llsa_scored));
  W->delta = dt_llsa_alloc(rows, 1, sizeof(double));
  W->dq = dt_llsa_alloc(rows, D, sizeof(double));
  W->home = dt_llsa_alloc(2 * rows, D, sizeof(double));
  W->dpool = dt_llsa_alloc(BH, W->dpool_per_bh, sizeof(double));
  W->keys = dt_llsa_alloc(g->max_keys, 1, sizeof(dt_llsa_key));
  W->kd = dt_llsa_alloc(list, D, sizeof(double));
  W->vd = dt_llsa_alloc(list, D, sizeof(double));
  W->dkd = dt_llsa_alloc(list, D, sizeof(double));
  W->dvd = dt_llsa_alloc(list, D, sizeof(double));
  W->lw = dt_llsa_alloc(list, 1, sizeof(double));
  W->delta_f = dt_llsa_alloc(rows, 1, sizeof(float));
  W->qf = dt_llsa_alloc(g->span[1], D, sizeof(float));
  W->gf = dt_llsa_alloc(g->span[1], D, sizeof(float));
  W->kf = dt_llsa_alloc(list, D, sizeof(float));
  W->vf = dt_llsa_alloc(list, D, sizeof(float));
  W->lwf = dt_llsa_alloc(list, 1, sizeof(float));
  W->cpu_buf = dt_llsa_alloc(dt_dist_bwd_cpu_scratch_floats(D), 1, sizeof(float));
  if (!R->sel_data || !R->cand || !R->scored || !W->delta || !W->dq || !W->home || !W->dpool ||
      !W->keys || !W->kd || !W->vd || !W->dkd || !W->dvd || !W->lw || !W->delta_f || !W->qf ||
      !W->gf || !W->kf || !W->vf || !W->lwf || !W->cpu_buf)
    return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "llsa backward workspace for %lld local rows of %lld and %lld keys per query",
                   (long long)rows, (long long)D, (long long)g->max_keys);
  W->cpu = dt_dist_bwd_cpu_scratch_split(W->cpu_buf, D);
  return DITATTN_OK;
}

/* The local query rows of level-1 block g1 of bh, loaded into Q. */
static void load_block(llsa_bwd *W, int64_t bh, int64_t g1, dt_bwd_queries *Q) {
  const llsa_run *R = &W->R;
  const int64_t start = dt_llsa_block_start(&R->pool.g, 1, g1);
  const int64_t end = start + dt_llsa_block_count(&R->pool.g, 1, g1);
  const int64_t a = start > R->off ? start : R->off;
  const int64_t e = end < R->off + R->len ? end : R->off + R->len;
  const int64_t row0 = bh * R->len + (a - R->off);
  Q->rows = e - a;
  Q->D = R->D;
  Q->scale = W->scale;
  dt_cpu_load_rows(W->q, bh / R->H, bh % R->H, a - R->off, Q->rows, 1.0f, W->qf);
  dt_cpu_load_rows(W->dout, bh / R->H, bh % R->H, a - R->off, Q->rows, 1.0f, W->gf);
  Q->q = W->qf;
  Q->dout = W->gf;
  Q->lse = W->lse + row0;
  Q->delta = W->delta + row0;
  Q->delta_f = W->delta_f + row0;
  Q->dq = W->dq + row0 * R->D;
}

/* Pooled keys of level-1 block g1's key list: their gradients through Q,
 * added to the pooled accumulators. */
static void pooled_keys(llsa_bwd *W, int64_t bh, int64_t g1, const dt_bwd_queries *Q) {
  llsa_run *R = &W->R;
  const int64_t D = R->D;
  int64_t *sel[DT_LLSA_LEVEL_SLOTS];
  dt_dist_llsa_sel_of(R, bh, sel);
  const int64_t nk = dt_llsa_keys(&R->pool.g, (const int64_t *const *)sel, g1, W->keys, R->cand);
  int64_t np = 0;
  for (int64_t j = 0; j < nk; j++) {
    const int l = W->keys[j].level;
    if (l == 0) continue;
    const double *pk = dt_dist_pooled_at(&R->pool, bh, l, 1) + W->keys[j].index * D;
    const double *pv = dt_dist_pooled_at(&R->pool, bh, l, 2) + W->keys[j].index * D;
    if (R->use_cpu)
      for (int64_t d = 0; d < D; d++) {
        W->kf[np * D + d] = (float)pk[d];
        W->vf[np * D + d] = (float)pv[d];
      }
    else
      for (int64_t d = 0; d < D; d++) {
        W->kd[np * D + d] = pk[d];
        W->vd[np * D + d] = pv[d];
      }
    W->lw[np] = W->keys[j].log_w;
    W->lwf[np] = (float)W->keys[j].log_w;
    W->keys[np++] = W->keys[j]; /* compact: pooled keys only, same order */
  }
  memset(W->dkd, 0, (size_t)(np * D) * sizeof(double));
  memset(W->dvd, 0, (size_t)(np * D) * sizeof(double));
  if (R->use_cpu)
    dt_dist_bwd_keys_cpu(Q, &W->cpu, np, W->kf, D, W->vf, D, W->lwf, W->dkd, W->dvd);
  else
    dt_dist_bwd_keys_ref(Q, np, W->kd, W->vd, W->lw, W->dkd, W->dvd);
  for (int64_t j = 0; j < np; j++) {
    const int l = W->keys[j].level;
    double *dk = dpool_at(W, bh, l, 0) + W->keys[j].index * D;
    double *dv = dpool_at(W, bh, l, 1) + W->keys[j].index * D;
    for (int64_t d = 0; d < D; d++) {
      dk[d] += W->dkd[j * D + d];
      dv[d] += W->dvd[j * D + d];
    }
  }
}

/* Selection, Δ, zeroed accumulators, and the pooled keys' contributions
 * (this rank's queries only; summed over ranks afterwards). */
static void local_pass(llsa_bwd *W) {
  llsa_run *R = &W->R;
  const int64_t D = R->D, BH = R->pool.BH;
  memset(W->dq, 0, (size_t)(BH * R->len * D) * sizeof(double));
  memset(W->home, 0, (size_t)(2 * BH * R->len * D) * sizeof(double));
  memset(W->dpool, 0, (size_t)(BH * W->dpool_per_bh) * sizeof(double));
  for (int64_t bh = 0; bh < BH; bh++) {
    dt_dist_llsa_select(R, bh);
    for (int64_t n = 0; n < R->len; n++) {
      const float *o = dt_f32_at(W->out, bh / R->H, bh % R->H, n, 0);
      const float *dout = dt_f32_at(W->dout, bh / R->H, bh % R->H, n, 0);
      double delta = 0.0;
      for (int64_t d = 0; d < D; d++) delta += (double)o[d] * (double)dout[d];
      W->delta[bh * R->len + n] = delta;
      W->delta_f[bh * R->len + n] = (float)delta;
    }
    for (int64_t g1 = R->pool.lo[1]; g1 <= R->pool.hi[1]; g1++) {
      dt_bwd_queries Q;
      load_block(W, bh, g1, &Q);
      pooled_keys(W, bh, g1, &Q);
    }
  }
}

/* Sums the pooled gradients over ranks, in chunks that fit MPI's int count. */
static ditattn_status reduce_pooled(llsa_bwd *W) {
  dt_dist_job *job = W->R.job;
  if (job->size == 1) return DITATTN_OK;
  const int64_t total = W->R.pool.BH * W->dpool_per_bh, chunk = INT_MAX / 2;
  double t0 = MPI_Wtime();
  int err = MPI_SUCCESS;
  for (int64_t at = 0; at < total && err == MPI_SUCCESS; at += chunk) {
    const int64_t n = total - at < chunk ? total - at : chunk;
    err = MPI_Allreduce(MPI_IN_PLACE, W->dpool + at, (int)n, MPI_DOUBLE, MPI_SUM, job->comm);
  }
  job->stats.bytes_sent += total * (int64_t)sizeof(double);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  return err == MPI_SUCCESS ? DITATTN_OK
                            : dt_dist_mpi_fail(W->R.ctx, err, "MPI_Allreduce (pooled gradients)");
}

/* Fine tokens of the selected level-1 blocks that lie in rank src's slice. */
static ditattn_status bwd_step(void *user, int step, int src, const ditattn_tensor *k,
                               const ditattn_tensor *v, double *dkv) {
  (void)step;
  llsa_bwd *W = user;
  llsa_run *R = &W->R;
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t D = R->D, BH = R->pool.BH;
  const int64_t s_off = R->job->offset[src], s_len = R->job->length[src], s_end = s_off + s_len;
  for (int64_t bh = 0; bh < BH; bh++) {
    const int64_t bi = bh / R->H, hi = bh % R->H;
    int64_t *sel[DT_LLSA_LEVEL_SLOTS];
    dt_dist_llsa_sel_of(R, bh, sel);
    for (int64_t g1 = R->pool.lo[1]; g1 <= R->pool.hi[1]; g1++) {
      const int64_t *row = sel[1] + g1 * g->width[1];
      dt_bwd_queries Q;
      int loaded = 0;
      for (int64_t r = 0; r < g->width[1] && row[r] >= 0; r++) {
        const int64_t start = dt_llsa_block_start(g, 1, row[r]);
        const int64_t end = start + dt_llsa_block_count(g, 1, row[r]);
        const int64_t a = start > s_off ? start : s_off, e = end < s_end ? end : s_end;
        if (a >= e) continue;
        if (!loaded) load_block(W, bh, g1, &Q);
        loaded = 1;
        double *dk = dkv + (bh * s_len + (a - s_off)) * D;
        double *dv = dkv + ((BH + bh) * s_len + (a - s_off)) * D;
        const float *kt = dt_f32_at(k, bi, hi, a - s_off, 0);
        const float *vt = dt_f32_at(v, bi, hi, a - s_off, 0);
        if (R->use_cpu) {
          dt_dist_bwd_keys_cpu(&Q, &W->cpu, e - a, kt, k->stride[2], vt, v->stride[2], NULL, dk,
                               dv);
          continue;
        }
        for (int64_t t = 0; t < e - a; t++)
          for (int64_t d = 0; d < D; d++) {
            W->kd[t * D + d] = (double)kt[t * k->stride[2] + d];
            W->vd[t * D + d] = (double)vt[t * v->stride[2] + d];
          }
        dt_dist_bwd_keys_ref(&Q, e - a, W->kd, W->vd, NULL, dk, dv);
      }
    }
  }
  return DITATTN_OK;
}

/* dq as computed; dk_t = fine dk_t + Σ_l dpk_l[c_l(t)] / cnt_l[c_l(t)]
 * (ref/'s write_token_grads, on this rank's tokens); likewise dv. */
static void write_grads(const llsa_bwd *W, ditattn_tensor *dq, ditattn_tensor *dk,
                        ditattn_tensor *dv) {
  const llsa_run *R = &W->R;
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t D = R->D, BH = R->pool.BH;
  for (int64_t bh = 0; bh < BH; bh++)
    for (int64_t n = 0; n < R->len; n++) {
      const int64_t bi = bh / R->H, hi = bh % R->H, t = R->off + n;
      float *q_out = dt_f32_at(dq, bi, hi, n, 0);
      float *k_out = dt_f32_at(dk, bi, hi, n, 0);
      float *v_out = dt_f32_at(dv, bi, hi, n, 0);
      const double *gq = W->dq + (bh * R->len + n) * D;
      const double *gk = W->home + (bh * R->len + n) * D;
      const double *gv = W->home + ((BH + bh) * R->len + n) * D;
      for (int64_t d = 0; d < D; d++) {
        double sk = gk[d], sv = gv[d];
        for (int l = 1; l <= g->L; l++) {
          const int64_t c = t / g->span[l];
          const double cnt = (double)dt_llsa_block_count(g, l, c);
          sk += dpool_at(W, bh, l, 0)[c * D + d] / cnt;
          sv += dpool_at(W, bh, l, 1)[c * D + d] / cnt;
        }
        q_out[d] = (float)gq[d];
        k_out[d] = (float)sk;
        v_out[d] = (float)sv;
      }
    }
}

ditattn_status
ditattn_dist_llsa_backward(ditattn_context *ctx, MPI_Comm comm, const ditattn_dist_slice *slice,
                           const ditattn_llsa_params *params, const ditattn_tensor *q,
                           const ditattn_tensor *k, const ditattn_tensor *v,
                           const ditattn_tensor *out, const float *lse, const ditattn_tensor *dout,
                           ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv) {
  int64_t prm[DT_DP_COUNT];
  memset(prm, 0, sizeof prm);
  prm[DT_DP_OP] = DT_DIST_OP_LLSA_BWD;
  float scale = 0.0f;
  ditattn_status local = dt_dist_check_local(ctx, slice, q, k, v, out, lse, prm);
  if (local == DITATTN_OK)
    local =
        dt_dist_check_grads(ctx, "dist llsa backward", slice, q, k, v, out, lse, dout, dq, dk, dv);
  if (local == DITATTN_OK) local = dt_dist_llsa_check_params(ctx, params, q->shape[3], &scale, prm);
  dt_dist_job job;
  TRY(dt_dist_begin(&job, ctx, comm, slice, local, prm));

  llsa_bwd W;
  memset(&W, 0, sizeof W);
  W.R.ctx = ctx;
  W.R.use_cpu = ctx->backend == DITATTN_BACKEND_CPU;
  W.R.job = &job;
  W.R.H = q->shape[1];
  W.R.D = q->shape[3];
  W.R.len = slice->length;
  W.R.off = slice->offset;
  W.q = q;
  W.out = out;
  W.dout = dout;
  W.lse = lse;
  W.scale = scale;
  ditattn_status st =
      dt_dist_agree(&job, bwd_alloc(&W, params, slice->n_global, q->shape[0] * q->shape[1]));
  if (st == DITATTN_OK) st = dt_dist_pool(&job, &W.R.pool, q, k, v);
  /* As the forward: OpenBLAS single-threaded inside the tile kernels. */
  const int blas_saved = W.R.use_cpu ? dt_cpu_blas_enter() : 0;
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    local_pass(&W);
    dt_dist_tick(&t0, &job.stats.compute_s);
    st = dt_dist_agree(&job, reduce_pooled(&W));
  }
  if (st == DITATTN_OK) st = dt_dist_grad_ring_run(&job, k, v, bwd_step, &W, W.home);
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    write_grads(&W, dq, dk, dv);
    dt_dist_tick(&t0, &job.stats.compute_s);
  }
  if (W.R.use_cpu) dt_cpu_blas_leave(blas_saved);
  bwd_free(&W);
  return dt_dist_end(&job, st);
}
