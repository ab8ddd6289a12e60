/* The K/V ring on device memory (GPU contexts). Each rank packs its K/V
 * slice into one contiguous device buffer ([k; v], (B, H, n, D) each) so
 * that one message moves it; the pack is a device-side copy by
 * ditattn_pool_mean with block 1 (the mean of one token is that token,
 * exactly, in every dtype). Step s computes on the slice it holds while MPI
 * sends it on and receives the next one into the other buffer; with host
 * staging, the received slice is uploaded once the step's compute is done. */
#include "dist_device.h"

#include <limits.h>
#include <string.h>

typedef struct device_ring {
  ditattn_context *ctx;
  int mode;      /* DT_DIST_XFER_STAGED or DT_DIST_XFER_DEVICE */
  void *dev[2];  /* packed slices, device memory */
  void *host[2]; /* staging buffers (staged mode only) */
  size_t row_bytes;
  MPI_Datatype row; /* one token row of D elements: counts stay in int range */
  int row_committed;
} device_ring;

static ditattn_status ring_alloc(dt_dist_job *job, const ditattn_tensor *k, device_ring *r) {
  const int64_t B = k->shape[0], H = k->shape[1], D = k->shape[3];
  const size_t esize = ditattn_dtype_size(k->dtype);
  size_t rows = 0, bytes = 0;
  if (!dt_mul_size((size_t)(2 * B * H), (size_t)job->max_length, &rows) || rows > INT_MAX ||
      !dt_mul_size((size_t)D, esize, &r->row_bytes) || r->row_bytes > INT_MAX ||
      !dt_mul_size(rows, r->row_bytes, &bytes))
    return dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "device ring buffer of 2*%lld*%lld*%lld rows",
                   (long long)B, (long long)H, (long long)job->max_length);
  for (int i = 0; i < 2; i++) {
    TRY(ditattn_malloc(job->ctx, bytes, &r->dev[i]));
    if (r->mode == DT_DIST_XFER_STAGED) {
      r->host[i] = dt_malloc(bytes);
      if (!r->host[i])
        return dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "ring staging buffer of %zu bytes",
                       bytes);
    }
  }
  int err = MPI_Type_contiguous((int)r->row_bytes, MPI_BYTE, &r->row);
  if (err == MPI_SUCCESS) err = MPI_Type_commit(&r->row);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Type_contiguous");
  r->row_committed = 1;
  return DITATTN_OK;
}

static void ring_free(device_ring *r) {
  for (int i = 0; i < 2; i++) {
    dt_dist_device_free(r->ctx, r->dev[i]);
    dt_free(r->host[i]);
  }
  if (r->row_committed) MPI_Type_free(&r->row);
}

/* k then v of a packed buffer holding n tokens. */
static void kv_views(void *buf, const ditattn_tensor *like, int64_t n, ditattn_tensor *k,
                     ditattn_tensor *v) {
  const int64_t B = like->shape[0], H = like->shape[1], D = like->shape[3];
  const size_t half = (size_t)(B * H * n * D) * ditattn_dtype_size(like->dtype);
  *k = ditattn_tensor_bhnd(buf, like->dtype, B, H, n, D);
  *v = ditattn_tensor_bhnd((char *)buf + half, like->dtype, B, H, n, D);
}

/* Packs the local k, v into dev[0] (and its host copy when staged). */
static ditattn_status ring_pack(dt_dist_job *job, device_ring *r, const ditattn_tensor *k,
                                const ditattn_tensor *v) {
  ditattn_tensor pk, pv;
  const int64_t n = job->length[job->rank];
  kv_views(r->dev[0], k, n, &pk, &pv);
  TRY(ditattn_pool_mean(job->ctx, k, 1, &pk));
  TRY(ditattn_pool_mean(job->ctx, v, 1, &pv));
  /* MPI reads the buffer outside the stream: the pack must be complete. */
  TRY(ditattn_synchronize(job->ctx));
  if (r->mode == DT_DIST_XFER_STAGED)
    TRY(ditattn_copy_to_host(job->ctx, r->host[0], r->dev[0],
                             (size_t)(2 * k->shape[0] * k->shape[1] * n) * r->row_bytes));
  return DITATTN_OK;
}

ditattn_status dt_device_ring_run(dt_dist_job *job, const ditattn_tensor *k,
                                  const ditattn_tensor *v, dt_device_ring_step_fn step,
                                  void *user) {
  device_ring r;
  memset(&r, 0, sizeof r);
  r.ctx = job->ctx;
  r.mode = dt_dist_device_transfer(job->ctx->backend);
  job->stats.gpu_transfer = r.mode;
  const int P = job->size, me = job->rank;
  ditattn_status st = dt_dist_agree(job, P > 1 ? ring_alloc(job, k, &r) : DITATTN_OK);
  if (st != DITATTN_OK) {
    ring_free(&r);
    return st;
  }
  const int right = (me + 1) % P, left = (me + P - 1) % P;
  const int64_t BH2 = 2 * k->shape[0] * k->shape[1];
  ditattn_status local = DITATTN_OK; /* first failure on this rank: no more device calls */
  ditattn_status mpi = DITATTN_OK;   /* a transfer failure ends the ring */
  double t0 = MPI_Wtime();
  if (P > 1) local = ring_pack(job, &r, k, v);
  dt_dist_tick(&t0, &job->stats.compute_s);
  int cur = 0;
  for (int s = 0; s < P && mpi == DITATTN_OK; s++) {
    const int src = (me - s + P) % P, next_src = (me - s - 1 + P) % P;
    const int staged = r.mode == DT_DIST_XFER_STAGED;
    MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    if (s + 1 < P) {
      /* Step s+1 works on the slice of rank me-s-1, now held by the left. */
      void *to = staged ? r.host[1 - cur] : r.dev[1 - cur];
      void *from = staged ? r.host[cur] : r.dev[cur];
      int e1 =
          MPI_Irecv(to, (int)(BH2 * job->length[next_src]), r.row, left, s, job->comm, &req[0]);
      int e2 = MPI_Isend(from, (int)(BH2 * job->length[src]), r.row, right, s, job->comm, &req[1]);
      if (e1 != MPI_SUCCESS || e2 != MPI_SUCCESS)
        mpi =
            dt_dist_mpi_fail(job->ctx, e1 != MPI_SUCCESS ? e1 : e2, "device ring MPI_Irecv/Isend");
      job->stats.bytes_sent += BH2 * job->length[src] * (int64_t)r.row_bytes;
      job->stats.ring_bytes_received += BH2 * job->length[next_src] * (int64_t)r.row_bytes;
    }
    if (local == DITATTN_OK) {
      ditattn_tensor kv[2];
      if (s == 0) {
        kv[0] = *k;
        kv[1] = *v;
      } else
        kv_views(r.dev[cur], k, job->length[src], &kv[0], &kv[1]);
      t0 = MPI_Wtime();
      local = step(user, s, src, &kv[0], &kv[1]); /* queued on the stream: overlaps the wait */
      dt_dist_tick(&t0, &job->stats.compute_s);
    }
    t0 = MPI_Wtime();
    int e = MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (e != MPI_SUCCESS && mpi == DITATTN_OK) mpi = dt_dist_mpi_fail(job->ctx, e, "ring wait");
    if (local == DITATTN_OK && mpi == DITATTN_OK && s + 1 < P) {
      /* Step s is done with its buffer before the next receive lands in it
       * (device pointers) or the next upload queues behind it (staged). */
      local = ditattn_synchronize(job->ctx);
      dt_dist_tick(&t0, &job->stats.compute_s);
      if (local == DITATTN_OK && staged)
        local = ditattn_copy_to_backend(job->ctx, r.dev[1 - cur], r.host[1 - cur],
                                        (size_t)(BH2 * job->length[next_src]) * r.row_bytes);
      dt_dist_tick(&t0, &job->stats.comm_wait_s);
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
