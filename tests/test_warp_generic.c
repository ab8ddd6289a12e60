/* Warp-width genericity of the GPU kernels (issue 6): the lane-exchange
 * algorithms of backends/gpu/warp_algos.h run here on emulated warps of 32
 * (NVIDIA) and 64 (AMD CDNA) lanes, with the kernels' exact schedule (xor
 * butterfly from width/2 down to 1, every lane exchanging at once), and must
 * give the same results as plain sequential code. */
#include "test_util.h"

#include "../backends/gpu/warp_algos.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WIDTH 64
static const int widths[] = {4, 32, 64}; /* 4: the mma kernel's quad reductions */

/* ---- emulated butterflies (one step: all lanes read, then all write) ---- */
static void butterfly_max(float *v, int width) {
  float nv[MAX_WIDTH] = {0};
  for (int off = width / 2; off > 0; off >>= 1) {
    for (int l = 0; l < width; l++) nv[l] = dt_wa_max(v[l], v[l ^ off]);
    memcpy(v, nv, sizeof(float) * (size_t)width);
  }
}
static void butterfly_sum(float *v, int width) {
  float nv[MAX_WIDTH] = {0};
  for (int off = width / 2; off > 0; off >>= 1) {
    for (int l = 0; l < width; l++) nv[l] = v[l] + v[l ^ off];
    memcpy(v, nv, sizeof(float) * (size_t)width);
  }
}
static void butterfly_best(double *s, int *i, int width) {
  double ns[MAX_WIDTH] = {0};
  int ni[MAX_WIDTH] = {0};
  for (int off = width / 2; off > 0; off >>= 1) {
    for (int l = 0; l < width; l++) {
      ns[l] = s[l];
      ni[l] = i[l];
      dt_wa_best_of(&ns[l], &ni[l], s[l ^ off], i[l ^ off]);
    }
    memcpy(s, ns, sizeof(double) * (size_t)width);
    memcpy(i, ni, sizeof(int) * (size_t)width);
  }
}

static void butterflies_reduce_to_every_lane(void **state) {
  (void)state;
  tu_srand(tu_seed());
  for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
    const int width = widths[w];
    for (int trial = 0; trial < 200; trial++) {
      float mx[MAX_WIDTH] = {0}, sm[MAX_WIDTH] = {0};
      float want_max = -INFINITY;
      double want_sum = 0.0;
      for (int l = 0; l < width; l++) {
        mx[l] = sm[l] = (float)tu_uniform(-4.0, 4.0);
        if (trial % 7 == 0 && l % 3 == 0) mx[l] = -INFINITY; /* masked lanes */
        want_max = dt_wa_max(want_max, mx[l]);
        want_sum += sm[l];
      }
      butterfly_max(mx, width);
      butterfly_sum(sm, width);
      for (int l = 0; l < width; l++) {
        assert_true(mx[l] == want_max);
        /* Every lane holds the bit-identical total (xor partners add a+b and b+a). */
        assert_true(sm[l] == sm[0]);
      }
      if (fabs(sm[0] - want_sum) > 1e-5 * (1.0 + fabs(want_sum)))
        fail_msg("width %d: butterfly sum %g, sequential %g", width, (double)sm[0], want_sum);
    }
  }
}

/* ---- selection: K passes of ranked argmax (select_kernel's loop) ---- */
typedef struct cand {
  double s;
  int i;
} cand;
static int cmp_rank(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (dt_wa_ranks_before(x->s, x->i, y->s, y->i)) return -1;
  if (dt_wa_ranks_before(y->s, y->i, x->s, x->i)) return 1;
  return 0;
}

/* What select_kernel computes for one row, with `width` lanes. */
static void warp_topk(const double *scores, const int *idx, int n, int K, int width, int *out) {
  double prev_s = 0.0;
  int prev_i = -1;
  for (int r = 0; r < K; r++) {
    double bs[MAX_WIDTH] = {0};
    int bi[MAX_WIDTH] = {0}; /* width >= 1 fills them; -O2 cannot see that */
    for (int lane = 0; lane < width; lane++)
      dt_wa_lane_scan(scores, idx, n, lane, width, prev_s, prev_i, &bs[lane], &bi[lane]);
    butterfly_best(bs, bi, width);
    for (int lane = 1; lane < width; lane++) assert_int_equal(bi[lane], bi[0]);
    out[r] = bi[0] == DT_WA_NO_INDEX ? -1 : bi[0];
    if (bi[0] == DT_WA_NO_INDEX) {
      for (int rr = r + 1; rr < K; rr++) out[rr] = -1;
      return;
    }
    prev_s = bs[0];
    prev_i = bi[0];
  }
}

static void topk_passes_match_a_sort_for_both_widths(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  tu_srand(seed);
  enum { MAXN = 300, MAXK = 12 };
  double scores[MAXN];
  int idx[MAXN], got[MAXK], want[MAXK];
  cand c[MAXN];
  for (int trial = 0; trial < 400; trial++) {
    const int n = (int)tu_rand_int(1, MAXN), K = (int)tu_rand_int(1, MAXK);
    int valid = 0;
    for (int j = 0; j < n; j++) {
      /* Few distinct values force ties; some NaN; some slots are not candidates. */
      scores[j] = trial % 3 == 0 ? (double)tu_rand_int(-3, 3) : tu_uniform(-1.0, 1.0);
      if (tu_rand_int(0, 40) == 0) scores[j] = NAN;
      idx[j] = tu_rand_int(0, 9) == 0 ? DT_WA_NO_INDEX : (int)(1000 - 3 * j);
      if (idx[j] != DT_WA_NO_INDEX) c[valid++] = (cand){scores[j], idx[j]};
    }
    qsort(c, (size_t)valid, sizeof c[0], cmp_rank);
    for (int r = 0; r < K; r++) want[r] = r < valid ? c[r].i : -1;
    for (size_t w = 1; w < sizeof widths / sizeof widths[0]; w++) {
      warp_topk(scores, idx, n, K, widths[w], got);
      for (int r = 0; r < K; r++)
        if (got[r] != want[r])
          fail_msg("width %d n %d K %d rank %d: got %d want %d (seed %llu trial %d)", widths[w], n,
                   K, r, got[r], want[r], (unsigned long long)seed, trial);
    }
  }
}

static void rank_order_is_total_and_nan_last(void **state) {
  (void)state;
  assert_true(dt_wa_ranks_before(2.0, 5, 1.0, 1));
  assert_true(dt_wa_ranks_before(1.0, 1, 1.0, 2)); /* tie: smaller index first */
  assert_false(dt_wa_ranks_before(1.0, 2, 1.0, 1));
  assert_true(dt_wa_ranks_before(-1e300, 9, NAN, 0)); /* NaN after every number */
  assert_true(dt_wa_ranks_before(NAN, 0, NAN, 1));
  assert_true(dt_wa_ranks_before(-INFINITY, 3, 0.0, DT_WA_NO_INDEX));
  assert_false(dt_wa_ranks_before(0.0, DT_WA_NO_INDEX, -INFINITY, 3));
}

/* ---- online softmax over key tiles (attend_kernel's row update) ---- */
static void online_softmax_matches_direct_for_both_widths(void **state) {
  (void)state;
  const uint64_t seed = tu_seed();
  tu_srand(seed);
  enum { MAXM = 400 };
  static const int tiles[] = {64, 32, 16};
  float z[MAXM], val[MAXM];
  for (int trial = 0; trial < 200; trial++) {
    const int M = (int)tu_rand_int(1, MAXM);
    for (int j = 0; j < M; j++) {
      z[j] = (float)tu_uniform(-20.0, 20.0);
      val[j] = (float)tu_uniform(-1.0, 1.0);
      if (tu_rand_int(0, 5) == 0) z[j] = -INFINITY; /* masked key */
    }
    if (trial % 4 == 0) /* a fully masked first tile must leave the state empty */
      for (int j = 0; j < M && j < 16; j++) z[j] = -INFINITY;
    double mref = -INFINITY;
    for (int j = 0; j < M; j++) mref = z[j] > mref ? z[j] : mref;
    double lref = 0.0, oref = 0.0;
    for (int j = 0; j < M; j++)
      if (z[j] != -INFINITY) {
        lref += exp(z[j] - mref);
        oref += exp(z[j] - mref) * val[j];
      }
    for (size_t w = 1; w < sizeof widths / sizeof widths[0]; w++) {
      const int width = widths[w];
      for (size_t t = 0; t < sizeof tiles / sizeof tiles[0]; t++) {
        const int KT = tiles[t];
        float m = -INFINITY, l = 0.0f, o = 0.0f;
        float lane_m[MAX_WIDTH] = {0},
              lane_l[MAX_WIDTH] = {0}; /* per-lane states for the merge check */
        for (int k0 = 0; k0 < M; k0 += KT) {
          float part[MAX_WIDTH] = {0}, p[64] = {0};
          for (int lane = 0; lane < width; lane++) {
            part[lane] = -INFINITY;
            for (int c = lane; c < KT; c += width)
              part[lane] = dt_wa_max(part[lane], k0 + c < M ? z[k0 + c] : -INFINITY);
          }
          butterfly_max(part, width);
          const float m_new = dt_wa_max(m, part[0]);
          for (int lane = 0; lane < width; lane++) part[lane] = 0.0f;
          for (int c = 0; c < KT; c++) {
            p[c] = dt_wa_prob(k0 + c < M ? z[k0 + c] : -INFINITY, m_new);
            part[c % width] += p[c];
          }
          butterfly_sum(part, width);
          const float alpha = dt_wa_rescale(m, m_new);
          l = l * alpha + part[0];
          o = o * alpha;
          for (int c = 0; c < KT && k0 + c < M; c++) o += p[c] * val[k0 + c];
          m = m_new;
        }
        /* The same logits as per-lane states merged by dt_wa_softmax_merge. */
        for (int lane = 0; lane < width; lane++) {
          lane_m[lane] = -INFINITY;
          lane_l[lane] = 0.0f;
        }
        for (int j = 0; j < M; j++)
          dt_wa_softmax_merge(&lane_m[j % width], &lane_l[j % width], z[j],
                              z[j] == -INFINITY ? 0.0f : 1.0f);
        for (int off = width / 2; off > 0; off >>= 1) {
          float nm[MAX_WIDTH] = {0}, nl[MAX_WIDTH] = {0};
          for (int lane = 0; lane < width; lane++) {
            nm[lane] = lane_m[lane];
            nl[lane] = lane_l[lane];
            dt_wa_softmax_merge(&nm[lane], &nl[lane], lane_m[lane ^ off], lane_l[lane ^ off]);
          }
          memcpy(lane_m, nm, sizeof nm);
          memcpy(lane_l, nl, sizeof nl);
        }
        if (mref == -INFINITY) { /* every key masked: nothing accumulates */
          assert_true(l == 0.0f && o == 0.0f && lane_l[0] == 0.0f);
          continue;
        }
        const double lse = m + log(l), lse_ref = mref + log(lref);
        const double lse_merged = lane_m[0] + log(lane_l[0]);
        if (fabs(lse - lse_ref) > 1e-5 * (1 + fabs(lse_ref)) || fabs(o / l - oref / lref) > 1e-5 ||
            fabs(lse_merged - lse_ref) > 1e-5 * (1 + fabs(lse_ref)))
          fail_msg("width %d tile %d M %d: lse %g merged %g ref %g, o %g ref %g (seed %llu)", width,
                   KT, M, lse, lse_merged, lse_ref, o / l, oref / lref, (unsigned long long)seed);
      }
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(butterflies_reduce_to_every_lane),
      cmocka_unit_test(rank_order_is_total_and_nan_last),
      cmocka_unit_test(topk_passes_match_a_sort_for_both_widths),
      cmocka_unit_test(online_softmax_matches_direct_for_both_widths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
