/* Pieces of the reference RoPeSLR (spec ropeslr.md), one head at a time,
 * shared by ref/ropeslr_forward.c, ref/ropeslr_backward.c and the tests.
 * Every per-head array is row-major double: x[i*cols + c]. */
#ifndef DITATTN_REF_ROPESLR_INTERNAL_H
#define DITATTN_REF_ROPESLR_INTERNAL_H

#include "ref.h"

/* Sizes of one head's problem. */
typedef struct dt_slr_shape {
  int64_t N, D, r; /* tokens, head dim, rank */
  int64_t block;   /* b */
  int64_t n;       /* ceil(N / b) blocks */
  int64_t K;       /* kept key blocks per query block, 1 <= K <= n */
} dt_slr_shape;

/* K from the policy (spec §1), 1 <= K <= n. params must be valid. */
int64_t dt_slr_resolve_topk(const ditattn_ropeslr_params *params, int64_t n);

/* Copies head (b, h) of an f32 view into x (N×D). */
void dt_slr_load_head(const ditattn_tensor *t, int64_t b, int64_t h, int64_t N, int64_t D,
                      double *x);

/* Block selection of one head (spec §2): pooled means pq, pk; scores pq_G·pk_C
 * (no scale); top-K by score desc, index asc; with force_own, block G replaces
 * the last (lowest-ranked) entry when not selected. sel: n×K. scratch: at
 * least 2·n·D + 2·n doubles. */
void dt_slr_select(const dt_slr_shape *s, const double *q, const double *k, int force_own,
                   double *scratch, int32_t *sel);

/* Candidate a ranks before b in the selection order: higher score, ties by
 * smaller index. */
static inline int dt_slr_ranks_before(double score_a, int64_t a, double score_b, int64_t b) {
  return score_a > score_b || (score_a == score_b && a < b);
}

/* One selection row by K rounds of "best not yet taken" over score[0..n):
 * O(n·K), plain and tie-exact (no sort whose comparator NaN scores could
 * break). Writes row[0..K); taken is n bytes of scratch. Returns 1 if block
 * G was selected. */
int dt_slr_select_rounds(const double *score, int64_t n, int64_t K, int64_t G, unsigned char *taken,
                         int32_t *row);

/* in_sel[C] = 1 for the blocks C of sel[G] (n entries); returns how many
 * distinct blocks are selected (n means an empty background). */
int64_t dt_slr_mark_selected(const dt_slr_shape *s, const int32_t *sel, int64_t G,
                             unsigned char *in_sel);

/* Sparse branch (spec §2): exact softmax of each query over the tokens of
 * its selected blocks. os: N×D, lse: N. */
void dt_slr_sparse(const dt_slr_shape *s, const int32_t *sel, double scale, const double *q,
                   const double *k, const double *v, double *os, double *lse);

/* Feature pre-activations and features of one head (spec §3):
 * u_i = projᵀ x_i + E^t[t_i] + E^y[y_i] + E^x[x_i], f_i = φ(u_i). proj is
 * the weights' A (queries) or Bk (keys). u, f: N×r. */
void dt_slr_features(const dt_slr_shape *s, const ditattn_tensor *proj,
                     const ditattn_ropeslr_weights *w, int64_t h, const int32_t *pos,
                     ditattn_slr_feature feature, const double *x, double *u, double *f);

/* φ applied to one r-vector, and its vector-Jacobian product:
 * du = J_φ(u)ᵀ df given f = φ(u). */
void dt_slr_phi(ditattn_slr_feature feature, int64_t r, const double *u, double *f);
void dt_slr_phi_backward(ditattn_slr_feature feature, int64_t r, const double *u, const double *f,
                         const double *df, double *du);

/* Low-rank branch (spec §3) by its definition, the O(N²·r) double sum over
 * background pairs. olr: N×D; den: N (Σ_bg f_i·g_j, 0 when the background
 * is empty; olr_i = 0 then, and also when den underflows to 0). */
void dt_slr_lowrank_direct(const dt_slr_shape *s, const int32_t *sel, const double *f,
                           const double *g, const double *v, double *olr, double *den);

/* The same branch through block factors S_C = Σ_{j∈C} g_j v_jᵀ, z_C = Σ g_j,
 * S_bg = S − Σ_{C∈sel[G]} S_C (the O(N·r·D) form fast backends use).
 * Allocates its factors; OUT_OF_MEMORY/OVERFLOW recorded in ctx. */
ditattn_status dt_slr_lowrank_factors(ditattn_context *ctx, const dt_slr_shape *s,
                                      const int32_t *sel, const double *f, const double *g,
                                      const double *v, double *olr, double *den);

/* Which low-rank formulation the forward uses. */
typedef enum dt_slr_lowrank_mode {
  DT_SLR_LOWRANK_DIRECT = 0,
  DT_SLR_LOWRANK_FACTORS = 1
} dt_slr_lowrank_mode;

/* The reference forward with a chosen low-rank formulation (the dispatch
 * entry uses DIRECT). */
ditattn_status dt_ref_ropeslr_forward_mode(ditattn_context *ctx, const dt_ropeslr_fwd *p,
                                           dt_slr_lowrank_mode mode);

/* malloc of count doubles with overflow check; NULL on failure. */
double *dt_slr_alloc_doubles(int64_t count);

/* One head's forward state, reused across heads: inputs as doubles, the
 * selection, both branches, features. extra: extra_nd N×D arrays followed by
 * extra_nr N×r arrays for the caller (the backward's gradients). */
typedef struct dt_slr_work {
  dt_slr_shape s;
  double *q, *k, *v;     /* N×D */
  double *os, *olr;      /* N×D: sparse and low-rank branch outputs */
  double *lse, *den;     /* N */
  double *u, *f;         /* N×r: query pre-activations and features */
  double *w, *g;         /* N×r: key pre-activations and features */
  double *scratch;       /* 2·n·D + 2·n */
  double *extra;         /* extra_nd·N·D + extra_nr·N·r */
  int32_t *sel;          /* n×K */
  unsigned char *in_sel; /* n */
} dt_slr_work;

ditattn_status dt_slr_work_alloc(ditattn_context *ctx, const dt_slr_shape *s, int64_t extra_nd,
                                 int64_t extra_nr, dt_slr_work *ws);
void dt_slr_work_free(dt_slr_work *ws);

/* Fills ws for head (b, h): load q, k, v, select, sparse branch, features,
 * low-rank branch (by `mode`). */
ditattn_status dt_slr_head_forward(ditattn_context *ctx, const ditattn_ropeslr_params *params,
                                   const ditattn_ropeslr_weights *weights, const int32_t *pos,
                                   const ditattn_tensor *q, const ditattn_tensor *k,
                                   const ditattn_tensor *v, int64_t b, int64_t h,
                                   dt_slr_lowrank_mode mode, dt_slr_work *ws);

#endif
