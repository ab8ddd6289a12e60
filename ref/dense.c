/* Dense attention, forward and backward: the definition every backend is
 * tested against. Scores and sums in double; f32 only at load and store. */
#include "ref.h"

#include <math.h>

static double dot_f32(const float *a, const float *b, int64_t D) {
  double s = 0.0;
  for (int64_t d = 0; d < D; d++) s += (double)a[d] * (double)b[d];
  return s;
}

ditattn_status dt_ref_dense_forward(ditattn_context *ctx, const dt_dense_fwd *p) {
  const ditattn_tensor *q = p->q, *k = p->k, *v = p->v, *out = p->out;
  const int64_t B = q->shape[0], H = q->shape[1], Nq = q->shape[2], D = q->shape[3];
  const int64_t Nk = k->shape[2];
  const double scale = p->scale;
  size_t bytes; /* one query row of scores */
  double *score = dt_mul_size((size_t)Nk, sizeof(double), &bytes) ? dt_malloc(bytes) : NULL;
  if (!score)
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "dense forward: %lld scores", (long long)Nk);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < Nq; i++) {
        const float *qi = dt_f32_at(q, b, h, i, 0);
        /* Two passes: max, then log-sum-exp relative to it (no overflow). */
        double max = -INFINITY;
        for (int64_t j = 0; j < Nk; j++) {
          score[j] = scale * dot_f32(qi, dt_f32_at(k, b, h, j, 0), D);
          if (score[j] > max) max = score[j];
        }
        double sum = 0.0;
        for (int64_t j = 0; j < Nk; j++) sum += exp(score[j] - max);
        const double lse = max + log(sum);
        for (int64_t j = 0; j < Nk; j++) score[j] = exp(score[j] - lse); /* now P_ij */
        for (int64_t d = 0; d < D; d++) {
          double acc = 0.0;
          for (int64_t j = 0; j < Nk; j++) acc += score[j] * (double)*dt_f32_at(v, b, h, j, d);
          *dt_f32_at(out, b, h, i, d) = (float)acc;
        }
        if (p->lse) p->lse[(b * H + h) * Nq + i] = (float)lse;
      }
  dt_free(score);
  return DITATTN_OK;
}

/* Probability P_ij (recomputed from the saved lse) and dS_ij = P_ij (dP_ij − Δ_i). */
static void prob_and_dscore(const dt_dense_bwd *p, int64_t b, int64_t h, int64_t i, int64_t j,
                            double delta_i, double *prob, double *dscore) {
  const int64_t H = p->q->shape[1], Nq = p->q->shape[2], D = p->q->shape[3];
  const double lse = p->lse[(b * H + h) * Nq + i];
  const double s = p->scale * dot_f32(dt_f32_at(p->q, b, h, i, 0), dt_f32_at(p->k, b, h, j, 0), D);
  const double dprob = dot_f32(dt_f32_at(p->dout, b, h, i, 0), dt_f32_at(p->v, b, h, j, 0), D);
  *prob = exp(s - lse);
  *dscore = *prob * (dprob - delta_i);
}

ditattn_status dt_ref_dense_backward(ditattn_context *ctx, const dt_dense_bwd *p) {
  const int64_t B = p->q->shape[0], H = p->q->shape[1], Nq = p->q->shape[2], D = p->q->shape[3];
  const int64_t Nk = p->k->shape[2];
  const double scale = p->scale;
  size_t delta_bytes, acc_bytes;
  const int sizes_ok = dt_mul_size((size_t)Nq, sizeof(double), &delta_bytes) &&
                       dt_mul_size((size_t)D, sizeof(double), &acc_bytes);
  double *delta = sizes_ok ? dt_malloc(delta_bytes) : NULL;
  double *acc_a = sizes_ok ? dt_malloc(acc_bytes) : NULL;
  double *acc_b = sizes_ok ? dt_malloc(acc_bytes) : NULL;
  if (!delta || !acc_a || !acc_b) {
    dt_free(delta);
    dt_free(acc_a);
    dt_free(acc_b);
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "dense backward: work buffers (Nq = %lld)",
                   (long long)Nq);
  }
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++) {
      for (int64_t i = 0; i < Nq; i++)
        delta[i] = dot_f32(dt_f32_at(p->dout, b, h, i, 0), dt_f32_at(p->out, b, h, i, 0), D);
      /* dq_i = scale Σ_j dS_ij k_j */
      for (int64_t i = 0; i < Nq; i++) {
        for (int64_t d = 0; d < D; d++) acc_a[d] = 0.0;
        for (int64_t j = 0; j < Nk; j++) {
          double prob, dscore;
          prob_and_dscore(p, b, h, i, j, delta[i], &prob, &dscore);
          const float *kj = dt_f32_at(p->k, b, h, j, 0);
          for (int64_t d = 0; d < D; d++) acc_a[d] += dscore * (double)kj[d];
        }
        float *dqi = dt_f32_at(p->dq, b, h, i, 0);
        for (int64_t d = 0; d < D; d++) dqi[d] = (float)(scale * acc_a[d]);
      }
      /* dk_j = scale Σ_i dS_ij q_i;  dv_j = Σ_i P_ij dout_i */
      for (int64_t j = 0; j < Nk; j++) {
        for (int64_t d = 0; d < D; d++) acc_a[d] = acc_b[d] = 0.0;
        for (int64_t i = 0; i < Nq; i++) {
          double prob, dscore;
          prob_and_dscore(p, b, h, i, j, delta[i], &prob, &dscore);
          const float *qi = dt_f32_at(p->q, b, h, i, 0);
          const float *doi = dt_f32_at(p->dout, b, h, i, 0);
          for (int64_t d = 0; d < D; d++) {
            acc_a[d] += dscore * (double)qi[d];
            acc_b[d] += prob * (double)doi[d];
          }
        }
        float *dkj = dt_f32_at(p->dk, b, h, j, 0), *dvj = dt_f32_at(p->dv, b, h, j, 0);
        for (int64_t d = 0; d < D; d++) {
          dkj[d] = (float)(scale * acc_a[d]);
          dvj[d] = (float)acc_b[d];
        }
      }
    }
  dt_free(delta);
  dt_free(acc_a);
  dt_free(acc_b);
  return DITATTN_OK;
}
