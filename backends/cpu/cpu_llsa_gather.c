/* Key gathers shared by the CPU LLSA forward and backward: pooled
 * candidates and fine tokens of the selection, copied into contiguous
 * tiles for the kernels. */
#include "cpu_llsa.h"

#include <string.h>

/* Copies pooled candidates cand_l (children of the parent's selection
 * row) into gk, gv, gw; returns their count. */
int64_t dt_cpu_llsa_gather_pooled(const dt_cpu_llsa_head *h, int l, int64_t gl, float *gk,
                                  float *gv, float *gw) {
  const dt_llsa_geom *g = &h->g;
  const int64_t D = g->D, nl = g->n[l];
  const int64_t *parent = h->sel[l + 1] + (gl / g->b) * g->width[l + 1];
  int64_t n = 0;
  for (int64_t r = 0; r < g->width[l + 1] && parent[r] >= 0; r++) {
    const int64_t c0 = parent[r] * g->b, cnt = c0 + g->b <= nl ? g->b : nl - c0;
    memcpy(gk + n * D, h->pk[l] + c0 * D, (size_t)(cnt * D) * sizeof(float));
    memcpy(gv + n * D, h->pv[l] + c0 * D, (size_t)(cnt * D) * sizeof(float));
    memcpy(gw + n, h->lnw[l] + c0, (size_t)cnt * sizeof(float));
    n += cnt;
  }
  return n;
}

/* Gathers the fine tokens of the blocks in sel_1[g1]: values into gv, keys
 * into gk (rows) or, with the own kernels (krow != NULL), packed into gk
 * straight from the tensor. */
int64_t dt_cpu_llsa_gather_fine(const dt_cpu_llsa_head *h, const ditattn_tensor *k,
                                const ditattn_tensor *v, int64_t b, int64_t hi, int64_t g1,
                                float *gk, float *gv, const float **krow) {
  const dt_llsa_geom *g = &h->g;
  const int64_t D = g->D;
  const int64_t *row = h->sel[1] + g1 * g->width[1];
  int64_t n = 0;
  for (int64_t r = 0; r < g->width[1] && row[r] >= 0; r++) {
    const int64_t start = dt_llsa_block_start(g, 1, row[r]);
    const int64_t cnt = dt_llsa_block_count(g, 1, row[r]);
    if (krow)
      for (int64_t j = 0; j < cnt; j++) krow[n + j] = dt_f32_at(k, b, hi, start + j, 0);
    else
      dt_cpu_load_rows(k, b, hi, start, cnt, 1.0f, gk + n * D);
    dt_cpu_load_rows(v, b, hi, start, cnt, 1.0f, gv + n * D);
    n += cnt;
  }
  if (krow) dt_cpu_pack_key_rows(n, D, krow, gk);
  return n;
}
