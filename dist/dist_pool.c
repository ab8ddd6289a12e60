/* Global pooling of a sliced sequence: per-rank partial sums in double,
 * all-gathered. A block inside one slice is summed token by token from 0.0
 * exactly as ref/ does (bit-identical); a block straddling slices adds the
 * slices' partial sums in rank order, identical to ref/ whenever those
 * double sums are exact (float inputs of similar magnitude: 24-bit
 * mantissas and at most b^L terms fit in 53 bits), else within one ulp. */
#include "dist_llsa.h"

#include <limits.h>
#include <string.h>

void dt_dist_block_range(const dt_llsa_geom *g, int l, int64_t offset, int64_t length, int64_t *lo,
                         int64_t *hi) {
  *lo = offset / g->span[l];
  *hi = (offset + length - 1) / g->span[l];
}

ditattn_status dt_dist_pool_alloc(dt_dist_job *job, const ditattn_llsa_params *params, int64_t N,
                                  int64_t BH, int64_t D, dt_dist_pooled *p) {
  memset(p, 0, sizeof *p);
  dt_llsa_geom_init(params, N, D, &p->g);
  p->BH = BH;
  int64_t at = 0;
  for (int l = 1; l <= p->g.L; l++) {
    p->base[l] = at;
    at += 3 * p->g.n[l] * D; /* n_l <= N and 3·N·D fits: the tensors exist */
    dt_dist_block_range(&p->g, l, job->offset[job->rank], job->length[job->rank], &p->lo[l],
                        &p->hi[l]);
  }
  p->per_bh = at;
  p->data = dt_llsa_alloc(BH, at, sizeof(double));
  if (!p->data)
    return dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "pooled q/k/v: %lld x %lld doubles",
                   (long long)BH, (long long)at);
  return DITATTN_OK;
}

void dt_dist_pool_free(dt_dist_pooled *p) {
  dt_free(p->data);
  p->data = NULL;
}

/* Rows (of D doubles) rank r contributes: for every (b, h), level and
 * tensor, the blocks its slice touches. */
static int64_t rank_rows(const dt_dist_job *job, const dt_dist_pooled *p, int r) {
  int64_t rows = 0;
  for (int l = 1; l <= p->g.L; l++) {
    int64_t lo, hi;
    dt_dist_block_range(&p->g, l, job->offset[r], job->length[r], &lo, &hi);
    rows += 3 * (hi - lo + 1);
  }
  return rows * p->BH;
}

/* This rank's partial sums, laid out [bh][l][x][block][D]. */
static void partial_sums(const dt_dist_job *job, const dt_dist_pooled *p,
                         const ditattn_tensor *const x[3], double *dst) {
  const int64_t D = p->g.D, off = job->offset[job->rank], len = job->length[job->rank];
  const int64_t H = x[0]->shape[1];
  for (int64_t bh = 0; bh < p->BH; bh++)
    for (int l = 1; l <= p->g.L; l++)
      for (int t = 0; t < 3; t++)
        for (int64_t c = p->lo[l]; c <= p->hi[l]; c++) {
          const int64_t start = dt_llsa_block_start(&p->g, l, c);
          const int64_t end = start + dt_llsa_block_count(&p->g, l, c);
          const int64_t a = start > off ? start : off;
          const int64_t e = end < off + len ? end : off + len;
          for (int64_t d = 0; d < D; d++) dst[d] = 0.0;
          for (int64_t tok = a; tok < e; tok++) {
            const float *row = dt_f32_at(x[t], bh / H, bh % H, tok - off, 0);
            for (int64_t d = 0; d < D; d++) dst[d] += (double)row[d];
          }
          dst += D;
        }
}

ditattn_status dt_dist_pool(dt_dist_job *job, dt_dist_pooled *p, const ditattn_tensor *q,
                            const ditattn_tensor *k, const ditattn_tensor *v) {
  const int P = job->size;
  const int64_t D = p->g.D;
  ditattn_status local = DITATTN_OK;
  int *counts = dt_calloc(2 * (size_t)P, sizeof(int));
  int64_t total = 0;
  for (int r = 0; r < P; r++) total += rank_rows(job, p, r);
  if (total > INT_MAX)
    local = dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "%lld pooled rows exceed MPI's int counts",
                    (long long)total);
  const int64_t mine = rank_rows(job, p, job->rank);
  double *send = dt_llsa_alloc(mine, D, sizeof(double));
  double *recv = dt_llsa_alloc(total, D, sizeof(double));
  if (local == DITATTN_OK && (!counts || !send || !recv))
    local = dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "pooling buffers (%lld rows of %lld)",
                    (long long)total, (long long)D);
  MPI_Datatype row = MPI_DATATYPE_NULL;
  if (local == DITATTN_OK) {
    int err = MPI_Type_contiguous((int)D, MPI_DOUBLE, &row);
    if (err == MPI_SUCCESS) err = MPI_Type_commit(&row);
    if (err != MPI_SUCCESS) local = dt_dist_mpi_fail(job->ctx, err, "MPI_Type_contiguous");
  }
  ditattn_status st = dt_dist_agree(job, local);
  if (st == DITATTN_OK) {
    double t0 = MPI_Wtime();
    const ditattn_tensor *x[3] = {q, k, v};
    partial_sums(job, p, x, send);
    int *displs = counts + P, at = 0;
    for (int r = 0; r < P; r++) {
      counts[r] = (int)rank_rows(job, p, r);
      displs[r] = at;
      at += counts[r];
    }
    dt_dist_tick(&t0, &job->stats.compute_s);
    int err = MPI_Allgatherv(send, (int)mine, row, recv, counts, displs, row, job->comm);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (P > 1) job->stats.bytes_sent += mine * D * (int64_t)sizeof(double);
    if (err != MPI_SUCCESS) local = dt_dist_mpi_fail(job->ctx, err, "MPI_Allgatherv (pooling)");
    /* Add the partial sums in rank order, then divide like ref/. */
    memset(p->data, 0, (size_t)(p->BH * p->per_bh) * sizeof(double));
    const double *src = recv;
    for (int r = 0; r < P && local == DITATTN_OK; r++)
      for (int64_t bh = 0; bh < p->BH; bh++)
        for (int l = 1; l <= p->g.L; l++) {
          int64_t lo, hi;
          dt_dist_block_range(&p->g, l, job->offset[r], job->length[r], &lo, &hi);
          for (int t = 0; t < 3; t++) {
            double *dst = dt_dist_pooled_at(p, bh, l, t) + lo * D;
            for (int64_t i = 0; i < (hi - lo + 1) * D; i++) dst[i] += src[i];
            src += (hi - lo + 1) * D;
          }
        }
    for (int64_t bh = 0; bh < p->BH && local == DITATTN_OK; bh++)
      for (int l = 1; l <= p->g.L; l++)
        for (int t = 0; t < 3; t++) {
          double *y = dt_dist_pooled_at(p, bh, l, t);
          for (int64_t c = 0; c < p->g.n[l]; c++)
            for (int64_t d = 0; d < D; d++)
              y[c * D + d] /= (double)dt_llsa_block_count(&p->g, l, c);
        }
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = dt_dist_agree(job, local);
  }
  if (row != MPI_DATATYPE_NULL) MPI_Type_free(&row);
  dt_free(counts);
  dt_free(send);
  dt_free(recv);
  return st;
}
