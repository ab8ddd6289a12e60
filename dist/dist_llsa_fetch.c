/* Distributed LLSA, fetch variant: instead of every K/V slice visiting every
 * rank, each rank requests the parts of its selected level-1 blocks that
 * other ranks hold. Wins when selections are local (the usual case with
 * spatially ordered video tokens); the forward picks it by measuring. */
#include "dist_llsa.h"
#include "dist_llsa_attend.h"

#include <limits.h>
#include <string.h>

typedef struct fetch_plan {
  int64_t *slot_of;  /* BH·n_1: slot of (bh, c), −1 when not fetched */
  int64_t *slot_key; /* nslots: bh·n_1 + c */
  int64_t nslots;
  int *counts; /* 8·P ints: req out/in counts+displs, rows out/in counts+displs */
  int64_t *req_out, *req_in;
  float *slots; /* nslots × 2 × span_1 × D: k rows then v rows */
  float *send, *recv;
} fetch_plan;

static void plan_free(fetch_plan *F) {
  void *b[] = {F->slot_of, F->slot_key, F->counts, F->req_out,
               F->req_in,  F->slots,    F->send,   F->recv};
  for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) dt_free(b[i]);
}

/* Tokens of level-1 block c inside [off, off + len): [*a, *e). */
static int64_t clip(const dt_llsa_geom *g, int64_t c, int64_t off, int64_t len, int64_t *a,
                    int64_t *e) {
  const int64_t start = dt_llsa_block_start(g, 1, c);
  const int64_t end = start + dt_llsa_block_count(g, 1, c);
  *a = start > off ? start : off;
  *e = end < off + len ? end : off + len;
  return *e > *a ? *e - *a : 0;
}

/* The blocks to fetch: selected by a local query block, not wholly local. */
static ditattn_status plan_slots(llsa_run *R, fetch_plan *F) {
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t n1 = g->n[1], BH = R->pool.BH;
  F->slot_of = dt_llsa_alloc(BH, n1, sizeof(int64_t));
  F->slot_key = dt_llsa_alloc(BH, n1, sizeof(int64_t));
  F->counts = dt_llsa_alloc(8, R->job->size, sizeof(int));
  if (!F->slot_of || !F->slot_key || !F->counts)
    return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY, "fetch plan for %lld blocks",
                   (long long)(BH * n1));
  for (int64_t i = 0; i < BH * n1; i++) F->slot_of[i] = -1;
  F->nslots = 0;
  for (int64_t bh = 0; bh < BH; bh++) {
    int64_t *sel[DT_LLSA_LEVEL_SLOTS];
    dt_dist_llsa_sel_of(R, bh, sel);
    for (int64_t g1 = R->pool.lo[1]; g1 <= R->pool.hi[1]; g1++)
      for (int64_t r = 0; r < g->width[1]; r++) {
        const int64_t c = sel[1][g1 * g->width[1] + r], key = bh * n1 + c;
        int64_t a, e;
        if (c < 0) break;
        if (F->slot_of[key] >= 0 ||
            clip(g, c, R->off, R->len, &a, &e) == dt_llsa_block_count(g, 1, c))
          continue;
        F->slot_of[key] = F->nslots;
        F->slot_key[F->nslots++] = key;
      }
  }
  return DITATTN_OK;
}

/* Requests grouped by owner rank: counts[0..P) and displs[P..2P). */
static ditattn_status plan_requests(llsa_run *R, fetch_plan *F) {
  const dt_dist_job *job = R->job;
  const int P = job->size;
  const dt_llsa_geom *g = &R->pool.g;
  int *cnt = F->counts, *dsp = F->counts + P;
  int64_t total = 0;
  for (int s = 0; s < P; s++) {
    int64_t n = 0, a, e;
    if (s != job->rank)
      for (int64_t i = 0; i < F->nslots; i++)
        n += clip(g, F->slot_key[i] % g->n[1], job->offset[s], job->length[s], &a, &e) > 0;
    if (n > INT_MAX || total > INT_MAX - n)
      return dt_fail(R->ctx, DITATTN_ERR_OVERFLOW, "too many block requests");
    cnt[s] = (int)n;
    dsp[s] = (int)total;
    total += n;
  }
  F->req_out = dt_llsa_alloc(total > 0 ? total : 1, 1, sizeof(int64_t));
  if (!F->req_out) return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY, "block requests");
  for (int s = 0, at = 0; s < P; s++) {
    int64_t a, e;
    if (s == job->rank) continue;
    for (int64_t i = 0; i < F->nslots; i++)
      if (clip(g, F->slot_key[i] % g->n[1], job->offset[s], job->length[s], &a, &e) > 0)
        F->req_out[at++] = F->slot_key[i];
  }
  return DITATTN_OK;
}

/* Row counts (2 per token: k and v) of a list of requests served by the
 * slice [off, off + len). */
static int64_t request_rows(const dt_llsa_geom *g, const int64_t *req, int n, int64_t off,
                            int64_t len) {
  int64_t rows = 0, a, e;
  for (int i = 0; i < n; i++) rows += 2 * clip(g, req[i] % g->n[1], off, len, &a, &e);
  return rows;
}

/* Sizes the data exchange (rows of D floats) and packs what others asked. */
static ditattn_status plan_data(llsa_run *R, fetch_plan *F, const ditattn_tensor *k,
                                const ditattn_tensor *v) {
  const dt_dist_job *job = R->job;
  const int P = job->size;
  const dt_llsa_geom *g = &R->pool.g;
  const int *rq_cnt = F->counts, *rq_dsp = F->counts + P;
  const int *in_cnt = F->counts + 2 * P, *in_dsp = F->counts + 3 * P;
  int *out_rows = F->counts + 4 * P, *out_dsp = F->counts + 5 * P;
  int *in_rows = F->counts + 6 * P, *in_rdsp = F->counts + 7 * P;
  int64_t tot_out = 0, tot_in = 0;
  for (int s = 0; s < P; s++) {
    /* Served to s: its requests, clipped to this rank's slice. */
    int64_t o = request_rows(g, F->req_in + in_dsp[s], in_cnt[s], R->off, R->len);
    /* Received from s: this rank's requests, clipped to s's slice. */
    int64_t i = request_rows(g, F->req_out + rq_dsp[s], rq_cnt[s], job->offset[s], job->length[s]);
    if (o > INT_MAX || i > INT_MAX || tot_out > INT_MAX - o || tot_in > INT_MAX - i)
      return dt_fail(R->ctx, DITATTN_ERR_OVERFLOW, "fetched rows exceed MPI's int counts");
    out_rows[s] = (int)o;
    out_dsp[s] = (int)tot_out;
    in_rows[s] = (int)i;
    in_rdsp[s] = (int)tot_in;
    tot_out += o;
    tot_in += i;
  }
  const int64_t D = R->D, span = g->span[1];
  F->send = dt_llsa_alloc(tot_out > 0 ? tot_out : 1, D, sizeof(float));
  F->recv = dt_llsa_alloc(tot_in > 0 ? tot_in : 1, D, sizeof(float));
  F->slots = dt_llsa_alloc(F->nslots > 0 ? F->nslots : 1, 2 * span * D, sizeof(float));
  if (!F->send || !F->recv || !F->slots)
    return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY, "fetch buffers (%lld + %lld rows of %lld)",
                   (long long)tot_out, (long long)tot_in, (long long)D);
  float *dst = F->send;
  for (int s = 0; s < P; s++)
    for (int i = 0; i < in_cnt[s]; i++) {
      const int64_t key = F->req_in[in_dsp[s] + i], bh = key / g->n[1];
      int64_t a, e;
      clip(g, key % g->n[1], R->off, R->len, &a, &e);
      const ditattn_tensor *kv[2] = {k, v};
      for (int t = 0; t < 2; t++)
        for (int64_t tok = a; tok < e; tok++, dst += D)
          memcpy(dst, dt_f32_at(kv[t], bh / R->H, bh % R->H, tok - R->off, 0),
                 (size_t)D * sizeof(float));
    }
  /* The local part of partly local blocks goes straight into the slots. */
  for (int64_t i = 0; i < F->nslots; i++) {
    const int64_t key = F->slot_key[i], bh = key / g->n[1], c = key % g->n[1];
    int64_t a, e;
    if (!clip(g, c, R->off, R->len, &a, &e)) continue;
    float *slot = F->slots + i * 2 * span * D;
    const int64_t start = dt_llsa_block_start(g, 1, c);
    for (int64_t tok = a; tok < e; tok++) {
      memcpy(slot + (tok - start) * D, dt_f32_at(k, bh / R->H, bh % R->H, tok - R->off, 0),
             (size_t)D * sizeof(float));
      memcpy(slot + (span + tok - start) * D, dt_f32_at(v, bh / R->H, bh % R->H, tok - R->off, 0),
             (size_t)D * sizeof(float));
    }
  }
  return DITATTN_OK;
}

/* Received rows into their slots (same order as the requests). */
static void unpack(llsa_run *R, fetch_plan *F) {
  const dt_dist_job *job = R->job;
  const int P = job->size;
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t D = R->D, span = g->span[1];
  const float *src = F->recv;
  for (int s = 0; s < P; s++)
    for (int i = 0; i < F->counts[s]; i++) {
      const int64_t key = F->req_out[F->counts[P + s] + i], c = key % g->n[1];
      int64_t a, e;
      const int64_t n = clip(g, c, job->offset[s], job->length[s], &a, &e);
      float *slot = F->slots + F->slot_of[key] * 2 * span * D;
      const int64_t row = a - dt_llsa_block_start(g, 1, c);
      memcpy(slot + row * D, src, (size_t)(n * D) * sizeof(float));
      memcpy(slot + (span + row) * D, src + n * D, (size_t)(n * D) * sizeof(float));
      src += 2 * n * D;
    }
}

/* Fine keys of every local query block: wholly local blocks (remote == 0)
 * or fetched ones (remote == 1). */
static void attend_fine(llsa_run *R, const fetch_plan *F, const ditattn_tensor *k,
                        const ditattn_tensor *v, int remote) {
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t D = R->D, span = g->span[1];
  for (int64_t bh = 0; bh < R->pool.BH; bh++) {
    int64_t *sel[DT_LLSA_LEVEL_SLOTS];
    dt_dist_llsa_sel_of(R, bh, sel);
    for (int64_t g1 = R->pool.lo[1]; g1 <= R->pool.hi[1]; g1++) {
      int64_t row0;
      dt_cpu_softmax_state st;
      const int64_t rows = dt_dist_llsa_block_rows(R, bh, g1, &row0, &st);
      for (int64_t r = 0; r < g->width[1]; r++) {
        const int64_t c = sel[1][g1 * g->width[1] + r];
        if (c < 0) break;
        const int64_t slot = F->slot_of[bh * g->n[1] + c], cnt = dt_llsa_block_count(g, 1, c);
        if ((slot >= 0) != remote) continue;
        if (remote) {
          const float *kb = F->slots + slot * 2 * span * D;
          dt_dist_attend(R->use_cpu, rows, cnt, D, R->qs + row0 * D, kb, D, kb + span * D, D, NULL,
                         R->tile, &st);
        } else {
          const int64_t t0 = dt_llsa_block_start(g, 1, c) - R->off;
          dt_dist_attend(R->use_cpu, rows, cnt, D, R->qs + row0 * D,
                         dt_f32_at(k, bh / R->H, bh % R->H, t0, 0), k->stride[2],
                         dt_f32_at(v, bh / R->H, bh % R->H, t0, 0), v->stride[2], NULL, R->tile,
                         &st);
        }
      }
    }
  }
}

ditattn_status dt_dist_llsa_fetch(llsa_run *R, const ditattn_tensor *k, const ditattn_tensor *v) {
  dt_dist_job *job = R->job;
  const int P = job->size;
  fetch_plan F;
  memset(&F, 0, sizeof F);
  double t0 = MPI_Wtime();
  ditattn_status local = plan_slots(R, &F);
  if (local == DITATTN_OK) local = plan_requests(R, &F);
  dt_dist_tick(&t0, &job->stats.compute_s);
  ditattn_status st = dt_dist_agree(job, local);
  MPI_Datatype row = MPI_DATATYPE_NULL;
  int err = MPI_SUCCESS;
  if (st == DITATTN_OK) {
    /* Exchange the requests: counts, then the (bh, block) keys. */
    err = MPI_Alltoall(F.counts, 1, MPI_INT, F.counts + 2 * P, 1, MPI_INT, job->comm);
    int64_t in_total = 0;
    for (int s = 0; s < P && err == MPI_SUCCESS; s++) {
      F.counts[3 * P + s] = (int)in_total;
      in_total += F.counts[2 * P + s];
    }
    local = DITATTN_OK;
    if (err == MPI_SUCCESS && in_total > INT_MAX)
      local = dt_fail(R->ctx, DITATTN_ERR_OVERFLOW, "too many incoming requests");
    F.req_in = dt_llsa_alloc(in_total > 0 ? in_total : 1, 1, sizeof(int64_t));
    if (err == MPI_SUCCESS && local == DITATTN_OK && !F.req_in)
      local = dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY, "incoming requests");
    if (err == MPI_SUCCESS) {
      /* A rank without room for the requests still takes part (receives
       * nothing is impossible: counts are fixed), so agree first. */
      dt_dist_tick(&t0, &job->stats.comm_wait_s);
      st = dt_dist_agree(job, local);
      t0 = MPI_Wtime();
      if (st == DITATTN_OK)
        err = MPI_Alltoallv(F.req_out, F.counts, F.counts + P, MPI_INT64_T, F.req_in,
                            F.counts + 2 * P, F.counts + 3 * P, MPI_INT64_T, job->comm);
    }
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (err != MPI_SUCCESS) st = dt_dist_mpi_fail(R->ctx, err, "MPI_Alltoall(v) (requests)");
  }
  if (st == DITATTN_OK) {
    local = plan_data(R, &F, k, v);
    if (local == DITATTN_OK) {
      err = MPI_Type_contiguous((int)R->D, MPI_FLOAT, &row);
      if (err == MPI_SUCCESS) err = MPI_Type_commit(&row);
      if (err != MPI_SUCCESS) local = dt_dist_mpi_fail(R->ctx, err, "MPI_Type_contiguous");
    }
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = dt_dist_agree(job, local);
  }
  if (st == DITATTN_OK) {
    MPI_Request req = MPI_REQUEST_NULL;
    t0 = MPI_Wtime();
    err = MPI_Ialltoallv(F.send, F.counts + 4 * P, F.counts + 5 * P, row, F.recv, F.counts + 6 * P,
                         F.counts + 7 * P, row, job->comm, &req);
    for (int s = 0; s < P; s++)
      job->stats.bytes_sent += (int64_t)F.counts[4 * P + s] * R->D * (int64_t)sizeof(float);
    /* Overlapped with the transfer: pooled keys and wholly local blocks. */
    for (int64_t bh = 0; bh < R->pool.BH; bh++) dt_dist_llsa_attend_pooled(R, bh);
    attend_fine(R, &F, k, v, 0);
    dt_dist_tick(&t0, &job->stats.compute_s);
    if (err == MPI_SUCCESS) err = MPI_Wait(&req, MPI_STATUS_IGNORE);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    local = err == MPI_SUCCESS ? DITATTN_OK : dt_dist_mpi_fail(R->ctx, err, "MPI_Ialltoallv");
    if (local == DITATTN_OK) {
      unpack(R, &F);
      attend_fine(R, &F, k, v, 1);
    }
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = dt_dist_agree(job, local);
  }
  if (row != MPI_DATATYPE_NULL) MPI_Type_free(&row);
  plan_free(&F);
  return st;
}
