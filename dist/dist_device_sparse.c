/* LLSA and RoPeSLR forward on GPU contexts. Selection is global and its
 * candidates are arbitrary blocks, so each rank first all-gathers q, k, v
 * on the device (dist_device_gather.c: O(N) memory per rank, the transfers
 * overlapped with the copies), then runs the backend's own forward
 * restricted to its query rows (q_row0): pooling over the whole sequence,
 * selection of the blocks its rows touch, attention for its rows only.
 * The kernels and their summation order are those of one process, so every
 * rank's rows equal the single-process output exactly. (The host path of
 * dist_llsa_*.c / dist_ropeslr_*.c moves less data: pooled partial sums,
 * the selected blocks, the low-rank factors; see docs/dist.md.) */
#include "dist_device.h"

#include <string.h>

static void free_gathered(ditattn_context *ctx, ditattn_tensor whole[3]) {
  for (int i = 0; i < 3; i++) dt_dist_device_free(ctx, whole[i].data);
}

/* The forward itself, queued and then waited for, so that compute_s holds
 * it and a device failure is reported by this call. */
static ditattn_status finish_local(dt_dist_job *job, ditattn_status local) {
  double t0 = MPI_Wtime();
  if (local == DITATTN_OK) local = ditattn_synchronize(job->ctx);
  dt_dist_tick(&t0, &job->stats.compute_s);
  return dt_dist_agree(job, local);
}

ditattn_status dt_dist_device_llsa_run(dt_dist_job *job, const ditattn_llsa_params *params,
                                       const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, ditattn_tensor *out, float *lse) {
  ditattn_context *ctx = job->ctx;
  ditattn_tensor whole[3];
  ditattn_status st = dt_dist_device_gather_qkv(job, q, k, v, whole);
  if (st == DITATTN_OK) {
    dt_llsa_fwd p = {*params, &whole[0], &whole[1], &whole[2],
                     out,     lse,       NULL,      job->offset[job->rank]};
    double t0 = MPI_Wtime();
    ditattn_status local = ctx->ops->llsa_forward(ctx, &p);
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = finish_local(job, local);
  }
  free_gathered(ctx, whole);
  return dt_dist_end(job, st);
}

ditattn_status dt_dist_device_ropeslr_run(dt_dist_job *job, const ditattn_ropeslr_params *params,
                                          const ditattn_ropeslr_weights *weights,
                                          const int32_t *pos_global, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          ditattn_tensor *out, float *lse_sparse) {
  ditattn_context *ctx = job->ctx;
  ditattn_tensor whole[3];
  ditattn_status st = dt_dist_device_gather_qkv(job, q, k, v, whole);
  if (st == DITATTN_OK) {
    const int64_t N = whole[0].shape[2];
    dt_ropeslr_fwd p = {*params,
                        ditattn_ropeslr_topk(params, N),
                        weights,
                        pos_global,
                        &whole[0],
                        &whole[1],
                        &whole[2],
                        out,
                        lse_sparse,
                        NULL,
                        job->offset[job->rank]};
    double t0 = MPI_Wtime();
    ditattn_status local = ctx->ops->ropeslr_forward(ctx, &p);
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = finish_local(job, local);
  }
  free_gathered(ctx, whole);
  return dt_dist_end(job, st);
}
