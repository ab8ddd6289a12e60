/* All-gather of whole-sequence device tensors between the GPUs of one host
 * through CUDA/HIP IPC. Every rank has written its own rows into its own
 * whole-sequence buffers; it exports them, the handles are all-gathered
 * (64 bytes each), and each rank then copies every peer's rows straight out
 * of the peer's buffers with a device copy that reads the peer's memory
 * (NVLink/xGMI, or the same device). No byte of q/k/v crosses MPI or host
 * memory, and all copies are queued at once, so the transfer runs at
 * device-to-device bandwidth instead of host staging's. */
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

/* Opens the peers' buffers, queues the copies of their rows, waits for
 * them and closes what it opened. peer[] holds P*nx mapped pointers. */
static ditattn_status copy_from_peers(dt_dist_job *job, ditattn_tensor *whole, int nx,
                                      const unsigned char *handles, void **peer) {
  ditattn_context *ctx = job->ctx;
  const int P = job->size, me = job->rank;
  ditattn_status st = DITATTN_OK;
  /* Rank me+s reads from me+s+1 first: not everyone from rank 0 at once. */
  for (int s = 1; s < P && st == DITATTN_OK; s++) {
    const int src = (me + s) % P;
    if (job->length[src] == 0) continue;
    for (int i = 0; i < nx && st == DITATTN_OK; i++) {
      const int slot = src * nx + i;
      st = ctx->ops->ipc_open(ctx, handles + (size_t)slot * DT_IPC_HANDLE_BYTES, &peer[slot]);
      if (st != DITATTN_OK) break;
      const ditattn_tensor from =
          rows_at(&whole[i], peer[slot], job->offset[src], job->length[src]);
      ditattn_tensor to = rows_at(&whole[i], whole[i].data, job->offset[src], job->length[src]);
      st = ditattn_pool_mean(ctx, &from, 1, &to); /* block 1: an exact copy */
    }
  }
  /* The copies must be done before the peers' buffers are unmapped. */
  ditattn_status sync = ditattn_synchronize(ctx);
  if (st == DITATTN_OK) st = sync;
  for (int slot = 0; slot < P * nx; slot++)
    if (peer[slot]) {
      ditattn_status closed = ctx->ops->ipc_close(ctx, peer[slot]);
      if (st == DITATTN_OK) st = closed;
    }
  return st;
}

ditattn_status dt_dist_ipc_allgather(dt_dist_job *job, ditattn_tensor *whole, int nx) {
  ditattn_context *ctx = job->ctx;
  const int P = job->size;
  unsigned char mine[DT_DEVICE_RING_MAX * DT_IPC_HANDLE_BYTES];
  memset(mine, 0, sizeof mine);
  unsigned char *handles = dt_calloc((size_t)P * (size_t)nx, DT_IPC_HANDLE_BYTES);
  void **peer = dt_calloc((size_t)P * (size_t)nx, sizeof *peer);
  ditattn_status local = DITATTN_OK;
  if (!handles || !peer)
    local = dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "IPC handle table for %d ranks", P);
  for (int i = 0; i < nx && local == DITATTN_OK; i++)
    local = ctx->ops->ipc_export(ctx, whole[i].data, mine + (size_t)i * DT_IPC_HANDLE_BYTES);
  ditattn_status st = dt_dist_agree(job, local);
  double t0 = MPI_Wtime();
  if (st == DITATTN_OK) {
    const int bytes = nx * DT_IPC_HANDLE_BYTES;
    int err = MPI_Allgather(mine, bytes, MPI_BYTE, handles, bytes, MPI_BYTE, job->comm);
    if (err != MPI_SUCCESS) local = dt_dist_mpi_fail(ctx, err, "MPI_Allgather (IPC handles)");
    if (local == DITATTN_OK) local = copy_from_peers(job, whole, nx, handles, peer);
    /* Collective: once it returns, no peer reads this rank's buffers any
     * more, so the caller may use and free them. */
    st = dt_dist_agree(job, local);
  }
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (st == DITATTN_OK) {
    const int64_t row_bytes = whole[0].shape[0] * whole[0].shape[1] * whole[0].shape[3] *
                              (int64_t)ditattn_dtype_size(whole[0].dtype) * nx;
    const int64_t mine_rows = job->length[job->rank];
    job->stats.bytes_sent += (P - 1) * mine_rows * row_bytes; /* what the peers read */
    job->stats.ring_bytes_received += (job->n_global - mine_rows) * row_bytes;
    job->stats.gpu_transfer = DT_DIST_XFER_IPC;
  }
  dt_free(handles);
  dt_free(peer);
  return st;
}
