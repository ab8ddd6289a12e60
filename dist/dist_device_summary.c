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

#include <limits.h>
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
 * ours, on the stream, as one batch (dt_dist_copy_2d_each): the forward
 * that reads them comes after them there. Nobody waits for them here: a
 * peer refills its buffer only in its next call, after the job's last
 * agreement, which follows every rank's final synchronize
 * (dist_device_sparse.c). */
static ditattn_status copy_peer_units(dt_dist_job *job, const dt_dist_hosts *hosts,
                                      dt_gather_cache *cache, const dt_key_summary *layout,
                                      const unsigned char *handles) {
  ditattn_context *ctx = job->ctx;
  char *own = cache->buf[DT_GATHER_SUMMARY];
  dt_copy_2d_desc *descs = dt_calloc((size_t)job->size * (size_t)layout->arrays, sizeof *descs);
  if (!descs)
    return dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "summary copies of %d ranks", job->size);
  int count = 0;
  int64_t bytes = 0;
  ditattn_status st = DITATTN_OK;
  for (int s = 1; s < job->size && st == DITATTN_OK; s++) {
    const int src = (job->rank + s) % job->size;
    /* From the host-mate holding src's units (one host: src); none where
     * the ring between hosts brought them here. */
    const int holder = dt_dist_hosts_holder(hosts, job->rank, src);
    if (holder == job->rank || owned_bytes(job, src, layout) == 0) continue;
    void *peer = NULL;
    st = dt_dist_ipc_map(job, cache, holder, DT_GATHER_SUMMARY,
                         handles + (size_t)holder * DT_IPC_HANDLE_BYTES, &peer);
    for (int a = 0; a < layout->arrays && st == DITATTN_OK; a++) {
      int64_t lo, hi;
      dt_dist_summary_units(job, src, layout, a, &lo, &hi);
      if (hi <= lo) continue;
      const size_t pitch = (size_t)layout->units[a] * layout->unit_bytes[a];
      const size_t skip = layout->offset[a] + (size_t)lo * layout->unit_bytes[a];
      descs[count++] = (dt_copy_2d_desc){own + skip,
                                         (const char *)peer + skip,
                                         pitch,
                                         pitch,
                                         (size_t)(hi - lo) * layout->unit_bytes[a],
                                         (size_t)layout->rows[a]};
    }
    bytes += owned_bytes(job, src, layout);
  }
  if (st == DITATTN_OK) st = dt_dist_copy_2d_each(ctx, descs, count);
  if (st == DITATTN_OK) job->stats.ring_bytes_received += bytes;
  dt_free(descs);
  return st;
}

/* Bytes of units the peers copy out of this rank's buffer (the same
 * holders as copy_peer_units). */
static int64_t read_by_host_mates(const dt_dist_job *job, const dt_dist_hosts *hosts,
                                  const dt_key_summary *layout) {
  int64_t total = 0;
  for (int dst = 0; dst < job->size; dst++)
    for (int src = 0; src < job->size; src++)
      if (dt_dist_hosts_reads_from(hosts, dst, src, job->rank))
        total += owned_bytes(job, src, layout);
  return total;
}

/* Rank r's units, array by array, between buf (the summary's layout) and
 * the contiguous blob (rows[a] × its units of array a, one array after
 * another): to_blob 1 packs, 0 unpacks. Queued copies. */
static ditattn_status move_units(dt_dist_job *job, const dt_key_summary *layout, int r, char *buf,
                                 char *blob, int to_blob) {
  ditattn_context *ctx = job->ctx;
  size_t at = 0;
  for (int a = 0; a < layout->arrays; a++) {
    int64_t lo, hi;
    dt_dist_summary_units(job, r, layout, a, &lo, &hi);
    if (hi <= lo) continue;
    const size_t pitch = (size_t)layout->units[a] * layout->unit_bytes[a];
    const size_t width = (size_t)(hi - lo) * layout->unit_bytes[a];
    char *in_buf = buf + layout->offset[a] + (size_t)lo * layout->unit_bytes[a];
    if (to_blob)
      TRY(ctx->ops->copy_2d(ctx, blob + at, width, in_buf, pitch, width, (size_t)layout->rows[a]));
    else
      TRY(ctx->ops->copy_2d(ctx, in_buf, pitch, blob + at, width, width, (size_t)layout->rows[a]));
    at += width * (size_t)layout->rows[a];
  }
  return DITATTN_OK;
}

/* Several hosts: the units of the ranks with this rank's index on their
 * hosts (one per host) travel their ring, through page-locked host memory
 * or as device buffers to a CUDA-aware MPI (the context's ring buffers,
 * free again once the gather's ring is done)
 * and are unpacked into this rank's summary buffer, waited for: the
 * host-mates copy them out next. Agreed status. */
static ditattn_status ring_units(dt_dist_job *job, const dt_dist_hosts *hosts,
                                 dt_gather_cache *cache, const dt_key_summary *layout) {
  ditattn_context *ctx = job->ctx;
  const int G = hosts->count, mine = hosts->host_of[job->rank];
  const int local = hosts->local_of[job->rank];
  int64_t most = 0;
  for (int h = 0; h < G; h++) {
    const int64_t b = owned_bytes(job, dt_dist_hosts_rank(hosts, h, local), layout);
    most = b > most ? b : most;
  }
  /* Blob h at offset h * most, on the device (dev[0]) and, staged, the host
   * (host[0]); a CUDA-aware MPI moves the device blobs themselves. */
  const int direct = dt_dist_device_transfer(ctx->backend) == DT_DIST_XFER_DEVICE;
  void *dev[2] = {NULL, NULL}, *host[2] = {NULL, NULL};
  char *buf = cache->buf[DT_GATHER_SUMMARY];
  ditattn_status local_st =
      most > INT_MAX
          ? dt_fail(ctx, DITATTN_ERR_OVERFLOW, "summary units of %lld bytes for MPI",
                    (long long)most)
          : dt_gather_cache_ring(ctx, (size_t)(most * G > 0 ? most * G : 1), !direct, dev, host);
  char *wire = direct ? dev[0] : host[0]; /* what MPI reads and writes */
  double t0 = MPI_Wtime();
  if (local_st == DITATTN_OK && most > 0)
    local_st = move_units(job, layout, job->rank, buf, (char *)dev[0] + (size_t)(mine * most), 1);
  if (local_st == DITATTN_OK) local_st = ditattn_synchronize(ctx);
  if (local_st == DITATTN_OK && !direct && owned_bytes(job, job->rank, layout) > 0)
    local_st = ditattn_copy_to_host(ctx, (char *)host[0] + (size_t)(mine * most),
                                    (char *)dev[0] + (size_t)(mine * most),
                                    (size_t)owned_bytes(job, job->rank, layout));
  dt_dist_tick(&t0, &job->stats.compute_s);
  TRY(dt_dist_agree(job, local_st));
  /* G - 1 steps: send on the blob received last (first: this rank's). */
  const int right = dt_dist_hosts_rank(hosts, (mine + 1) % G, local);
  const int left = dt_dist_hosts_rank(hosts, (mine + G - 1) % G, local);
  int err = MPI_SUCCESS;
  for (int s = 0; s < G - 1 && err == MPI_SUCCESS; s++) {
    const int send_h = (mine - s + G) % G, recv_h = (mine - s - 1 + G) % G;
    const int send_r = dt_dist_hosts_rank(hosts, send_h, local);
    const int recv_r = dt_dist_hosts_rank(hosts, recv_h, local);
    const int64_t sb = owned_bytes(job, send_r, layout), rb = owned_bytes(job, recv_r, layout);
    err = MPI_Sendrecv(wire + (size_t)(send_h * most), (int)sb, MPI_BYTE, right, s,
                       wire + (size_t)(recv_h * most), (int)rb, MPI_BYTE, left, s, job->comm,
                       MPI_STATUS_IGNORE);
    job->stats.bytes_sent += sb;
    job->stats.ring_bytes_received += rb;
  }
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  local_st = err == MPI_SUCCESS ? DITATTN_OK : dt_dist_mpi_fail(ctx, err, "summary ring");
  for (int h = 0; h < G && local_st == DITATTN_OK && most > 0; h++) {
    const int r = dt_dist_hosts_rank(hosts, h, local);
    const int64_t b = owned_bytes(job, r, layout);
    if (h == mine || b == 0) continue;
    char *d = (char *)dev[0] + (size_t)(h * most);
    if (!direct)
      local_st = ditattn_copy_to_backend(ctx, d, (char *)host[0] + (size_t)(h * most), (size_t)b);
    if (local_st == DITATTN_OK) local_st = move_units(job, layout, r, buf, d, 0);
  }
  if (local_st == DITATTN_OK) local_st = ditattn_synchronize(ctx); /* host-mates read it next */
  dt_dist_tick(&t0, &job->stats.compute_s);
  return dt_dist_agree(job, local_st);
}

/* Exports the summary buffer, all-gathers the handles and queues the
 * copies of the peers' units. The export's status is agreed (the handles'
 * all-gather is collective); the copies' is this rank's own: a rank whose
 * copies failed computes its summary itself, which gives the same values. */
static ditattn_status exchange(dt_dist_job *job, const dt_dist_hosts *hosts, dt_gather_cache *cache,
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
    if (local == DITATTN_OK) local = copy_peer_units(job, hosts, cache, layout, handles);
    st = local;
  }
  if (st != DITATTN_OK) /* the next call maps the summaries afresh */
    dt_gather_cache_close_slot(ctx, cache, DT_GATHER_SUMMARY);
  else
    job->stats.bytes_sent += read_by_host_mates(job, hosts, layout);
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
  /* Several hosts: first the ring between them. */
  const dt_dist_hosts *hosts = job->stats.gpu_transfer == DT_DIST_XFER_HOSTS ? &job->hosts : NULL;
  if (hosts) TRY(ring_units(job, hosts, cache, layout));
  t0 = MPI_Wtime();
  ditattn_status st = exchange(job, hosts, cache, layout);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (st == DITATTN_OK) *buf = cache->buf[DT_GATHER_SUMMARY];
  return st;
}
