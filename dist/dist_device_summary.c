/* The key-side work of a sparse forward split across the ranks of one host
 * (backend.h dt_key_summary). After the IPC gather every rank holds the
 * whole q, k, v, and without this each would compute every key block's
 * summary (RoPeSLR: key features and factors of all N tokens, ~10% of a
 * 128K forward, the same on every rank: a fixed cost that caps scaling).
 * Instead each rank computes the units whose first token lies in its slice
 * into its summary buffer, the buffers are exported, and each rank copies
 * the peers' units with strided device copies (one per array and peer).
 * The values are those of one process: the same kernel per unit. */
#include "dist_device.h"

#include <string.h>

void dt_dist_summary_units(const dt_dist_job *job, int r, const dt_key_summary *layout, int a,
                           int64_t *lo, int64_t *hi) {
  const int64_t first = job->offset[r];
  dt_summary_units(first, first + job->length[r], layout->span[a], layout->units[a], lo, hi);
}

int64_t dt_dist_summary_reach(const dt_key_summary *layout, int64_t end, int64_t n) {
  int64_t reach = end;
  for (int a = 0; a < layout->arrays; a++) {
    const int64_t span = layout->span[a], unit_end = (end + span - 1) / span * span;
    reach = unit_end > reach ? unit_end : reach;
  }
  return reach < n ? reach : n;
}

/* Bytes of rank r's units, all arrays. */
static int64_t owned_bytes(const dt_dist_job *job, int r, const dt_key_summary *layout) {
  int64_t total = 0;
  for (int a = 0; a < layout->arrays; a++) {
    int64_t lo, hi;
    dt_dist_summary_units(job, r, layout, a, &lo, &hi);
    total += (hi - lo) * (int64_t)layout->unit_bytes[a] * layout->rows[a];
  }
  return total;
}

/* Queues the copies of every peer's units out of its mapped buffer into
 * ours, on the stream: the forward that reads them comes after them there.
 * Nobody waits for them here: a peer refills its buffer only in its next
 * call, after the job's last agreement, which follows every rank's final
 * synchronize (dist_device_sparse.c). */
static ditattn_status copy_peer_units(dt_dist_job *job, dt_gather_cache *cache,
                                      const dt_key_summary *layout, const unsigned char *handles) {
  ditattn_context *ctx = job->ctx;
  char *own = cache->buf[DT_GATHER_SUMMARY];
  ditattn_status st = DITATTN_OK;
  for (int s = 1; s < job->size && st == DITATTN_OK; s++) {
    const int src = (job->rank + s) % job->size;
    if (owned_bytes(job, src, layout) == 0) continue;
    void *peer = NULL;
    st = dt_dist_ipc_map(job, cache, src, DT_GATHER_SUMMARY,
                         handles + (size_t)src * DT_IPC_HANDLE_BYTES, &peer);
    for (int a = 0; a < layout->arrays && st == DITATTN_OK; a++) {
      int64_t lo, hi;
      dt_dist_summary_units(job, src, layout, a, &lo, &hi);
      if (hi <= lo) continue;
      const size_t pitch = (size_t)layout->units[a] * layout->unit_bytes[a];
      const size_t skip = layout->offset[a] + (size_t)lo * layout->unit_bytes[a];
      st = ctx->ops->copy_2d(ctx, own + skip, pitch, (const char *)peer + skip, pitch,
                             (size_t)(hi - lo) * layout->unit_bytes[a], (size_t)layout->rows[a]);
    }
    if (st == DITATTN_OK) job->stats.ring_bytes_received += owned_bytes(job, src, layout);
  }
  return st;
}

/* Exports the summary buffer, all-gathers the handles and queues the
 * copies of the peers' units. The export's status is agreed (the handles'
 * all-gather is collective); the copies' is this rank's own: a rank whose
 * copies failed computes its summary itself, which gives the same values. */
static ditattn_status exchange(dt_dist_job *job, dt_gather_cache *cache,
                               const dt_key_summary *layout) {
  ditattn_context *ctx = job->ctx;
  const int P = job->size;
  unsigned char *handles = dt_calloc((size_t)P, DT_IPC_HANDLE_BYTES);
  ditattn_status local = DITATTN_OK;
  if (!handles) local = dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "IPC handles of %d ranks", P);
  if (local == DITATTN_OK) local = dt_dist_ipc_peer_tables(ctx, cache, P);
  if (local == DITATTN_OK) local = dt_dist_ipc_export(ctx, cache, DT_GATHER_SUMMARY);
  ditattn_status st = dt_dist_agree(job, local);
  if (st == DITATTN_OK) {
    const unsigned char *own = cache->own_handles + (size_t)DT_GATHER_SUMMARY * DT_IPC_HANDLE_BYTES;
    int err = MPI_Allgather(own, DT_IPC_HANDLE_BYTES, MPI_BYTE, handles, DT_IPC_HANDLE_BYTES,
                            MPI_BYTE, job->comm);
    if (err != MPI_SUCCESS) local = dt_dist_mpi_fail(ctx, err, "MPI_Allgather (IPC handles)");
    if (local == DITATTN_OK) local = copy_peer_units(job, cache, layout, handles);
    st = local;
  }
  if (st != DITATTN_OK) /* the next call maps the summaries afresh */
    dt_gather_cache_close_slot(ctx, cache, DT_GATHER_SUMMARY);
  else
    job->stats.bytes_sent += (int64_t)(P - 1) * owned_bytes(job, job->rank, layout);
  dt_free(handles);
  return st;
}

ditattn_status dt_dist_summary_share(dt_dist_job *job, const dt_key_summary *layout,
                                     dt_summary_fill_fn fill, const void *user, void **buf) {
  ditattn_context *ctx = job->ctx;
  dt_gather_cache *cache = dt_gather_cache_current(ctx);
  *buf = NULL;
  ditattn_status local = DITATTN_OK;
  if (!cache || !ctx->ops->copy_2d || layout->arrays < 1 || layout->arrays > DT_KEY_SUMMARY_MAX)
    local = dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "key summary: no gather cache or device copy");
  TRY(dt_dist_agree(job, local));
  TRY(dt_gather_cache_summary(job, cache, layout->bytes));
  double t0 = MPI_Wtime();
  const int64_t first = job->offset[job->rank];
  const dt_summary_arg share = {
      DT_SUMMARY_FILL, cache->buf[DT_GATHER_SUMMARY], first, first + job->length[job->rank], 0, 0};
  local = share.key_hi > share.key_lo ? fill(ctx, &share, user) : DITATTN_OK;
  if (local == DITATTN_OK) local = ditattn_synchronize(ctx); /* peers read it next */
  dt_dist_tick(&t0, &job->stats.compute_s);
  TRY(dt_dist_agree(job, local));
  t0 = MPI_Wtime();
  ditattn_status st = exchange(job, cache, layout);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (st == DITATTN_OK) *buf = cache->buf[DT_GATHER_SUMMARY];
  return st;
}
