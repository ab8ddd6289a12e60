/* CPU LLSA: per-(batch, head) pooled tensors and the selection, built in
 * parallel with the same double arithmetic as ref/ (so the selected sets
 * are identical), and the forward/backward loops around the tile kernels. */
#ifndef DITATTN_CPU_LLSA_H
#define DITATTN_CPU_LLSA_H

#include "../../ref/llsa_internal.h"
#include "cpu_internal.h"

typedef struct dt_cpu_llsa_head {
  dt_llsa_geom g;
  double *pq[DT_LLSA_LEVEL_SLOTS];   /* n_l × D: selection queries (exact means) */
  double *pkt[DT_LLSA_LEVEL_SLOTS];  /* D × n_l: selection keys, transposed */
  float *pk[DT_LLSA_LEVEL_SLOTS];    /* n_l × D: attention keys */
  float *pv[DT_LLSA_LEVEL_SLOTS];    /* n_l × D: attention values */
  float *lnw[DT_LLSA_LEVEL_SLOTS];   /* n_l: ln cnt_l[c] */
  float *pk_coarse_packed;           /* level-L keys packed for the own kernel */
  int64_t *sel[DT_LLSA_LEVEL_SLOTS]; /* n_l × width[l], ref/'s layout */
  double *sel_work;                  /* per thread: max_cand scores */
  dt_llsa_scored *best_work;         /* per thread: max K_l entries */
  int64_t work_stride, best_stride;
  int nt;
} dt_cpu_llsa_head;

ditattn_status dt_cpu_llsa_head_alloc(ditattn_context *ctx, const ditattn_llsa_params *params,
                                      int64_t N, int64_t D, int nt, dt_cpu_llsa_head *h);
void dt_cpu_llsa_head_free(dt_cpu_llsa_head *h);
/* Pools q, k, v of (b, hi) at every level and selects (threads: h->nt). */
void dt_cpu_llsa_head_prepare(dt_cpu_llsa_head *h, const ditattn_tensor *q, const ditattn_tensor *k,
                              const ditattn_tensor *v, int64_t b, int64_t hi);

/* Copies the pooled candidates of level l for level-l query block gl (the
 * children of the parent's selection row) into gk, gv (rows of D) and gw
 * (ln weights); returns their count. */
int64_t dt_cpu_llsa_gather_pooled(const dt_cpu_llsa_head *h, int l, int64_t gl, float *gk,
                                  float *gv, float *gw);
/* Gathers the fine tokens of the blocks in sel_1[g1] of (b, hi): values into
 * gv, keys into gk (rows) or, with the own kernels (krow != NULL), packed
 * into gk straight from the tensor; returns their count. */
int64_t dt_cpu_llsa_gather_fine(const dt_cpu_llsa_head *h, const ditattn_tensor *k,
                                const ditattn_tensor *v, int64_t b, int64_t hi, int64_t g1,
                                float *gk, float *gv, const float **krow);

/* b^(l−1), saturated at INT64_MAX: level-1 block g1 takes the level-l
 * candidates of g1 / div, as ref/'s key list walks it. */
static inline int64_t dt_cpu_llsa_level_div(const dt_llsa_geom *g, int l) {
  int64_t div = 1;
  for (int m = 1; m < l; m++) div = div > INT64_MAX / g->b ? INT64_MAX : div * g->b;
  return div;
}

/* Query tiles of the LLSA loops: whole level-1 blocks, about
 * DT_CPU_QUERY_TILE rows together; a level-1 block wider than that is split
 * into several tiles (so buffers never grow with b). */
typedef struct dt_cpu_llsa_tiling {
  int64_t per;   /* level-1 blocks per tile (1 when split) */
  int64_t split; /* tiles per level-1 block (1 unless blocks are wide) */
  int64_t T;     /* most rows of a tile */
  int64_t count; /* tiles */
} dt_cpu_llsa_tiling;

static inline dt_cpu_llsa_tiling dt_cpu_llsa_tiles(const dt_llsa_geom *g) {
  dt_cpu_llsa_tiling t;
  const int64_t span = g->span[1], QT = DT_CPU_QUERY_TILE;
  t.split = span > QT ? span / QT + (span % QT != 0) : 1;
  t.per = t.split > 1 ? 1 : QT / span;
  t.T = t.split > 1 ? QT : t.per * span;
  t.count = t.split > 1 ? g->n[1] * t.split : g->n[1] / t.per + (g->n[1] % t.per != 0);
  return t;
}

/* Tile i: level-1 blocks [g1_0, g1_1) and rows [q0, q0 + rows); rows may be
 * 0 (a split tile past the end of a partial last block). */
static inline void dt_cpu_llsa_tile(const dt_llsa_geom *g, const dt_cpu_llsa_tiling *t, int64_t i,
                                    int64_t *g1_0, int64_t *g1_1, int64_t *q0, int64_t *rows) {
  if (t->split > 1) {
    *g1_0 = i / t->split;
    *g1_1 = *g1_0 + 1;
    const int64_t end = dt_llsa_block_start(g, 1, *g1_0) + dt_llsa_block_count(g, 1, *g1_0);
    *q0 = dt_llsa_block_start(g, 1, *g1_0) + (i % t->split) * t->T;
    *rows = end - *q0 < t->T ? end - *q0 : t->T;
    if (*rows < 0) *rows = 0;
    return;
  }
  *g1_0 = i * t->per;
  *g1_1 = *g1_0 + t->per < g->n[1] ? *g1_0 + t->per : g->n[1];
  *q0 = dt_llsa_block_start(g, 1, *g1_0);
  *rows = dt_llsa_block_start(g, 1, *g1_1 - 1) + dt_llsa_block_count(g, 1, *g1_1 - 1) - *q0;
}

/* Rows of the tile [q0, q0 + rows) that lie in level-1 blocks [a, e): [*r0, *r1). */
static inline void dt_cpu_llsa_rows_of(const dt_llsa_geom *g, int64_t a, int64_t e, int64_t q0,
                                       int64_t rows, int64_t *r0, int64_t *r1) {
  const int64_t lo = dt_llsa_block_start(g, 1, a) - q0;
  const int64_t hi = dt_llsa_block_start(g, 1, e - 1) + dt_llsa_block_count(g, 1, e - 1) - q0;
  *r0 = lo > 0 ? lo : 0;
  *r1 = hi < rows ? hi : rows;
}

#endif
