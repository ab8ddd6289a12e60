/* Distributed LLSA internals: geometry of this rank's slice, the globally
 * pooled q/k/v (all-gathered partial sums), the local selection. */
#ifndef DITATTN_DIST_LLSA_H
#define DITATTN_DIST_LLSA_H

#include "dist_internal.h"
#include "backends/cpu/cpu_internal.h"
#include "ref/llsa_internal.h"

typedef struct dt_dist_pooled {
  dt_llsa_geom g;
  int64_t BH;
  int64_t per_bh;                    /* doubles of one (b, h): sum over l of 3·n_l·D */
  int64_t base[DT_LLSA_LEVEL_SLOTS]; /* offset of level l inside one (b, h) */
  int64_t lo[DT_LLSA_LEVEL_SLOTS];   /* this rank's first block of level l */
  int64_t hi[DT_LLSA_LEVEL_SLOTS];   /* this rank's last block of level l */
  double *data;                      /* BH·per_bh: pooled q, k, v means (ref's doubles) */
} dt_dist_pooled;

/* Level-l block range touching tokens [offset, offset + length). */
void dt_dist_block_range(const dt_llsa_geom *g, int l, int64_t offset, int64_t length, int64_t *lo,
                         int64_t *hi);
/* Pooled x (0 = q, 1 = k, 2 = v) of level l for (b, h) index bh: n_l × D. */
static inline double *dt_dist_pooled_at(const dt_dist_pooled *p, int64_t bh, int l, int x) {
  return p->data + bh * p->per_bh + p->base[l] + (int64_t)x * p->g.n[l] * p->g.D;
}

/* Fills geometry and ranges and allocates (dt_malloc) the pooled arrays. */
ditattn_status dt_dist_pool_alloc(dt_dist_job *job, const ditattn_llsa_params *params, int64_t N,
                                  int64_t BH, int64_t D, dt_dist_pooled *p);
void dt_dist_pool_free(dt_dist_pooled *p);
/* Collective: every rank sums its tokens of each block it touches (double),
 * the partial sums are all-gathered and added in rank order, then divided by
 * the block's token count, as ref/ does. */
ditattn_status dt_dist_pool(dt_dist_job *job, dt_dist_pooled *p, const ditattn_tensor *q,
                            const ditattn_tensor *k, const ditattn_tensor *v);

/* The state of one distributed LLSA forward (dist_llsa_forward.c). */
typedef struct llsa_run {
  ditattn_context *ctx;
  int use_cpu;
  dt_dist_job *job;
  dt_dist_pooled pool;
  int64_t H, D, len, off;
  int64_t *sel_data;                     /* BH × sel_per_bh */
  int64_t sel_base[DT_LLSA_LEVEL_SLOTS]; /* level l's rows inside one (b, h) */
  int64_t sel_per_bh;
  int64_t *cand;
  dt_llsa_scored *scored;
  float *qs;                /* BH × len × D, scaled */
  float *row_max, *row_sum; /* BH × len */
  float *acc;               /* BH × len × D */
  float *tile;              /* DT_CPU_ATTEND_SCRATCH(span_1, D) */
  float *kf, *vf, *lnw;     /* pooled keys of one block: max_keys rows */
  dt_llsa_key *keys;        /* max_keys */
} llsa_run;

/* Validates params like the single-process API, resolves the scale for head
 * dimension D and fills the LLSA parameters every rank must agree on. */
ditattn_status dt_dist_llsa_check_params(ditattn_context *ctx, const ditattn_llsa_params *params,
                                         int64_t D, float *scale, int64_t prm[DT_DP_COUNT]);
/* Sets sel_base and sel_per_bh from R->pool.g (before allocating sel_data). */
void dt_dist_llsa_sel_layout(llsa_run *R);
/* §2 for the blocks this rank's queries touch, every level, coarse to fine,
 * with ref/'s helpers and score order: identical to the single process.
 * Uses R's pool, sel_data, cand and scored only. */
void dt_dist_llsa_select(llsa_run *R, int64_t bh);
/* Selection rows of (b, h) index bh, by level (global block indices). */
void dt_dist_llsa_sel_of(const llsa_run *R, int64_t bh, int64_t *sel[DT_LLSA_LEVEL_SLOTS]);
/* Local query rows of level-1 block g1: count, first state row, state view. */
int64_t dt_dist_llsa_block_rows(const llsa_run *R, int64_t bh, int64_t g1, int64_t *row0,
                                dt_cpu_softmax_state *st);
/* Folds the pooled keys (levels 1 .. L) of every local query block of bh. */
void dt_dist_llsa_attend_pooled(llsa_run *R, int64_t bh);
/* Collective alternative to the ring: each rank receives only the parts of
 * its selected fine blocks that other ranks hold (MPI_Alltoallv of requests,
 * then of K/V rows, overlapped with the pooled and local keys). Returns the
 * agreed status. */
ditattn_status dt_dist_llsa_fetch(llsa_run *R, const ditattn_tensor *k, const ditattn_tensor *v);

#endif
