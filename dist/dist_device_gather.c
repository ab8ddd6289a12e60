/* All-gather of q, k, v on device memory for the LLSA and RoPeSLR device
 * paths. Ranks of one host copy each other's rows by IPC
 * (dist_device_ipc.c). Otherwise the three slices travel the device ring
 * together and each one is copied into its rows of the whole-sequence
 * tensors as it passes (a device copy by ditattn_pool_mean with block 1,
 * like the ring's pack), so the copies overlap the transfers. */
#include "dist_device.h"

#include <string.h>

typedef struct gather {
  ditattn_context *ctx;
  const dt_dist_job *job;
  ditattn_tensor *whole; /* 3 */
} gather;

/* Rows [offset, offset + length) of a whole-sequence tensor. */
static ditattn_tensor rows_of(const ditattn_tensor *whole, int64_t offset, int64_t length) {
  ditattn_tensor t = *whole;
  t.data =
      (char *)whole->data + (size_t)(offset * whole->stride[2]) * ditattn_dtype_size(whole->dtype);
  t.shape[2] = length;
  return t;
}

static ditattn_status gather_step(void *user, int step, int src, const ditattn_tensor *xs) {
  (void)step;
  const gather *g = user;
  const int64_t off = g->job->offset[src], len = g->job->length[src];
  if (len == 0) return DITATTN_OK;
  for (int i = 0; i < 3; i++) {
    ditattn_tensor dst = rows_of(&g->whole[i], off, len);
    TRY(ditattn_pool_mean(g->ctx, &xs[i], 1, &dst));
  }
  return DITATTN_OK;
}

ditattn_status dt_dist_device_gather_qkv(dt_dist_job *job, const ditattn_tensor *q,
                                         const ditattn_tensor *k, const ditattn_tensor *v,
                                         int64_t q_span, ditattn_tensor gathered[3]) {
  ditattn_context *ctx = job->ctx;
  const int64_t B = q->shape[0], H = q->shape[1], D = q->shape[3];
  const int64_t N = job->n_global;
  memset(gathered, 0, 3 * sizeof *gathered);
  dt_gather_cache *cache = NULL;
  ditattn_status local = dt_gather_cache_get(ctx, q, N, &cache);
  for (int i = 0; i < 3 && local == DITATTN_OK; i++)
    gathered[i] = ditattn_tensor_bhnd(cache->buf[i], q->dtype, B, H, N, D);
  TRY(dt_dist_agree(job, local));
  const ditattn_tensor xs[3] = {*q, *k, *v};
  gather g = {ctx, job, gathered};
  if (dt_dist_ipc_usable(job)) {
    double t0 = MPI_Wtime();
    local = gather_step(&g, 0, job->rank, xs);
    if (local == DITATTN_OK) local = ditattn_synchronize(ctx); /* peers read it next */
    dt_dist_tick(&t0, &job->stats.compute_s);
    if (dt_dist_agree(job, local) == DITATTN_OK &&
        dt_dist_ipc_allgather(job, cache, gathered, 3, q_span) == DITATTN_OK)
      return DITATTN_OK;
    /* Any rank's IPC failure (e.g. devices that cannot map each other's
     * memory): every rank falls back to the ring, which rewrites all rows. */
  }
  return dt_device_ring_run_n(job, xs, 3, gather_step, &g);
}
