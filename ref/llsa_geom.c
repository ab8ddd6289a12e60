/* LLSA geometry: block spans, block counts and the sizes that bound the
 * selection rows and key lists (spec §1-§3). */
#include "llsa_internal.h"

/* a·b capped at cap (a, b, cap >= 0), without overflow. */
static int64_t mul_capped(int64_t a, int64_t b, int64_t cap) {
  if (a != 0 && b > cap / a) return cap;
  return a * b < cap ? a * b : cap;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

void dt_llsa_geom_init(const ditattn_llsa_params *params, int64_t N, int64_t D, dt_llsa_geom *g) {
  g->N = N;
  g->D = D;
  g->b = params->block;
  g->L = params->levels;
  g->span[0] = 1;
  g->n[0] = N;
  g->topk[0] = 0;
  g->ncand[0] = 0;
  g->width[0] = 0;
  for (int l = 1; l <= g->L; l++) {
    /* A block wider than N behaves like one of exactly N tokens. */
    g->span[l] = mul_capped(g->span[l - 1], g->b, N);
    g->n[l] = N / g->span[l] + (N % g->span[l] != 0);
    g->topk[l] = params->topk[l - 1];
  }
  /* Coarsest level is dense; each finer level chooses among the children of
   * its parent's selection, at most width[l+1]·b of them and never more than n_l. */
  g->max_cand = 0;
  for (int l = g->L; l >= 1; l--) {
    g->ncand[l] = l == g->L ? g->n[l] : mul_capped(g->width[l + 1], g->b, g->n[l]);
    g->width[l] = min64(g->topk[l], g->ncand[l]);
    if (g->ncand[l] > g->max_cand) g->max_cand = g->ncand[l];
  }
  /* §3: fine tokens of width[1] level-1 blocks, plus every candidate pooled
   * token of levels 1 .. L (level L: all of them). */
  g->max_keys = mul_capped(g->width[1], g->span[1], N);
  for (int l = 1; l <= g->L; l++) g->max_keys += g->ncand[l];
}

int64_t dt_llsa_block_start(const dt_llsa_geom *g, int l, int64_t c) { return c * g->span[l]; }

int64_t dt_llsa_block_count(const dt_llsa_geom *g, int l, int64_t c) {
  return min64(g->span[l], g->N - dt_llsa_block_start(g, l, c));
}
