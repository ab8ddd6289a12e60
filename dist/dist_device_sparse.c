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

/* The backend's forward on the gathered tensors for this rank's rows. */
typedef ditattn_status (*rows_forward_fn)(ditattn_context *ctx, const ditattn_tensor whole[3],
                                          int64_t row0, const void *user);

/* Gathers q, k, v (q only over q_span-aligned blocks where IPC copies),
 * runs forward for this rank's rows and waits for it (so
 * that compute_s holds it and a device failure is reported by this call);
 * ends the job. */
static ditattn_status gather_then_forward(dt_dist_job *job, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          int64_t q_span, rows_forward_fn forward,
                                          const void *user) {
  ditattn_context *ctx = job->ctx;
  /* One rank holds the whole sequence: its own tensors, nothing to gather. */
  ditattn_tensor whole[3] = {*q, *k, *v};
  ditattn_status st = DITATTN_OK;
  if (job->size == 1)
    job->stats.gpu_transfer = dt_dist_device_transfer(ctx->backend);
  else
    st = dt_dist_device_gather_qkv(job, q, k, v, q_span, whole); /* the cache's buffers */
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    ditattn_status local = forward(ctx, whole, job->offset[job->rank], user);
    if (local == DITATTN_OK) local = ditattn_synchronize(ctx);
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = dt_dist_agree(job, local);
  }
  return dt_dist_end(job, st);
}

typedef struct llsa_call {
  const ditattn_llsa_params *params;
  ditattn_tensor *out;
  float *lse;
} llsa_call;

static ditattn_status llsa_rows(ditattn_context *ctx, const ditattn_tensor whole[3], int64_t row0,
                                const void *user) {
  const llsa_call *c = user;
  const dt_llsa_fwd p = {*c->params, &whole[0], &whole[1], &whole[2], c->out, c->lse, NULL, row0};
  return ctx->ops->llsa_forward(ctx, &p);
}

ditattn_status dt_dist_device_llsa_run(dt_dist_job *job, const ditattn_llsa_params *params,
                                       const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, ditattn_tensor *out, float *lse) {
  const llsa_call c = {params, out, lse};
  /* Queries are read through the blocks of the coarsest level, b^L tokens. */
  int64_t span = 1;
  for (int l = 0; l < params->levels && span < job->n_global; l++) span *= params->block;
  return gather_then_forward(job, q, k, v, span, llsa_rows, &c);
}

typedef struct ropeslr_call {
  const ditattn_ropeslr_params *params;
  const ditattn_ropeslr_weights *weights;
  const int32_t *pos_global;
  ditattn_tensor *out;
  float *lse_sparse;
} ropeslr_call;

static ditattn_status ropeslr_rows(ditattn_context *ctx, const ditattn_tensor whole[3],
                                   int64_t row0, const void *user) {
  const ropeslr_call *c = user;
  const dt_ropeslr_fwd p = {*c->params,    ditattn_ropeslr_topk(c->params, whole[0].shape[2]),
                            c->weights,    c->pos_global,
                            &whole[0],     &whole[1],
                            &whole[2],     c->out,
                            c->lse_sparse, NULL,
                            row0};
  return ctx->ops->ropeslr_forward(ctx, &p);
}

ditattn_status dt_dist_device_ropeslr_run(dt_dist_job *job, const ditattn_ropeslr_params *params,
                                          const ditattn_ropeslr_weights *weights,
                                          const int32_t *pos_global, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          ditattn_tensor *out, float *lse_sparse) {
  const ropeslr_call c = {params, weights, pos_global, out, lse_sparse};
  return gather_then_forward(job, q, k, v, params->block, ropeslr_rows, &c);
}
