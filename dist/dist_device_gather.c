/* All-gather of q, k, v (or of k, v for dense) on device memory for the
 * device paths. Ranks of one host copy each other's rows by IPC
 * (dist_device_ipc.c). Otherwise the three slices travel the device ring
 * together and each one is copied into its rows of the whole-sequence
 * tensors as it passes (dt_dist_copy_tensor, like the ring's pack), so the
 * copies overlap the transfers. */
#include "dist_device.h"

#include <string.h>

typedef struct gather {
  ditattn_context *ctx;
  const dt_dist_job *job;
  ditattn_tensor *whole; /* 3 */
  int first;             /* 1: q is not gathered (dense) */
} gather;

/* Copies the slices xs of rank src into their rows (xs[0] is q, skipped
 * when g->first is 1), by dt_dist_copy_tensor. */
static ditattn_status gather_step(void *user, int step, int src, const ditattn_tensor *xs) {
  (void)step;
  const gather *g = user;
  const int64_t off = g->job->offset[src], len = g->job->length[src];
  if (len == 0) return DITATTN_OK;
  for (int i = g->first; i < 3; i++) {
    ditattn_tensor dst = dt_dist_rows_at(&g->whole[i], g->whole[i].data, off, len);
    TRY(dt_dist_copy_tensor(g->ctx, &xs[i], &dst, 0));
  }
  return DITATTN_OK;
}

/* The cache's buffers as whole-sequence tensors like x (q's buffer only
 * when with_q). Agreed status. */
static ditattn_status whole_tensors(dt_dist_job *job, const ditattn_tensor *x, int with_q,
                                    dt_gather_cache **cache, ditattn_tensor whole[3]) {
  const int64_t B = x->shape[0], H = x->shape[1], D = x->shape[3], N = job->n_global;
  memset(whole, 0, 3 * sizeof *whole);
  ditattn_status local = dt_gather_cache_get(job, x, with_q, cache);
  for (int i = with_q ? 0 : 1; i < 3 && local == DITATTN_OK; i++)
    whole[i] = ditattn_tensor_bhnd((*cache)->buf[i], x->dtype, B, H, N, D);
  return dt_dist_agree(job, local);
}

/* This rank's rows into its buffers, then the peers' by IPC (those past
 * early_end >= 0 of k and v on the side stream). Agreed. */
static ditattn_status ipc_gather(dt_dist_job *job, dt_gather_cache *cache, gather *g,
                                 const ditattn_tensor *xs, int64_t q_span, int64_t early_end,
                                 int *chunks) {
  double t0 = MPI_Wtime();
  ditattn_status local = gather_step(g, 0, job->rank, xs);
  if (local == DITATTN_OK) local = ditattn_synchronize(job->ctx); /* peers read it next */
  dt_dist_tick(&t0, &job->stats.compute_s);
  TRY(dt_dist_agree(job, local));
  return dt_dist_ipc_allgather(job, cache, g->whole, 3, q_span, early_end, chunks);
}

ditattn_status dt_dist_device_gather_qkv(dt_dist_job *job, const ditattn_tensor *q,
                                         const ditattn_tensor *k, const ditattn_tensor *v,
                                         int64_t q_span, int64_t early_end,
                                         ditattn_tensor gathered[3], int *deferred) {
  const dt_backend_ops *ops = job->ctx->ops;
  *deferred = 0;
  if (!(ops->copy_2d && ops->side_fork && ops->side_copy_2d && ops->side_join) ||
      dt_dist_env_is("DITATTN_DIST_OVERLAP", "0"))
    early_end = -1;
  dt_gather_cache *cache = NULL;
  TRY(whole_tensors(job, q, 1, &cache, gathered));
  const ditattn_tensor xs[3] = {*q, *k, *v};
  gather g = {job->ctx, job, gathered, 0};
  /* Any rank's IPC failure (e.g. devices that cannot map each other's
   * memory): every rank falls back to the ring, which rewrites all rows. */
  int chunks = 0;
  if (dt_dist_ipc_usable(job) &&
      ipc_gather(job, cache, &g, xs, q_span, early_end, &chunks) == DITATTN_OK) {
    *deferred = chunks;
    return DITATTN_OK;
  }
  return dt_device_ring_run_n(job, xs, 3, gather_step, &g);
}

ditattn_status dt_dist_device_gather_kv_ipc(dt_dist_job *job, const ditattn_tensor *k,
                                            const ditattn_tensor *v, ditattn_tensor gathered[3]) {
  dt_gather_cache *cache = NULL;
  TRY(whole_tensors(job, k, 0, &cache, gathered));
  const ditattn_tensor xs[3] = {*k, *k, *v}; /* xs[0] unused */
  gather g = {job->ctx, job, gathered, 1};
  int chunks = 0; /* none: nothing deferred */
  return ipc_gather(job, cache, &g, xs, -1, -1, &chunks);
}
