/* The gradient ring of the distributed LLSA backward (ring-attention
 * backward pattern): K/V slices travel right as in the forward's ring, and
 * each slice's dK/dV accumulator follows one step behind, so that after
 * visiting every other rank it arrives back at its owner.
 *
 * Step s on rank me works on the slice of src = me − s. K/V for step s+1 is
 * received while step s computes (double-buffered, as dist_ring.c). The
 * accumulator of src (summed by ranks src+1 .. me−1) is received during the
 * compute too: the step writes into a zeroed buffer, adds the arriving
 * accumulator afterwards and sends the sum right. Accumulators are doubles
 * (the reference accumulates gradients in double). */
#include "dist_llsa_backward.h"
#include "dist_ring.h"

#include <limits.h>
#include <string.h>

typedef struct grad_ring {
  float *kv[2];                 /* packed K/V slices: k then v, [bh][token][D] */
  double *acc[2];               /* accumulators being filled / in flight to the right */
  double *acc_in;               /* accumulator arriving from the left */
  MPI_Datatype kv_row, acc_row; /* D floats, D doubles: counts stay in int range */
  int kv_committed, acc_committed;
} grad_ring;

static ditattn_status ring_alloc(dt_dist_job *job, const ditattn_tensor *k, grad_ring *gr) {
  const int64_t B = k->shape[0], H = k->shape[1], D = k->shape[3];
  memset(gr, 0, sizeof *gr);
  if (job->size == 1) return DITATTN_OK;
  size_t rows = 0, elems = 0;
  if (!dt_mul_size((size_t)(2 * B * H), (size_t)job->max_length, &rows) || rows > INT_MAX ||
      !dt_mul_size(rows, (size_t)D, &elems) || elems > SIZE_MAX / sizeof(double))
    return dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "gradient ring buffer of 2*%lld*%lld*%lld rows",
                   (long long)B, (long long)H, (long long)job->max_length);
  for (int i = 0; i < 2; i++) {
    gr->kv[i] = dt_malloc(elems * sizeof(float));
    gr->acc[i] = dt_malloc(elems * sizeof(double));
  }
  gr->acc_in = dt_malloc(elems * sizeof(double));
  if (!gr->kv[0] || !gr->kv[1] || !gr->acc[0] || !gr->acc[1] || !gr->acc_in)
    return dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "gradient ring buffers of 3 x %zu bytes",
                   elems * sizeof(double));
  int err = MPI_Type_contiguous((int)D, MPI_FLOAT, &gr->kv_row);
  if (err == MPI_SUCCESS) err = MPI_Type_commit(&gr->kv_row);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Type_contiguous");
  gr->kv_committed = 1;
  err = MPI_Type_contiguous((int)D, MPI_DOUBLE, &gr->acc_row);
  if (err == MPI_SUCCESS) err = MPI_Type_commit(&gr->acc_row);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Type_contiguous");
  gr->acc_committed = 1;
  return DITATTN_OK;
}

static void ring_free(grad_ring *gr) {
  for (int i = 0; i < 2; i++) {
    dt_free(gr->kv[i]);
    dt_free(gr->acc[i]);
  }
  dt_free(gr->acc_in);
  if (gr->kv_committed) MPI_Type_free(&gr->kv_row);
  if (gr->acc_committed) MPI_Type_free(&gr->acc_row);
}

/* Tags: K/V received at step s: 2s; accumulator received at step s: 2s + 1
 * (s = P: the owner's own accumulator coming home). */
static int kv_tag(int s) { return 2 * s; }
static int acc_tag(int s) { return 2 * s + 1; }

ditattn_status dt_dist_grad_ring_run(dt_dist_job *job, const ditattn_tensor *k,
                                     const ditattn_tensor *v, dt_grad_ring_step_fn step, void *user,
                                     double *home) {
  grad_ring gr;
  ditattn_status st = dt_dist_agree(job, ring_alloc(job, k, &gr));
  if (st != DITATTN_OK) {
    ring_free(&gr);
    return st;
  }
  const int P = job->size, me = job->rank;
  const int right = (me + 1) % P, left = (me + P - 1) % P;
  const int64_t BH2 = 2 * k->shape[0] * k->shape[1], D = k->shape[3];
  ditattn_status local = DITATTN_OK; /* first compute failure on this rank */
  ditattn_status mpi = DITATTN_OK;   /* a transfer failure ends the ring */
  MPI_Request acc_send[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  double t0 = MPI_Wtime();
  if (P > 1) dt_ring_pack_kv(gr.kv[0], k, v);
  dt_dist_tick(&t0, &job->stats.compute_s);
  int cur = 0;
  for (int s = 0; s < P && mpi == DITATTN_OK; s++) {
    const int src = (me - s + P) % P;
    const int64_t rows = BH2 * job->length[src];
    MPI_Request req[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    int e[3] = {MPI_SUCCESS, MPI_SUCCESS, MPI_SUCCESS};
    t0 = MPI_Wtime();
    if (s + 1 < P) {
      const int next_src = (me - s - 1 + P) % P;
      e[0] = MPI_Irecv(gr.kv[1 - cur], (int)(BH2 * job->length[next_src]), gr.kv_row, left,
                       kv_tag(s + 1), job->comm, &req[0]);
      e[1] = MPI_Isend(gr.kv[cur], (int)rows, gr.kv_row, right, kv_tag(s + 1), job->comm, &req[1]);
      job->stats.bytes_sent += rows * D * (int64_t)sizeof(float);
      job->stats.ring_bytes_received += BH2 * job->length[next_src] * D * (int64_t)sizeof(float);
    }
    /* From step 2 on, src's accumulator (ranks src+1 .. me-1) arrives. */
    if (s >= 2)
      e[2] = MPI_Irecv(gr.acc_in, (int)rows, gr.acc_row, left, acc_tag(s), job->comm, &req[2]);
    for (int i = 0; i < 3; i++)
      if (e[i] != MPI_SUCCESS && mpi == DITATTN_OK)
        mpi = dt_dist_mpi_fail(job->ctx, e[i], "gradient ring MPI_Irecv/Isend");
    /* The buffer this step fills was sent two steps ago. */
    double *dkv = home;
    if (s >= 1) {
      dkv = gr.acc[s % 2];
      int ew = MPI_Wait(&acc_send[s % 2], MPI_STATUS_IGNORE);
      if (ew != MPI_SUCCESS && mpi == DITATTN_OK)
        mpi = dt_dist_mpi_fail(job->ctx, ew, "gradient ring wait");
    }
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (s >= 1) memset(dkv, 0, (size_t)(rows * D) * sizeof(double));
    if (local == DITATTN_OK) {
      ditattn_tensor kk = *k, vv = *v;
      if (s > 0) dt_ring_kv_views(gr.kv[cur], k, job->length[src], &kk, &vv);
      local = step(user, s, src, &kk, &vv, dkv);
    }
    dt_dist_tick(&t0, &job->stats.compute_s);
    if (s >= 2) {
      int ew = MPI_Wait(&req[2], MPI_STATUS_IGNORE);
      if (ew != MPI_SUCCESS && mpi == DITATTN_OK)
        mpi = dt_dist_mpi_fail(job->ctx, ew, "gradient ring wait");
      dt_dist_tick(&t0, &job->stats.comm_wait_s);
      for (int64_t i = 0; i < rows * D; i++) dkv[i] += gr.acc_in[i];
      dt_dist_tick(&t0, &job->stats.compute_s);
    }
    if (s >= 1 && mpi == DITATTN_OK) {
      /* At s = P-1 the right neighbour is src: the accumulator goes home. */
      int es =
          MPI_Isend(dkv, (int)rows, gr.acc_row, right, acc_tag(s + 1), job->comm, &acc_send[s % 2]);
      if (es != MPI_SUCCESS) mpi = dt_dist_mpi_fail(job->ctx, es, "gradient ring MPI_Isend");
      job->stats.bytes_sent += rows * D * (int64_t)sizeof(double);
    }
    int ew = MPI_Waitall(2, req, MPI_STATUSES_IGNORE);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (ew != MPI_SUCCESS && mpi == DITATTN_OK) mpi = dt_dist_mpi_fail(job->ctx, ew, "ring wait");
    cur = 1 - cur;
  }
  if (P > 1 && mpi == DITATTN_OK) {
    /* This rank's accumulator, back from the left after visiting all. */
    const int64_t rows = BH2 * job->length[me];
    t0 = MPI_Wtime();
    int e =
        MPI_Recv(gr.acc_in, (int)rows, gr.acc_row, left, acc_tag(P), job->comm, MPI_STATUS_IGNORE);
    if (e == MPI_SUCCESS) e = MPI_Waitall(2, acc_send, MPI_STATUSES_IGNORE);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (e != MPI_SUCCESS) mpi = dt_dist_mpi_fail(job->ctx, e, "gradient ring return");
    for (int64_t i = 0; i < rows * D && mpi == DITATTN_OK; i++) home[i] += gr.acc_in[i];
    dt_dist_tick(&t0, &job->stats.compute_s);
  }
  ring_free(&gr);
  /* A transfer failure is this rank's failure too (its neighbours see one). */
  return dt_dist_agree(job, local != DITATTN_OK ? local : mpi);
}
