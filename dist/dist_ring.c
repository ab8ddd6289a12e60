/* Ring transfer of K/V slices (host buffers; see docs/dist.md for the GPU
 * plan: device buffers with CUDA-aware MPI or host staging). */
#include "dist_ring.h"

#include <limits.h>
#include <string.h>

void dt_ring_pack_kv(float *buf, const ditattn_tensor *k, const ditattn_tensor *v) {
  const int64_t B = k->shape[0], H = k->shape[1], N = k->shape[2], D = k->shape[3];
  const ditattn_tensor *src[2] = {k, v};
  for (int t = 0; t < 2; t++)
    for (int64_t b = 0; b < B; b++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t n = 0; n < N; n++) {
          const float *row = (const float *)src[t]->data + b * src[t]->stride[0] +
                             h * src[t]->stride[1] + n * src[t]->stride[2];
          memcpy(buf, row, (size_t)D * sizeof(float));
          buf += D;
        }
}

void dt_ring_kv_views(float *buf, const ditattn_tensor *like, int64_t n, ditattn_tensor *k,
                      ditattn_tensor *v) {
  const int64_t B = like->shape[0], H = like->shape[1], D = like->shape[3];
  *k = ditattn_tensor_bhnd(buf, DITATTN_F32, B, H, n, D);
  *v = ditattn_tensor_bhnd(buf + B * H * n * D, DITATTN_F32, B, H, n, D);
}

typedef struct ring_state {
  float *buf[2];
  MPI_Datatype row; /* D floats: counts stay in int range for long slices */
  int row_committed;
} ring_state;

static ditattn_status ring_alloc(dt_dist_job *job, const ditattn_tensor *k, ring_state *rs) {
  const int64_t B = k->shape[0], H = k->shape[1], D = k->shape[3];
  memset(rs, 0, sizeof *rs);
  if (job->size == 1) return DITATTN_OK;
  size_t rows = 0, floats = 0;
  if (!dt_mul_size((size_t)(2 * B * H), (size_t)job->max_length, &rows) || rows > INT_MAX ||
      !dt_mul_size(rows, (size_t)D, &floats) || floats > SIZE_MAX / sizeof(float))
    return dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "ring buffer of 2*%lld*%lld*%lld rows",
                   (long long)B, (long long)H, (long long)job->max_length);
  for (int i = 0; i < 2; i++) {
    rs->buf[i] = dt_malloc(floats * sizeof(float));
    if (!rs->buf[i])
      return dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "ring buffer of %zu bytes",
                     floats * sizeof(float));
  }
  int err = MPI_Type_contiguous((int)D, MPI_FLOAT, &rs->row);
  if (err == MPI_SUCCESS) err = MPI_Type_commit(&rs->row);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Type_contiguous");
  rs->row_committed = 1;
  return DITATTN_OK;
}

static void ring_free(ring_state *rs) {
  dt_free(rs->buf[0]);
  dt_free(rs->buf[1]);
  if (rs->row_committed) MPI_Type_free(&rs->row);
}

ditattn_status dt_ring_run(dt_dist_job *job, const ditattn_tensor *k, const ditattn_tensor *v,
                           dt_ring_step_fn step, void *user) {
  ring_state rs;
  ditattn_status st = dt_dist_agree(job, ring_alloc(job, k, &rs));
  if (st != DITATTN_OK) {
    ring_free(&rs);
    return st;
  }
  const int P = job->size, me = job->rank;
  const int right = (me + 1) % P, left = (me + P - 1) % P;
  const int64_t BH2 = 2 * k->shape[0] * k->shape[1];
  ditattn_status local = DITATTN_OK; /* first compute failure on this rank */
  ditattn_status mpi = DITATTN_OK;   /* a transfer failure ends the ring */
  double t0 = MPI_Wtime();
  if (P > 1) dt_ring_pack_kv(rs.buf[0], k, v);
  dt_dist_tick(&t0, &job->stats.compute_s);
  int cur = 0;
  for (int s = 0; s < P && mpi == DITATTN_OK; s++) {
    const int src = (me - s + P) % P;
    MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    if (s + 1 < P) {
      /* Step s+1 works on the slice of rank me-s-1, now held by the left. */
      const int next_src = (me - s - 1 + P) % P;
      int e1 = MPI_Irecv(rs.buf[1 - cur], (int)(BH2 * job->length[next_src]), rs.row, left, s,
                         job->comm, &req[0]);
      int e2 = MPI_Isend(rs.buf[cur], (int)(BH2 * job->length[src]), rs.row, right, s, job->comm,
                         &req[1]);
      if (e1 != MPI_SUCCESS || e2 != MPI_SUCCESS)
        mpi = dt_dist_mpi_fail(job->ctx, e1 != MPI_SUCCESS ? e1 : e2, "ring MPI_Irecv/Isend");
      job->stats.bytes_sent += BH2 * job->length[src] * k->shape[3] * (int64_t)sizeof(float);
      job->stats.ring_bytes_received +=
          BH2 * job->length[next_src] * k->shape[3] * (int64_t)sizeof(float);
    }
    if (local == DITATTN_OK) {
      ditattn_tensor kv[2];
      if (s == 0) {
        kv[0] = *k;
        kv[1] = *v;
      } else
        dt_ring_kv_views(rs.buf[cur], k, job->length[src], &kv[0], &kv[1]);
      t0 = MPI_Wtime();
      local = step(user, s, src, &kv[0], &kv[1]);
      dt_dist_tick(&t0, &job->stats.compute_s);
    }
    t0 = MPI_Wtime();
    int e = MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (e != MPI_SUCCESS && mpi == DITATTN_OK) mpi = dt_dist_mpi_fail(job->ctx, e, "ring wait");
    cur = 1 - cur;
  }
  ring_free(&rs);
  /* A transfer failure is this rank's failure too (its neighbours see one). */
  return dt_dist_agree(job, local != DITATTN_OK ? local : mpi);
}
