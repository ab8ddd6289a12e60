/* Internals shared by the dist/ sources: the per-call job (duplicated
 * communicator, agreed slice table, statistics) and the collective
 * agreement that turns any rank's failure into the same status on all. */
#ifndef DITATTN_DIST_INTERNAL_H
#define DITATTN_DIST_INTERNAL_H

#include "ditattn/ditattn_dist.h"

#include "backends/backend.h"
#include "backends/validate.h"

/* Parameters every rank must agree on, compared one by one so the message
 * can name the first that differs. */
typedef enum dt_dist_param {
  DT_DP_OP = 0,
  DT_DP_N_GLOBAL,
  DT_DP_B,
  DT_DP_H,
  DT_DP_D,
  DT_DP_DTYPE,
  DT_DP_BACKEND,
  DT_DP_SCALE_BITS,
  DT_DP_BLOCK,
  DT_DP_LEVELS,
  DT_DP_TOPK0,
  /* RoPeSLR (after LLSA's topk range; block and scale use the slots above).
   * Doubles travel as their bit patterns. */
  DT_DP_SLR_POLICY = DT_DP_TOPK0 + DITATTN_LLSA_MAX_LEVELS,
  DT_DP_SLR_RHO_BITS,
  DT_DP_SLR_TOPK,
  DT_DP_SLR_SQRT_C_BITS,
  DT_DP_SLR_FORCE_OWN,
  DT_DP_SLR_RANK,
  DT_DP_SLR_FEATURE,
  DT_DP_SLR_GRID_T,
  DT_DP_SLR_GRID_H,
  DT_DP_SLR_GRID_W,
  DT_DP_SLR_POS_GIVEN,
  DT_DP_COUNT
} dt_dist_param;

/* Operation codes for DT_DP_OP. */
enum {
  DT_DIST_OP_DENSE_FWD = 1,
  DT_DIST_OP_LLSA_FWD = 2,
  DT_DIST_OP_LLSA_BWD = 3,
  DT_DIST_OP_ROPESLR_FWD = 4,
  DT_DIST_OP_ROPESLR_BWD = 5,
  DT_DIST_OP_DENSE_BWD = 6
};

/* Which ranks share a host (dist_device_hosts.c): IPC reaches the GPUs of
 * one host only. Ranks are numbered on their host in rank order, hosts in
 * the order of their first rank. */
typedef struct dt_dist_hosts {
  int count;           /* hosts (0: not known) */
  int per_host;        /* ranks on every host when all hold as many, else 0 */
  const int *host_of;  /* per rank: its host */
  const int *local_of; /* per rank: its index on its host */
  const int *rank_at;  /* per_host > 0: rank_at[host * per_host + local] */
  void *owned;         /* the tables, where no communicator keeps them */
} dt_dist_hosts;

typedef struct dt_dist_job {
  ditattn_context *ctx;
  MPI_Comm caller; /* the caller's communicator: what is kept between calls hangs on it */
  MPI_Comm comm;   /* duplicate of the caller's, errors return */
  int rank, size;
  int64_t *offset, *length; /* per rank, valid after dt_dist_begin succeeded */
  int64_t max_length;
  int64_t n_global; /* tokens of the whole sequence (slices tile [0, n_global)) */
  double t_start;
  ditattn_dist_stats stats;
  dt_dist_hosts hosts; /* filled by dt_dist_hosts_find (device routes) */
} dt_dist_job;

/* Starts a collective call: duplicates comm, all-gathers every rank's local
 * validation status (message taken from ctx), slice and parameters, and
 * agrees: the first failing rank's status and message, else a parameter
 * mismatch (DITATTN_ERR_MPI), else slices that do not tile [0, N)
 * (DITATTN_ERR_INVALID_ARGUMENT). On failure the job is already ended. */
ditattn_status dt_dist_begin(dt_dist_job *job, ditattn_context *ctx, MPI_Comm comm,
                             const ditattn_dist_slice *slice, ditattn_status local,
                             const int64_t params[DT_DP_COUNT]);
/* Every rank returns the status (and message) of the lowest failing rank,
 * or DITATTN_OK when none failed. */
ditattn_status dt_dist_agree(dt_dist_job *job, ditattn_status local);
/* Frees the job and publishes its statistics. Returns status unchanged. */
ditattn_status dt_dist_end(dt_dist_job *job, ditattn_status status);
/* Maps an MPI error code to DITATTN_ERR_MPI with its text recorded in ctx. */
ditattn_status dt_dist_mpi_fail(ditattn_context *ctx, int mpi_err, const char *what);
/* Adds the time since *t0 to *acc and resets *t0. */
void dt_dist_tick(double *t0, double *acc);

/* Local checks shared by the entries: slice sane, q/k/v/out shapes
 * (B, H, length, D), outputs disjoint from inputs, lse disjoint from out.
 * Fills B/H/D/dtype/backend/n_global params when the inputs allow it. */
/* UNSUPPORTED unless ctx is a host context (ref, cpu); what names the call. */
ditattn_status dt_dist_check_host(ditattn_context *ctx, const char *what);
/* The backwards' further local checks: a host context (ref, cpu), lse
 * given, dout an f32 input and dq, dk, dv f32 outputs of the slice's shape,
 * disjoint from every input and from lse. what names the call. */
ditattn_status dt_dist_check_grads(ditattn_context *ctx, const char *what,
                                   const ditattn_dist_slice *slice, const ditattn_tensor *q,
                                   const ditattn_tensor *k, const ditattn_tensor *v,
                                   const ditattn_tensor *out, const float *lse,
                                   const ditattn_tensor *dout, ditattn_tensor *dq,
                                   ditattn_tensor *dk, ditattn_tensor *dv);
/* The call's scale (dt_resolve_scale: <= 0 means 1/sqrt(D)) into
 * *resolved, and its bit pattern into params[DT_DP_SCALE_BITS] so that the
 * ranks agree on it like every parameter. */
ditattn_status dt_dist_scale_param(ditattn_context *ctx, float scale, int64_t D, float *resolved,
                                   int64_t params[DT_DP_COUNT]);
ditattn_status dt_dist_check_local(ditattn_context *ctx, const ditattn_dist_slice *slice,
                                   const ditattn_tensor *q, const ditattn_tensor *k,
                                   const ditattn_tensor *v, const ditattn_tensor *out,
                                   const float *lse, int64_t params[DT_DP_COUNT]);
/* The same with `out` named out_name in messages (a backward's dout: the
 * tensor of out's shape it takes instead). */
ditattn_status dt_dist_check_local_as(ditattn_context *ctx, const ditattn_dist_slice *slice,
                                      const ditattn_tensor *q, const ditattn_tensor *k,
                                      const ditattn_tensor *v, const ditattn_tensor *out,
                                      const char *out_name, const float *lse,
                                      int64_t params[DT_DP_COUNT]);

#endif
