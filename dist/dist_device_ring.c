/* The K/V ring on device memory (GPU contexts). Each rank packs its slice
 * of the travelling tensors into one contiguous device buffer ([k; v], or
 * [q; k; v] for the all-gather of dist_device_gather.c, (B, H, n, D) each)
 * so that one message moves it; the pack is a device-side copy
 * (dt_dist_copy_tensor: the copy engines, or ditattn_pool_mean with block
 * 1, exact in every dtype). Step s computes on the slice it holds while MPI
 * sends it on and receives the next one into the other buffer. With host
 * staging the message goes in chunks of DT_RING_CHUNK_BYTES: each chunk of
 * this rank's own slice is sent as soon as it is downloaded, and each
 * received chunk's upload is queued (behind the step's compute) while the
 * later chunks are still in flight, so both copies hide under the transfer. */
#include "dist_device.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Staged messages travel in chunks of about this size (whole rows). */
#define DT_RING_CHUNK_BYTES ((size_t)8 << 20)

typedef struct device_ring {
  ditattn_context *ctx;
  int nx;        /* tensors travelling together */
  int mode;      /* DT_DIST_XFER_STAGED or DT_DIST_XFER_DEVICE */
  void *dev[2];  /* packed slices, device memory (the context's cache) */
  void *host[2]; /* staging buffers (staged mode only; the cache's too) */
  size_t row_bytes;
  MPI_Datatype row; /* one token row of D elements: counts stay in int range */
  int row_committed;
  int64_t chunk_rows; /* rows per chunk of a staged message */
  MPI_Request *req;   /* staged: a message's chunks received, then sent */
} device_ring;

static ditattn_status ring_alloc(dt_dist_job *job, const ditattn_tensor *k, device_ring *r) {
  const int64_t B = k->shape[0], H = k->shape[1], D = k->shape[3];
  const size_t esize = ditattn_dtype_size(k->dtype);
  size_t rows = 0, bytes = 0;
  if (!dt_mul_size((size_t)(r->nx * B * H), (size_t)job->max_length, &rows) || rows > INT_MAX ||
      !dt_mul_size((size_t)D, esize, &r->row_bytes) || r->row_bytes > INT_MAX ||
      !dt_mul_size(rows, r->row_bytes, &bytes))
    return dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "device ring buffer of %d*%lld*%lld*%lld rows",
                   r->nx, (long long)B, (long long)H, (long long)job->max_length);
  TRY(dt_gather_cache_ring(job->ctx, bytes, r->mode == DT_DIST_XFER_STAGED, r->dev, r->host));
  /* DITATTN_DIST_RING_CHUNK_BYTES overrides the chunk size (a tuning knob
   * for the link between hosts; the tests use tiny chunks). */
  size_t chunk = DT_RING_CHUNK_BYTES;
  const char *env = getenv("DITATTN_DIST_RING_CHUNK_BYTES");
  if (env) {
    char *end;
    const long long v = strtoll(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1) chunk = (size_t)v;
  }
  r->chunk_rows = (int64_t)(chunk / r->row_bytes);
  if (r->chunk_rows < 1) r->chunk_rows = 1;
  if (r->mode == DT_DIST_XFER_STAGED) {
    const int64_t most = ((int64_t)rows + r->chunk_rows - 1) / r->chunk_rows + 1;
    r->req = dt_calloc(2 * (size_t)most, sizeof *r->req);
    if (!r->req)
      return dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "device ring: %lld requests",
                     (long long)(2 * most));
  }
  int err = MPI_Type_contiguous((int)r->row_bytes, MPI_BYTE, &r->row);
  if (err == MPI_SUCCESS) err = MPI_Type_commit(&r->row);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Type_contiguous");
  r->row_committed = 1;
  return DITATTN_OK;
}

/* The buffers stay with the context's cache for the next call. */
static void ring_free(device_ring *r) {
  if (r->row_committed) MPI_Type_free(&r->row);
  dt_free(r->req);
}

/* Chunks of a staged message of `rows` rows. */
static int chunk_count(const device_ring *r, int64_t rows) {
  return (int)((rows + r->chunk_rows - 1) / r->chunk_rows);
}

/* Chunk c of a staged message of `rows` rows: its first row into *at, its
 * row count returned. */
static int64_t chunk_rows_at(const device_ring *r, int64_t rows, int c, int64_t *at) {
  *at = c * r->chunk_rows;
  return rows - *at < r->chunk_rows ? rows - *at : r->chunk_rows;
}

/* Posts a staged step's transfer, chunk by chunk (one tag per step: MPI
 * matches messages of one source and tag in order): the receives of
 * recv_rows rows into `to`, then the sends of send_rows rows from `from`.
 * With `download` (the first step: this rank's packed slice on the device)
 * each chunk is first copied down into `from`, so that a chunk is on its
 * way while the next one downloads; a failed download (*local) still sends
 * every chunk (the peers wait for them) and the job agrees on the failure.
 * *nrecv, *nsend: the requests in r->req. MPI status. */
static int post_chunks(device_ring *r, dt_dist_job *job, char *to, int64_t recv_rows, int left,
                       char *from, const char *download, int64_t send_rows, int right, int tag,
                       int *nrecv, int *nsend, ditattn_status *local) {
  *nrecv = chunk_count(r, recv_rows);
  *nsend = chunk_count(r, send_rows);
  int err = MPI_SUCCESS;
  for (int c = 0; c < *nrecv + *nsend; c++) r->req[c] = MPI_REQUEST_NULL;
  for (int c = 0; c < *nrecv && err == MPI_SUCCESS; c++) {
    int64_t at;
    const int64_t n = chunk_rows_at(r, recv_rows, c, &at);
    err =
        MPI_Irecv(to + (size_t)at * r->row_bytes, (int)n, r->row, left, tag, job->comm, &r->req[c]);
  }
  for (int c = 0; c < *nsend && err == MPI_SUCCESS; c++) {
    int64_t at;
    const int64_t n = chunk_rows_at(r, send_rows, c, &at);
    const size_t off = (size_t)at * r->row_bytes;
    if (download && *local == DITATTN_OK)
      *local = ditattn_copy_to_host(job->ctx, from + off, download + off, (size_t)n * r->row_bytes);
    err = MPI_Isend(from + off, (int)n, r->row, right, tag, job->comm, &r->req[*nrecv + c]);
  }
  return err;
}

/* Waits for the staged step's chunks; as each received chunk lands, its
 * upload into `dev` is queued on the stream (copy_2d; else a blocking copy)
 * unless *local already failed. MPI status. */
static int land_chunks(device_ring *r, dt_dist_job *job, char *dev, const char *host,
                       int64_t recv_rows, int nrecv, int nsend, ditattn_status *local) {
  ditattn_context *ctx = job->ctx;
  for (int done = 0; done < nrecv; done++) {
    int c = MPI_UNDEFINED;
    const int err = MPI_Waitany(nrecv, r->req, &c, MPI_STATUS_IGNORE);
    if (err != MPI_SUCCESS) return err;
    if (c == MPI_UNDEFINED) break; /* none posted (a failed post) or all done */
    if (*local != DITATTN_OK) continue;
    int64_t at;
    const int64_t n = chunk_rows_at(r, recv_rows, c, &at);
    const size_t off = (size_t)at * r->row_bytes, bytes = (size_t)n * r->row_bytes;
    *local = ctx->ops->copy_2d
                 ? ctx->ops->copy_2d(ctx, dev + off, bytes, host + off, bytes, bytes, 1)
                 : ditattn_copy_to_backend(ctx, dev + off, host + off, bytes);
  }
  return MPI_Waitall(nsend, r->req + nrecv, MPI_STATUSES_IGNORE);
}

/* The nx tensors of a packed buffer holding n tokens, one after another. */
static void packed_views(void *buf, const ditattn_tensor *like, int64_t n, int nx,
                         ditattn_tensor *xs) {
  const int64_t B = like->shape[0], H = like->shape[1], D = like->shape[3];
  const size_t one = (size_t)(B * H * n * D) * ditattn_dtype_size(like->dtype);
  for (int i = 0; i < nx; i++)
    xs[i] = ditattn_tensor_bhnd((char *)buf + (size_t)i * one, like->dtype, B, H, n, D);
}

/* Packs the local tensors into dev[0]. (Staged, the first step's sends
 * download it to host[0] chunk by chunk: post_chunks.) */
static ditattn_status ring_pack(dt_dist_job *job, device_ring *r, const ditattn_tensor *xs) {
  ditattn_tensor packed[DT_DEVICE_RING_MAX];
  const int64_t n = job->length[job->rank];
  packed_views(r->dev[0], &xs[0], n, r->nx, packed);
  for (int i = 0; i < r->nx; i++) TRY(dt_dist_copy_tensor(job->ctx, &xs[i], &packed[i], 0));
  /* MPI reads the buffer outside the stream: the pack must be complete. */
  return ditattn_synchronize(job->ctx);
}

/* The K/V ring as a ring of two tensors. */
typedef struct kv_adapter {
  dt_device_ring_step_fn step;
  void *user;
} kv_adapter;

static ditattn_status kv_step(void *user, int step, int src, const ditattn_tensor *xs) {
  const kv_adapter *a = user;
  return a->step(a->user, step, src, &xs[0], &xs[1]);
}

ditattn_status dt_device_ring_run(dt_dist_job *job, const ditattn_tensor *k,
                                  const ditattn_tensor *v, dt_device_ring_step_fn step,
                                  void *user) {
  const ditattn_tensor xs[2] = {*k, *v};
  kv_adapter a = {step, user};
  return dt_device_ring_run_n(job, xs, 2, kv_step, &a);
}

/* The job rank at ring position i. */
static int ring_rank(const int *members, int i) { return members ? members[i] : i; }

ditattn_status dt_device_ring_run_n(dt_dist_job *job, const ditattn_tensor *xs, int nx,
                                    dt_device_ring_step_n_fn step, void *user) {
  return dt_device_ring_run_among(job, NULL, job->size, xs, nx, step, user);
}

ditattn_status dt_device_ring_run_among(dt_dist_job *job, const int *members, int count,
                                        const ditattn_tensor *xs, int nx,
                                        dt_device_ring_step_n_fn step, void *user) {
  device_ring r;
  memset(&r, 0, sizeof r);
  r.ctx = job->ctx;
  r.nx = nx;
  r.mode = dt_dist_device_transfer(job->ctx->backend);
  job->stats.gpu_transfer = r.mode;
  /* The ring's positions: members[i] (the job's ranks in order without
   * members); me is this rank's. */
  const int P = count;
  int me = job->rank;
  for (int i = 0; members && i < count; i++)
    if (members[i] == job->rank) me = i;
  ditattn_status st = dt_dist_agree(job, P > 1 ? ring_alloc(job, &xs[0], &r) : DITATTN_OK);
  if (st != DITATTN_OK) {
    ring_free(&r);
    return st;
  }
  const int right = ring_rank(members, (me + 1) % P), left = ring_rank(members, (me + P - 1) % P);
  const int64_t BH2 = nx * xs[0].shape[0] * xs[0].shape[1]; /* rows of one token */
  ditattn_status local = DITATTN_OK; /* first failure on this rank: no more device calls */
  ditattn_status mpi = DITATTN_OK;   /* a transfer failure ends the ring */
  double t0 = MPI_Wtime();
  if (P > 1) local = ring_pack(job, &r, xs);
  dt_dist_tick(&t0, &job->stats.compute_s);
  int cur = 0;
  for (int s = 0; s < P && mpi == DITATTN_OK; s++) {
    const int src = ring_rank(members, (me - s + P) % P),
              next_src = ring_rank(members, (me - s - 1 + P) % P);
    const int staged = r.mode == DT_DIST_XFER_STAGED;
    const int64_t recv_rows = BH2 * job->length[next_src], send_rows = BH2 * job->length[src];
    MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    int nrecv = 0, nsend = 0; /* staged: chunk requests in r.req */
    t0 = MPI_Wtime();
    if (s + 1 < P) {
      /* Step s+1 works on the slice of rank me-s-1, now held by the left. */
      int e1 = MPI_SUCCESS, e2 = MPI_SUCCESS;
      if (staged) /* step 0 sends this rank's slice, downloaded as it goes */
        e1 = post_chunks(&r, job, r.host[1 - cur], recv_rows, left, r.host[cur],
                         s == 0 ? r.dev[0] : NULL, send_rows, right, s, &nrecv, &nsend, &local);
      else {
        e1 = MPI_Irecv(r.dev[1 - cur], (int)recv_rows, r.row, left, s, job->comm, &req[0]);
        e2 = MPI_Isend(r.dev[cur], (int)send_rows, r.row, right, s, job->comm, &req[1]);
      }
      if (e1 != MPI_SUCCESS || e2 != MPI_SUCCESS)
        mpi =
            dt_dist_mpi_fail(job->ctx, e1 != MPI_SUCCESS ? e1 : e2, "device ring MPI_Irecv/Isend");
      job->stats.bytes_sent += send_rows * (int64_t)r.row_bytes;
      job->stats.ring_bytes_received += recv_rows * (int64_t)r.row_bytes;
    }
    dt_dist_tick(&t0, &job->stats.comm_wait_s); /* posting (staged step 0: the download) */
    if (local == DITATTN_OK) {
      ditattn_tensor held[DT_DEVICE_RING_MAX];
      if (s == 0)
        memcpy(held, xs, (size_t)nx * sizeof *xs);
      else
        packed_views(r.dev[cur], &xs[0], job->length[src], nx, held);
      t0 = MPI_Wtime();
      local = step(user, s, src, held); /* queued on the stream: overlaps the wait */
      dt_dist_tick(&t0, &job->stats.compute_s);
    }
    t0 = MPI_Wtime();
    /* Staged: each chunk's upload into the other device buffer queues
     * behind step s's compute, which no longer reads that buffer (it holds
     * step s-1's slice). */
    int e = staged && s + 1 < P ? land_chunks(&r, job, r.dev[1 - cur], r.host[1 - cur], recv_rows,
                                              nrecv, nsend, &local)
                                : MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (e != MPI_SUCCESS && mpi == DITATTN_OK) mpi = dt_dist_mpi_fail(job->ctx, e, "ring wait");
    if (local == DITATTN_OK && mpi == DITATTN_OK && s + 1 < P) {
      /* Step s is done with its buffer before the next receive lands in it
       * (device pointers), and the uploads are done before the next step
       * reads them and its receives overwrite their host copy (staged). */
      local = ditattn_synchronize(job->ctx);
      dt_dist_tick(&t0, &job->stats.compute_s);
    }
    cur = 1 - cur;
  }
  if (local == DITATTN_OK && mpi == DITATTN_OK) {
    t0 = MPI_Wtime();
    local = ditattn_synchronize(job->ctx);
    dt_dist_tick(&t0, &job->stats.compute_s);
  }
  ring_free(&r);
  /* A transfer failure is this rank's failure too (its neighbours see one). */
  return dt_dist_agree(job, local != DITATTN_OK ? local : mpi);
}
