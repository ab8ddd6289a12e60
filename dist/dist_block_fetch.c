/* Block-row fetch for distributed RoPeSLR and LLSA: each rank asks the
 * owners for the rows of the blocks it needs (its queries' selected blocks),
 * instead of every K/V slice visiting every rank. Requests travel as
 * (bh, block) keys; an owner answers with the rows of that block inside its
 * slice. */
#include "dist_block_fetch.h"
#include "ref/ref.h" /* dt_f32_at */

#include <limits.h>
#include <string.h>

/* Tokens of block c inside [off, off + len): [*a, *e), returns the count. */
static int64_t clip(const dt_dist_block_fetch *F, int64_t c, int64_t off, int64_t len, int64_t *a,
                    int64_t *e) {
  const int64_t start = c * F->block, end = start + F->block < F->N ? start + F->block : F->N;
  *a = start > off ? start : off;
  *e = end < off + len ? end : off + len;
  return *e > *a ? *e - *a : 0;
}

static int64_t block_size(const dt_dist_block_fetch *F, int64_t c) {
  const int64_t start = c * F->block;
  return F->N - start < F->block ? F->N - start : F->block;
}

/* Slots: wanted blocks not wholly inside this rank's slice. */
static ditattn_status plan_slots(dt_dist_job *job, dt_dist_block_fetch *F, int64_t BH,
                                 const unsigned char *want) {
  const int64_t off = job->offset[job->rank], len = job->length[job->rank];
  F->slot_of = dt_malloc((size_t)(BH * F->n) * sizeof(int64_t));
  F->slot_key = dt_malloc((size_t)(BH * F->n) * sizeof(int64_t));
  F->counts = dt_calloc(8 * (size_t)job->size, sizeof(int));
  if (!F->slot_of || !F->slot_key || !F->counts)
    return dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "fetch plan for %lld blocks",
                   (long long)(BH * F->n));
  F->nslots = 0;
  for (int64_t key = 0; key < BH * F->n; key++) {
    int64_t a, e;
    F->slot_of[key] = -1;
    if (!want[key] || clip(F, key % F->n, off, len, &a, &e) == block_size(F, key % F->n)) continue;
    F->slot_of[key] = F->nslots;
    F->slot_key[F->nslots++] = key;
  }
  return DITATTN_OK;
}

/* Requests grouped by owner rank: counts[0..P), displs[P..2P). */
static ditattn_status plan_requests(dt_dist_job *job, dt_dist_block_fetch *F) {
  const int P = job->size;
  int *cnt = F->counts, *dsp = F->counts + P;
  int64_t total = 0, a, e;
  for (int s = 0; s < P; s++) {
    int64_t n = 0;
    if (s != job->rank)
      for (int64_t i = 0; i < F->nslots; i++)
        n += clip(F, F->slot_key[i] % F->n, job->offset[s], job->length[s], &a, &e) > 0;
    if (n > INT_MAX || total > INT_MAX - n)
      return dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "too many block requests");
    cnt[s] = (int)n;
    dsp[s] = (int)total;
    total += n;
  }
  F->req_out = dt_malloc((size_t)(total > 0 ? total : 1) * sizeof(int64_t));
  if (!F->req_out) return dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "block requests");
  for (int s = 0, at = 0; s < P; s++) {
    if (s == job->rank) continue;
    for (int64_t i = 0; i < F->nslots; i++)
      if (clip(F, F->slot_key[i] % F->n, job->offset[s], job->length[s], &a, &e) > 0)
        F->req_out[at++] = F->slot_key[i];
  }
  return DITATTN_OK;
}

/* Rows (k and v: 2 per token) of n requests served by slice [off, off + len). */
static int64_t request_rows(const dt_dist_block_fetch *F, const int64_t *req, int n, int64_t off,
                            int64_t len) {
  int64_t rows = 0, a, e;
  for (int i = 0; i < n; i++) rows += 2 * clip(F, req[i] % F->n, off, len, &a, &e);
  return rows;
}

static const float *row_of(const ditattn_tensor *t, const dt_dist_block_fetch *F, int64_t bh,
                           int64_t local_tok) {
  return dt_f32_at(t, bh / F->H, bh % F->H, local_tok, 0);
}

/* Sizes the row exchange, packs what others asked and the local parts of
 * partly local blocks into their slots. */
static ditattn_status plan_data(dt_dist_job *job, dt_dist_block_fetch *F, const ditattn_tensor *k,
                                const ditattn_tensor *v) {
  const int P = job->size;
  const int64_t off = job->offset[job->rank], len = job->length[job->rank], D = F->D;
  const int *rq_cnt = F->counts, *rq_dsp = F->counts + P;
  const int *in_cnt = F->counts + 2 * P, *in_dsp = F->counts + 3 * P;
  int *out_rows = F->counts + 4 * P, *out_dsp = F->counts + 5 * P;
  int *in_rows = F->counts + 6 * P, *in_rdsp = F->counts + 7 * P;
  int64_t tot_out = 0, tot_in = 0;
  for (int s = 0; s < P; s++) {
    const int64_t o = request_rows(F, F->req_in + in_dsp[s], in_cnt[s], off, len);
    const int64_t i =
        request_rows(F, F->req_out + rq_dsp[s], rq_cnt[s], job->offset[s], job->length[s]);
    if (o > INT_MAX || i > INT_MAX || tot_out > INT_MAX - o || tot_in > INT_MAX - i)
      return dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "fetched rows exceed MPI's int counts");
    out_rows[s] = (int)o;
    out_dsp[s] = (int)tot_out;
    in_rows[s] = (int)i;
    in_rdsp[s] = (int)tot_in;
    tot_out += o;
    tot_in += i;
  }
  F->bytes_received = tot_in * D * (int64_t)sizeof(float);
  size_t slot_floats;
  if (!dt_mul_size((size_t)(F->nslots > 0 ? F->nslots : 1), (size_t)(2 * F->block * D),
                   &slot_floats) ||
      slot_floats > SIZE_MAX / sizeof(float))
    return dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "fetch slots overflow");
  F->send = dt_malloc((size_t)((tot_out > 0 ? tot_out : 1) * D) * sizeof(float));
  F->recv = dt_malloc((size_t)((tot_in > 0 ? tot_in : 1) * D) * sizeof(float));
  F->slots = dt_malloc(slot_floats * sizeof(float));
  if (!F->send || !F->recv || !F->slots)
    return dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "fetch buffers (%lld + %lld rows of %lld)",
                   (long long)tot_out, (long long)tot_in, (long long)D);
  const size_t row_bytes = (size_t)D * sizeof(float);
  float *dst = F->send;
  for (int s = 0; s < P; s++)
    for (int i = 0; i < in_cnt[s]; i++) {
      const int64_t key = F->req_in[in_dsp[s] + i], bh = key / F->n;
      int64_t a, e;
      clip(F, key % F->n, off, len, &a, &e);
      const ditattn_tensor *kv[2] = {k, v};
      for (int t = 0; t < 2; t++)
        for (int64_t tok = a; tok < e; tok++, dst += D)
          memcpy(dst, row_of(kv[t], F, bh, tok - off), row_bytes);
    }
  for (int64_t i = 0; i < F->nslots; i++) {
    const int64_t key = F->slot_key[i], bh = key / F->n, c = key % F->n, start = c * F->block;
    int64_t a, e;
    clip(F, c, off, len, &a, &e);
    for (int64_t tok = a; tok < e; tok++) {
      memcpy(dt_dist_block_fetch_k(F, i) + (tok - start) * D, row_of(k, F, bh, tok - off),
             row_bytes);
      memcpy(dt_dist_block_fetch_v(F, i) + (tok - start) * D, row_of(v, F, bh, tok - off),
             row_bytes);
    }
  }
  return DITATTN_OK;
}

/* Exchanges the request keys (counts, then keys). Collective. */
static ditattn_status exchange_requests(dt_dist_job *job, dt_dist_block_fetch *F) {
  const int P = job->size;
  double t0 = MPI_Wtime();
  int err = MPI_Alltoall(F->counts, 1, MPI_INT, F->counts + 2 * P, 1, MPI_INT, job->comm);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Alltoall (requests)");
  int64_t in_total = 0;
  for (int s = 0; s < P; s++) {
    F->counts[3 * P + s] = (int)(in_total < INT_MAX ? in_total : INT_MAX);
    in_total += F->counts[2 * P + s];
  }
  ditattn_status local = DITATTN_OK;
  if (in_total > INT_MAX)
    local = dt_fail(job->ctx, DITATTN_ERR_OVERFLOW, "too many incoming requests");
  F->req_in = dt_malloc((size_t)(in_total > 0 ? in_total : 1) * sizeof(int64_t));
  if (local == DITATTN_OK && !F->req_in)
    local = dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "incoming requests");
  TRY(dt_dist_agree(job, local));
  t0 = MPI_Wtime();
  err = MPI_Alltoallv(F->req_out, F->counts, F->counts + P, MPI_INT64_T, F->req_in,
                      F->counts + 2 * P, F->counts + 3 * P, MPI_INT64_T, job->comm);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (err != MPI_SUCCESS) return dt_dist_mpi_fail(job->ctx, err, "MPI_Alltoallv (requests)");
  return DITATTN_OK;
}

ditattn_status dt_dist_block_fetch_start(dt_dist_job *job, dt_dist_block_fetch *F, int64_t block,
                                         int64_t BH, const unsigned char *want,
                                         const ditattn_tensor *k, const ditattn_tensor *v) {
  dt_dist_block_fetch_init(F);
  F->block = block;
  for (int r = 0; r < job->size; r++) F->N += job->length[r];
  F->n = F->N / block + (F->N % block != 0);
  F->H = k->shape[1];
  F->D = k->shape[3];
  double t0 = MPI_Wtime();
  ditattn_status local = plan_slots(job, F, BH, want);
  if (local == DITATTN_OK) local = plan_requests(job, F);
  dt_dist_tick(&t0, &job->stats.compute_s);
  TRY(dt_dist_agree(job, local));
  TRY(exchange_requests(job, F));
  t0 = MPI_Wtime();
  local = plan_data(job, F, k, v);
  if (local == DITATTN_OK) {
    int err = MPI_Type_contiguous((int)F->D, MPI_FLOAT, &F->row);
    if (err == MPI_SUCCESS) err = MPI_Type_commit(&F->row);
    if (err != MPI_SUCCESS) {
      F->row = MPI_DATATYPE_NULL;
      local = dt_dist_mpi_fail(job->ctx, err, "MPI_Type_contiguous");
    }
  }
  dt_dist_tick(&t0, &job->stats.compute_s);
  TRY(dt_dist_agree(job, local));
  const int P = job->size;
  int err = MPI_Ialltoallv(F->send, F->counts + 4 * P, F->counts + 5 * P, F->row, F->recv,
                           F->counts + 6 * P, F->counts + 7 * P, F->row, job->comm, &F->req);
  for (int s = 0; s < P; s++)
    job->stats.bytes_sent += (int64_t)F->counts[4 * P + s] * F->D * (int64_t)sizeof(float);
  if (err != MPI_SUCCESS) F->req = MPI_REQUEST_NULL;
  return dt_dist_agree(job, err == MPI_SUCCESS ? DITATTN_OK
                                               : dt_dist_mpi_fail(job->ctx, err, "MPI_Ialltoallv"));
}

ditattn_status dt_dist_block_fetch_finish(dt_dist_job *job, dt_dist_block_fetch *F) {
  const int P = job->size;
  const int64_t D = F->D;
  double t0 = MPI_Wtime();
  int err = MPI_Wait(&F->req, MPI_STATUS_IGNORE);
  dt_dist_tick(&t0, &job->stats.comm_wait_s);
  if (err == MPI_SUCCESS) {
    const float *src = F->recv;
    for (int s = 0; s < P; s++)
      for (int i = 0; i < F->counts[s]; i++) {
        const int64_t key = F->req_out[F->counts[P + s] + i], c = key % F->n;
        int64_t a, e;
        const int64_t cnt = clip(F, c, job->offset[s], job->length[s], &a, &e);
        const int64_t row = a - c * F->block, slot = F->slot_of[key];
        memcpy(dt_dist_block_fetch_k(F, slot) + row * D, src, (size_t)(cnt * D) * sizeof(float));
        memcpy(dt_dist_block_fetch_v(F, slot) + row * D, src + cnt * D,
               (size_t)(cnt * D) * sizeof(float));
        src += 2 * cnt * D;
      }
  }
  dt_dist_tick(&t0, &job->stats.compute_s);
  return dt_dist_agree(
      job, err == MPI_SUCCESS ? DITATTN_OK : dt_dist_mpi_fail(job->ctx, err, "MPI_Wait (rows)"));
}

/* Adds rows [a, e) (tokens) of a block's k and v gradients, laid out from
 * the block's token `first`, into this rank's accumulators of bh. */
static void add_home(const dt_dist_block_fetch *F, int64_t bh, int64_t off, int64_t len, int64_t a,
                     int64_t e, const double *dk_rows, const double *dv_rows, double *home_dk,
                     double *home_dv) {
  const int64_t D = F->D;
  for (int64_t tok = a; tok < e; tok++) {
    double *hk = home_dk + (bh * len + (tok - off)) * D,
           *hv = home_dv + (bh * len + (tok - off)) * D;
    const double *gk = dk_rows + (tok - a) * D, *gv = dv_rows + (tok - a) * D;
    for (int64_t d = 0; d < D; d++) hk[d] += gk[d], hv[d] += gv[d];
  }
}

ditattn_status dt_dist_block_fetch_return(dt_dist_job *job, const dt_dist_block_fetch *F,
                                          const double *slot_grad, double *home_dk,
                                          double *home_dv) {
  const int P = job->size;
  const int64_t off = job->offset[job->rank], len = job->length[job->rank], D = F->D;
  const int64_t slot_rows = 2 * F->block;
  double t0 = MPI_Wtime();
  /* The slots' rows in this rank's own slice. */
  for (int64_t i = 0; i < F->nslots; i++) {
    const int64_t key = F->slot_key[i], c = key % F->n;
    int64_t a, e;
    if (!clip(F, c, off, len, &a, &e)) continue;
    const double *gk = slot_grad + (i * slot_rows + (a - c * F->block)) * D;
    add_home(F, key / F->n, off, len, a, e, gk, gk + F->block * D, home_dk, home_dv);
  }
  /* The others' rows: packed as the fetch received them (per owner, per
   * request: k rows, then v rows), and unpacked as it sent them. */
  int64_t back_rows = 0, home_rows = 0;
  for (int s = 0; s < P; s++) {
    back_rows += F->counts[6 * P + s];
    home_rows += F->counts[4 * P + s];
  }
  double *back = dt_malloc((size_t)((back_rows > 0 ? back_rows : 1) * D) * sizeof(double));
  double *came = dt_malloc((size_t)((home_rows > 0 ? home_rows : 1) * D) * sizeof(double));
  MPI_Datatype row = MPI_DATATYPE_NULL;
  ditattn_status local = DITATTN_OK;
  if (!back || !came)
    local = dt_fail(job->ctx, DITATTN_ERR_OUT_OF_MEMORY, "gradient rows (%lld + %lld rows of %lld)",
                    (long long)back_rows, (long long)home_rows, (long long)D);
  if (local == DITATTN_OK) {
    int err = MPI_Type_contiguous((int)D, MPI_DOUBLE, &row);
    if (err == MPI_SUCCESS) err = MPI_Type_commit(&row);
    if (err != MPI_SUCCESS) {
      row = MPI_DATATYPE_NULL;
      local = dt_dist_mpi_fail(job->ctx, err, "MPI_Type_contiguous (gradient rows)");
    }
  }
  if (local == DITATTN_OK) {
    double *dst = back;
    for (int s = 0; s < P; s++)
      for (int i = 0; i < F->counts[s]; i++) {
        const int64_t key = F->req_out[F->counts[P + s] + i], c = key % F->n;
        int64_t a, e;
        const int64_t cnt = clip(F, c, job->offset[s], job->length[s], &a, &e);
        const double *gk = slot_grad + (F->slot_of[key] * slot_rows + (a - c * F->block)) * D;
        memcpy(dst, gk, (size_t)(cnt * D) * sizeof(double));
        memcpy(dst + cnt * D, gk + F->block * D, (size_t)(cnt * D) * sizeof(double));
        dst += 2 * cnt * D;
      }
  }
  dt_dist_tick(&t0, &job->stats.compute_s);
  ditattn_status st = dt_dist_agree(job, local);
  if (st == DITATTN_OK) {
    const int err = MPI_Alltoallv(back, F->counts + 6 * P, F->counts + 7 * P, row, came,
                                  F->counts + 4 * P, F->counts + 5 * P, row, job->comm);
    for (int s = 0; s < P; s++)
      job->stats.bytes_sent += (int64_t)F->counts[6 * P + s] * D * (int64_t)sizeof(double);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    st = dt_dist_agree(job, err == MPI_SUCCESS
                                ? DITATTN_OK
                                : dt_dist_mpi_fail(job->ctx, err, "MPI_Alltoallv (gradient rows)"));
  }
  if (st == DITATTN_OK) {
    const double *src = came;
    for (int s = 0; s < P; s++)
      for (int i = 0; i < F->counts[2 * P + s]; i++) {
        const int64_t key = F->req_in[F->counts[3 * P + s] + i];
        int64_t a, e;
        const int64_t cnt = clip(F, key % F->n, off, len, &a, &e);
        add_home(F, key / F->n, off, len, a, e, src, src + cnt * D, home_dk, home_dv);
        src += 2 * cnt * D;
      }
    dt_dist_tick(&t0, &job->stats.compute_s);
  }
  if (row != MPI_DATATYPE_NULL) MPI_Type_free(&row);
  dt_free(back);
  dt_free(came);
  return st;
}

void dt_dist_block_fetch_free(dt_dist_block_fetch *F) {
  if (F->req != MPI_REQUEST_NULL) MPI_Wait(&F->req, MPI_STATUS_IGNORE);
  if (F->row != MPI_DATATYPE_NULL) MPI_Type_free(&F->row);
  void *b[] = {F->slot_of, F->slot_key, F->counts, F->req_out,
               F->req_in,  F->slots,    F->send,   F->recv};
  for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) dt_free(b[i]);
  dt_dist_block_fetch_init(F);
}
