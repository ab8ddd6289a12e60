/* The per-call job: communicator duplication, collective agreement on
 * arguments and on failures, statistics. Agreement uses fixed-size
 * collectives only, so a rank that ran out of memory still takes part. */
#include "dist_internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

static const char *const param_names[DT_DP_SLR_POLICY] = {
    "operation", "n_global", "B",       "H",
    "D",         "dtype",    "backend", "scale (float bits)",
    "block",     "levels",   "topk[0]", "topk[1]",
    "topk[2]",   "topk[3]",  "topk[4]", "topk[5]",
    "topk[6]",   "topk[7]"};
static const char *const slr_param_names[DT_DP_COUNT - DT_DP_SLR_POLICY] = {
    "policy",  "rho (bits)", "topk",   "sqrt_c (bits)", "force_own_block", "rank",
    "feature", "grid T",     "grid H", "grid W",        "pos given"};

static const char *param_name(int i) {
  return i < DT_DP_SLR_POLICY ? param_names[i] : slr_param_names[i - DT_DP_SLR_POLICY];
}

static ditattn_dist_stats g_last_stats;

void ditattn_dist_last_stats(ditattn_dist_stats *stats) {
  if (stats) *stats = g_last_stats;
}

void dt_dist_tick(double *t0, double *acc) {
  double t = MPI_Wtime();
  *acc += t - *t0;
  *t0 = t;
}

ditattn_status dt_dist_mpi_fail(ditattn_context *ctx, int mpi_err, const char *what) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(mpi_err, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "?");
  return dt_fail(ctx, DITATTN_ERR_MPI, "%s failed: %s", what, text);
}

/* The status and message a failing rank broadcasts. */
typedef struct dt_dist_failure {
  int64_t status;
  char msg[248];
} dt_dist_failure;

/* Given the lowest failing rank (or INT64_MAX), makes every rank return that
 * rank's status and message. */
static ditattn_status spread_failure(dt_dist_job *job, int64_t first_bad, ditattn_status local) {
  if (first_bad == INT64_MAX) return DITATTN_OK;
  dt_dist_failure f;
  memset(&f, 0, sizeof f);
  if (first_bad == job->rank) {
    f.status = (int64_t)local;
    const char *m = job->ctx ? job->ctx->last_error : "ctx is NULL";
    /* dt_fail's text starts with the status name, which the new one repeats. */
    const char *name = ditattn_strerror(local);
    const size_t nl = strlen(name);
    if (strncmp(m, name, nl) == 0 && m[nl] == ':' && m[nl + 1] == ' ') m += nl + 2;
    snprintf(f.msg, sizeof f.msg, "%.240s", m);
  }
  double t0 = MPI_Wtime();
  int err = MPI_Bcast(&f, (int)sizeof f, MPI_BYTE, (int)first_bad, job->comm);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Bcast (agreement)");
  ditattn_status st = (ditattn_status)f.status;
  if (st <= DITATTN_OK || st >= DITATTN_STATUS_COUNT) st = DITATTN_ERR_INTERNAL;
  return dt_fail(job->ctx, st, "rank %lld of %d: %s", (long long)first_bad, job->size, f.msg);
}

ditattn_status dt_dist_agree(dt_dist_job *job, ditattn_status local) {
  int64_t mine = local == DITATTN_OK ? INT64_MAX : job->rank, first_bad = INT64_MAX;
  double t0 = MPI_Wtime();
  int err = MPI_Allreduce(&mine, &first_bad, 1, MPI_INT64_T, MPI_MIN, job->comm);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Allreduce (agreement)");
  return spread_failure(job, first_bad, local);
}

/* Slices, sorted by offset, must tile [0, n_global). */
static ditattn_status check_tiling(dt_dist_job *job, int64_t n_global) {
  int64_t covered = 0;
  for (int seen = 0; seen < job->size; seen++) {
    int next = -1;
    for (int r = 0; r < job->size && next < 0; r++)
      if (job->offset[r] == covered) next = r;
    if (next < 0)
      return dt_fail(job->ctx, DITATTN_ERR_INVALID_ARGUMENT,
                     "slices do not tile [0, %lld): no rank starts at token %lld",
                     (long long)n_global, (long long)covered);
    covered += job->length[next];
  }
  if (covered != n_global)
    return dt_fail(job->ctx, DITATTN_ERR_INVALID_ARGUMENT,
                   "slices do not tile [0, %lld): they end at token %lld", (long long)n_global,
                   (long long)covered);
  return DITATTN_OK;
}

/* One MPI_MIN all-reduce carries: the lowest failing rank, every parameter's
 * minimum, and every parameter's maximum (negated). */
enum { AGREE_LEN = 1 + 2 * DT_DP_COUNT };

static ditattn_status agree_params(dt_dist_job *job, ditattn_status local,
                                   const int64_t params[DT_DP_COUNT]) {
  int64_t mine[AGREE_LEN], all[AGREE_LEN];
  mine[0] = local == DITATTN_OK ? INT64_MAX : job->rank;
  for (int i = 0; i < DT_DP_COUNT; i++) {
    /* Parameters are never INT64_MIN (negation must not overflow). */
    int64_t p = local == DITATTN_OK && params[i] != INT64_MIN ? params[i] : 0;
    mine[1 + i] = p;
    mine[1 + DT_DP_COUNT + i] = -p;
  }
  double t0 = MPI_Wtime();
  int err = MPI_Allreduce(mine, all, AGREE_LEN, MPI_INT64_T, MPI_MIN, job->comm);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Allreduce (arguments)");
  TRY(spread_failure(job, all[0], local));
  for (int i = 0; i < DT_DP_COUNT; i++) {
    int64_t lo = all[1 + i], hi = -all[1 + DT_DP_COUNT + i];
    if (lo != hi)
      return dt_fail(job->ctx, DITATTN_ERR_MPI,
                     "ranks disagree on %s: values range from %lld to %lld over %d ranks",
                     param_name(i), (long long)lo, (long long)hi, job->size);
  }
  return DITATTN_OK;
}

ditattn_status dt_dist_begin(dt_dist_job *job, ditattn_context *ctx, MPI_Comm comm,
                             const ditattn_dist_slice *slice, ditattn_status local,
                             const int64_t params[DT_DP_COUNT]) {
  memset(job, 0, sizeof *job);
  job->ctx = ctx;
  job->caller = comm;
  job->comm = MPI_COMM_NULL;
  job->t_start = MPI_Wtime();
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized)
    return dt_dist_end(job, dt_fail(ctx, DITATTN_ERR_MPI, "MPI is not initialized (or finalized)"));
  if (comm == MPI_COMM_NULL)
    return dt_dist_end(job, dt_fail(ctx, DITATTN_ERR_MPI, "comm is MPI_COMM_NULL"));
  int err = MPI_Comm_dup(comm, &job->comm);
  if (err != MPI_SUCCESS) {
    job->comm = MPI_COMM_NULL;
    return dt_dist_end(job, dt_dist_mpi_fail(ctx, err, "MPI_Comm_dup"));
  }
  MPI_Comm_set_errhandler(job->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(job->comm, &job->rank);
  MPI_Comm_size(job->comm, &job->size);

  /* The slice tables (agreed offsets and lengths, then the raw all-gather)
   * are allocated before agreeing, so their failure is agreed too. */
  int64_t *table = NULL;
  if (local == DITATTN_OK) {
    job->offset = dt_calloc(4 * (size_t)job->size, sizeof(int64_t));
    if (!job->offset)
      local = dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "slice tables for %d ranks", job->size);
    else {
      job->length = job->offset + job->size;
      table = job->offset + 2 * job->size;
    }
  }
  ditattn_status st = agree_params(job, local, params);
  if (st != DITATTN_OK) return dt_dist_end(job, st);

  int64_t mine[2] = {slice->offset, slice->length};
  double t0 = MPI_Wtime();
  err = MPI_Allgather(mine, 2, MPI_INT64_T, table, 2, MPI_INT64_T, job->comm);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (err != MPI_SUCCESS) st = dt_dist_mpi_fail(ctx, err, "MPI_Allgather (slices)");
  if (st == DITATTN_OK) {
    job->max_length = 0;
    for (int r = 0; r < job->size; r++) {
      job->offset[r] = table[2 * r];
      job->length[r] = table[2 * r + 1];
      if (job->length[r] > job->max_length) job->max_length = job->length[r];
    }
    job->n_global = params[DT_DP_N_GLOBAL];
    st = check_tiling(job, job->n_global);
  }
  if (st != DITATTN_OK) return dt_dist_end(job, st);
  return DITATTN_OK;
}

ditattn_status dt_dist_end(dt_dist_job *job, ditattn_status status) {
  if (job->comm != MPI_COMM_NULL) MPI_Comm_free(&job->comm);
  dt_free(job->offset);
  job->offset = job->length = NULL;
  dt_free(job->hosts.owned);
  memset(&job->hosts, 0, sizeof job->hosts);
  job->stats.wall_s = MPI_Wtime() - job->t_start;
  g_last_stats = job->stats;
  return status;
}
