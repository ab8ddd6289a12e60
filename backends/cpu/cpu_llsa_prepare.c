/* LLSA pooling (§1) and hierarchical top-K (§2) for the CPU backend.
 * Bitwise agreement with ref/: every pooled mean is the same sequential
 * double sum over the original tokens, every score the same sequential
 * double dot product (this file is built with -ffp-contract=off), and the
 * order is ref/'s dt_llsa_rank_before; only the loop order around them
 * changes (blocks in parallel, candidates vectorized, partial selection). */
#include "cpu_llsa.h"

#include <math.h>
#include <string.h>

void dt_cpu_llsa_head_free(dt_cpu_llsa_head *h) {
  for (int l = 0; l < DT_LLSA_LEVEL_SLOTS; l++) {
    dt_free(h->pq[l]);
    dt_free(h->pkt[l]);
    dt_free(h->pk[l]);
    dt_free(h->pv[l]);
    dt_free(h->lnw[l]);
    dt_free(h->sel[l]);
  }
  dt_free(h->sel_work);
  dt_free(h->best_work);
  dt_free(h->pk_coarse_packed);
  memset(h, 0, sizeof *h);
}

ditattn_status dt_cpu_llsa_head_alloc(ditattn_context *ctx, const ditattn_llsa_params *params,
                                      int64_t N, int64_t D, int nt, dt_cpu_llsa_head *h) {
  memset(h, 0, sizeof *h);
  dt_llsa_geom_init(params, N, D, &h->g);
  const dt_llsa_geom *g = &h->g;
  h->nt = nt;
  int ok = 1;
  int64_t kmax = 1;
  for (int l = 1; l <= g->L && ok; l++) {
    h->pq[l] = dt_llsa_alloc(g->n[l], D, sizeof(double));
    h->pkt[l] = dt_llsa_alloc(g->n[l], D, sizeof(double));
    h->pk[l] = dt_llsa_alloc(g->n[l], D, sizeof(float));
    h->pv[l] = dt_llsa_alloc(g->n[l], D, sizeof(float));
    h->lnw[l] = dt_llsa_alloc(g->n[l], 1, sizeof(float));
    h->sel[l] = dt_llsa_alloc(g->n[l], g->width[l] > 0 ? g->width[l] : 1, sizeof(int64_t));
    ok = h->pq[l] && h->pkt[l] && h->pk[l] && h->pv[l] && h->lnw[l] && h->sel[l];
    if (g->width[l] > kmax) kmax = g->width[l];
  }
  if (ok) {
    h->work_stride = g->max_cand > g->L * D ? g->max_cand : g->L * D;
    h->best_stride = kmax;
    h->sel_work = dt_llsa_alloc(nt, h->work_stride, sizeof(double));
    h->best_work = dt_llsa_alloc(nt, kmax, sizeof(dt_llsa_scored));
    h->pk_coarse_packed = dt_llsa_alloc(g->n[g->L] + 16, D, sizeof(float));
    ok = h->sel_work && h->best_work && h->pk_coarse_packed;
  }
  if (!ok) {
    dt_cpu_llsa_head_free(h);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "llsa (cpu): pooled tensors for N = %lld, D = %lld", (long long)N, (long long)D);
  }
  for (int l = 1; l <= g->L; l++)
    for (int64_t c = 0; c < g->n[l]; c++)
      h->lnw[l][c] = (float)log((double)dt_llsa_block_count(g, l, c));
  return DITATTN_OK;
}

/* Pools tensor x (which: 0 = q, 1 = k, 2 = v) over coarsest block C for
 * every level in one pass. Each level's accumulator sees exactly the
 * additions of ref/'s dt_llsa_pool_mean (tokens in order, in double) and
 * the same division, so the means are bitwise equal. acc: L × D doubles. */
DT_CLONES static void pool_pass(dt_cpu_llsa_head *h, const ditattn_tensor *x, int which, int64_t b,
                                int64_t hi, int64_t C, double *acc) {
  const dt_llsa_geom *g = &h->g;
  const int L = g->L;
  const int64_t D = g->D;
  const int64_t t0 = dt_llsa_block_start(g, L, C), t1 = t0 + dt_llsa_block_count(g, L, C);
  for (int64_t i = 0; i < L * D; i++) acc[i] = 0.0;
  for (int64_t t = t0; t < t1; t++) {
    const float *xt = dt_f32_at(x, b, hi, t, 0);
    for (int l = 0; l < L; l++) {
      double *a = acc + l * D;
      for (int64_t d = 0; d < D; d++) a[d] += (double)xt[d];
    }
    /* Blocks are nested: a level-(l+1) block can only end where a level-l one does. */
    for (int l = 1; l <= L; l++) {
      if ((t + 1) % g->span[l] != 0 && t + 1 != g->N) break;
      const int64_t c = t / g->span[l], nl = g->n[l];
      const double cnt = (double)dt_llsa_block_count(g, l, c);
      double *a = acc + (l - 1) * D;
      for (int64_t d = 0; d < D; d++) {
        const double mean = a[d] / cnt;
        if (which == 0) {
          h->pq[l][c * D + d] = mean;
        } else if (which == 1) {
          h->pkt[l][d * nl + c] = mean;
          h->pk[l][c * D + d] = (float)mean;
        } else {
          h->pv[l][c * D + d] = (float)mean;
        }
        a[d] = 0.0;
      }
    }
  }
}

/* Scores of `count` consecutive candidates c0.. against one pooled query:
 * out[j] = Σ_d pq[d]·pk[c0+j][d], summed in d order like ref/'s dot(). */
DT_CLONES static void score_run(const double *pq_row, const double *pkt, int64_t nl, int64_t D,
                                int64_t c0, int64_t count, double *out) {
  for (int64_t j = 0; j < count; j++) out[j] = 0.0;
  for (int64_t d = 0; d < D; d++) {
    const double a = pq_row[d];
    const double *col = pkt + d * nl + c0;
    for (int64_t j = 0; j < count; j++) out[j] += a * col[j];
  }
}

/* Offers (score, index) to best[0..*n) kept in rank order, at most K long. */
static void offer(dt_llsa_scored *best, int64_t *n, int64_t K, double score, int64_t index) {
  dt_llsa_scored it = {score, index};
  if (*n == K && !dt_llsa_rank_before(&it, &best[K - 1])) return;
  int64_t pos = *n < K ? (*n)++ : K - 1;
  while (pos > 0 && dt_llsa_rank_before(&it, &best[pos - 1])) {
    best[pos] = best[pos - 1];
    pos--;
  }
  best[pos] = it;
}

static void select_block(dt_cpu_llsa_head *h, int l, int64_t gq, double *scores,
                         dt_llsa_scored *best) {
  const dt_llsa_geom *g = &h->g;
  const int64_t D = g->D, nl = g->n[l], K = g->width[l]; /* = top-K_l of the candidates */
  const double *pq_row = h->pq[l] + gq * D;
  int64_t nbest = 0;
  if (l == g->L) {
    score_run(pq_row, h->pkt[l], nl, D, 0, nl, scores);
    for (int64_t c = 0; c < nl; c++) offer(best, &nbest, K, scores[c], c);
  } else {
    /* Children of the parent's selection, in parent rank order then t. */
    const int64_t *parent = h->sel[l + 1] + (gq / g->b) * g->width[l + 1];
    for (int64_t r = 0; r < g->width[l + 1] && parent[r] >= 0; r++) {
      const int64_t c0 = parent[r] * g->b;
      const int64_t cnt = c0 + g->b <= nl ? g->b : nl - c0;
      score_run(pq_row, h->pkt[l], nl, D, c0, cnt, scores);
      for (int64_t t = 0; t < cnt; t++) offer(best, &nbest, K, scores[t], c0 + t);
    }
  }
  int64_t *row = h->sel[l] + gq * g->width[l];
  for (int64_t r = 0; r < g->width[l]; r++) row[r] = r < nbest ? best[r].index : -1;
}

void dt_cpu_llsa_head_prepare(dt_cpu_llsa_head *h, const ditattn_tensor *q, const ditattn_tensor *k,
                              const ditattn_tensor *v, int64_t b, int64_t hi) {
  const dt_llsa_geom *g = &h->g;
  const int64_t D = g->D;
  const int dt_nt = h->nt;
  /* One work item per (coarsest block, tensor): 3·n_L items. */
  const int64_t items = 3 * g->n[g->L];
  DT_OMP_PARALLEL_FOR
  for (int64_t it = 0; it < items; it++) {
    double *acc = h->sel_work + (size_t)dt_cpu_thread_id() * (size_t)h->work_stride;
    const int which = (int)(it % 3);
    pool_pass(h, which == 0 ? q : which == 1 ? k : v, which, b, hi, it / 3, acc);
  }
  dt_cpu_pack_keys(g->n[g->L], D, h->pk[g->L], D, h->pk_coarse_packed);
  for (int l = g->L; l >= 1; l--) {
    DT_OMP_PARALLEL_FOR
    for (int64_t gq = 0; gq < g->n[l]; gq++) {
      const int tid = dt_cpu_thread_id();
      select_block(h, l, gq, h->sel_work + (size_t)tid * (size_t)h->work_stride,
                   h->best_work + (size_t)tid * (size_t)h->best_stride);
    }
  }
}
