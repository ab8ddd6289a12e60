/* All-gather of q, k, v (or of k, v for dense) on device memory for the
 * device paths. Ranks of one host copy each other's rows by IPC
 * (dist_device_ipc.c). Ranks on several hosts of as many ranks each
 * gather hierarchically: first each rank's slices travel the ring of the
 * ranks with its index on their hosts (one per host), then each rank
 * copies the rest out of its host-mates' buffers by IPC, so only 1/L of
 * what each rank receives crosses between hosts (L ranks per host) instead
 * of all of it. Otherwise the three slices travel the device ring of all
 * ranks together. Each slice is copied into its rows of the whole-sequence
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

/* Copies the slices xs of rank src into their rows, in one batch where
 * the backend can (dt_dist_copy_tensors): xs[0 .. 3 - g->first) are q, k,
 * v, or (g->first = 1) k, v. */
static ditattn_status gather_step(void *user, int step, int src, const ditattn_tensor *xs) {
  (void)step;
  const gather *g = user;
  const int64_t off = g->job->offset[src], len = g->job->length[src];
  if (len == 0) return DITATTN_OK;
  ditattn_tensor dst[3];
  for (int i = g->first; i < 3; i++)
    dst[i - g->first] = dt_dist_rows_at(&g->whole[i], g->whole[i].data, off, len);
  return dt_dist_copy_tensors(g->ctx, xs, dst, 3 - g->first);
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
  return dt_dist_ipc_allgather(job, NULL, cache, g->whole, 3, q_span, early_end, chunks);
}

/* Several hosts of L ranks: the ring among the ranks with this rank's
 * index on their hosts writes their slices (this rank's included) into its
 * buffers, then the other slices come by IPC from the host-mates holding
 * them (k/v rows past early_end >= 0 deferred to the side stream in
 * *chunks chunks, as on one host). Agreed; gpu_transfer
 * DT_DIST_XFER_HOSTS. */
static ditattn_status hosts_gather(dt_dist_job *job, dt_gather_cache *cache, gather *g,
                                   const ditattn_tensor *xs, int64_t q_span, int64_t early_end,
                                   int *chunks) {
  const dt_dist_hosts *hosts = &job->hosts;
  int *members = dt_calloc((size_t)hosts->count, sizeof(int));
  ditattn_status st = dt_dist_agree(job, members ? DITATTN_OK
                                                 : dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY,
                                                           "ring of %d hosts", hosts->count));
  if (st != DITATTN_OK) return st;
  const int local = hosts->local_of[job->rank];
  for (int h = 0; h < hosts->count; h++) members[h] = dt_dist_hosts_rank(hosts, h, local);
  st = dt_device_ring_run_among(job, members, hosts->count, xs, 3 - g->first, gather_step, g);
  dt_free(members);
  *chunks = 0;
  if (st == DITATTN_OK)
    st = dt_dist_ipc_allgather(job, hosts, cache, g->whole, 3, q_span, early_end, chunks);
  if (st == DITATTN_OK) job->stats.gpu_transfer = DT_DIST_XFER_HOSTS;
  return st;
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
  const int mode = dt_dist_ipc_usable(job);
  int chunks = 0;
  if (mode == DT_IPC_ONE_HOST &&
      ipc_gather(job, cache, &g, xs, q_span, early_end, &chunks) == DITATTN_OK) {
    *deferred = chunks;
    return DITATTN_OK;
  }
  if (mode == DT_IPC_PER_HOST &&
      hosts_gather(job, cache, &g, xs, q_span, early_end, &chunks) == DITATTN_OK) {
    *deferred = chunks;
    return DITATTN_OK;
  }
  return dt_device_ring_run_n(job, xs, 3, gather_step, &g);
}

ditattn_status dt_dist_device_gather_kv_ipc(dt_dist_job *job, int mode, const ditattn_tensor *k,
                                            const ditattn_tensor *v, ditattn_tensor gathered[3]) {
  dt_gather_cache *cache = NULL;
  TRY(whole_tensors(job, k, 0, &cache, gathered));
  const ditattn_tensor xs[2] = {*k, *v};
  gather g = {job->ctx, job, gathered, 1};
  int chunks = 0; /* none: nothing deferred */
  if (mode == DT_IPC_PER_HOST) return hosts_gather(job, cache, &g, xs, -1, -1, &chunks);
  return ipc_gather(job, cache, &g, xs, -1, -1, &chunks);
}
