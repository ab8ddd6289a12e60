/* Dense ring attention on device memory: each visiting K/V slice gives a
 * partial (ditattn_dense_forward, Nq != Nk) merged on the device by
 * log-sum-exp (ditattn_lse_merge), as the host path does. */
#include "dist_device.h"

#include <string.h>

typedef struct device_dense {
  ditattn_context *ctx;
  const ditattn_tensor *q;
  float scale;
  ditattn_tensor *out; /* the accumulator: the caller's output */
  float *lse;          /* accumulator lse (device): the caller's or lse_own */
  ditattn_tensor part; /* one slice's partial (device) */
  float *lse_part;     /* device */
} device_dense;

static ditattn_status device_dense_step(void *user, int step, int src, const ditattn_tensor *k,
                                        const ditattn_tensor *v) {
  (void)src;
  device_dense *d = user;
  if (step == 0) return ditattn_dense_forward(d->ctx, d->q, k, v, d->scale, d->out, d->lse);
  TRY(ditattn_dense_forward(d->ctx, d->q, k, v, d->scale, &d->part, d->lse_part));
  return ditattn_lse_merge(d->ctx, d->out, d->lse, &d->part, d->lse_part);
}

/* Device buffers of the partials (P > 1 only). */
static ditattn_status alloc_partials(device_dense *d, int need_lse, void **part_buf,
                                     void **lse_own) {
  const ditattn_tensor *q = d->q;
  const int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2], D = q->shape[3];
  const size_t rows = (size_t)(B * H * N);
  size_t bytes = 0;
  if (!dt_mul_size(rows * (size_t)D, ditattn_dtype_size(q->dtype), &bytes))
    return dt_fail(d->ctx, DITATTN_ERR_OVERFLOW, "dense ring partial of %zu rows", rows);
  TRY(ditattn_malloc(d->ctx, bytes, part_buf));
  d->part = ditattn_tensor_bhnd(*part_buf, q->dtype, B, H, N, D);
  void *lp = NULL;
  TRY(ditattn_malloc(d->ctx, rows * sizeof(float), &lp));
  d->lse_part = lp;
  if (need_lse) {
    TRY(ditattn_malloc(d->ctx, rows * sizeof(float), lse_own));
    d->lse = *lse_own;
  }
  return DITATTN_OK;
}

ditattn_status dt_dist_device_dense_run(dt_dist_job *job, const ditattn_tensor *q,
                                        const ditattn_tensor *k, const ditattn_tensor *v,
                                        float scale, ditattn_tensor *out, float *lse) {
  ditattn_context *ctx = job->ctx;
  device_dense d = {ctx, q, scale, out, lse, {0}, NULL};
  void *part_buf = NULL, *lse_own = NULL;
  ditattn_status local =
      job->size > 1 ? alloc_partials(&d, lse == NULL, &part_buf, &lse_own) : DITATTN_OK;
  ditattn_status st = dt_dist_agree(job, local);
  if (st == DITATTN_OK) st = dt_device_ring_run(job, k, v, device_dense_step, &d);
  dt_dist_device_free(ctx, part_buf);
  dt_dist_device_free(ctx, d.lse_part);
  dt_dist_device_free(ctx, lse_own);
  return dt_dist_end(job, st);
}
