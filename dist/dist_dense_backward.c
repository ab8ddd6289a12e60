/* Dense attention backward on a sliced sequence, by the ring-attention
 * backward: dq stays local, and each K/V slice travels the gradient ring
 * with its dK/dV accumulator (dist_llsa_backward_ring.c), which comes home
 * to its owner after visiting every rank. A step's gradients are
 * ditattn_dense_backward of this rank's queries against the visiting slice,
 * given the forward's out and lse: with the whole sequence's lse the
 * probabilities, and with its out the row terms Δ = dO·o, are the whole
 * sequence's, so each slice's gradients are exactly its share of the sums.
 * The shares are added in double. */
#include "dist_llsa_backward.h" /* the gradient ring */

#include <string.h>

typedef struct dense_bwd {
  ditattn_context *ctx;
  const ditattn_tensor *q, *out, *dout;
  const float *lse;
  float scale;
  int64_t B, H, D;
  float *part;    /* one step's dq (len rows), dk and dv (up to max_length rows each) */
  int64_t len;    /* this rank's rows */
  double *dq_acc; /* B·H·len × D */
} dense_bwd;

static ditattn_status bwd_step(void *user, int step, int src, const ditattn_tensor *k,
                               const ditattn_tensor *v, double *dkv) {
  (void)step, (void)src;
  dense_bwd *W = user;
  const int64_t n = k->shape[2], BH = W->B * W->H;
  const int64_t q_elems = BH * W->len * W->D, kv_elems = BH * n * W->D;
  ditattn_tensor dq = ditattn_tensor_bhnd(W->part, DITATTN_F32, W->B, W->H, W->len, W->D);
  ditattn_tensor dk = ditattn_tensor_bhnd(W->part + q_elems, DITATTN_F32, W->B, W->H, n, W->D);
  ditattn_tensor dv =
      ditattn_tensor_bhnd(W->part + q_elems + kv_elems, DITATTN_F32, W->B, W->H, n, W->D);
  TRY(ditattn_dense_backward(W->ctx, W->q, k, v, W->out, W->lse, W->dout, W->scale, &dq, &dk, &dv));
  /* dkv: dk then dv, rows [bh][token], as dk and dv lie in part. */
  const float *grads = W->part + q_elems;
  for (int64_t i = 0; i < q_elems; i++) W->dq_acc[i] += (double)W->part[i];
  for (int64_t i = 0; i < 2 * kv_elems; i++) dkv[i] += (double)grads[i];
  return DITATTN_OK;
}

/* acc (B·H·n × D doubles, [bh][token]) rounded into t. */
static void write_rows(const double *acc, int64_t B, int64_t H, int64_t n, int64_t D,
                       ditattn_tensor *t) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < n; i++) {
        const double *a = acc + ((b * H + h) * n + i) * D;
        float *row = dt_f32_at(t, b, h, i, 0);
        for (int64_t d = 0; d < D; d++) row[d] = (float)a[d];
      }
}

ditattn_status ditattn_dist_dense_backward(ditattn_context *ctx, MPI_Comm comm,
                                           const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                           const ditattn_tensor *k, const ditattn_tensor *v,
                                           const ditattn_tensor *out, const float *lse,
                                           const ditattn_tensor *dout, float scale,
                                           ditattn_tensor *dq, ditattn_tensor *dk,
                                           ditattn_tensor *dv) {
  int64_t params[DT_DP_COUNT];
  memset(params, 0, sizeof params);
  params[DT_DP_OP] = DT_DIST_OP_DENSE_BWD;
  float resolved = 0.0f;
  ditattn_status local = dt_dist_check_local(ctx, slice, q, k, v, out, lse, params);
  if (local == DITATTN_OK)
    local =
        dt_dist_check_grads(ctx, "dist dense backward", slice, q, k, v, out, lse, dout, dq, dk, dv);
  if (local == DITATTN_OK) local = dt_dist_scale_param(ctx, scale, q->shape[3], &resolved, params);
  dt_dist_job job;
  TRY(dt_dist_begin(&job, ctx, comm, slice, local, params));

  dense_bwd W = {ctx,         q,           out,         dout, lse,           resolved,
                 q->shape[0], q->shape[1], q->shape[3], NULL, slice->length, NULL};
  const int64_t BH = W.B * W.H;
  /* Sizes are bounded by the agreed slices (each rank's tensors exist). */
  const size_t q_elems = (size_t)(BH * W.len * W.D), kv_elems = (size_t)(BH * job.max_length * W.D);
  W.part = dt_malloc((q_elems + 2 * kv_elems) * sizeof(float));
  W.dq_acc = dt_calloc(q_elems, sizeof(double));
  double *home = dt_calloc(2 * (size_t)(BH * W.len * W.D), sizeof(double));
  local = W.part && W.dq_acc && home
              ? DITATTN_OK
              : dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY,
                        "dist dense backward: gradient buffers for %lld rows of %lld",
                        (long long)(BH * job.max_length), (long long)W.D);
  ditattn_status st = dt_dist_agree(&job, local);
  if (st == DITATTN_OK) st = dt_dist_grad_ring_run(&job, k, v, bwd_step, &W, home);
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    write_rows(W.dq_acc, W.B, W.H, W.len, W.D, dq);
    write_rows(home, W.B, W.H, W.len, W.D, dk);
    write_rows(home + BH * W.len * W.D, W.B, W.H, W.len, W.D, dv);
    dt_dist_tick(&t0, &job.stats.compute_s);
  }
  dt_free(W.part);
  dt_free(W.dq_acc);
  dt_free(home);
  return dt_dist_end(&job, st);
}
