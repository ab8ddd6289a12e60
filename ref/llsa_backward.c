/* LLSA backward, reference (spec §4): the selection is recomputed and held
 * fixed, p = exp(z − LSE) from the forward's lse, dS = p ⊙ (dO·valueᵀ − Δ),
 * and pooled-k/v gradients flow back to the tokens through the mean. */
#include "llsa_internal.h"

#include <math.h>
#include <string.h>

/* Buffers of one call, reused for every (batch, head). */
typedef struct bwd_scratch {
  dt_llsa_head head;
  dt_llsa_key *keys;
  double *kmat, *vmat;   /* max_keys × D: the keys and values of one key list */
  double *dkmat, *dvmat; /* max_keys × D: their gradients */
  double *dk, *dv;       /* N × D: gradients of the fine tokens as keys/values */
  double *dq_row;        /* D */
  double *dpk[DT_LLSA_LEVEL_SLOTS], *dpv[DT_LLSA_LEVEL_SLOTS]; /* n_l × D: pooled gradients */
} bwd_scratch;

static void scratch_free(bwd_scratch *s) {
  dt_llsa_head_free(&s->head);
  dt_free(s->keys);
  dt_free(s->kmat);
  dt_free(s->vmat);
  dt_free(s->dkmat);
  dt_free(s->dvmat);
  dt_free(s->dk);
  dt_free(s->dv);
  dt_free(s->dq_row);
  for (int l = 0; l < DT_LLSA_LEVEL_SLOTS; l++) {
    dt_free(s->dpk[l]);
    dt_free(s->dpv[l]);
  }
}

static ditattn_status scratch_alloc(ditattn_context *ctx, const dt_llsa_geom *g, bwd_scratch *s) {
  s->keys = dt_llsa_alloc(g->max_keys, 1, sizeof(dt_llsa_key));
  s->kmat = dt_llsa_alloc(g->max_keys, g->D, sizeof(double));
  s->vmat = dt_llsa_alloc(g->max_keys, g->D, sizeof(double));
  s->dkmat = dt_llsa_alloc(g->max_keys, g->D, sizeof(double));
  s->dvmat = dt_llsa_alloc(g->max_keys, g->D, sizeof(double));
  s->dk = dt_llsa_alloc(g->N, g->D, sizeof(double));
  s->dv = dt_llsa_alloc(g->N, g->D, sizeof(double));
  s->dq_row = dt_llsa_alloc(g->D, 1, sizeof(double));
  int ok = s->keys && s->kmat && s->vmat && s->dkmat && s->dvmat && s->dk && s->dv && s->dq_row;
  for (int l = 1; l <= g->L && ok; l++) {
    s->dpk[l] = dt_llsa_alloc(g->n[l], g->D, sizeof(double));
    s->dpv[l] = dt_llsa_alloc(g->n[l], g->D, sizeof(double));
    ok = s->dpk[l] && s->dpv[l];
  }
  if (!ok) {
    scratch_free(s);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "llsa_backward: out of memory for %lld keys / %lld tokens of dimension %lld",
                   (long long)g->max_keys, (long long)g->N, (long long)g->D);
  }
  ditattn_status st = dt_llsa_head_alloc(ctx, g, &s->head);
  if (st != DITATTN_OK) scratch_free(s);
  return st;
}

static void zero(double *x, int64_t rows, int64_t D) {
  memset(x, 0, (size_t)rows * (size_t)D * sizeof *x);
}

/* Gradients through one query i: dq_i is written, the key/value gradients are
 * accumulated into dkmat, dvmat (rows of the gathered key list). dq_row is
 * scratch of D doubles. */
static void backprop_query(const dt_llsa_bwd *p, int64_t bi, int64_t hi, int64_t i,
                           const dt_llsa_key *keys, int64_t nk, const double *kmat,
                           const double *vmat, double *dkmat, double *dvmat, double *dq_row,
                           int64_t D) {
  const double scale = (double)p->params.scale;
  const double lse = (double)p->lse[(bi * p->q->shape[1] + hi) * p->q->shape[2] + i];
  const float *q = dt_f32_at(p->q, bi, hi, i, 0);
  const float *o = dt_f32_at(p->out, bi, hi, i, 0);
  const float *dout = dt_f32_at(p->dout, bi, hi, i, 0);
  double delta = 0.0; /* Δ_i = o_i · dO_i */
  for (int64_t d = 0; d < D; d++) delta += (double)o[d] * (double)dout[d];
  for (int64_t d = 0; d < D; d++) dq_row[d] = 0.0;
  for (int64_t j = 0; j < nk; j++) {
    const double *kj = kmat + j * D, *vj = vmat + j * D;
    double s = 0.0, dp = 0.0;
    for (int64_t d = 0; d < D; d++) {
      s += (double)q[d] * kj[d];
      dp += (double)dout[d] * vj[d];
    }
    const double prob = exp(scale * s + keys[j].log_w - lse);
    const double ds = prob * (dp - delta);
    for (int64_t d = 0; d < D; d++) {
      dq_row[d] += scale * ds * kj[d];
      dkmat[j * D + d] += scale * ds * (double)q[d];
      dvmat[j * D + d] += prob * (double)dout[d];
    }
  }
  float *dq = dt_f32_at(p->dq, bi, hi, i, 0);
  for (int64_t d = 0; d < D; d++) dq[d] = (float)dq_row[d];
}

/* Adds the gradients of one key list to the fine-token or pooled accumulators. */
static void scatter_keys(bwd_scratch *s, const dt_llsa_key *keys, int64_t nk, int64_t D) {
  for (int64_t j = 0; j < nk; j++) {
    const int l = keys[j].level;
    double *dk = l == 0 ? s->dk : s->dpk[l];
    double *dv = l == 0 ? s->dv : s->dpv[l];
    for (int64_t d = 0; d < D; d++) {
      dk[keys[j].index * D + d] += s->dkmat[j * D + d];
      dv[keys[j].index * D + d] += s->dvmat[j * D + d];
    }
  }
}

/* dk_t = dk_fine_t + Σ_l dpk_l[c_l(t)] / cnt_l[c_l(t)]: the pooled key is the
 * mean of its tokens (§4); likewise dv. */
static void write_token_grads(const dt_llsa_geom *g, const bwd_scratch *s, const dt_llsa_bwd *p,
                              int64_t bi, int64_t hi) {
  const int64_t D = g->D;
  for (int64_t t = 0; t < g->N; t++) {
    float *dk = dt_f32_at(p->dk, bi, hi, t, 0);
    float *dv = dt_f32_at(p->dv, bi, hi, t, 0);
    for (int64_t d = 0; d < D; d++) {
      double gk = s->dk[t * D + d], gv = s->dv[t * D + d];
      for (int l = 1; l <= g->L; l++) {
        const int64_t c = t / g->span[l];
        const double cnt = (double)dt_llsa_block_count(g, l, c);
        gk += s->dpk[l][c * D + d] / cnt;
        gv += s->dpv[l][c * D + d] / cnt;
      }
      dk[d] = (float)gk;
      dv[d] = (float)gv;
    }
  }
}

ditattn_status dt_ref_llsa_backward(ditattn_context *ctx, const dt_llsa_bwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1];
  dt_llsa_geom g;
  dt_llsa_geom_init(&p->params, p->q->shape[2], p->q->shape[3], &g);
  bwd_scratch s = {0};
  ditattn_status st = scratch_alloc(ctx, &g, &s);
  if (st != DITATTN_OK) return st;
  const int64_t D = g.D;

  for (int64_t bi = 0; bi < B; bi++) {
    for (int64_t hi = 0; hi < H; hi++) {
      dt_llsa_head_prepare(&g, &s.head, p->q, p->k, p->v, bi, hi);
      zero(s.dk, g.N, D);
      zero(s.dv, g.N, D);
      for (int l = 1; l <= g.L; l++) {
        zero(s.dpk[l], g.n[l], D);
        zero(s.dpv[l], g.n[l], D);
      }
      const int64_t *const *sel = (const int64_t *const *)s.head.sel;
      for (int64_t g1 = 0; g1 < g.n[1]; g1++) {
        const int64_t nk = dt_llsa_keys(&g, sel, g1, s.keys, s.head.cand);
        dt_llsa_gather(&g, &s.head, p->k, p->v, bi, hi, s.keys, nk, s.kmat, s.vmat);
        zero(s.dkmat, nk, D);
        zero(s.dvmat, nk, D);
        const int64_t start = dt_llsa_block_start(&g, 1, g1);
        const int64_t count = dt_llsa_block_count(&g, 1, g1);
        for (int64_t i = start; i < start + count; i++)
          backprop_query(p, bi, hi, i, s.keys, nk, s.kmat, s.vmat, s.dkmat, s.dvmat, s.dq_row, D);
        scatter_keys(&s, s.keys, nk, D);
      }
      write_token_grads(&g, &s, p, bi, hi);
    }
  }
  scratch_free(&s);
  return DITATTN_OK;
}
