/* All-gather of whole-sequence device tensors between the GPUs of one host
 * through CUDA/HIP IPC. Every rank has written its own rows into its own
 * whole-sequence buffers; it exports them, the handles are all-gathered
 * (64 bytes each), and each rank then copies every peer's rows straight out
 * of the peer's buffers with a device copy that reads the peer's memory
 * (NVLink/xGMI, or the same device). No byte of q/k/v crosses MPI or host
 * memory, and all copies are queued at once, so the transfer runs at
 * device-to-device bandwidth instead of host staging's. The buffers and the
 * mappings live in the context's cache (dist_device_cache.c): a call with
 * the same shape maps nothing new. */
#include "dist_device.h"

#include <stdlib.h>
#include <string.h>

int dt_dist_ipc_usable(dt_dist_job *job) {
  const dt_backend_ops *ops = job->ctx->ops;
  const char *env = getenv("DITATTN_DIST_IPC");
  int want = job->size > 1 && ops->ipc_export && ops->ipc_open && ops->ipc_close &&
             !(env && !strcmp(env, "0"));
  /* IPC handles mean nothing on another host: every rank must share ours. */
  MPI_Comm node;
  int node_size = 0;
  if (MPI_Comm_split_type(job->comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
      MPI_SUCCESS) {
    MPI_Comm_size(node, &node_size);
    MPI_Comm_free(&node);
  }
  want = want && node_size == job->size;
  int all = 0;
  if (MPI_Allreduce(&want, &all, 1, MPI_INT, MPI_MIN, job->comm) != MPI_SUCCESS) return 0;
  return all;
}

/* Rows [offset, offset + length) of a whole-sequence tensor at base. */
static ditattn_tensor rows_at(const ditattn_tensor *whole, void *base, int64_t offset,
                              int64_t length) {
  ditattn_tensor t = *whole;
  t.data = (char *)base + (size_t)(offset * whole->stride[2]) * ditattn_dtype_size(whole->dtype);
  t.shape[2] = length;
  return t;
}

/* Maps the peers' buffers (reusing a mapping while the peer's handle is
 * the one it was opened from), queues the copies of their rows and waits
 * for them. handles: this call's P*nx handles. */
static ditattn_status copy_from_peers(dt_dist_job *job, dt_gather_cache *cache,
                                      ditattn_tensor *whole, int nx, const unsigned char *handles) {
  ditattn_context *ctx = job->ctx;
  const int P = job->size, me = job->rank;
  ditattn_status st = DITATTN_OK;
  /* Rank me+s reads from me+s+1 first: not everyone from rank 0 at once. */
  for (int s = 1; s < P && st == DITATTN_OK; s++) {
    const int src = (me + s) % P;
    if (job->length[src] == 0) continue;
    for (int i = 0; i < nx && st == DITATTN_OK; i++) {
      const int slot = src * nx + i;
      const unsigned char *h = handles + (size_t)slot * DT_IPC_HANDLE_BYTES;
      unsigned char *seen = cache->peer_handles + (size_t)slot * DT_IPC_HANDLE_BYTES;
      if (cache->peer_ptr[slot] && memcmp(seen, h, DT_IPC_HANDLE_BYTES) != 0) {
        st = ctx->ops->ipc_close(ctx, cache->peer_ptr[slot]); /* the peer reallocated */
        cache->peer_ptr[slot] = NULL;
      }
      if (st == DITATTN_OK && !cache->peer_ptr[slot]) {
        st = ctx->ops->ipc_open(ctx, h, &cache->peer_ptr[slot]);
        if (st == DITATTN_OK) {
          memcpy(seen, h, DT_IPC_HANDLE_BYTES);
          job->stats.ipc_opened++;
        }
      }
      if (st != DITATTN_OK) break;
      const ditattn_tensor from =
          rows_at(&whole[i], cache->peer_ptr[slot], job->offset[src], job->length[src]);
      ditattn_tensor to = rows_at(&whole[i], whole[i].data, job->offset[src], job->length[src]);
      st = ditattn_pool_mean(ctx, &from, 1, &to); /* block 1: an exact copy */
    }
  }
  /* The copies must be done before the peers go on (and may reuse their
   * buffers in their next call). */
  ditattn_status sync = ditattn_synchronize(ctx);
  return st == DITATTN_OK ? sync : st;
}

/* Sizes the cache's peer tables for P*nx slots (a new size closes all). */
static ditattn_status peer_tables(ditattn_context *ctx, dt_gather_cache *cache, int slots) {
  if (cache->peer_slots == slots) return DITATTN_OK;
  dt_gather_cache_close_peers(ctx, cache);
  dt_free(cache->peer_handles);
  dt_free(cache->peer_ptr);
  cache->peer_slots = 0;
  cache->peer_handles = dt_calloc((size_t)slots, DT_IPC_HANDLE_BYTES);
  cache->peer_ptr = dt_calloc((size_t)slots, sizeof *cache->peer_ptr);
  if (!cache->peer_handles || !cache->peer_ptr)
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "IPC tables for %d buffers", slots);
  cache->peer_slots = slots;
  return DITATTN_OK;
}

ditattn_status dt_dist_ipc_allgather(dt_dist_job *job, dt_gather_cache *cache,
                                     ditattn_tensor *whole, int nx) {
  ditattn_context *ctx = job->ctx;
  const int P = job->size;
  unsigned char *handles = dt_calloc((size_t)P * (size_t)nx, DT_IPC_HANDLE_BYTES);
  ditattn_status local = DITATTN_OK;
  if (!handles) local = dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "IPC handles of %d ranks", P);
  if (local == DITATTN_OK) local = peer_tables(ctx, cache, P * nx);
  for (int i = 0; i < nx && local == DITATTN_OK && !cache->exported; i++)
    local = ctx->ops->ipc_export(ctx, whole[i].data,
                                 cache->own_handles + (size_t)i * DT_IPC_HANDLE_BYTES);
  if (local == DITATTN_OK) cache->exported = 1;
  ditattn_status st = dt_dist_agree(job, local);
  double t0 = MPI_Wtime();
  if (st == DITATTN_OK) {
    const int bytes = nx * DT_IPC_HANDLE_BYTES;
    int err =
        MPI_Allgather(cache->own_handles, bytes, MPI_BYTE, handles, bytes, MPI_BYTE, job->comm);
    if (err != MPI_SUCCESS) local = dt_dist_mpi_fail(ctx, err, "MPI_Allgather (IPC handles)");
    if (local == DITATTN_OK) local = copy_from_peers(job, cache, whole, nx, handles);
    /* Collective: once it returns, no peer reads this rank's buffers in
     * this call any more. */
    st = dt_dist_agree(job, local);
  }
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (st != DITATTN_OK) {
    /* Nothing half-known survives a failure: the next call maps afresh. */
    dt_gather_cache_close_peers(ctx, cache);
  } else {
    const int64_t row_bytes = whole[0].shape[0] * whole[0].shape[1] * whole[0].shape[3] *
                              (int64_t)ditattn_dtype_size(whole[0].dtype) * nx;
    const int64_t mine_rows = job->length[job->rank];
    job->stats.bytes_sent += (P - 1) * mine_rows * row_bytes; /* what the peers read */
    job->stats.ring_bytes_received += (job->n_global - mine_rows) * row_bytes;
    job->stats.gpu_transfer = DT_DIST_XFER_IPC;
  }
  dt_free(handles);
  return st;
}
