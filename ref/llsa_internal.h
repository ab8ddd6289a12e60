/* LLSA building blocks (spec: /work/shared/spec/llsa.md, "§n" below).
 *
 * The reference forward and backward are built from these pieces, and other
 * parts of the library (the CPU backend, the MPI layer, the verifier) may
 * reuse them so that pooling, selection and the key set are defined once:
 *   geometry      dt_llsa_geom_init, dt_llsa_block_start, dt_llsa_block_count
 *   pooling (§1)  dt_llsa_pool_mean
 *   top-K (§2)    dt_llsa_rank_before, dt_llsa_topk, dt_llsa_candidates, dt_llsa_select,
 *                 dt_llsa_write_selection
 *   keys (§3)     dt_llsa_keys, dt_llsa_gather
 *   one head      dt_llsa_head_alloc / _prepare / _free (pool q, k, v + select)
 * Everything works on one (batch, head) at a time, in double.
 *
 * Conventions: levels are 1-based (l = 1 .. L, index 0 means "tokens"), so
 * arrays indexed by level have DITATTN_LLSA_MAX_LEVELS + 1 entries. A
 * selection row of level l has g->width[l] entries: the selected block
 * indices in rank order, then -1 where fewer candidates exist. */
#ifndef DITATTN_REF_LLSA_INTERNAL_H
#define DITATTN_REF_LLSA_INTERNAL_H

#include "ref.h"

#define DT_LLSA_LEVEL_SLOTS (DITATTN_LLSA_MAX_LEVELS + 1)

/* Geometry of one LLSA problem, the same for every (batch, head). */
typedef struct dt_llsa_geom {
  int64_t N, D, b;
  int L;
  int64_t span[DT_LLSA_LEVEL_SLOTS];  /* tokens per full level-l block: min(b^l, N); span[0] = 1 */
  int64_t n[DT_LLSA_LEVEL_SLOTS];     /* n_l = ceil(N / b^l) blocks; n[0] = N */
  int64_t topk[DT_LLSA_LEVEL_SLOTS];  /* K_l as given (topk[0] unused) */
  int64_t ncand[DT_LLSA_LEVEL_SLOTS]; /* upper bound of |cand_l[g]| (n_L at level L) */
  int64_t width[DT_LLSA_LEVEL_SLOTS]; /* entries per selection row: min(K_l, ncand[l]) */
  int64_t max_cand;                   /* max over l of ncand[l] */
  int64_t max_keys;                   /* upper bound of keys per query (§3) */
} dt_llsa_geom;

/* Fills g for N tokens of dimension D. params must be valid (API-checked);
 * every quantity is bounded by N + sum n_l, so nothing overflows. */
void dt_llsa_geom_init(const ditattn_llsa_params *params, int64_t N, int64_t D, dt_llsa_geom *g);
/* First token of level-l block c, and cnt_l[c] (its real token count, §1). */
int64_t dt_llsa_block_start(const dt_llsa_geom *g, int l, int64_t c);
int64_t dt_llsa_block_count(const dt_llsa_geom *g, int l, int64_t c);

/* §1: y[c·D + d] = exact mean of x[bi, hi, t, d] over the tokens t of level-l
 * block c, for every c < n_l (accumulated in double from the original tokens). */
void dt_llsa_pool_mean(const dt_llsa_geom *g, const ditattn_tensor *x, int64_t bi, int64_t hi,
                       int l, double *y);

/* A candidate block and its selection score. */
typedef struct dt_llsa_scored {
  double score;
  int64_t index;
} dt_llsa_scored;

/* The rank order of §2: 1 if a ranks before b (higher score, or equal score
 * and smaller index). A NaN score ranks after every number (a choice: it
 * keeps the order total, so selections stay deterministic). */
int dt_llsa_rank_before(const dt_llsa_scored *a, const dt_llsa_scored *b);
/* Sorts items[0..n) into rank order; returns min(K, n), the number selected. */
int64_t dt_llsa_topk(dt_llsa_scored *items, int64_t n, int64_t K);

/* cand_l[gq] for level-l query block gq (§2): all C < n_L at l = L, else the
 * children of the parent's selection row sel[l+1][gq / b] (parent order, then
 * t). Writes at most g->ncand[l] indices to cand; returns how many. */
int64_t dt_llsa_candidates(const dt_llsa_geom *g, const int64_t *const *sel, int l, int64_t gq,
                           int64_t *cand);

/* §2 for one (batch, head): pq[l], pk[l] are the level-l pooled q and k
 * (n_l × D, row-major); fills every sel[l] (n_l × width[l]). Scores carry no
 * softmax scale. Scratch: cand (max_cand int64), scored (max_cand entries). */
void dt_llsa_select(const dt_llsa_geom *g, const double *const *pq, const double *const *pk,
                    int64_t *const *sel, int64_t *cand, dt_llsa_scored *scored);
/* Copies the selection rows sel[l] of one (batch, head) bh into the caller's
 * int32 arrays out->sel[l − 1] (levels whose array is NULL are skipped):
 * topk[l] entries per query block, -1 past the width[l] selected ones. */
void dt_llsa_write_selection(const dt_llsa_geom *g, const int64_t *const *sel,
                             const ditattn_llsa_selection *out, int64_t bh);

/* One key of a query's key list (§3): level 0 is fine token `index`, level
 * l >= 1 is the pooled token `index` of level l; log_w = ln w. */
typedef struct dt_llsa_key {
  int level;
  int64_t index;
  double log_w;
} dt_llsa_key;

/* The key list shared by all queries of level-1 block g1 (§3): fine tokens
 * of sel[1][g1], pooled tokens of cand_l[g1 / b^(l-1)] for l = 1 .. L−1, and
 * all level-L pooled tokens, in that order. Writes at most g->max_keys
 * entries; cand is scratch of g->max_cand entries. Returns the count. */
int64_t dt_llsa_keys(const dt_llsa_geom *g, const int64_t *const *sel, int64_t g1,
                     dt_llsa_key *keys, int64_t *cand);

/* Everything one (batch, head) needs: pooled q, k, v per level, the selection
 * rows and scratch for selection. */
typedef struct dt_llsa_head {
  double *pq[DT_LLSA_LEVEL_SLOTS], *pk[DT_LLSA_LEVEL_SLOTS], *pv[DT_LLSA_LEVEL_SLOTS];
  int64_t *sel[DT_LLSA_LEVEL_SLOTS];
  int64_t *cand;          /* max_cand entries */
  dt_llsa_scored *scored; /* max_cand entries */
} dt_llsa_head;

/* dt_malloc of rows × cols elements of `size` bytes; NULL on overflow or OOM. */
static inline void *dt_llsa_alloc(int64_t rows, int64_t cols, size_t size) {
  size_t elems, bytes;
  if (rows < 0 || cols < 0 || !dt_mul_size((size_t)rows, (size_t)cols, &elems) ||
      !dt_mul_size(elems, size, &bytes))
    return NULL;
  return dt_malloc(bytes);
}

/* Allocates h for geometry g (dt_malloc; OUT_OF_MEMORY via dt_fail, with
 * nothing left allocated). */
ditattn_status dt_llsa_head_alloc(ditattn_context *ctx, const dt_llsa_geom *g, dt_llsa_head *h);
void dt_llsa_head_free(dt_llsa_head *h);
/* Pools q, k, v of (bi, hi) at every level and computes the selection. */
void dt_llsa_head_prepare(const dt_llsa_geom *g, dt_llsa_head *h, const ditattn_tensor *q,
                          const ditattn_tensor *k, const ditattn_tensor *v, int64_t bi, int64_t hi);

/* Copies the key vectors and values of keys[0..nk) into kmat, vmat (nk × D
 * doubles, row-major): fine tokens from k, v at (bi, hi), pooled tokens from h. */
void dt_llsa_gather(const dt_llsa_geom *g, const dt_llsa_head *h, const ditattn_tensor *k,
                    const ditattn_tensor *v, int64_t bi, int64_t hi, const dt_llsa_key *keys,
                    int64_t nk, double *kmat, double *vmat);

#endif
