/* CPU backend internals: threads, GEMM, the online-softmax tile kernel and
 * the per-operation entries. f32 only; every parallel loop gives each work
 * item to exactly one thread with a fixed inner order, so results do not
 * depend on the thread count. */
#ifndef DITATTN_CPU_INTERNAL_H
#define DITATTN_CPU_INTERNAL_H

#include "../../ref/ref.h"

#include <stdatomic.h>

#ifdef _OPENMP
#include <omp.h>
/* Needs a local `int dt_nt` (thread count) in scope. */
#define DT_OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(dynamic, 1) num_threads(dt_nt)")
static inline int dt_cpu_thread_id(void) { return omp_get_thread_num(); }
#else
#define DT_OMP_PARALLEL_FOR (void)dt_nt; /* serial build: keeps dt_nt used */
static inline int dt_cpu_thread_id(void) { return 0; }
#endif

/* Clones a function for AVX-512, AVX2 and baseline x86-64, picked at load
 * time (ifunc), so committed flags stay portable. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define DT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef DT_CLONES
#define DT_CLONES
#endif

/* Threads an entry uses: ctx->num_threads, or the OpenMP default when 0. */
int dt_cpu_num_threads(const ditattn_context *ctx);

/* BLAS threads are pinned to 1 while an entry runs (our own OpenMP threads
 * call it concurrently); the previous count is restored afterwards. */
int dt_cpu_blas_enter(void);
void dt_cpu_blas_leave(int saved);
/* Whether the tile kernels call BLAS for head dimension D (own kernels off,
 * or D not a multiple of 64). When not, entries leave OpenBLAS's thread count
 * alone: setting it wakes OpenBLAS's workers, whose spinning steals cores. */
int dt_cpu_tiles_use_blas(int64_t D);

/* C = alpha·op(A)·op(B) + beta·C, row-major; trans_* != 0 means transposed. */
void dt_cpu_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc);
/* Name of the GEMM in use ("openblas" or "own"). */
const char *dt_cpu_gemm_name(void);

/* Vector kernels (cpu_vec.c), compiled for several ISAs, picked at run time. */
/* x[i] = exp(x[i] + add[i] - sub) (add may be NULL); returns Σ x[i]. */
float dt_cpu_exp_rows(float *x, const float *add, int64_t n, float sub);
/* max over x[i] + add[i] (add may be NULL); -inf when n == 0. */
float dt_cpu_max_plus(const float *x, const float *add, int64_t n);
/* y[i] *= a */
void dt_cpu_scale(float *y, int64_t n, float a);
/* p[i] = exp(s[i]·c + add[i] − lse) (add may be NULL). */
void dt_cpu_exp_shift(float *p, const float *s, const float *add, int64_t n, float lse, float c);
/* ds[i] = c·p[i]·(dp[i] − delta) in place on dp. */
void dt_cpu_ds(float *dp, const float *p, int64_t n, float delta, float c);

/* Online-softmax state of a query tile: per-row running max and sum, and
 * the unnormalized output accumulator (rows × D, leading dimension D). */
typedef struct dt_cpu_softmax_state {
  float *row_max, *row_sum, *acc;
} dt_cpu_softmax_state;

void dt_cpu_state_reset(const dt_cpu_softmax_state *st, int64_t rows, int64_t D);

/* The hot kernel: attends `rows` queries (q: rows × D, already multiplied
 * by the softmax scale) to `n` keys (k, v: n rows of D, leading dimensions k_ld, v_ld) whose logits
 * get + lnw[j] (NULL: + 0), and folds the result into st (rows starting at st row 0). scratch: rows
 * × n floats. Keys are processed in the given order. */
void dt_cpu_attend_tile(int64_t rows, int64_t n, int64_t D, const float *q, const float *k,
                        int64_t k_ld, const float *v, int64_t v_ld, const float *lnw,
                        float *scratch, const dt_cpu_softmax_state *st);
/* The same with keys already packed (dt_cpu_pack_keys); own kernels only. */
void dt_cpu_attend_tile_packed(int64_t rows, int64_t n, int64_t D, const float *q, const float *kp,
                               const float *v, int64_t v_ld, const float *lnw, float *scratch,
                               const dt_cpu_softmax_state *st);
/* Largest key chunk the callers hand to dt_cpu_attend_tile at once. */
#define DT_CPU_KEY_CHUNK 512
/* Floats of scratch dt_cpu_attend_tile needs for up to `rows` queries:
 * scores (rows × chunk) and the chunk's keys packed for the own kernel. */
#define DT_CPU_ATTEND_SCRATCH(rows, D)                                                             \
  ((size_t)(rows)*DT_CPU_KEY_CHUNK + (size_t)(DT_CPU_KEY_CHUNK + 16) * (size_t)(D))

/* Own forward kernels (cpu_microkernel.c). kp: keys packed in panels of 16. */
void dt_cpu_pack_keys(int64_t n, int64_t D, const float *k, int64_t k_ld, float *kp);
/* The same from scattered key rows: row j at rows[j]. */
void dt_cpu_pack_key_rows(int64_t n, int64_t D, const float *const *rows, float *kp);
void dt_cpu_qk_packed(int64_t m, int64_t n, int64_t D, const float *q, int64_t ldq, const float *kp,
                      float *s, int64_t lds);
/* o[m × D] += P[m × n] · v[n × D] with P(r, j) = pm[r·rs + j·cs] (rs = ld,
 * cs = 1: P; rs = 1, cs = ld: a transposed P); D a multiple of 64. */
void dt_cpu_pv_own(int64_t m, int64_t n, int64_t D, const float *pm, int64_t rs, int64_t cs,
                   const float *v, int64_t ldv, float *o, int64_t ldo);
/* o[m × D] += P·v (trans_p = 0) or Pᵀ·v (trans_p = 1), P stored row-major
 * with leading dimension ldp: the own kernel when D % 64 == 0, else GEMM. */
void dt_cpu_acc_pv(int trans_p, int64_t m, int64_t n, int64_t D, const float *pm, int64_t ldp,
                   const float *v, int64_t ldv, float *o, int64_t ldo);
/* Which GEMMs the forward tile uses: 1 = own kernels, 0 = dt_cpu_gemm.
 * Set once at context creation from DITATTN_CPU_KERNEL=own|blas. */
extern _Atomic int dt_cpu_use_own_kernel; /* atomic: contexts may be created concurrently */
/* Query tile rows for dense attention. */
#define DT_CPU_QUERY_TILE 256

/* Writes out rows (normalized acc) and lse from st. */
void dt_cpu_state_finish(const dt_cpu_softmax_state *st, int64_t rows, int64_t D, float *out,
                         int64_t out_ld, float *lse);

/* Backward tile: given rows queries (q raw: the scale is applied here),
 * their dO, lse and delta = o·dO, and n keys (k, v, lnw), computes
 * p (rows × n) and ds (rows × n, = scale · p ⊙ (dO vᵀ − delta): the scale of
 * dq = scale·dS·K and dk = scale·dSᵀ·Q folded in). kpack: scratch of
 * (n + 16)·D floats for the own kernel. */
void dt_cpu_backward_tile(int64_t rows, int64_t n, int64_t D, float scale, const float *q,
                          const float *dout, const float *lse, const float *delta, const float *k,
                          int64_t k_ld, const float *v, int64_t v_ld, const float *lnw, float *p,
                          float *ds, float *kpack);

/* Copies rows [n0, n0+rows) of (b, h) into dst (rows × D, contiguous), times mul. */
void dt_cpu_load_rows(const ditattn_tensor *t, int64_t b, int64_t h, int64_t n0, int64_t rows,
                      float mul, float *dst);
/* Writes dst rows (rows × D contiguous) into t at (b, h, n0 ...). */
void dt_cpu_store_rows(ditattn_tensor *t, int64_t b, int64_t h, int64_t n0, int64_t rows,
                       const float *src);

#define TRY_CPU(expr)                                                                              \
  do {                                                                                             \
    ditattn_status try_status_ = (expr);                                                           \
    if (try_status_ != DITATTN_OK) return try_status_;                                             \
  } while (0)

/* Entries. */
ditattn_status dt_cpu_dense_forward(ditattn_context *ctx, const dt_dense_fwd *p);
ditattn_status dt_cpu_dense_backward(ditattn_context *ctx, const dt_dense_bwd *p);
ditattn_status dt_cpu_llsa_forward(ditattn_context *ctx, const dt_llsa_fwd *p);
ditattn_status dt_cpu_llsa_backward(ditattn_context *ctx, const dt_llsa_bwd *p);
ditattn_status dt_cpu_rope(ditattn_context *ctx, const dt_rope *p);
ditattn_status dt_cpu_order(ditattn_context *ctx, const dt_order *p);
ditattn_status dt_cpu_pool(ditattn_context *ctx, const dt_pool *p);
ditattn_status dt_cpu_lse_merge(ditattn_context *ctx, const dt_lse_merge *p);
/* RoPeSLR with a parallel block-factor low-rank branch (cpu_ropeslr_*.c). */
ditattn_status dt_cpu_slr_forward(ditattn_context *ctx, const dt_ropeslr_fwd *p);
ditattn_status dt_cpu_slr_backward(ditattn_context *ctx, const dt_ropeslr_bwd *p);

/* Thread scratch holds a few tiles of D values per thread; bounding D keeps
 * those byte counts far from size_t overflow (real head dims are <= 512). */
#define DT_CPU_MAX_D (INT64_C(1) << 32)
static inline ditattn_status dt_cpu_check_dim(ditattn_context *ctx, int64_t D, const char *what) {
  if (D > DT_CPU_MAX_D)
    return dt_fail(ctx, DITATTN_ERR_OVERFLOW, "%s (cpu): D = %lld is too large for thread buffers",
                   what, (long long)D);
  return DITATTN_OK;
}

#endif
