/* Dense self-attention by ring attention: each K/V slice passing by gives a
 * partial (ditattn_dense_forward, Nq != Nk) merged by log-sum-exp. GPU
 * contexts take the device-memory ring of dist_device_dense.c. */
#include "dist_device.h"
#include "dist_ring.h"

#include <string.h>

typedef struct dense_ring {
  ditattn_context *ctx;
  const ditattn_tensor *q;
  float scale;
  ditattn_tensor *out; /* the accumulator: the caller's output */
  float *lse;          /* accumulator lse: the caller's or lse_own */
  ditattn_tensor part; /* one slice's partial */
  float *lse_part;
} dense_ring;

static ditattn_status dense_step(void *user, int step, int src, const ditattn_tensor *k,
                                 const ditattn_tensor *v) {
  (void)src;
  dense_ring *d = user;
  if (step == 0) return ditattn_dense_forward(d->ctx, d->q, k, v, d->scale, d->out, d->lse);
  TRY(ditattn_dense_forward(d->ctx, d->q, k, v, d->scale, &d->part, d->lse_part));
  return ditattn_lse_merge(d->ctx, d->out, d->lse, &d->part, d->lse_part);
}

ditattn_status ditattn_dist_dense_forward(ditattn_context *ctx, MPI_Comm comm,
                                          const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          float scale, ditattn_tensor *out, float *lse) {
  int64_t params[DT_DP_COUNT];
  memset(params, 0, sizeof params);
  params[DT_DP_OP] = DT_DIST_OP_DENSE_FWD;
  float resolved = 0.0f;
  ditattn_status local = dt_dist_check_local(ctx, slice, q, k, v, out, lse, params);
  if (local == DITATTN_OK) local = dt_dist_scale_param(ctx, scale, q->shape[3], &resolved, params);

  dt_dist_job job;
  TRY(dt_dist_begin(&job, ctx, comm, slice, local, params));
  if (dt_dist_is_device(ctx)) return dt_dist_device_dense_run(&job, q, k, v, resolved, out, lse);

  const int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2], D = q->shape[3];
  dense_ring d = {ctx, q, resolved, out, lse, {0}, NULL};
  float *part_buf = NULL, *lse_own = NULL;
  size_t rows = (size_t)(B * H * N);
  local = DITATTN_OK;
  if (job.size > 1) {
    part_buf = dt_malloc(rows * (size_t)D * sizeof(float));
    d.lse_part = dt_malloc(rows * sizeof(float));
    if (!lse) d.lse = lse_own = dt_malloc(rows * sizeof(float));
    if (!part_buf || !d.lse_part || !d.lse)
      local = dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "dense ring partials (%zu rows of %lld)",
                      rows, (long long)D);
    d.part = ditattn_tensor_bhnd(part_buf, DITATTN_F32, B, H, N, D);
  }
  ditattn_status st = dt_dist_agree(&job, local);
  if (st == DITATTN_OK) st = dt_ring_run(&job, k, v, dense_step, &d);
  dt_free(part_buf);
  dt_free(d.lse_part);
  dt_free(lse_own);
  return dt_dist_end(&job, st);
}
