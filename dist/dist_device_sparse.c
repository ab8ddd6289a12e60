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

/* The backend's forward on the gathered tensors for this rank's rows, or
 * (summary->use == DT_SUMMARY_FILL) its share of the key summary. */
typedef ditattn_status (*rows_forward_fn)(ditattn_context *ctx, const ditattn_tensor whole[3],
                                          int64_t row0, const dt_summary_arg *summary,
                                          const void *user);
/* The key summary's layout; UNSUPPORTED where the backend has none. */
typedef ditattn_status (*summary_layout_fn)(ditattn_context *ctx, const ditattn_tensor whole[3],
                                            const void *user, dt_key_summary *layout);

typedef struct rows_job {
  const ditattn_tensor *whole;
  rows_forward_fn forward;
  const void *user;
} rows_job;

static ditattn_status fill_share(ditattn_context *ctx, const dt_summary_arg *share,
                                 const void *user) {
  const rows_job *r = user;
  return r->forward(ctx, r->whole, 0, share, r->user);
}

/* DT_SUMMARY_READ with every rank's share of the key summary (laid out by
 * layout; NULL where this rank cannot or will not split) when the gather
 * went by IPC and every rank splits, else DT_SUMMARY_NONE (also when the
 * share fails on any rank). Collective. */
static dt_summary_arg key_summary(dt_dist_job *job, const ditattn_tensor whole[3],
                                  rows_forward_fn forward, const dt_key_summary *layout,
                                  const void *user) {
  const dt_summary_arg none = {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0};
  /* Agreed: the same everywhere. (Several hosts: the units travel the ring
   * between hosts first, dt_dist_summary_share.) */
  if (job->stats.gpu_transfer != DT_DIST_XFER_IPC && job->stats.gpu_transfer != DT_DIST_XFER_HOSTS)
    return none;
  /* One rank's DITATTN_DIST_SPLIT_KEYS=0 (or a backend without a layout)
   * keeps every rank out: the share is collective. */
  int want = layout != NULL, all = 0;
  if (MPI_Allreduce(&want, &all, 1, MPI_INT, MPI_MIN, job->comm) != MPI_SUCCESS || !all)
    return none;
  const rows_job r = {whole, forward, user};
  void *buf = NULL;
  if (dt_dist_summary_share(job, layout, fill_share, &r, &buf) != DITATTN_OK) {
    dt_clear_error(job->ctx); /* the forward computes everything itself */
    return none;
  }
  job->stats.keys_split = 1;
  const dt_summary_arg read = {DT_SUMMARY_READ, buf, 0, 0, 0, 0};
  return read;
}

/* Gathers q, k, v (q only over q_span-aligned blocks where IPC copies),
 * splits the key-side work when it can, runs forward for this rank's rows
 * and waits for it (so that compute_s holds it and a device failure is
 * reported by this call); ends the job. With the split, the gather's bulk
 * k/v copies run on the side stream under the share, the exchange and the
 * forward's pooling and selection; the forward joins them before its
 * attention. */
static ditattn_status gather_then_forward(dt_dist_job *job, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          int64_t q_span, rows_forward_fn forward,
                                          summary_layout_fn layout_of, const void *user) {
  ditattn_context *ctx = job->ctx;
  /* One rank holds the whole sequence: its own tensors, nothing to gather. */
  ditattn_tensor whole[3] = {*q, *k, *v};
  ditattn_status st = DITATTN_OK;
  dt_key_summary layout;
  int split = 0, deferred = 0;
  if (job->size == 1) {
    job->stats.gpu_transfer = dt_dist_device_transfer(ctx->backend);
  } else {
    ditattn_tensor shapes[3] = {*q, *k, *v}; /* the layout reads shapes only */
    for (int i = 0; i < 3; i++) shapes[i].shape[2] = job->n_global;
    split = !dt_dist_env_is("DITATTN_DIST_SPLIT_KEYS", "0") &&
            layout_of(ctx, shapes, user, &layout) == DITATTN_OK;
    /* Past its slice, this rank's share reads k and v up to early_end. */
    const int64_t end = job->offset[job->rank] + job->length[job->rank];
    const int64_t early_end = split ? dt_dist_summary_reach(&layout, end, job->n_global) : -1;
    st = dt_dist_device_gather_qkv(job, q, k, v, q_span, early_end, whole,
                                   &deferred); /* the cache's buffers */
  }
  if (st == DITATTN_OK) {
    dt_summary_arg summary = {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0};
    if (job->size > 1) summary = key_summary(job, whole, forward, split ? &layout : NULL, user);
    ditattn_status local = DITATTN_OK;
    /* READ waits for the gather's copies, chunk by chunk, before its
     * attention reads them; NONE reads k and v from its start. */
    const int read = deferred && summary.use == DT_SUMMARY_READ;
    summary.side_chunks = read ? deferred : 0;
    summary.side_marked = read && ctx->ops->side_mark != NULL;
    if (deferred && !read) local = ctx->ops->side_join(ctx);
    double t0 = MPI_Wtime();
    if (local == DITATTN_OK) local = forward(ctx, whole, job->offset[job->rank], &summary, user);
    /* No side copy outlives the call, whatever failed. */
    if (deferred) {
      ditattn_status joined = ctx->ops->side_join(ctx);
      if (local == DITATTN_OK) local = joined;
    }
    ditattn_status synced = ditattn_synchronize(ctx);
    if (local == DITATTN_OK) local = synced;
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

static dt_llsa_fwd llsa_problem(const ditattn_tensor whole[3], int64_t row0,
                                const dt_summary_arg *summary, const llsa_call *c) {
  const dt_llsa_fwd p = {*c->params, &whole[0], &whole[1], &whole[2], c->out,
                         c->lse,     NULL,      row0,      *summary};
  return p;
}

static ditattn_status llsa_rows(ditattn_context *ctx, const ditattn_tensor whole[3], int64_t row0,
                                const dt_summary_arg *summary, const void *user) {
  const dt_llsa_fwd p = llsa_problem(whole, row0, summary, user);
  return ctx->ops->llsa_forward(ctx, &p);
}

static ditattn_status llsa_layout(ditattn_context *ctx, const ditattn_tensor whole[3],
                                  const void *user, dt_key_summary *layout) {
  const dt_summary_arg none = {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0};
  const dt_llsa_fwd p = llsa_problem(whole, 0, &none, user);
  return ctx->ops->llsa_summary_layout ? ctx->ops->llsa_summary_layout(ctx, &p, layout)
                                       : DITATTN_ERR_UNSUPPORTED;
}

ditattn_status dt_dist_device_llsa_run(dt_dist_job *job, const ditattn_llsa_params *params,
                                       const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, ditattn_tensor *out, float *lse) {
  const llsa_call c = {params, out, lse};
  /* Queries are read through the blocks of the coarsest level, b^L tokens. */
  int64_t span = 1;
  for (int l = 0; l < params->levels && span < job->n_global; l++) span *= params->block;
  return gather_then_forward(job, q, k, v, span, llsa_rows, llsa_layout, &c);
}

typedef struct ropeslr_call {
  const ditattn_ropeslr_params *params;
  const ditattn_ropeslr_weights *weights;
  const int32_t *pos_global;
  ditattn_tensor *out;
  float *lse_sparse;
} ropeslr_call;

static dt_ropeslr_fwd ropeslr_problem(const ditattn_tensor whole[3], int64_t row0,
                                      const dt_summary_arg *summary, const ropeslr_call *c) {
  const dt_ropeslr_fwd p = {*c->params,    ditattn_ropeslr_topk(c->params, whole[0].shape[2]),
                            c->weights,    c->pos_global,
                            &whole[0],     &whole[1],
                            &whole[2],     c->out,
                            c->lse_sparse, NULL,
                            row0,          *summary};
  return p;
}

static ditattn_status ropeslr_rows(ditattn_context *ctx, const ditattn_tensor whole[3],
                                   int64_t row0, const dt_summary_arg *summary, const void *user) {
  const dt_ropeslr_fwd p = ropeslr_problem(whole, row0, summary, user);
  return ctx->ops->ropeslr_forward(ctx, &p);
}

static ditattn_status ropeslr_layout(ditattn_context *ctx, const ditattn_tensor whole[3],
                                     const void *user, dt_key_summary *layout) {
  const dt_summary_arg none = {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0};
  const dt_ropeslr_fwd p = ropeslr_problem(whole, 0, &none, user);
  return ctx->ops->ropeslr_summary_layout ? ctx->ops->ropeslr_summary_layout(ctx, &p, layout)
                                          : DITATTN_ERR_UNSUPPORTED;
}

ditattn_status dt_dist_device_ropeslr_run(dt_dist_job *job, const ditattn_ropeslr_params *params,
                                          const ditattn_ropeslr_weights *weights,
                                          const int32_t *pos_global, const ditattn_tensor *q,
                                          const ditattn_tensor *k, const ditattn_tensor *v,
                                          ditattn_tensor *out, float *lse_sparse) {
  const ropeslr_call c = {params, weights, pos_global, out, lse_sparse};
  return gather_then_forward(job, q, k, v, params->block, ropeslr_rows, ropeslr_layout, &c);
}
