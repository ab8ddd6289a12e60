/* Reference RoPeSLR backward: gradients of Σ dout·o w.r.t. q, k, v and every
 * weight, the selection held constant. Everything is recomputed from q, k, v
 * head by head (dt_slr_head_forward), then differentiated by hand:
 *   o = o_s + Wᵀ o_lr                 dW += o_lr doutᵀ, do_lr = W dout
 *   o_s: softmax over selected keys   the usual dz = P ⊙ (dout·v − dout·o_s)
 *   o_lr_i = Σ a_ij v_j / Σ a_ij,     a_ij = f_i·g_j over the background:
 *     ∂/∂a_ij = do_lr_i·(v_j − o_lr_i) / den_i, ∂/∂v_j = (a_ij / den_i) do_lr_i
 *   f_i = φ(Aᵀq_i + p_i), g_j = φ(Bᵀk_j + p_j), p = E^t[t] + E^y[y] + E^x[x]. */
#include "ropeslr_internal.h"

#include <math.h>
#include <string.h>

/* Double accumulators of the weight gradients, summed over the batch. */
typedef struct weight_grads {
  double *A, *Bk, *Et, *Ey, *Ex, *W;
  double *base;
} weight_grads;

/* Elements of a (1, H, rows, cols) view = H·rows·cols. */
static int64_t view_count(const ditattn_tensor *t) {
  return t->shape[1] * t->shape[2] * t->shape[3];
}

static ditattn_status grads_alloc(ditattn_context *ctx, const ditattn_ropeslr_weights *w,
                                  weight_grads *gr) {
  const ditattn_tensor *views[6] = {&w->A, &w->Bk, &w->Et, &w->Ey, &w->Ex, &w->W};
  int64_t total = 0;
  for (int a = 0; a < 6; a++) {
    /* Each view passed the API's byte-size check, so its count fits; only
     * the sum needs care. */
    if (total > INT64_MAX / 16 - view_count(views[a]))
      return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "RoPeSLR weight gradients overflow");
    total += view_count(views[a]);
  }
  gr->base = dt_slr_alloc_doubles(total);
  if (!gr->base)
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "RoPeSLR weight gradients (%lld doubles)",
                   (long long)total);
  memset(gr->base, 0, (size_t)total * sizeof(double));
  double **slots[6] = {&gr->A, &gr->Bk, &gr->Et, &gr->Ey, &gr->Ex, &gr->W};
  double *at = gr->base;
  for (int a = 0; a < 6; a++) {
    *slots[a] = at;
    at += view_count(views[a]);
  }
  return DITATTN_OK;
}

/* Element (h, row, col) of a gradient accumulator shaped like view t. */
static double *grad_at(double *g, const ditattn_tensor *t, int64_t h, int64_t row, int64_t col) {
  return g + (h * t->shape[2] + row) * t->shape[3] + col;
}

static void grads_store(const weight_grads *gr, const ditattn_ropeslr_weights *w,
                        ditattn_ropeslr_weights *dw) {
  const ditattn_tensor *shapes[6] = {&w->A, &w->Bk, &w->Et, &w->Ey, &w->Ex, &w->W};
  ditattn_tensor *outs[6] = {&dw->A, &dw->Bk, &dw->Et, &dw->Ey, &dw->Ex, &dw->W};
  double *src[6] = {gr->A, gr->Bk, gr->Et, gr->Ey, gr->Ex, gr->W};
  for (int a = 0; a < 6; a++)
    for (int64_t h = 0; h < shapes[a]->shape[1]; h++)
      for (int64_t row = 0; row < shapes[a]->shape[2]; row++)
        for (int64_t col = 0; col < shapes[a]->shape[3]; col++)
          *dt_f32_at(outs[a], 0, h, row, col) = (float)*grad_at(src[a], shapes[a], h, row, col);
}

/* Sparse branch: adds to dq, dk, dv. */
static void sparse_backward(const dt_slr_work *ws, double scale, const double *dO, double *dq,
                            double *dk, double *dv) {
  const dt_slr_shape *s = &ws->s;
  const int64_t D = s->D, K = s->K;
  for (int64_t i = 0; i < s->N; i++) {
    const int32_t *row = ws->sel + (i / s->block) * K;
    const double *qi = ws->q + i * D, *doi = dO + i * D;
    double delta = 0.0; /* dout_i · o_s_i */
    for (int64_t d = 0; d < D; d++) delta += doi[d] * ws->os[i * D + d];
    for (int64_t t = 0; t < K; t++) {
      const int64_t first = row[t] * s->block;
      const int64_t last = first + s->block < s->N ? first + s->block : s->N;
      for (int64_t j = first; j < last; j++) {
        const double *kj = ws->k + j * D, *vj = ws->v + j * D;
        double z = 0.0, dp = 0.0;
        for (int64_t d = 0; d < D; d++) z += qi[d] * kj[d];
        const double prob = exp(z * scale - ws->lse[i]);
        for (int64_t d = 0; d < D; d++) dp += doi[d] * vj[d];
        const double dz = prob * (dp - delta) * scale;
        for (int64_t d = 0; d < D; d++) {
          dv[j * D + d] += prob * doi[d];
          dq[i * D + d] += dz * kj[d];
          dk[j * D + d] += dz * qi[d];
        }
      }
    }
  }
}

/* Low-rank branch down to the features: adds to dv, fills df, dg. */
static void lowrank_backward(dt_slr_work *ws, const double *dolr, double *dv, double *df,
                             double *dg) {
  const dt_slr_shape *s = &ws->s;
  const int64_t N = s->N, D = s->D, r = s->r;
  memset(df, 0, (size_t)(N * r) * sizeof(double));
  memset(dg, 0, (size_t)(N * r) * sizeof(double));
  for (int64_t G = 0; G < s->n; G++) {
    if (dt_slr_mark_selected(s, ws->sel, G, ws->in_sel) == s->n) continue; /* o_lr = 0 */
    const int64_t first = G * s->block, last = first + s->block < N ? first + s->block : N;
    for (int64_t i = first; i < last; i++) {
      const double den = ws->den[i];
      if (den == 0.0) continue; /* the forward's underflow guard: a constant 0 */
      const double *doi = dolr + i * D, *fi = ws->f + i * r;
      double do_o = 0.0;
      for (int64_t d = 0; d < D; d++) do_o += doi[d] * ws->olr[i * D + d];
      for (int64_t j = 0; j < N; j++) {
        if (ws->in_sel[j / s->block]) continue;
        const double *gj = ws->g + j * r, *vj = ws->v + j * D;
        double a = 0.0, do_v = 0.0;
        for (int64_t m = 0; m < r; m++) a += fi[m] * gj[m];
        for (int64_t d = 0; d < D; d++) do_v += doi[d] * vj[d];
        const double da = (do_v - do_o) / den;
        for (int64_t d = 0; d < D; d++) dv[j * D + d] += a / den * doi[d];
        for (int64_t m = 0; m < r; m++) {
          df[i * r + m] += da * gj[m];
          dg[j * r + m] += da * fi[m];
        }
      }
    }
  }
}

/* From feature gradients (dfeat) to the input (dx += proj du), the projection
 * (dproj += x duᵀ) and the PE tables (dE[pos] += du). du: N×r scratch. */
static void feature_backward(const dt_slr_work *ws, ditattn_slr_feature feature,
                             const ditattn_tensor *proj, const ditattn_ropeslr_weights *w,
                             int64_t h, const int32_t *pos, const double *x, const double *pre,
                             const double *feat, const double *dfeat, double *du, double *dx,
                             double *dproj, const weight_grads *gr) {
  const dt_slr_shape *s = &ws->s;
  const int64_t D = s->D, r = s->r;
  for (int64_t i = 0; i < s->N; i++) {
    double *dui = du + i * r;
    dt_slr_phi_backward(feature, r, pre + i * r, feat + i * r, dfeat + i * r, dui);
    for (int64_t d = 0; d < D; d++) {
      const float *prow = dt_f32_at(proj, 0, h, d, 0);
      double acc = 0.0;
      for (int64_t m = 0; m < r; m++) {
        acc += (double)prow[m] * dui[m];
        *grad_at(dproj, proj, h, d, m) += x[i * D + d] * dui[m];
      }
      dx[i * D + d] += acc;
    }
    double *dt = grad_at(gr->Et, &w->Et, h, pos[3 * i], 0);
    double *dy = grad_at(gr->Ey, &w->Ey, h, pos[3 * i + 1], 0);
    double *dxx = grad_at(gr->Ex, &w->Ex, h, pos[3 * i + 2], 0);
    for (int64_t m = 0; m < r; m++) {
      dt[m] += dui[m];
      dy[m] += dui[m];
      dxx[m] += dui[m];
    }
  }
}

static void store_head(const double *x, ditattn_tensor *t, int64_t b, int64_t h, int64_t N,
                       int64_t D) {
  for (int64_t i = 0; i < N; i++) {
    float *row = dt_f32_at(t, b, h, i, 0);
    for (int64_t d = 0; d < D; d++) row[d] = (float)x[i * D + d];
  }
}

ditattn_status dt_ref_ropeslr_backward(ditattn_context *ctx, const dt_ropeslr_bwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], N = p->q->shape[2], D = p->q->shape[3];
  const int64_t block = p->params.block, n = N / block + (N % block != 0), r = p->params.rank;
  const dt_slr_shape s = {N, D, r, block, n, p->topk};
  const ditattn_ropeslr_weights *w = p->weights;
  dt_slr_work ws;
  weight_grads gr = {0};
  ditattn_status st = dt_slr_work_alloc(ctx, &s, 5, 3, &ws);
  if (st != DITATTN_OK) return st;
  st = grads_alloc(ctx, w, &gr);
  double *dO = ws.extra, *dolr = dO + N * D, *dq = dolr + N * D, *dk = dq + N * D;
  double *dv = dk + N * D, *df = dv + N * D, *dg = df + N * r, *du = dg + N * r;
  for (int64_t b = 0; b < B && st == DITATTN_OK; b++) {
    for (int64_t h = 0; h < H && st == DITATTN_OK; h++) {
      st = dt_slr_head_forward(ctx, &p->params, w, p->pos, p->q, p->k, p->v, b, h,
                               DT_SLR_LOWRANK_DIRECT, &ws);
      if (st != DITATTN_OK) break;
      dt_slr_load_head(p->dout, b, h, N, D, dO);
      for (int64_t i = 0; i < N; i++) {
        for (int64_t d = 0; d < D; d++) {
          double acc = 0.0;
          for (int64_t e = 0; e < D; e++) {
            acc += (double)*dt_f32_at(&w->W, 0, h, d, e) * dO[i * D + e];
            *grad_at(gr.W, &w->W, h, d, e) += ws.olr[i * D + d] * dO[i * D + e];
          }
          dolr[i * D + d] = acc;
        }
      }
      memset(dq, 0, (size_t)(3 * N * D) * sizeof(double)); /* dq, dk, dv are adjacent */
      sparse_backward(&ws, p->params.scale, dO, dq, dk, dv);
      lowrank_backward(&ws, dolr, dv, df, dg);
      feature_backward(&ws, p->params.feature, &w->A, w, h, p->pos, ws.q, ws.u, ws.f, df, du, dq,
                       gr.A, &gr);
      feature_backward(&ws, p->params.feature, &w->Bk, w, h, p->pos, ws.k, ws.w, ws.g, dg, du, dk,
                       gr.Bk, &gr);
      store_head(dq, p->dq, b, h, N, D);
      store_head(dk, p->dk, b, h, N, D);
      store_head(dv, p->dv, b, h, N, D);
    }
  }
  if (st == DITATTN_OK) grads_store(&gr, w, p->dweights);
  dt_free(gr.base);
  dt_slr_work_free(&ws);
  return st;
}
