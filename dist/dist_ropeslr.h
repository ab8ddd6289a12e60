/* Distributed RoPeSLR forward internals (docs/dist.md, "RoPeSLR"): the
 * state of one call and the stages the entry runs: local checks, global
 * pooling and selection, features and factors (the block-row fetch is
 * dist_block_fetch.h). */
#ifndef DITATTN_DIST_ROPESLR_H
#define DITATTN_DIST_ROPESLR_H

#include "dist_block_fetch.h"
#include "backends/cpu/cpu_internal.h"
#include "ref/ropeslr_internal.h"

/* ------------------------------------------------------------ one call */
typedef struct slr_run {
  ditattn_context *ctx;
  dt_dist_job *job;
  int use_cpu;
  ditattn_ropeslr_params params; /* scale resolved */
  const ditattn_ropeslr_weights *w;
  const ditattn_tensor *q, *k, *v;
  int64_t H, BH, D, r, N, off, len;
  dt_slr_shape s;          /* global N, block, n, K */
  int64_t glo, ghi, nloc;  /* query blocks touched by this slice */
  int32_t *pos;            /* N triples: global positions (all-gathered or raster) */
  int32_t *sel;            /* BH × nloc × K: rows of the local query blocks */
  double *f, *g;           /* REF: BH × len × r features of local queries and keys */
  float *ff, *gf;          /* CPU: the same in f32 */
  float *gblk, *Sf, *olrf; /* CPU: block × r, r × D, block × D of scratch */
  float *kbuf, *vbuf;      /* CPU: DT_CPU_KEY_CHUNK × D each, gathered keys */
  double *part, *total;    /* BH × (r·D + r): local Σ g vᵀ, Σ g; then the global sums */
  int64_t *fac_of;         /* BH × n: factor row of (bh, C), −1 when not needed */
  double *fac;             /* nfac × (r·D + r): S_C, z_C of selected blocks */
  int64_t nfac;
  float *qs;                /* BH × len × D, times scale */
  float *row_max, *row_sum; /* BH × len */
  float *acc;               /* BH × len × D */
  float *tile;              /* DT_CPU_ATTEND_SCRATCH(block, D) */
  double *u;                /* r: one feature pre-activation */
  float *os;                /* block × D: one block's sparse output */
  double *Sbg, *olr;        /* r·D + r: background factors; D: one low-rank row */
} slr_run;

/* R for this call (zeroed first; use_cpu 0): shapes, the resolved scale,
 * the global block count and K, the query blocks of this rank's slice. */
void dt_dist_slr_run_init(slr_run *R, dt_dist_job *job, const ditattn_ropeslr_params *params,
                          const ditattn_ropeslr_weights *weights, const ditattn_tensor *q,
                          const ditattn_tensor *k, const ditattn_tensor *v);
/* The forward's workspace (features in double, or f32 with use_cpu). */
ditattn_status dt_dist_slr_run_alloc(slr_run *R);
void dt_dist_slr_run_free(slr_run *R);
/* After the selection: the blocks the local query blocks selected get
 * factor rows (R->fac_of, R->fac) and fetch flags (*want: BH × n bytes,
 * dt_malloc'd; the caller frees it, also on failure). */
ditattn_status dt_dist_slr_plan_factors(slr_run *R, unsigned char **want);

/* Local argument checks; fills the agreed parameters. out_name: what the
 * messages call `out` (the backward passes its dout there). */
ditattn_status dt_dist_slr_check(ditattn_context *ctx, const ditattn_dist_slice *slice,
                                 const ditattn_ropeslr_params *params,
                                 const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                 const ditattn_tensor *q, const ditattn_tensor *k,
                                 const ditattn_tensor *v, const ditattn_tensor *out,
                                 const char *out_name, const float *lse_sparse,
                                 int64_t prm[DT_DP_COUNT]);

/* The backward's further local checks: a host context, dout f32, dq, dk,
 * dv f32 of the slice's shape and dweights shaped as weights, each output
 * disjoint from every input (q, k, v, dout, the weights, pos) and from the
 * other outputs. dout's shape is checked by dt_dist_slr_check (as its out). */
ditattn_status dt_dist_slr_check_grads(ditattn_context *ctx, const ditattn_dist_slice *slice,
                                       const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                       const ditattn_tensor *q, const ditattn_tensor *k,
                                       const ditattn_tensor *v, const ditattn_tensor *dout,
                                       ditattn_tensor *dq, ditattn_tensor *dk, ditattn_tensor *dv,
                                       ditattn_ropeslr_weights *dweights);

/* Collective: the N global positions into *whole (dt_malloc'd, the caller
 * frees it, also on failure): all-gather of every slice's triples, or
 * raster order of grid when pos is NULL. Returns the agreed status. */
ditattn_status dt_dist_gather_positions(dt_dist_job *job, const int64_t grid[3], int64_t N,
                                        const int32_t *pos, int32_t **whole);
/* dt_dist_gather_positions into R->pos. */
ditattn_status dt_dist_slr_positions(slr_run *R, const int32_t *pos);
/* Collective: global block means of q and k (partial sums all-gathered,
 * added in sequence order) and the selection rows of the local query
 * blocks, exactly as ref/ selects. Returns the agreed status. */
ditattn_status dt_dist_slr_select(slr_run *R);

/* Features f of the local queries and g of the local keys, and this rank's
 * partial sums R->part (Σ_j g_j v_jᵀ, Σ_j g_j over its keys). */
void dt_dist_slr_local_features(slr_run *R);
/* φ(projᵀ x + E^t[t] + E^y[y] + E^x[x]) of head h (proj: the weights' A
 * or Bk) for one row x of D floats at position p, as ref/ computes it:
 * the pre-activation into u, the feature into out (r doubles each). */
void dt_dist_slr_feature(const slr_run *R, const ditattn_tensor *proj, int64_t h, const float *x,
                         const int32_t *p, double *u, double *out);
/* g of one key row (x: D floats) at position p (3 ints) of head h, as ref/
 * computes it (double). u: r doubles of scratch. */
void dt_dist_slr_key_feature(const slr_run *R, int64_t h, const float *x, const int32_t *p,
                             double *u, double *g);
/* S_C, z_C of every needed block of (bh) held locally (fetched == 0) or in
 * the fetch slots (fetched == 1). */
void dt_dist_slr_factors(slr_run *R, const dt_dist_block_fetch *F, int fetched);
/* o = o_s + Wᵀ o_lr for the local rows of bh: o_s from the softmax state,
 * o_lr from the global sums minus the selected blocks' factors. */
void dt_dist_slr_finish_head(slr_run *R, int64_t bh, ditattn_tensor *out, float *lse_sparse);

/* S_C, z_C (r·D + r doubles at S) of block C of bh; slot: its fetch slot,
 * −1 when its rows are local. */
typedef void dt_dist_slr_factor_fn(slr_run *R, const dt_dist_block_fetch *F, int64_t bh, int64_t C,
                                   int64_t slot, double *S);
/* Calls fn for every block whose factors are needed (R->fac_of) and whose
 * rows are local (fetched == 0) or in the fetch slots (fetched == 1), in
 * (bh, C) order. */
void dt_dist_slr_each_factor(slr_run *R, const dt_dist_block_fetch *F, int fetched,
                             dt_dist_slr_factor_fn *fn);
/* Background factors of query block G of bh into R->Sbg (r·D, then z: r):
 * the global sums minus the selected blocks' (spec §3, as written). Returns
 * the distinct selected count (R->s.n: empty background). */
int64_t dt_dist_slr_background(slr_run *R, int64_t bh, int64_t G);
/* Sparse output o_s of bh's local rows of query block G into R->os (and
 * their lse_sparse) from the softmax state. Returns the row count; *a: their
 * first token, *row0: their first row of the per-row state. */
int64_t dt_dist_slr_sparse_out(slr_run *R, int64_t bh, int64_t G, float *lse_sparse, int64_t *a,
                               int64_t *row0);

/* The same three stages on CPU contexts, through the CPU backend's f32
 * GEMMs (dist_ropeslr_lowrank_cpu.c). */
void dt_dist_slr_local_features_cpu(slr_run *R);
void dt_dist_slr_factors_cpu(slr_run *R, const dt_dist_block_fetch *F, int fetched);
void dt_dist_slr_finish_head_cpu(slr_run *R, int64_t bh, ditattn_tensor *out, float *lse_sparse);

/* Selection row of local query block G (global index) of bh. */
static inline const int32_t *dt_dist_slr_sel_row(const slr_run *R, int64_t bh, int64_t G) {
  return R->sel + (bh * R->nloc + (G - R->glo)) * R->s.K;
}
/* Tokens [first, first + count) of block c. */
static inline void dt_dist_slr_block(const slr_run *R, int64_t c, int64_t *first, int64_t *count) {
  *first = c * R->s.block;
  *count = R->N - *first < R->s.block ? R->N - *first : R->s.block;
}
/* This rank's tokens [a, e) of block c (empty when the block lies elsewhere). */
static inline void dt_dist_slr_local_part(const slr_run *R, int64_t c, int64_t *a, int64_t *e) {
  int64_t first, count;
  dt_dist_slr_block(R, c, &first, &count);
  *a = first > R->off ? first : R->off;
  *e = first + count < R->off + R->len ? first + count : R->off + R->len;
}

#endif
