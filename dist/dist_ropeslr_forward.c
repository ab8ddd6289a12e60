/* Distributed RoPeSLR forward (docs/dist.md, "RoPeSLR"): agreed arguments,
 * global positions, global pooling and local selection, then the selected
 * blocks' K/V rows fetched from their owners while the local part runs; the
 * low-rank global sums travel as one all-reduce of r×D + r per head. */
#include "dist_llsa_attend.h"
#include "dist_device.h"
#include "dist_ropeslr.h"

#include <limits.h>
#include <string.h>

void dt_dist_slr_run_free(slr_run *R) {
  /* g, gf, vbuf, total and row_sum live in the blocks of f, ff, kbuf, part
   * and row_max. */
  void *bufs[] = {R->pos,  R->sel,  R->f,      R->ff,  R->kbuf, R->gblk,    R->Sf,
                  R->olrf, R->part, R->fac_of, R->fac, R->qs,   R->row_max, R->acc,
                  R->tile, R->u,    R->os,     R->Sbg, R->olr};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dt_free(bufs[i]);
}

void dt_dist_slr_run_init(slr_run *R, dt_dist_job *job, const ditattn_ropeslr_params *params,
                          const ditattn_ropeslr_weights *weights, const ditattn_tensor *q,
                          const ditattn_tensor *k, const ditattn_tensor *v) {
  memset(R, 0, sizeof *R);
  R->ctx = job->ctx;
  R->job = job;
  R->params = *params;
  dt_resolve_scale(job->ctx, params->scale, q->shape[3], &R->params.scale); /* checked */
  R->w = weights;
  R->q = q, R->k = k, R->v = v;
  R->H = q->shape[1];
  R->BH = q->shape[0] * R->H;
  R->D = q->shape[3];
  R->r = params->rank;
  R->N = job->n_global;
  R->off = job->offset[job->rank];
  R->len = job->length[job->rank];
  const int64_t n = R->N / params->block + (R->N % params->block != 0);
  R->s = (dt_slr_shape){R->N, R->D, R->r, params->block, n, dt_slr_resolve_topk(params, n)};
  R->glo = R->off / params->block;
  R->ghi = (R->off + R->len - 1) / params->block;
  R->nloc = R->ghi - R->glo + 1;
}

/* count · elem bytes, 0 on overflow (a 0-byte malloc is then refused). */
static void *alloc_n(int64_t count, int64_t elem) {
  size_t bytes;
  if (count < 0 || !dt_mul_size((size_t)count, (size_t)elem, &bytes)) return NULL;
  return dt_malloc(bytes > 0 ? bytes : 1);
}

ditattn_status dt_dist_slr_run_alloc(slr_run *R) {
  const int64_t BH = R->BH, len = R->len, D = R->D, r = R->r, n = R->s.n;
  const int64_t rd = r * D + r, rows = BH * len;
  if (BH > INT_MAX / rd) /* the factor all-reduce counts doubles in an int */
    return dt_fail(R->ctx, DITATTN_ERR_OVERFLOW,
                   "%lld heads × %lld factor doubles exceed MPI's int", (long long)BH,
                   (long long)rd);
  R->sel = alloc_n(BH * R->nloc, R->s.K * (int64_t)sizeof(int32_t));
  if (R->use_cpu) {
    R->ff = alloc_n(2 * rows, r * (int64_t)sizeof(float));
    R->gblk = alloc_n(R->s.block, r * (int64_t)sizeof(float));
    R->Sf = alloc_n(r, D * (int64_t)sizeof(float));
    R->olrf = alloc_n(R->s.block, D * (int64_t)sizeof(float));
    R->kbuf = alloc_n(2 * DT_CPU_KEY_CHUNK, D * (int64_t)sizeof(float));
  } else {
    R->f = alloc_n(2 * rows, r * (int64_t)sizeof(double));
  }
  const int feats = R->use_cpu ? R->ff && R->gblk && R->Sf && R->olrf && R->kbuf : R->f != NULL;
  R->part = alloc_n(2 * BH, rd * (int64_t)sizeof(double));
  R->fac_of = alloc_n(BH * n, sizeof(int64_t));
  R->qs = alloc_n(rows, D * (int64_t)sizeof(float));
  R->row_max = alloc_n(2 * rows, sizeof(float));
  R->acc = alloc_n(rows, D * (int64_t)sizeof(float));
  R->tile = alloc_n((int64_t)DT_CPU_ATTEND_SCRATCH(R->s.block, D), sizeof(float));
  R->u = alloc_n(r, sizeof(double));
  R->os = alloc_n(R->s.block, D * (int64_t)sizeof(float));
  R->Sbg = alloc_n(rd, sizeof(double));
  R->olr = alloc_n(r > D ? r : D, sizeof(double));
  if (!R->sel || !feats || !R->part || !R->fac_of || !R->qs || !R->row_max || !R->acc || !R->tile ||
      !R->u || !R->os || !R->Sbg || !R->olr)
    return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY,
                   "ropeslr workspace for %lld local rows of D = %lld, r = %lld", (long long)rows,
                   (long long)D, (long long)r);
  if (R->use_cpu) {
    R->gf = R->ff + rows * r;
    R->vbuf = R->kbuf + DT_CPU_KEY_CHUNK * D;
  } else
    R->g = R->f + rows * r;
  R->total = R->part + BH * rd;
  R->row_sum = R->row_max + rows;
  return DITATTN_OK;
}

ditattn_status dt_dist_slr_plan_factors(slr_run *R, unsigned char **want) {
  const int64_t n = R->s.n, rd = R->r * R->D + R->r;
  *want = alloc_n(R->BH * n, 1);
  if (!*want) return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY, "fetch flags");
  memset(*want, 0, (size_t)(R->BH * n));
  R->nfac = 0;
  for (int64_t i = 0; i < R->BH * n; i++) R->fac_of[i] = -1;
  for (int64_t bh = 0; bh < R->BH; bh++)
    for (int64_t G = R->glo; G <= R->ghi; G++) {
      const int32_t *row = dt_dist_slr_sel_row(R, bh, G);
      for (int64_t t = 0; t < R->s.K; t++) {
        const int64_t key = bh * n + row[t];
        if (R->fac_of[key] < 0) R->fac_of[key] = R->nfac++;
        (*want)[key] = 1;
      }
    }
  R->fac = alloc_n(R->nfac, rd * (int64_t)sizeof(double));
  if (!R->fac)
    return dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY, "factors of %lld selected blocks",
                   (long long)R->nfac);
  return DITATTN_OK;
}

/* Scaled queries and an empty softmax state. */
static void prepare_queries(slr_run *R) {
  const int64_t D = R->D;
  for (int64_t bh = 0; bh < R->BH; bh++)
    for (int64_t i = 0; i < R->len; i++) {
      const float *src = dt_f32_at(R->q, bh / R->H, bh % R->H, i, 0);
      float *dst = R->qs + (bh * R->len + i) * D;
      for (int64_t d = 0; d < D; d++) dst[d] = src[d] * R->params.scale;
    }
  const dt_cpu_softmax_state st = {R->row_max, R->row_sum, R->acc};
  dt_cpu_state_reset(&st, R->BH * R->len, D);
}

/* Sparse branch (spec §2) over the selected blocks held locally
 * (fetched == 0: wholly inside this slice) or in the fetch slots. */
static void attend_selected(slr_run *R, const dt_dist_block_fetch *F, int fetched) {
  const int64_t D = R->D, n = R->s.n;
  const size_t row_bytes = (size_t)D * sizeof(float);
  for (int64_t bh = 0; bh < R->BH; bh++) {
    const int64_t b = bh / R->H, h = bh % R->H;
    for (int64_t G = R->glo; G <= R->ghi; G++) {
      int64_t a, e;
      dt_dist_slr_local_part(R, G, &a, &e);
      const int64_t row0 = bh * R->len + (a - R->off);
      const float *qs = R->qs + row0 * D;
      const dt_cpu_softmax_state st = {R->row_max + row0, R->row_sum + row0, R->acc + row0 * D};
      const int32_t *row = dt_dist_slr_sel_row(R, bh, G);
      int64_t have = 0; /* CPU: keys gathered into kbuf/vbuf, one kernel call per chunk */
      for (int64_t t = 0; t < R->s.K; t++) {
        const int64_t slot = F->slot_of ? F->slot_of[bh * n + row[t]] : -1;
        if ((slot >= 0) != fetched) continue;
        int64_t k0, kn;
        dt_dist_slr_block(R, row[t], &k0, &kn);
        const float *kr =
            fetched ? dt_dist_block_fetch_k(F, slot) : dt_f32_at(R->k, b, h, k0 - R->off, 0);
        const float *vr =
            fetched ? dt_dist_block_fetch_v(F, slot) : dt_f32_at(R->v, b, h, k0 - R->off, 0);
        const int64_t kld = fetched ? D : R->k->stride[2], vld = fetched ? D : R->v->stride[2];
        if (!R->use_cpu || kn > DT_CPU_KEY_CHUNK) {
          dt_dist_attend(R->use_cpu, e - a, kn, D, qs, kr, kld, vr, vld, NULL, R->tile, &st);
          continue;
        }
        if (have + kn > DT_CPU_KEY_CHUNK) {
          dt_dist_attend(1, e - a, have, D, qs, R->kbuf, D, R->vbuf, D, NULL, R->tile, &st);
          have = 0;
        }
        for (int64_t j = 0; j < kn; j++, have++) {
          memcpy(R->kbuf + have * D, kr + j * kld, row_bytes);
          memcpy(R->vbuf + have * D, vr + j * vld, row_bytes);
        }
      }
      if (have) dt_dist_attend(1, e - a, have, D, qs, R->kbuf, D, R->vbuf, D, NULL, R->tile, &st);
    }
  }
}

/* Everything after the selection; returns the agreed status. */
static ditattn_status compute(slr_run *R, ditattn_tensor *out, float *lse_sparse) {
  dt_dist_job *job = R->job;
  const int64_t rd = R->r * R->D + R->r;
  unsigned char *want = NULL;
  dt_dist_block_fetch F;
  dt_dist_block_fetch_init(&F);
  MPI_Request sum_req = MPI_REQUEST_NULL;
  double t0 = MPI_Wtime();
  ditattn_status local = dt_dist_slr_plan_factors(R, &want);
  if (local == DITATTN_OK) {
    if (R->use_cpu)
      dt_dist_slr_local_features_cpu(R);
    else
      dt_dist_slr_local_features(R);
    prepare_queries(R);
  }
  dt_dist_tick(&t0, &job->stats.compute_s);
  ditattn_status st = dt_dist_agree(job, local);
  if (st == DITATTN_OK) {
    /* The global factor sums travel while the rows are fetched. */
    int err = MPI_Iallreduce(R->part, R->total, (int)(R->BH * rd), MPI_DOUBLE, MPI_SUM, job->comm,
                             &sum_req);
    if (err != MPI_SUCCESS) sum_req = MPI_REQUEST_NULL;
    if (job->size > 1) job->stats.bytes_sent += R->BH * rd * (int64_t)sizeof(double);
    st = dt_dist_agree(job, err == MPI_SUCCESS
                                ? DITATTN_OK
                                : dt_dist_mpi_fail(R->ctx, err, "MPI_Iallreduce (factors)"));
  }
  if (st == DITATTN_OK)
    st = dt_dist_block_fetch_start(job, &F, R->s.block, R->BH, want, R->k, R->v);
  if (st == DITATTN_OK) {
    t0 = MPI_Wtime();
    attend_selected(R, &F, 0); /* overlapped with the transfers */
    (R->use_cpu ? dt_dist_slr_factors_cpu : dt_dist_slr_factors)(R, &F, 0);
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = dt_dist_block_fetch_finish(job, &F);
  }
  if (st == DITATTN_OK) {
    t0 = MPI_Wtime();
    attend_selected(R, &F, 1);
    (R->use_cpu ? dt_dist_slr_factors_cpu : dt_dist_slr_factors)(R, &F, 1);
    dt_dist_tick(&t0, &job->stats.compute_s);
  }
  if (sum_req != MPI_REQUEST_NULL) {
    t0 = MPI_Wtime();
    int err = MPI_Wait(&sum_req, MPI_STATUS_IGNORE);
    dt_dist_tick(&t0, &job->stats.comm_wait_s);
    if (st == DITATTN_OK)
      st = dt_dist_agree(job, err == MPI_SUCCESS
                                  ? DITATTN_OK
                                  : dt_dist_mpi_fail(R->ctx, err, "MPI_Wait (factors)"));
  }
  if (st == DITATTN_OK) {
    t0 = MPI_Wtime();
    for (int64_t bh = 0; bh < R->BH; bh++)
      (R->use_cpu ? dt_dist_slr_finish_head_cpu : dt_dist_slr_finish_head)(R, bh, out, lse_sparse);
    dt_dist_tick(&t0, &job->stats.compute_s);
  }
  job->stats.llsa_fetch_bytes = F.bytes_received;
  job->stats.ring_bytes_received = 2 * (R->N - R->len) * R->BH * R->D * (int64_t)sizeof(float);
  dt_dist_block_fetch_free(&F);
  dt_free(want);
  return st;
}

/* GPU contexts: global positions, then dist_device_sparse.c. */
static ditattn_status device_run(dt_dist_job *job, const ditattn_ropeslr_params *params,
                                 const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                 const ditattn_tensor *q, const ditattn_tensor *k,
                                 const ditattn_tensor *v, ditattn_tensor *out, float *lse_sparse) {
  ditattn_ropeslr_params resolved = *params;
  dt_resolve_scale(job->ctx, params->scale, q->shape[3], &resolved.scale); /* checked */
  int32_t *whole = NULL;
  ditattn_status st = dt_dist_gather_positions(job, params->grid, job->n_global, pos, &whole);
  if (st != DITATTN_OK) {
    dt_free(whole);
    return dt_dist_end(job, st);
  }
  st = dt_dist_device_ropeslr_run(job, &resolved, weights, whole, q, k, v, out, lse_sparse);
  dt_free(whole);
  return st;
}

ditattn_status ditattn_dist_ropeslr_forward(ditattn_context *ctx, MPI_Comm comm,
                                            const ditattn_dist_slice *slice,
                                            const ditattn_ropeslr_params *params,
                                            const ditattn_ropeslr_weights *weights,
                                            const int32_t *pos, const ditattn_tensor *q,
                                            const ditattn_tensor *k, const ditattn_tensor *v,
                                            ditattn_tensor *out, float *lse_sparse) {
  int64_t prm[DT_DP_COUNT];
  memset(prm, 0, sizeof prm);
  prm[DT_DP_OP] = DT_DIST_OP_ROPESLR_FWD;
  ditattn_status local =
      dt_dist_slr_check(ctx, slice, params, weights, pos, q, k, v, out, "out", lse_sparse, prm);
  dt_dist_job job;
  TRY(dt_dist_begin(&job, ctx, comm, slice, local, prm));
  if (dt_dist_is_device(ctx))
    return device_run(&job, params, weights, pos, q, k, v, out, lse_sparse);

  slr_run R;
  dt_dist_slr_run_init(&R, &job, params, weights, q, k, v);
  R.use_cpu = ctx->backend == DITATTN_BACKEND_CPU;
  ditattn_status st = dt_dist_agree(&job, dt_dist_slr_run_alloc(&R));
  if (st == DITATTN_OK) st = dt_dist_slr_positions(&R, pos);
  if (st == DITATTN_OK) st = dt_dist_slr_select(&R);
  if (st == DITATTN_OK) {
    const int saved = R.use_cpu ? dt_cpu_blas_enter() : 0;
    st = compute(&R, out, lse_sparse);
    if (R.use_cpu) dt_cpu_blas_leave(saved);
  }
  dt_dist_slr_run_free(&R);
  return dt_dist_end(&job, st);
}
