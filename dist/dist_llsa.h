/* Distributed LLSA internals: geometry of this rank's slice, the globally
 * pooled q/k/v (all-gathered partial sums), the local selection. */
#ifndef DITATTN_DIST_LLSA_H
#define DITATTN_DIST_LLSA_H

#include "dist_internal.h"
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

#endif
