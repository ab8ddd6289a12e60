/* The C seam of the GPU RoPeSLR forward (spec ropeslr.md §2-4), beside
 * gpu_api.h: the host glue (ropeslr_ops_impl.h) carves every device array
 * below out of the backend's workspace and makes one launcher call. Arrays
 * are indexed by bh = b·H + h; doubles keep the low-rank factors' S − Σ S_C
 * cancellation as exact as ref/. */
#ifndef DITATTN_GPU_ROPESLR_API_H
#define DITATTN_GPU_ROPESLR_API_H

#include "gpu_api.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dt_gpu_ropeslr {
  int64_t B, H, N, D, r, b, n, K; /* n = ceil(N/b) blocks, 1 <= K <= n */
  float scale;
  int force_own, softmax_feature;
  const int32_t *pos;  /* N triples (t, y, x), device */
  double *pq64, *pk64; /* block means (bit-identical to ref/): q [BH][n][D], k [BH][D][n] */
  int32_t *sel;        /* [BH][n][K] rank order, own block forced last */
  double *scores;      /* selection scratch [select_rows][n] */
  int32_t *idx;        /* selection scratch [select_rows][n] */
  int64_t select_rows; /* rows of (bh, G) scored per launch */
  double *f, *g;       /* [BH][N][r] query / key features */
  double *SC, *Sbg;    /* [BH][n][r][D + 1]: block factors S_C | z_C, background S_bg | z_bg */
  double *S;           /* [BH][r][D + 1]: totals S | z */
  double *olr;         /* [BH][N][D] low-rank branch output */
  /* Query rows [q_lo, q_hi) are computed (out and lse row 0 is row q_lo),
   * query blocks [G_lo, G_lo + G_n) are selected: those the rows touch. */
  int64_t q_lo, q_hi, G_lo, G_n;
  /* Key blocks [C_lo, C_lo + C_n) get their factors and pooled k computed
   * (all of them in a whole call); keys_ready: SC and pk64 hold every
   * block's (dist/ exchanged them), so the forward computes no key
   * features, factors or pooled k. join_stream/join_event (non-NULL): the
   * forward makes its stream wait for join_stream before it reads k or v
   * rows (dist/'s gather copies still arriving there). */
  int64_t C_lo, C_n;
  int keys_ready;
  void *join_stream, *join_event;
} dt_gpu_ropeslr;

/* Whole forward: selection, sparse branch into out (+ lse, device, may be
 * NULL), low-rank branch, out += Wᵀ o_lr. weights: f32 device views. */
int DT_GPU_FN(launch_ropeslr_forward)(const dt_gpu_ropeslr *p, const ditattn_tensor *q,
                                      const ditattn_tensor *k, const ditattn_tensor *v,
                                      const ditattn_tensor *out,
                                      const ditattn_ropeslr_weights *weights, float *lse,
                                      void *stream);

/* Pooled k, key features and factors S_C | z_C of key blocks [C_lo,
 * C_lo + C_n) only, into p->pk64 and p->SC (a dist/ rank's share of the
 * key summary). */
int DT_GPU_FN(launch_ropeslr_factors)(const dt_gpu_ropeslr *p, const ditattn_tensor *k,
                                      const ditattn_tensor *v,
                                      const ditattn_ropeslr_weights *weights, void *stream);

/* 1 when the selection sorts each row in shared memory (no scores/idx
 * scratch: select_rows may be 0), 0 when it runs the warp passes. */
int DT_GPU_FN(ropeslr_select_sorts)(const dt_gpu_ropeslr *p);

#ifdef __cplusplus
}
#endif
#endif /* DITATTN_GPU_ROPESLR_API_H */
