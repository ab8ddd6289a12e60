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
  int want = job->size > 1 && ops->ipc_export && ops->ipc_open && ops->ipc_close &&
             !dt_dist_env_is("DITATTN_DIST_IPC", "0");
  /* IPC handles mean nothing on another host. (The hosts are asked on
   * every rank whatever it wants: the first ask is collective.) */
  int mode = DT_IPC_NONE;
  if (dt_dist_hosts_find(job) != DITATTN_OK)
    dt_clear_error(job->ctx); /* agreed on every rank: no IPC, the ring */
  else if (job->hosts.count == 1)
    mode = DT_IPC_ONE_HOST;
  else if (job->hosts.per_host > 1 && !dt_dist_env_is("DITATTN_DIST_HOSTS", "0"))
    mode = DT_IPC_PER_HOST;
  want = want ? mode : DT_IPC_NONE;
  int all = 0;
  if (MPI_Allreduce(&want, &all, 1, MPI_INT, MPI_MIN, job->comm) != MPI_SUCCESS) return 0;
  return all;
}

ditattn_tensor dt_dist_rows_at(const ditattn_tensor *whole, void *base, int64_t offset,
                               int64_t length) {
  ditattn_tensor t = *whole;
  t.data = (char *)base + (size_t)(offset * whole->stride[2]) * ditattn_dtype_size(whole->dtype);
  t.shape[2] = length;
  return t;
}

/* Rows [*lo, *hi) of tensor i that rank r's forward reads: every row of k
 * and v; of q (i = 0, q_span > 0) the q_span-aligned blocks r's rows touch. */
static void need_range(const dt_dist_job *job, int r, int i, int64_t q_span, int64_t *lo,
                       int64_t *hi) {
  const int64_t N = job->n_global, a = job->offset[r], b = a + job->length[r];
  *lo = 0, *hi = N;
  if (i != 0 || q_span == 0) return;
  if (b == a || q_span < 0) { /* no rows, or q not gathered (dense) */
    *hi = 0;
    return;
  }
  *lo = a / q_span * q_span;
  const int64_t end = (b - 1) / q_span * q_span + q_span;
  *hi = end < N ? end : N;
}

int dt_dist_side_chunks(ditattn_context *ctx, int64_t BH) {
  if (!ctx->ops->side_mark) return 1;
  int64_t most = DT_DIST_SIDE_CHUNKS;
  const char *env = getenv("DITATTN_DIST_SIDE_CHUNKS");
  if (env) {
    char *end;
    const long n = strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= DT_SIDE_MARKS_MAX) most = n;
  }
  return (int)(BH < most ? (BH > 1 ? BH : 1) : most);
}

/* 1 if x's B·H slices can be one strided copy: each slice's rows are
 * contiguous (D always is) and the slices lie at one pitch, which *pitch
 * gets in elements (one slice: its own length, as a copy of one row needs
 * a pitch no smaller than the row). A pitch under a slice's length means
 * the slices overlap or interleave (e.g. [B, N, H, D] with H > 1): no. */
static int slices_at_one_pitch(const ditattn_tensor *x, int64_t *pitch) {
  const int64_t B = x->shape[0], H = x->shape[1], width = x->shape[2] * x->shape[3];
  if (x->stride[2] != x->shape[3]) return 0;
  if (B * H == 1)
    *pitch = width;
  else if (H == 1)
    *pitch = x->stride[0]; /* the slices are the batches */
  else if (B == 1 || x->stride[0] == H * x->stride[1])
    *pitch = x->stride[1];
  else
    return 0;
  return *pitch >= width;
}

ditattn_status dt_dist_copy_tensor(ditattn_context *ctx, const ditattn_tensor *src,
                                   ditattn_tensor *dst, int side) {
  int64_t spitch = 0, dpitch = 0;
  if (ctx->ops->copy_2d && slices_at_one_pitch(src, &spitch) && slices_at_one_pitch(dst, &dpitch)) {
    const size_t es = ditattn_dtype_size(dst->dtype);
    return (side ? ctx->ops->side_copy_2d : ctx->ops->copy_2d)(
        ctx, dst->data, (size_t)dpitch * es, src->data, (size_t)spitch * es,
        (size_t)(dst->shape[2] * dst->shape[3]) * es, (size_t)(dst->shape[0] * dst->shape[1]));
  }
  return ditattn_pool_mean(ctx, src, 1, dst);
}

/* The copies that move src into dst (same shape; a row of D is always
 * contiguous) as strided-copy entries: one when the B·H slices of both lie
 * at one pitch, else one per slice (n rows of D at each side's row stride,
 * e.g. the DiT layout [B, N, H, D]). Fills descs (room for B·H); returns
 * how many (0: nothing to copy). */
static int copy_descs(const ditattn_tensor *src, const ditattn_tensor *dst,
                      dt_copy_2d_desc *descs) {
  const int64_t B = dst->shape[0], H = dst->shape[1], n = dst->shape[2], D = dst->shape[3];
  const size_t es = ditattn_dtype_size(dst->dtype);
  if (B * H * n * D == 0) return 0;
  int64_t spitch = 0, dpitch = 0;
  if (slices_at_one_pitch(src, &spitch) && slices_at_one_pitch(dst, &dpitch)) {
    descs[0] = (dt_copy_2d_desc){
        dst->data,      src->data, (size_t)dpitch * es, (size_t)spitch * es, (size_t)(n * D) * es,
        (size_t)(B * H)};
    return 1;
  }
  int count = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      descs[count++] = (dt_copy_2d_desc){
          (char *)dst->data + (size_t)(b * dst->stride[0] + h * dst->stride[1]) * es,
          (const char *)src->data + (size_t)(b * src->stride[0] + h * src->stride[1]) * es,
          (size_t)dst->stride[2] * es,
          (size_t)src->stride[2] * es,
          (size_t)D * es,
          (size_t)n};
  return count;
}

/* The backend's copy_2d_batch is there and not switched off. */
static int batch_on(const ditattn_context *ctx) {
  return ctx->ops->copy_2d_batch && !dt_dist_env_is("DITATTN_DIST_COPY_BATCH", "0");
}

ditattn_status dt_dist_copy_tensors(ditattn_context *ctx, const ditattn_tensor *src,
                                    ditattn_tensor *dst, int count) {
  const int64_t per = dst[0].shape[0] * dst[0].shape[1]; /* entries per tensor, at most */
  dt_copy_2d_desc *descs = NULL;
  if (batch_on(ctx)) descs = dt_calloc((size_t)(count * per), sizeof *descs);
  int total = 0;
  for (int i = 0; i < count && descs; i++) total += copy_descs(&src[i], &dst[i], descs + total);
  ditattn_status st = DITATTN_OK;
  if (descs)
    st = total > 0 ? ctx->ops->copy_2d_batch(ctx, descs, total) : DITATTN_OK;
  else /* no batch entry (or DITATTN_DIST_COPY_BATCH=0): one by one */
    for (int i = 0; i < count && st == DITATTN_OK; i++)
      st = dt_dist_copy_tensor(ctx, &src[i], &dst[i], 0);
  dt_free(descs);
  return st;
}

ditattn_status dt_dist_copy_2d_each(ditattn_context *ctx, const dt_copy_2d_desc *descs, int count) {
  if (count <= 0) return DITATTN_OK;
  if (batch_on(ctx)) return ctx->ops->copy_2d_batch(ctx, descs, count);
  for (int i = 0; i < count; i++) {
    const dt_copy_2d_desc *d = &descs[i];
    TRY(ctx->ops->copy_2d(ctx, d->dst, d->dpitch, d->src, d->spitch, d->width, d->height));
  }
  return DITATTN_OK;
}

ditattn_status dt_dist_copy_rows_of(ditattn_context *ctx, const ditattn_tensor *whole,
                                    const void *peer, int64_t from, int64_t rows, int side,
                                    int64_t bh_lo, int64_t bh_hi) {
  if (bh_hi <= bh_lo) return DITATTN_OK;
  /* whole is contiguous: its slices [bh_lo, bh_hi) seen as (1, bh_hi - bh_lo, N, D). */
  const size_t skip = (size_t)(bh_lo * whole->stride[1]) * ditattn_dtype_size(whole->dtype);
  ditattn_tensor some = *whole;
  some.shape[0] = 1;
  some.shape[1] = bh_hi - bh_lo;
  some.stride[0] = some.shape[1] * some.stride[1];
  const ditattn_tensor src = dt_dist_rows_at(&some, (char *)peer + skip, from, rows);
  ditattn_tensor dst = dt_dist_rows_at(&some, (char *)whole->data + skip, from, rows);
  return dt_dist_copy_tensor(ctx, &src, &dst, side);
}

ditattn_status dt_dist_copy_rows(ditattn_context *ctx, const ditattn_tensor *whole,
                                 const void *peer, int64_t from, int64_t rows, int side) {
  return dt_dist_copy_rows_of(ctx, whole, peer, from, rows, side, 0,
                              whole->shape[0] * whole->shape[1]);
}

/* Rows of src's slice in [lo, hi): *from and the count (<= 0: none). */
static int64_t slice_part(const dt_dist_job *job, int src, int64_t lo, int64_t hi, int64_t *from) {
  const int64_t a = job->offset[src], b = a + job->length[src];
  *from = a > lo ? a : lo;
  return (b < hi ? b : hi) - *from;
}

ditattn_status dt_dist_ipc_map(dt_dist_job *job, dt_gather_cache *cache, int src, int slot,
                               const unsigned char *handle, void **ptr) {
  ditattn_context *ctx = job->ctx;
  const int at = src * DT_GATHER_SLOTS + slot;
  unsigned char *seen = cache->peer_handles + (size_t)at * DT_IPC_HANDLE_BYTES;
  ditattn_status st = DITATTN_OK;
  if (cache->peer_ptr[at] && memcmp(seen, handle, DT_IPC_HANDLE_BYTES) != 0) {
    st = ctx->ops->ipc_close(ctx, cache->peer_ptr[at]); /* the peer reallocated */
    cache->peer_ptr[at] = NULL;
  }
  if (st == DITATTN_OK && !cache->peer_ptr[at]) {
    st = ctx->ops->ipc_open(ctx, handle, &cache->peer_ptr[at]);
    if (st == DITATTN_OK) {
      memcpy(seen, handle, DT_IPC_HANDLE_BYTES);
      job->stats.ipc_opened++;
    }
  }
  *ptr = cache->peer_ptr[at];
  return st;
}

/* The rows of src's slice that tensor i of rank me's forward needs:
 * *from, the count (<= 0: none) and, for k and v when deferred, how many
 * of them (the ones the share reads past this rank's slice) are copied
 * early; the rest go on the side stream. */
static int64_t peer_rows(const dt_dist_job *job, int src, int i, int64_t q_span, int64_t early_end,
                         int64_t *from, int64_t *early) {
  int64_t lo, hi;
  need_range(job, job->rank, i, q_span, &lo, &hi);
  const int64_t rows = slice_part(job, src, lo, hi, from);
  const int64_t own_end = job->offset[job->rank] + job->length[job->rank];
  *early = rows;
  if (early_end >= 0 && i > 0) {
    *early = *from >= own_end ? (early_end < *from + rows ? early_end : *from + rows) - *from : 0;
    if (*early < 0) *early = 0;
  }
  return rows;
}

/* Maps the peers' buffers and queues the copies of the rows this rank
 * needs. Without deferral (early_end < 0) it waits for them. Deferred:
 * q and the k/v rows up to early_end are copied on the stream; the other
 * k/v rows are queued on the side stream in *chunks chunks of (b, h)
 * slices (dt_side_chunk_bh), every peer's rows of chunk c before those of
 * chunk c + 1, each chunk closed by side mark c where the backend has
 * marks, and nobody waits here (dt_dist_ipc_allgather). handles: this
 * call's P*DT_GATHER_SLOTS handles. */
static ditattn_status copy_from_peers(dt_dist_job *job, const dt_dist_hosts *hosts,
                                      dt_gather_cache *cache, ditattn_tensor *whole, int nx,
                                      const unsigned char *handles, int64_t q_span,
                                      int64_t row_bytes, int64_t early_end, int *chunks) {
  ditattn_context *ctx = job->ctx;
  const int P = job->size, me = job->rank;
  const int64_t BH = whole[nx - 1].shape[0] * whole[nx - 1].shape[1];
  *chunks = early_end >= 0 ? dt_dist_side_chunks(ctx, BH) : 0;
  ditattn_status st = early_end >= 0 ? ctx->ops->side_fork(ctx) : DITATTN_OK;
  /* Pass 0: everything on the stream; passes 1 .. chunks: chunk c - 1 of
   * the side stream's rows. Rank me+s reads from me+s+1 first: not
   * everyone from rank 0 at once. */
  for (int pass = 0; pass <= *chunks && st == DITATTN_OK; pass++) {
    int64_t bh_lo = 0, bh_hi = BH;
    if (pass > 0) dt_side_chunk_bh(BH, *chunks, pass - 1, &bh_lo, &bh_hi);
    for (int s = 1; s < P && st == DITATTN_OK; s++) {
      const int src = (me + s) % P;
      /* Rank src's rows, from the host-mate that holds them (one host:
       * src itself); none to copy where this rank holds them already. */
      const int holder = dt_dist_hosts_holder(hosts, me, src);
      for (int i = 0; i < nx && st == DITATTN_OK && holder != me; i++) {
        int64_t from, early;
        const int64_t rows = peer_rows(job, src, i, q_span, early_end, &from, &early);
        if (rows <= 0 || (pass > 0 && rows == early)) continue;
        void *peer = NULL;
        const size_t at = (size_t)(holder * DT_GATHER_SLOTS + i) * DT_IPC_HANDLE_BYTES;
        st = dt_dist_ipc_map(job, cache, holder, i, handles + at, &peer);
        if (st != DITATTN_OK) break;
        if (pass > 0) {
          st = dt_dist_copy_rows_of(ctx, &whole[i], peer, from + early, rows - early, 1, bh_lo,
                                    bh_hi);
          continue;
        }
        job->stats.ring_bytes_received += rows * row_bytes;
        if (early > 0) st = dt_dist_copy_rows(ctx, &whole[i], peer, from, early, 0);
      }
    }
    if (pass > 0 && st == DITATTN_OK && ctx->ops->side_mark) st = ctx->ops->side_mark(ctx);
  }
  if (early_end >= 0) return st;
  /* The copies must be done before the peers go on (and may reuse their
   * buffers in their next call). */
  ditattn_status sync = ditattn_synchronize(ctx);
  return st == DITATTN_OK ? sync : st;
}

/* Bytes the peers copy out of this rank's buffers (the same need_range and
 * holders as copy_from_peers). */
static int64_t bytes_read_by_peers(const dt_dist_job *job, const dt_dist_hosts *hosts, int nx,
                                   int64_t q_span, int64_t row_bytes) {
  int64_t total = 0;
  for (int dst = 0; dst < job->size; dst++)
    for (int src = 0; src < job->size; src++) {
      if (!dt_dist_hosts_reads_from(hosts, dst, src, job->rank)) continue;
      for (int i = 0; i < nx; i++) {
        int64_t lo, hi, from;
        need_range(job, dst, i, q_span, &lo, &hi);
        const int64_t rows = slice_part(job, src, lo, hi, &from);
        if (rows > 0) total += rows * row_bytes;
      }
    }
  return total;
}

ditattn_status dt_dist_ipc_peer_tables(ditattn_context *ctx, dt_gather_cache *cache, int P) {
  const int slots = P * DT_GATHER_SLOTS;
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

ditattn_status dt_dist_ipc_export(ditattn_context *ctx, dt_gather_cache *cache, int slot) {
  if (cache->exported[slot]) return DITATTN_OK;
  ditattn_status st = ctx->ops->ipc_export(ctx, cache->buf[slot],
                                           cache->own_handles + (size_t)slot * DT_IPC_HANDLE_BYTES);
  cache->exported[slot] = st == DITATTN_OK;
  return st;
}

ditattn_status dt_dist_ipc_allgather(dt_dist_job *job, const dt_dist_hosts *hosts,
                                     dt_gather_cache *cache, ditattn_tensor *whole, int nx,
                                     int64_t q_span, int64_t early_end, int *chunks) {
  ditattn_context *ctx = job->ctx;
  const int P = job->size;
  const ditattn_tensor *kt = &whole[nx - 1]; /* always gathered (q may not be) */
  const int64_t row_bytes =
      kt->shape[0] * kt->shape[1] * kt->shape[3] * (int64_t)ditattn_dtype_size(kt->dtype);
  unsigned char *handles = dt_calloc((size_t)P * DT_GATHER_SLOTS, DT_IPC_HANDLE_BYTES);
  ditattn_status local = DITATTN_OK;
  *chunks = 0;
  if (!handles) local = dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "IPC handles of %d ranks", P);
  if (local == DITATTN_OK) local = dt_dist_ipc_peer_tables(ctx, cache, P);
  /* A buffer's handle is exported once (q's, not gathered for dense, may
   * not exist: its handle slot stays as it was and nobody reads it). */
  for (int i = 0; i < nx && local == DITATTN_OK; i++)
    if (whole[i].data) local = dt_dist_ipc_export(ctx, cache, i);
  ditattn_status st = dt_dist_agree(job, local);
  double t0 = MPI_Wtime();
  if (st == DITATTN_OK) {
    const int bytes = DT_GATHER_SLOTS * DT_IPC_HANDLE_BYTES;
    int err =
        MPI_Allgather(cache->own_handles, bytes, MPI_BYTE, handles, bytes, MPI_BYTE, job->comm);
    if (err != MPI_SUCCESS) local = dt_dist_mpi_fail(ctx, err, "MPI_Allgather (IPC handles)");
    if (local == DITATTN_OK)
      local = copy_from_peers(job, hosts, cache, whole, nx, handles, q_span, row_bytes, early_end,
                              chunks);
    /* Collective: once it returns, no peer reads this rank's buffers in
     * this call any more (deferred: once the job's last agreement returns,
     * which follows every rank's side_join and synchronize). */
    st = dt_dist_agree(job, local);
  }
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (st != DITATTN_OK && early_end >= 0) {
    /* The ring rewrites every row next: no side copy may still be writing. */
    if (ctx->ops->side_join(ctx) == DITATTN_OK) (void)ditattn_synchronize(ctx);
  }
  if (st != DITATTN_OK) {
    /* Nothing half-known survives a failure: the next call maps afresh. */
    dt_gather_cache_close_peers(ctx, cache);
    job->stats.ring_bytes_received = 0;
  } else {
    job->stats.bytes_sent += bytes_read_by_peers(job, hosts, nx, q_span, row_bytes);
    job->stats.gpu_transfer = DT_DIST_XFER_IPC;
  }
  dt_free(handles);
  return st;
}
