/* Distributed LLSA, fetch variant: instead of every K/V slice visiting every
 * rank, each rank requests the parts of its selected level-1 blocks that
 * other ranks hold. Wins when selections are local (the usual case with
 * spatially ordered video tokens); the forward picks it by measuring.
 * Level-1 blocks are whole blocks of span_1 tokens, so the generic block
 * fetch (dist_block_fetch.h) moves them. */
#include "dist_block_fetch.h"
#include "dist_llsa.h"
#include "dist_llsa_attend.h"

#include <string.h>

/* BH·n_1 flags: level-1 block c of bh is selected by a local query block. */
static unsigned char *selected_blocks(llsa_run *R) {
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t n1 = g->n[1], BH = R->pool.BH;
  unsigned char *want = dt_llsa_alloc(BH, n1, 1);
  if (!want) return NULL;
  memset(want, 0, (size_t)(BH * n1));
  for (int64_t bh = 0; bh < BH; bh++) {
    int64_t *sel[DT_LLSA_LEVEL_SLOTS];
    dt_dist_llsa_sel_of(R, bh, sel);
    for (int64_t g1 = R->pool.lo[1]; g1 <= R->pool.hi[1]; g1++)
      for (int64_t r = 0; r < g->width[1]; r++) {
        const int64_t c = sel[1][g1 * g->width[1] + r];
        if (c < 0) break;
        want[bh * n1 + c] = 1;
      }
  }
  return want;
}

/* Fine keys of every local query block: wholly local blocks (remote == 0)
 * or fetched ones (remote == 1). */
static void attend_fine(llsa_run *R, const dt_dist_block_fetch *F, const ditattn_tensor *k,
                        const ditattn_tensor *v, int remote) {
  const dt_llsa_geom *g = &R->pool.g;
  const int64_t D = R->D;
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
          dt_dist_attend(R->use_cpu, rows, cnt, D, R->qs + row0 * D, dt_dist_block_fetch_k(F, slot),
                         D, dt_dist_block_fetch_v(F, slot), D, NULL, R->tile, &st);
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
  dt_dist_block_fetch F;
  dt_dist_block_fetch_init(&F);
  double t0 = MPI_Wtime();
  unsigned char *want = selected_blocks(R);
  dt_dist_tick(&t0, &job->stats.compute_s);
  ditattn_status st = dt_dist_agree(job, want ? DITATTN_OK
                                              : dt_fail(R->ctx, DITATTN_ERR_OUT_OF_MEMORY,
                                                        "fetch plan for %lld blocks",
                                                        (long long)(R->pool.BH * R->pool.g.n[1])));
  if (st == DITATTN_OK)
    st = dt_dist_block_fetch_start(job, &F, R->pool.g.span[1], R->pool.BH, want, k, v);
  if (st == DITATTN_OK) {
    /* Overlapped with the transfer: pooled keys and wholly local blocks. */
    t0 = MPI_Wtime();
    for (int64_t bh = 0; bh < R->pool.BH; bh++) dt_dist_llsa_attend_pooled(R, bh);
    attend_fine(R, &F, k, v, 0);
    dt_dist_tick(&t0, &job->stats.compute_s);
    st = dt_dist_block_fetch_finish(job, &F);
  }
  if (st == DITATTN_OK) {
    t0 = MPI_Wtime();
    attend_fine(R, &F, k, v, 1);
    dt_dist_tick(&t0, &job->stats.compute_s);
  }
  dt_dist_block_fetch_free(&F);
  dt_free(want);
  return st;
}
