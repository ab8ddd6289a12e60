/* RoPeSLR on the CPU (spec ropeslr.md): the per-head state shared by the
 * forward (cpu_ropeslr_forward.c) and the backward (cpu_ropeslr_backward.c).
 * One head at a time; every stage is a parallel loop over blocks whose items
 * each have one owner thread and a fixed inner order, so results do not
 * depend on the thread count. Selection scores are double sums in ref/'s
 * order (identical selections); features, block factors and the sparse
 * branch are f32 GEMMs; sums over blocks (S, z, S_bg, z_bg) are double. */
#ifndef DITATTN_CPU_ROPESLR_HEAD_H
#define DITATTN_CPU_ROPESLR_HEAD_H

#include "../../ref/ropeslr_internal.h"
#include "cpu_internal.h"

/* What every stage of one head reads. */
typedef struct dt_cpu_slr_problem {
  const ditattn_ropeslr_params *params; /* scale resolved */
  const ditattn_ropeslr_weights *weights;
  const int32_t *pos; /* N triples */
  const ditattn_tensor *q, *k, *v;
} dt_cpu_slr_problem;

/* One head's selection, features and block factors, reused across heads. */
typedef struct dt_cpu_slr_head {
  dt_slr_shape s;
  int dt_nt;           /* threads */
  int64_t b, h;        /* the head held */
  double *pq, *pk;     /* n×D pooled means */
  double *score;       /* dt_nt × n: one selection row per thread */
  unsigned char *flag; /* dt_nt × n: taken / selected marks per thread */
  int32_t *sel;        /* n×K */
  float *f, *g;        /* N×r query and key features */
  float *SC;           /* n×r×D: S_C = Σ_{j∈C} g_j v_jᵀ */
  double *zC;          /* n×r: z_C = Σ_{j∈C} g_j */
  double *S, *z;       /* r×D, r: sums over all blocks */
  float *kpacked;      /* own kernels: block c's keys packed at c·kp_stride */
  int64_t kp_stride;   /* floats per packed block: ceil(b/16)·16·D */
} dt_cpu_slr_head;

ditattn_status dt_cpu_slr_head_alloc(ditattn_context *ctx, const dt_slr_shape *s, int dt_nt,
                                     dt_cpu_slr_head *hd);
void dt_cpu_slr_head_free(dt_cpu_slr_head *hd);

/* Fills hd for head (b, h): pooled means, selection, features, factors. */
void dt_cpu_slr_head_prepare(dt_cpu_slr_head *hd, const dt_cpu_slr_problem *p, int64_t b,
                             int64_t h);

/* out (count × r) = φ(x projᵀ + E^t[t] + E^y[y] + E^x[x]) of head h for
 * count rows of x (D floats, leading dimension ldx) at positions pos (3
 * ints per row): one f32 GEMM, then the feature map row by row. Also used
 * by dist/ on CPU contexts, so both compute features the same way. */
void dt_cpu_slr_features(const ditattn_ropeslr_weights *w, ditattn_slr_feature feature,
                         const ditattn_tensor *proj, int64_t h, int64_t D, int64_t r,
                         const float *x, int64_t ldx, const int32_t *pos, int64_t count,
                         float *out);
/* Factors of count key rows: S_C = gᵀ V (r × D, f32 GEMM) and z_C = Σ g
 * (r, double, row order). g: count × r features; v: leading dimension ldv. */
void dt_cpu_slr_block_factor(int64_t r, int64_t D, int64_t count, const float *g, const float *v,
                             int64_t ldv, float *SC, double *zC);

/* Background factors of query block G: S_bg = S − Σ_{C∈sel[G]} S_C (double
 * and an f32 copy), z_bg likewise. in_sel: n bytes of scratch. Returns the
 * number of distinct selected blocks (n: empty background). */
int64_t dt_cpu_slr_background(const dt_cpu_slr_head *hd, int64_t G, unsigned char *in_sel,
                              double *Sbg, float *Sbg_f, double *zbg);

/* Sparse branch of `rows` queries of block G: qs holds them times scale;
 * writes os (rows × D) and lse (rows). sm: the tile's online-softmax state;
 * scratch: DT_CPU_ATTEND_SCRATCH(rows, D) floats; kbuf, vbuf: the selected
 * blocks' keys and values gathered into chunks of up to DT_CPU_KEY_CHUNK
 * ((chunk + 16)·D and chunk·D floats). */
void dt_cpu_slr_sparse_rows(const dt_cpu_slr_head *hd, const dt_cpu_slr_problem *p, int64_t G,
                            int64_t rows, const float *qs, const dt_cpu_softmax_state *sm,
                            float *scratch, float *kbuf, float *vbuf, float *os, float *lse);

/* Low-rank readout of `rows` rows of features f (rows × r): olr = f S_bg /
 * (f·z_bg), 0 where f·z_bg == 0; den (may be NULL) = f·z_bg. */
void dt_cpu_slr_readout(int64_t r, int64_t D, int64_t rows, const float *f, const float *Sbg_f,
                        const double *zbg, float *olr, double *den);
/* Low-rank readout of rows [q0, q0 + rows): olr = f S_bg / (f·z_bg), den =
 * f·z_bg; rows with an empty background (kept == n) or den == 0 get olr = 0
 * (den 0 for the former). */
void dt_cpu_slr_lowrank_rows(const dt_cpu_slr_head *hd, int64_t kept, const float *Sbg_f,
                             const double *zbg, int64_t q0, int64_t rows, float *olr, double *den);

/* Rows [first, first + count) of block c. */
static inline void dt_cpu_slr_block_rows(const dt_slr_shape *s, int64_t c, int64_t *first,
                                         int64_t *count) {
  *first = c * s->block;
  *count = s->N - *first < s->block ? s->N - *first : s->block;
}

/* Element count of a (1, H, rows, cols) weight view. */
static inline int64_t dt_cpu_slr_view_count(const ditattn_tensor *t) {
  return t->shape[1] * t->shape[2] * t->shape[3];
}

/* Carves a thread arena into 64-byte aligned pieces; with base NULL it
 * only measures (used = the bytes needed). */
typedef struct dt_cpu_slr_arena {
  char *base;
  size_t used;
} dt_cpu_slr_arena;

static inline void *dt_cpu_slr_take(dt_cpu_slr_arena *a, size_t count, size_t elem) {
  void *at = a->base ? a->base + a->used : NULL;
  a->used += (count * elem + 63) / 64 * 64;
  return at;
}

#endif
