/* Distributed RoPeSLR backward: ref/ropeslr_backward.c's gradients (the
 * selection held constant) on a sliced sequence. The forward's pieces are
 * recomputed as dist_ropeslr_forward.c computes them (global positions,
 * global block means and selection, the selected blocks' rows fetched from
 * their owners, the global factor sums S, z all-reduced), then
 *   sparse branch: per local query row the softmax over its selected
 *     blocks, recomputed in double; dq is local; dk, dv go to this rank's
 *     accumulators, or for fetched blocks to per-slot accumulators that
 *     travel back to the owners (dt_dist_block_fetch_return);
 *   low-rank branch: o_lr,i = S_bgᵀ f_i / den_i, den_i = z_bg · f_i, with
 *     S_bg(G) = S − Σ_{C∈sel(G)} S_C. With dN_i = W dout_i / den_i and
 *     dden_i = −(W dout_i · o_lr,i) / den_i:
 *       df_i = S_bg dN_i + z_bg dden_i                            (local)
 *       dS_bg(G) = Σ_{i∈G} f_i dN_iᵀ,  dz_bg(G) = Σ_{i∈G} f_i dden_i
 *     and a key j of block C gets, with E_C = Σ_G dS_bg(G) − Σ_{G: C∈sel(G)}
 *     dS_bg(G) (and e_C likewise from dz_bg):
 *       dg_j = E_C v_j + e_C,  dv_j += E_Cᵀ g_j.
 *     Each rank adds its query rows' dS_bg, dz_bg into M[C] for every block
 *     C they select and into M[n]; one MPI_Allreduce of M (B·H·(n + 1)·
 *     (r·D + r) doubles) gives every rank E_C for its keys;
 *   features: du = J_φᵀ df, then dx += proj du, dproj += x duᵀ, dE[pos] += du;
 *   weight gradients: summed over ranks (MPI_Allreduce); every rank gets
 *     the totals.
 * Double throughout, on REF and CPU contexts alike (as ref/). */
#include "dist_ropeslr.h"
#include "ditattn/ditattn_dist.h"

#include <limits.h>
#include <math.h>
#include <string.h>

typedef struct slr_bwd {
  slr_run R; /* the forward's state: positions, selection, features, factors */
  const ditattn_tensor *dout;
  dt_dist_block_fetch F;
  double *dq, *dk, *dv; /* BH × len × D each: this rank's rows */
  double *slot_grad;    /* F.nslots × 2·block × D: dk then dv rows of fetched blocks */
  double *M;            /* BH × (n + 1) × rd: Σ dS_bg, dz_bg per selected block; [n]: all */
  double *wg;           /* weight gradients dA, dBk, dEt, dEy, dEx, dW, one after another */
  double *wg_at[6];
  int64_t wg_count;
  double *qd, *gd;     /* D: one query row and its dout, double */
  double *os, *olr;    /* D: its sparse and low-rank outputs */
  double *dolr, *dSG;  /* D; rd: one query block's dS_bg, dz_bg */
  double *df, *du, *u; /* r each */
  double *feat;        /* r: a recomputed feature */
} slr_bwd;

/* A selected block's rows and where their gradients go. */
typedef struct key_block {
  int64_t first, count; /* tokens [first, first + count) */
  const float *k, *v;   /* row of token first */
  int64_t kld, vld;     /* row strides */
  double *dk, *dv;      /* gradient rows of token first, D apart */
} key_block;

static const ditattn_tensor *weight_view(const ditattn_ropeslr_weights *w, int a) {
  const ditattn_tensor *views[6] = {&w->A, &w->Bk, &w->Et, &w->Ey, &w->Ex, &w->W};
  return views[a];
}

enum { WG_A, WG_BK, WG_ET, WG_EY, WG_EX, WG_W };

/* Gradient element (h, row, col) of weight a. */
static double *wg_at(const slr_bwd *W, int a, int64_t h, int64_t row, int64_t col) {
  const ditattn_tensor *t = weight_view(W->R.w, a);
  return W->wg_at[a] + (h * t->shape[2] + row) * t->shape[3] + col;
}

static void *alloc_zeroed(int64_t count, int64_t elem) {
  if (count < 0 || elem <= 0 || (uint64_t)count > SIZE_MAX / (uint64_t)elem) return NULL;
  return dt_calloc((size_t)(count > 0 ? count : 1), (size_t)elem);
}

static void bwd_free(slr_bwd *W) {
  dt_dist_slr_run_free(&W->R);
  dt_dist_block_fetch_free(&W->F);
  void *bufs[] = {W->dq, W->slot_grad, W->M, W->wg, W->qd};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dt_free(bufs[i]);
}

static ditattn_status bwd_alloc(slr_bwd *W) {
  slr_run *R = &W->R;
  TRY(dt_dist_slr_run_alloc(R));
  const int64_t D = R->D, r = R->r, rd = r * D + r, rows = R->BH * R->len;
  W->wg_count = 0;
  for (int a = 0; a < 6; a++) {
    const ditattn_tensor *t = weight_view(R->w, a);
    W->wg_count += t->shape[1] * t->shape[2] * t->shape[3]; /* each view's count was checked */
  }
  W->dq = alloc_zeroed(3 * rows, D * (int64_t)sizeof(double));
  W->M = (R->BH > INT64_MAX / (R->s.n + 1) / rd)
             ? NULL
             : alloc_zeroed(R->BH * (R->s.n + 1), rd * (int64_t)sizeof(double));
  W->wg = alloc_zeroed(W->wg_count, sizeof(double));
  W->qd = alloc_zeroed(5 * D + rd + 4 * r, sizeof(double));
  if (!W->dq || !W->M || !W->wg || !W->qd)
    return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "ropeslr backward: gradients of %lld rows and %lld blocks (D = %lld, r = %lld)",
                   (long long)rows, (long long)(R->BH * (R->s.n + 1)), (long long)D, (long long)r);
  W->dk = W->dq + rows * D;
  W->dv = W->dk + rows * D;
  double *at = W->wg;
  for (int a = 0; a < 6; a++) {
    const ditattn_tensor *t = weight_view(R->w, a);
    W->wg_at[a] = at;
    at += t->shape[1] * t->shape[2] * t->shape[3];
  }
  W->gd = W->qd + D;
  W->os = W->gd + D;
  W->olr = W->os + D;
  W->dolr = W->olr + D;
  W->dSG = W->dolr + D;
  W->df = W->dSG + rd;
  W->du = W->df + r;
  W->u = W->du + r;
  W->feat = W->u + r;
  return DITATTN_OK;
}

/* The forward up to the factors: features and local sums, the global sums
 * (all-reduced), the selected blocks' rows fetched, their factors.
 * Returns the agreed status. */
static ditattn_status recompute_forward(slr_bwd *W) {
  slr_run *R = &W->R;
  dt_dist_job *job = R->job;
  const int64_t rd = R->r * R->D + R->r;
  unsigned char *want = NULL;
  double t0 = MPI_Wtime();
  ditattn_status local = dt_dist_slr_plan_factors(R, &want);
  if (local == DITATTN_OK) dt_dist_slr_local_features(R);
  dt_dist_tick(&t0, &job->stats.compute_s);
  ditattn_status st = dt_dist_agree(job, local);
  if (st == DITATTN_OK) {
    const int err = MPI_Allreduce(R->part, R->total, (int)(R->BH * rd), MPI_DOUBLE, MPI_SUM,
                                  job->comm); /* BH·rd fits an int: dt_dist_slr_run_alloc */
    if (job->size > 1) job->stats.bytes_sent += R->BH * rd * (int64_t)sizeof(double);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    st = dt_dist_agree(job, err == MPI_SUCCESS
                                ? DITATTN_OK
                                : dt_dist_mpi_fail(R->ctx, err, "MPI_Allreduce (factors)"));
  }
  if (st == DITATTN_OK)
    st = dt_dist_block_fetch_start(job, &W->F, R->s.block, R->BH, want, R->k, R->v);
  if (st == DITATTN_OK) {
    t0 = MPI_Wtime();
    dt_dist_slr_factors(R, &W->F, 0);
    W->slot_grad = alloc_zeroed(W->F.nslots * 2 * R->s.block, R->D * (int64_t)sizeof(double));
    local = W->slot_grad ? DITATTN_OK
                         : dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY,
                                   "gradients of %lld fetched blocks", (long long)W->F.nslots);
    dt_dist_tick(&t0, &job->stats.compute_s);
    const ditattn_status done = dt_dist_block_fetch_finish(job, &W->F);
    st = dt_dist_agree(job, local != DITATTN_OK ? local : done);
  }
  if (st == DITATTN_OK) {
    t0 = MPI_Wtime();
    dt_dist_slr_factors(R, &W->F, 1);
    dt_dist_tick(&t0, &job->stats.compute_s);
  }
  dt_free(want);
  return st;
}

static void key_block_of(const slr_bwd *W, int64_t bh, int64_t C, key_block *kb) {
  const slr_run *R = &W->R;
  const int64_t D = R->D, slot = W->F.slot_of[bh * R->s.n + C];
  dt_dist_slr_block(R, C, &kb->first, &kb->count);
  if (slot >= 0) { /* a slot holds the whole block, local rows included */
    kb->k = dt_dist_block_fetch_k(&W->F, slot);
    kb->v = dt_dist_block_fetch_v(&W->F, slot);
    kb->kld = kb->vld = D;
    kb->dk = W->slot_grad + slot * 2 * R->s.block * D;
    kb->dv = kb->dk + R->s.block * D;
    return;
  }
  const int64_t b = bh / R->H, h = bh % R->H, at = kb->first - R->off;
  kb->k = dt_f32_at(R->k, b, h, at, 0);
  kb->v = dt_f32_at(R->v, b, h, at, 0);
  kb->kld = R->k->stride[2];
  kb->vld = R->v->stride[2];
  kb->dk = W->dk + (bh * R->len + at) * D;
  kb->dv = W->dv + (bh * R->len + at) * D;
}

static double dot_row(const double *a, const float *b, int64_t D) {
  double z = 0.0;
  for (int64_t d = 0; d < D; d++) z += a[d] * (double)b[d];
  return z;
}

/* Sparse branch of one query row (W->qd, W->gd) over its selected blocks
 * (ref/ropeslr_sparse.c and _backward.c): the softmax recomputed, then dq
 * (into dq_row) and the keys' dk, dv. */
static void sparse_row(slr_bwd *W, int64_t bh, const int32_t *sel, double *dq_row) {
  const slr_run *R = &W->R;
  const int64_t D = R->D, K = R->s.K;
  const double scale = R->params.scale;
  double zmax = -INFINITY, sum = 0.0;
  key_block kb;
  for (int64_t t = 0; t < K; t++) {
    key_block_of(W, bh, sel[t], &kb);
    for (int64_t j = 0; j < kb.count; j++) {
      const double z = dot_row(W->qd, kb.k + j * kb.kld, D) * scale;
      if (z > zmax) zmax = z;
    }
  }
  for (int64_t d = 0; d < D; d++) W->os[d] = 0.0;
  for (int64_t t = 0; t < K; t++) {
    key_block_of(W, bh, sel[t], &kb);
    for (int64_t j = 0; j < kb.count; j++) {
      const double e = exp(dot_row(W->qd, kb.k + j * kb.kld, D) * scale - zmax);
      const float *vj = kb.v + j * kb.vld;
      sum += e;
      for (int64_t d = 0; d < D; d++) W->os[d] += e * vj[d];
    }
  }
  for (int64_t d = 0; d < D; d++) W->os[d] /= sum;
  const double lse = zmax + log(sum);
  double delta = 0.0; /* dout · o_s */
  for (int64_t d = 0; d < D; d++) delta += W->gd[d] * W->os[d];
  for (int64_t t = 0; t < K; t++) {
    key_block_of(W, bh, sel[t], &kb);
    for (int64_t j = 0; j < kb.count; j++) {
      const float *kj = kb.k + j * kb.kld, *vj = kb.v + j * kb.vld;
      const double prob = exp(dot_row(W->qd, kj, D) * scale - lse);
      const double dz = prob * (dot_row(W->gd, vj, D) - delta) * scale;
      double *dk = kb.dk + j * D, *dv = kb.dv + j * D;
      for (int64_t d = 0; d < D; d++) {
        dv[d] += prob * W->gd[d];
        dq_row[d] += dz * (double)kj[d];
        dk[d] += dz * W->qd[d];
      }
    }
  }
}

/* Feature gradient df of one row x (D floats) at position p through
 * φ(projᵀ x + E[p]) (proj: weight a, WG_A or WG_BK): dx += proj du, the
 * projection's and the tables' gradients += x duᵀ, du. */
static void feature_row(slr_bwd *W, int a, int64_t h, const float *x, const int32_t *p,
                        const double *df, double *dx) {
  const slr_run *R = &W->R;
  const int64_t D = R->D, r = R->r;
  const ditattn_tensor *proj = weight_view(R->w, a);
  dt_dist_slr_feature(R, proj, h, x, p, W->u, W->feat);
  dt_slr_phi_backward(R->params.feature, r, W->u, W->feat, df, W->du);
  for (int64_t d = 0; d < D; d++) {
    const float *prow = dt_f32_at(proj, 0, h, d, 0);
    double *grow = wg_at(W, a, h, d, 0), acc = 0.0;
    for (int64_t m = 0; m < r; m++) {
      acc += (double)prow[m] * W->du[m];
      grow[m] += (double)x[d] * W->du[m];
    }
    dx[d] += acc;
  }
  for (int axis = 0; axis < 3; axis++) {
    double *e = wg_at(W, WG_ET + axis, h, p[axis], 0);
    for (int64_t m = 0; m < r; m++) e[m] += W->du[m];
  }
}

/* Low-rank branch of one query row (features f, W->gd): dW, df into
 * W->df, and the row's share of dS_bg, dz_bg into W->dSG (returns 0 when
 * the branch was a constant 0 for it: empty background, den 0). */
static int lowrank_row(slr_bwd *W, int64_t h, const double *f, int empty) {
  const slr_run *R = &W->R;
  const int64_t D = R->D, r = R->r;
  const double *zbg = R->Sbg + r * D;
  double den = 0.0;
  for (int64_t d = 0; d < D; d++) W->olr[d] = 0.0;
  if (!empty) { /* as dt_dist_slr_finish_head */
    for (int64_t m = 0; m < r; m++) {
      den += f[m] * zbg[m];
      for (int64_t d = 0; d < D; d++) W->olr[d] += f[m] * R->Sbg[m * D + d];
    }
    for (int64_t d = 0; d < D; d++) W->olr[d] = den != 0.0 ? W->olr[d] / den : 0.0;
  }
  double do_o = 0.0; /* dolr · olr */
  for (int64_t d = 0; d < D; d++) {
    double acc = 0.0;
    double *gw = wg_at(W, WG_W, h, d, 0);
    for (int64_t e = 0; e < D; e++) {
      acc += (double)*dt_f32_at(&R->w->W, 0, h, d, e) * W->gd[e];
      gw[e] += W->olr[d] * W->gd[e];
    }
    W->dolr[d] = acc;
    do_o += acc * W->olr[d];
  }
  for (int64_t m = 0; m < r; m++) W->df[m] = 0.0;
  if (empty || den == 0.0) return 0;
  const double dden = -do_o / den;
  double *dzbg = W->dSG + r * D;
  for (int64_t m = 0; m < r; m++) {
    double acc = zbg[m] * dden;
    double *dS = W->dSG + m * D;
    for (int64_t d = 0; d < D; d++) {
      const double dN = W->dolr[d] / den;
      acc += R->Sbg[m * D + d] * dN;
      dS[d] += f[m] * dN;
    }
    W->df[m] = acc;
    dzbg[m] += f[m] * dden;
  }
  return 1;
}

/* Every local query row: the sparse branch, the low-rank branch down to
 * the query features, and the query blocks' dS_bg into M. */
static void query_pass(slr_bwd *W) {
  slr_run *R = &W->R;
  const int64_t D = R->D, r = R->r, rd = r * D + r, n = R->s.n, K = R->s.K;
  for (int64_t bh = 0; bh < R->BH; bh++) {
    const int64_t b = bh / R->H, h = bh % R->H;
    for (int64_t G = R->glo; G <= R->ghi; G++) {
      const int32_t *sel = dt_dist_slr_sel_row(R, bh, G);
      const int empty = dt_dist_slr_background(R, bh, G) == n; /* fills R->Sbg */
      int64_t a, e;
      dt_dist_slr_local_part(R, G, &a, &e);
      memset(W->dSG, 0, (size_t)rd * sizeof(double));
      int flows = 0;
      for (int64_t i = a; i < e; i++) {
        const int64_t li = i - R->off, row = bh * R->len + li;
        const float *qi = dt_f32_at(R->q, b, h, li, 0), *gi = dt_f32_at(W->dout, b, h, li, 0);
        for (int64_t d = 0; d < D; d++) W->qd[d] = qi[d], W->gd[d] = gi[d];
        double *dq = W->dq + row * D;
        sparse_row(W, bh, sel, dq);
        flows |= lowrank_row(W, h, R->f + row * r, empty);
        feature_row(W, WG_A, h, qi, R->pos + 3 * i, W->df, dq);
      }
      if (!flows) continue;
      double *all = W->M + (bh * (n + 1) + n) * rd;
      for (int64_t x = 0; x < rd; x++) all[x] += W->dSG[x];
      for (int64_t t = 0; t < K; t++) {
        double *MC = W->M + (bh * (n + 1) + sel[t]) * rd;
        for (int64_t x = 0; x < rd; x++) MC[x] += W->dSG[x];
      }
    }
  }
}

/* Every local key row: dg = E_C v + e_C and dv += E_Cᵀ g from the summed
 * M, then down through the key features. */
static void key_pass(slr_bwd *W) {
  slr_run *R = &W->R;
  const int64_t D = R->D, r = R->r, rd = r * D + r, n = R->s.n;
  for (int64_t bh = 0; bh < R->BH; bh++) {
    const int64_t b = bh / R->H, h = bh % R->H;
    const double *all = W->M + (bh * (n + 1) + n) * rd;
    for (int64_t li = 0; li < R->len; li++) {
      const int64_t j = R->off + li, row = bh * R->len + li;
      const double *MC = W->M + (bh * (n + 1) + j / R->s.block) * rd;
      const double *g = R->g + row * r;
      const float *kj = dt_f32_at(R->k, b, h, li, 0), *vj = dt_f32_at(R->v, b, h, li, 0);
      double *dv = W->dv + row * D;
      for (int64_t m = 0; m < r; m++) {
        double acc = all[r * D + m] - MC[r * D + m];
        for (int64_t d = 0; d < D; d++) {
          const double E = all[m * D + d] - MC[m * D + d];
          acc += E * (double)vj[d];
          dv[d] += E * g[m];
        }
        W->df[m] = acc;
      }
      feature_row(W, WG_BK, h, kj, R->pos + 3 * j, W->df, W->dk + row * D);
    }
  }
}

/* In-place MPI_Allreduce(SUM) of count doubles, in int-sized pieces.
 * Returns the agreed status. */
static ditattn_status sum_over_ranks(dt_dist_job *job, double *x, int64_t count, const char *what) {
  if (job->size == 1) return DITATTN_OK;
  const int64_t chunk = INT_MAX / 2;
  double t0 = MPI_Wtime();
  int err = MPI_SUCCESS;
  for (int64_t at = 0; at < count && err == MPI_SUCCESS; at += chunk) {
    const int64_t c = count - at < chunk ? count - at : chunk;
    err = MPI_Allreduce(MPI_IN_PLACE, x + at, (int)c, MPI_DOUBLE, MPI_SUM, job->comm);
  }
  job->stats.bytes_sent += count * (int64_t)sizeof(double);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  return dt_dist_agree(job,
                       err == MPI_SUCCESS ? DITATTN_OK : dt_dist_mpi_fail(job->ctx, err, what));
}

/* (B, H, len, D) doubles into an f32 tensor. */
static void write_rows(const double *x, const slr_run *R, ditattn_tensor *t) {
  for (int64_t bh = 0; bh < R->BH; bh++)
    for (int64_t i = 0; i < R->len; i++) {
      float *dst = dt_f32_at(t, bh / R->H, bh % R->H, i, 0);
      const double *src = x + (bh * R->len + i) * R->D;
      for (int64_t d = 0; d < R->D; d++) dst[d] = (float)src[d];
    }
}

static void write_weights(const slr_bwd *W, ditattn_ropeslr_weights *dw) {
  ditattn_tensor *outs[6] = {&dw->A, &dw->Bk, &dw->Et, &dw->Ey, &dw->Ex, &dw->W};
  for (int a = 0; a < 6; a++) {
    const ditattn_tensor *t = weight_view(W->R.w, a);
    for (int64_t h = 0; h < t->shape[1]; h++)
      for (int64_t row = 0; row < t->shape[2]; row++)
        for (int64_t col = 0; col < t->shape[3]; col++)
          *dt_f32_at(outs[a], 0, h, row, col) = (float)*wg_at(W, a, h, row, col);
  }
}

ditattn_status ditattn_dist_ropeslr_backward(
    ditattn_context *ctx, MPI_Comm comm, const ditattn_dist_slice *slice,
    const ditattn_ropeslr_params *params, const ditattn_ropeslr_weights *weights,
    const int32_t *pos, const ditattn_tensor *q, const ditattn_tensor *k, const ditattn_tensor *v,
    const ditattn_tensor *dout, ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv,
    ditattn_ropeslr_weights *dweights) {
  int64_t prm[DT_DP_COUNT];
  memset(prm, 0, sizeof prm);
  prm[DT_DP_OP] = DT_DIST_OP_ROPESLR_BWD;
  /* The forward's checks with dout in out's place (its shape), then the
   * gradients'. */
  ditattn_status local =
      dt_dist_slr_check(ctx, slice, params, weights, pos, q, k, v, dout, "dout", NULL, prm);
  if (local == DITATTN_OK)
    local = dt_dist_slr_check_grads(ctx, slice, weights, pos, q, k, v, dout, dq, dk, dv, dweights);
  dt_dist_job job;
  TRY(dt_dist_begin(&job, ctx, comm, slice, local, prm));

  slr_bwd W;
  memset(&W, 0, sizeof W);
  dt_dist_block_fetch_init(&W.F);
  dt_dist_slr_run_init(&W.R, &job, params, weights, q, k, v); /* double features (use_cpu 0) */
  W.dout = dout;
  ditattn_status st = dt_dist_agree(&job, bwd_alloc(&W));
  if (st == DITATTN_OK) st = dt_dist_slr_positions(&W.R, pos);
  if (st == DITATTN_OK) st = dt_dist_slr_select(&W.R);
  if (st == DITATTN_OK) st = recompute_forward(&W);
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    query_pass(&W);
    dt_dist_tick(&t0, &job.stats.compute_s);
    st = sum_over_ranks(&job, W.M, W.R.BH * (W.R.s.n + 1) * (W.R.r * W.R.D + W.R.r),
                        "MPI_Allreduce (low-rank gradients)");
  }
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    key_pass(&W);
    dt_dist_tick(&t0, &job.stats.compute_s);
    st = dt_dist_block_fetch_return(&job, &W.F, W.slot_grad, W.dk, W.dv);
  }
  if (st == DITATTN_OK)
    st = sum_over_ranks(&job, W.wg, W.wg_count, "MPI_Allreduce (weight gradients)");
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    write_rows(W.dq, &W.R, dq);
    write_rows(W.dk, &W.R, dk);
    write_rows(W.dv, &W.R, dv);
    write_weights(&W, dweights);
    dt_dist_tick(&t0, &job.stats.compute_s);
  }
  job.stats.llsa_fetch_bytes = W.F.bytes_received;
  bwd_free(&W);
  return dt_dist_end(&job, st);
}
