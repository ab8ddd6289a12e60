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

#endif
