/* Global positions, global block means and the selection of the local query
 * blocks for distributed RoPeSLR. A block's mean is its slices' partial sums
 * (double, token by token from 0.0 as ref/) added in sequence order: the
 * same bits as ref/ for a block inside one slice, within an ulp otherwise.
 * Scores are ref/'s double dot products in ref/'s order, ranked by (score
 * desc, index asc), so the selected sets are ref/'s. */
#include "dist_ropeslr.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

ditattn_status dt_dist_gather_positions(dt_dist_job *job, const int64_t grid[3], int64_t N,
                                        const int32_t *pos, int32_t **whole) {
  ditattn_context *ctx = job->ctx;
  const int P = job->size;
  *whole = NULL;
  if (!pos) /* raster order of the global grid: nothing to exchange */
    return dt_dist_agree(job, dt_raster_positions(ctx, grid, N, whole));
  ditattn_status local = DITATTN_OK;
  int *counts = dt_malloc(2 * (size_t)P * sizeof(int));
  *whole = dt_malloc((size_t)N * 3 * sizeof(int32_t));
  if (N > INT_MAX / 3)
    local =
        dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%lld positions exceed MPI's int counts", (long long)N);
  else if (!counts || !*whole)
    local = dt_fail(ctx, DITATTN_ERR_OUT_OF_MEMORY, "positions of %lld tokens", (long long)N);
  ditattn_status st = dt_dist_agree(job, local);
  if (st == DITATTN_OK) {
    for (int r = 0; r < P; r++) {
      counts[r] = (int)(3 * job->length[r]);
      counts[P + r] = (int)(3 * job->offset[r]);
    }
    double t0 = MPI_Wtime();
    int err = MPI_Allgatherv(pos, counts[job->rank], MPI_INT32_T, *whole, counts, counts + P,
                             MPI_INT32_T, job->comm);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (P > 1) job->stats.bytes_sent += 3 * job->length[job->rank] * (int64_t)sizeof(int32_t);
    st = dt_dist_agree(job, err == MPI_SUCCESS
                                ? DITATTN_OK
                                : dt_dist_mpi_fail(ctx, err, "MPI_Allgatherv (positions)"));
  }
  dt_free(counts);
  return st;
}

ditattn_status dt_dist_slr_positions(slr_run *R, const int32_t *pos) {
  return dt_dist_gather_positions(R->job, R->params.grid, R->N, pos, &R->pos);
}

/* Blocks touched by rank r's slice: [*lo, *hi]. */
static void touched(const slr_run *R, int r, int64_t *lo, int64_t *hi) {
  *lo = R->job->offset[r] / R->s.block;
  *hi = (R->job->offset[r] + R->job->length[r] - 1) / R->s.block;
}

/* Rows of D doubles rank r contributes: q and k sums of its blocks, per bh. */
static int64_t rank_rows(const slr_run *R, int r) {
  int64_t lo, hi;
  touched(R, r, &lo, &hi);
  return 2 * (hi - lo + 1) * R->BH;
}

/* This rank's partial sums, laid out [bh][q, k][block][D]. */
static void partial_sums(const slr_run *R, double *dst) {
  const int64_t D = R->D;
  const ditattn_tensor *x[2] = {R->q, R->k};
  for (int64_t bh = 0; bh < R->BH; bh++)
    for (int t = 0; t < 2; t++)
      for (int64_t c = R->glo; c <= R->ghi; c++, dst += D) {
        int64_t a, e;
        dt_dist_slr_local_part(R, c, &a, &e);
        for (int64_t d = 0; d < D; d++) dst[d] = 0.0;
        for (int64_t tok = a; tok < e; tok++) {
          const float *row = dt_f32_at(x[t], bh / R->H, bh % R->H, tok - R->off, 0);
          for (int64_t d = 0; d < D; d++) dst[d] += (double)row[d];
        }
      }
}

/* pooled[bh][q, k][c][D] = global means, summing the ranks' parts in
 * sequence order (the order of the tokens, as ref/ does). */
static void add_parts(const slr_run *R, const double *recv, const int *displs, double *pooled) {
  const dt_dist_job *job = R->job;
  const int64_t D = R->D, n = R->s.n;
  memset(pooled, 0, (size_t)(R->BH * 2 * n * D) * sizeof(double));
  int64_t covered = 0;
  for (int seen = 0; seen < job->size; seen++) {
    int r = 0;
    while (job->offset[r] != covered) r++; /* slices tile [0, N): agreed in begin */
    covered += job->length[r];
    int64_t lo, hi;
    touched(R, r, &lo, &hi);
    const double *src = recv + (int64_t)displs[r] * D;
    for (int64_t bh = 0; bh < R->BH; bh++)
      for (int t = 0; t < 2; t++) {
        double *dst = pooled + ((bh * 2 + t) * n + lo) * D;
        for (int64_t i = 0; i < (hi - lo + 1) * D; i++) dst[i] += src[i];
        src += (hi - lo + 1) * D;
      }
  }
  for (int64_t bh = 0; bh < R->BH; bh++)
    for (int t = 0; t < 2; t++)
      for (int64_t c = 0; c < n; c++) {
        int64_t first, count;
        dt_dist_slr_block(R, c, &first, &count);
        double *y = pooled + ((bh * 2 + t) * n + c) * D;
        for (int64_t d = 0; d < D; d++) y[d] /= (double)count;
      }
}

typedef struct scored {
  double score;
  int32_t index;
} scored;

/* Rank order: score desc, index asc (a strict total order without NaN). */
static int by_rank(const void *a, const void *b) {
  const scored *x = a, *y = b;
  if (dt_slr_ranks_before(x->score, x->index, y->score, y->index)) return -1;
  if (dt_slr_ranks_before(y->score, y->index, x->score, x->index)) return 1;
  return 0;
}

/* Row of query block G: ref/'s dt_slr_select (sorted when no score is NaN,
 * which gives the same rows as ref/'s K rounds; the rounds themselves else). */
static void select_row(const slr_run *R, const double *pq, const double *pk, int64_t G,
                       double *score, scored *sc, unsigned char *taken, int32_t *row) {
  const int64_t n = R->s.n, D = R->D, K = R->s.K;
  int has_nan = 0;
  for (int64_t c = 0; c < n; c++) {
    double dot = 0.0;
    for (int64_t d = 0; d < D; d++) dot += pq[G * D + d] * pk[c * D + d];
    score[c] = dot;
    sc[c] = (scored){dot, (int32_t)c};
    has_nan |= dot != dot;
  }
  int own_taken = 0;
  if (has_nan) {
    own_taken = dt_slr_select_rounds(score, n, K, G, taken, row);
  } else {
    qsort(sc, (size_t)n, sizeof *sc, by_rank);
    for (int64_t t = 0; t < K; t++) {
      row[t] = sc[t].index;
      own_taken |= sc[t].index == G;
    }
  }
  if (R->params.force_own_block && !own_taken) row[K - 1] = (int32_t)G;
}

ditattn_status dt_dist_slr_select(slr_run *R) {
  dt_dist_job *job = R->job;
  const int P = job->size;
  const int64_t D = R->D, n = R->s.n;
  ditattn_status local = DITATTN_OK;
  int64_t total = 0;
  for (int r = 0; r < P; r++) total += rank_rows(R, r);
  const int64_t mine = rank_rows(R, job->rank);
  if (total > INT_MAX)
    local = dt_fail(R->ctx, DITATTN_ERR_OVERFLOW, "%lld pooled rows exceed MPI's int counts",
                    (long long)total);
  int *counts = dt_malloc(2 * (size_t)P * sizeof(int));
  double *send = dt_malloc((size_t)(mine * D) * sizeof(double));
  double *recv = local == DITATTN_OK ? dt_malloc((size_t)(total * D) * sizeof(double)) : NULL;
  double *pooled = dt_malloc((size_t)(R->BH * 2 * n * D) * sizeof(double));
  double *score = dt_malloc((size_t)n * sizeof(double));
  scored *sc = dt_malloc((size_t)n * sizeof(scored));
  unsigned char *taken = dt_malloc((size_t)n);
  if (local == DITATTN_OK && (!counts || !send || !recv || !pooled || !score || !sc || !taken))
    local = dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY, "pooling buffers (%lld rows of %lld)",
                    (long long)total, (long long)D);
  MPI_Datatype row = MPI_DATATYPE_NULL;
  if (local == DITATTN_OK) {
    int err = MPI_Type_contiguous((int)D, MPI_DOUBLE, &row);
    if (err == MPI_SUCCESS) err = MPI_Type_commit(&row);
    if (err != MPI_SUCCESS) {
      row = MPI_DATATYPE_NULL;
      local = dt_dist_mpi_fail(R->ctx, err, "MPI_Type_contiguous");
    }
  }
  ditattn_status st = dt_dist_agree(job, local);
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    partial_sums(R, send);
    int *displs = counts + P, at = 0;
    for (int r = 0; r < P; r++) {
      counts[r] = (int)rank_rows(R, r);
      displs[r] = at;
      at += counts[r];
    }
    dt_dist_tick(&t0, &job->stats.compute_s);
    int err = MPI_Allgatherv(send, (int)mine, row, recv, counts, displs, row, job->comm);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (P > 1) job->stats.bytes_sent += mine * D * (int64_t)sizeof(double);
    local =
        err == MPI_SUCCESS ? DITATTN_OK : dt_dist_mpi_fail(R->ctx, err, "MPI_Allgatherv (pooling)");
    if (local == DITATTN_OK) {
      add_parts(R, recv, displs, pooled);
      for (int64_t bh = 0; bh < R->BH; bh++) {
        const double *pq = pooled + bh * 2 * n * D, *pk = pq + n * D;
        for (int64_t G = R->glo; G <= R->ghi; G++)
          select_row(R, pq, pk, G, score, sc, taken,
                     R->sel + (bh * R->nloc + (G - R->glo)) * R->s.K);
      }
    }
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = dt_dist_agree(job, local);
  }
  if (row != MPI_DATATYPE_NULL) MPI_Type_free(&row);
  void *bufs[] = {counts, send, recv, pooled, score, sc, taken};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dt_free(bufs[i]);
  return st;
}
