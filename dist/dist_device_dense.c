/* Dense attention on device memory. Ranks of one host gather k and v by
 * IPC (ranks on several hosts of as many each: by the ring between hosts,
 * then IPC) and run one dense forward over all keys; otherwise ring attention:
 * each visiting K/V slice gives a partial (ditattn_dense_forward,
 * Nq != Nk) merged on the device by log-sum-exp (ditattn_lse_merge), as
 * the host path does. */
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

/* k and v gathered by IPC (mode) into the context's cached
 * whole-sequence buffers, then ONE dense forward of this rank's queries
 * over all keys — the single-process kernel on the same keys, so no
 * partials and no merge. Agreed status; a failure leaves the ring. */
static ditattn_status dense_over_gathered(dt_dist_job *job, int mode, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          float scale, ditattn_tensor *out, float *lse) {
  ditattn_tensor whole[3];
  TRY(dt_dist_device_gather_kv_ipc(job, mode, k, v, whole));
  double t0 = MPI_Wtime();
  ditattn_status local = ditattn_dense_forward(job->ctx, q, &whole[1], &whole[2], scale, out, lse);
  if (local == DITATTN_OK) local = ditattn_synchronize(job->ctx);
  dt_dist_tick(&t0, &job->stats.compute_s);
  return dt_dist_agree(job, local);
}

ditattn_status dt_dist_device_dense_run(dt_dist_job *job, const ditattn_tensor *q,
                                        const ditattn_tensor *k, const ditattn_tensor *v,
                                        float scale, ditattn_tensor *out, float *lse) {
  ditattn_context *ctx = job->ctx;
  const int mode = job->size > 1 ? dt_dist_ipc_usable(job) : DT_IPC_NONE;
  if (mode != DT_IPC_NONE && dense_over_gathered(job, mode, q, k, v, scale, out, lse) == DITATTN_OK)
    return dt_dist_end(job, DITATTN_OK);
  /* Otherwise (ranks on several hosts, IPC off or failed): the K/V ring,
   * whose transfers alone the byte counts then report. */
  job->stats.bytes_sent = job->stats.ring_bytes_received = 0;
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
