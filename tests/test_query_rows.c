/* Query-row ranges (dt_llsa_fwd.q_row0, dt_ropeslr_fwd.q_row0) on the
 * reference backend: a call whose out holds rows [q_row0, q_row0 + M) of the
 * N queries must give, bit for bit, those rows of the full public-API call
 * (same code, same order of operations). Ranges start and end mid-block,
 * cover single rows, whole blocks and the full sequence. */
#include "test_ropeslr_fixture.h"

#include "backends/backend.h"
#include "backends/validate.h" /* dt_raster_positions, dt_resolve_scale */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Extra floats past the B·H·M lse entries: a ranged call must leave them poison. */
#define LSE_GUARD 7

typedef struct row_range {
  int64_t row0, M;
} row_range;

/* Ranges of N rows around blocks of `block` tokens: first row, last row,
 * starts and ends mid-block, whole first block, the full range, a random
 * one. Returns how many were written to r (at most 8). */
static int ranges_for(int64_t N, int64_t block, row_range *r) {
  int n = 0;
  r[n++] = (row_range){0, 1};
  r[n++] = (row_range){N - 1, 1};
  r[n++] = (row_range){0, N};
  if (N > block) r[n++] = (row_range){0, block};
  /* Starts mid-block, ends mid-block (or at N). */
  const int64_t a = block / 2 > 0 ? block / 2 : 1;
  if (a < N) {
    const int64_t end = a + block + 1 < N ? a + block + 1 : N;
    r[n++] = (row_range){a, end - a};
    r[n++] = (row_range){a, N - a}; /* to the (possibly partial) last block */
  }
  const int64_t row0 = tu_rand_int(0, N - 1);
  r[n++] = (row_range){row0, tu_rand_int(1, N - row0)};
  return n;
}

/* Bitwise equality of two floats (NaN poison never equals a computed value
 * unless the same bits were written). */
static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Rows [row0, row0 + M) of the full out/lse against the ranged ones. */
static void expect_rows_equal(const char *what, const char *line, const tu_tensor *full,
                              const float *full_lse, const tu_tensor *part, const float *part_lse,
                              int64_t B, int64_t H, int64_t N, int64_t D, row_range rg) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < rg.M; i++) {
        for (int64_t d = 0; d < D; d++)
          if (!same_bits(*tu_at(&part->t, b, h, i, d), *tu_at(&full->t, b, h, rg.row0 + i, d)))
            fail_msg("%s: out (b=%lld h=%lld row %lld d=%lld) = %a, full call %a; row0=%lld "
                     "M=%lld [%s]",
                     what, (long long)b, (long long)h, (long long)(rg.row0 + i), (long long)d,
                     (double)*tu_at(&part->t, b, h, i, d),
                     (double)*tu_at(&full->t, b, h, rg.row0 + i, d), (long long)rg.row0,
                     (long long)rg.M, line);
        const float got = part_lse[(b * H + h) * rg.M + i];
        const float want = full_lse[(b * H + h) * N + rg.row0 + i];
        if (!same_bits(got, want))
          fail_msg("%s: lse (b=%lld h=%lld row %lld) = %a, full call %a; row0=%lld M=%lld [%s]",
                   what, (long long)b, (long long)h, (long long)(rg.row0 + i), (double)got,
                   (double)want, (long long)rg.row0, (long long)rg.M, line);
      }
  const size_t count = (size_t)(B * H * rg.M);
  for (size_t e = count; e < count + LSE_GUARD; e++)
    if (!isnan(part_lse[e]))
      fail_msg("%s: lse written past its B*H*M = %zu entries; row0=%lld M=%lld [%s]", what, count,
               (long long)rg.row0, (long long)rg.M, line);
}

static float *lse_new(size_t count) {
  float *lse = malloc((count + LSE_GUARD) * sizeof(float));
  assert_non_null(lse);
  tu_poison_floats(lse, count + LSE_GUARD);
  return lse;
}

/* ---------------------------------------------------------------- LLSA */
typedef struct llsa_shape {
  int64_t B, H, N, D, block;
  int levels;
  int64_t topk[3];
} llsa_shape;

static void llsa_ranges_match_full_call(void **state) {
  (void)state;
  const llsa_shape shapes[] = {
      {1, 1, 8, 1, 2, 1, {1}},         {2, 2, 37, 4, 4, 1, {2}},
      {1, 3, 50, 5, 3, 2, {2, 3}},     {2, 1, 61, 8, 4, 2, {1, 2}},
      {1, 2, 70, 3, 2, 3, {2, 2, 3}},  {1, 1, 29, 6, 3, 3, {1, 1, 1}},
      {1, 1, 100, 4, 5, 3, {3, 2, 2}}, {2, 2, 16, 2, 4, 2, {8, 8}},
      {1, 1, 3, 2, 4, 2, {1, 1}},
  };
  ditattn_context *ctx = tu_context_new(DITATTN_BACKEND_REF, 0);
  for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
    const llsa_shape *s = &shapes[c];
    const uint64_t seed = tu_seed() + (uint64_t)c;
    tu_srand(seed);
    const int pad = (int)tu_rand_int(0, 2), bnhd = (int)tu_rand_int(0, 1);
    char line[256];
    snprintf(line, sizeof line,
             "B=%lld H=%lld N=%lld D=%lld block=%lld L=%d topk=%lld,%lld,%lld pad=%d bnhd=%d "
             "seed=%llu",
             (long long)s->B, (long long)s->H, (long long)s->N, (long long)s->D,
             (long long)s->block, s->levels, (long long)s->topk[0], (long long)s->topk[1],
             (long long)s->topk[2], pad, bnhd, (unsigned long long)seed);
    ditattn_llsa_params params = {s->block, s->levels, {s->topk[0], s->topk[1], s->topk[2]}, 0.0f};
    tu_tensor q = tu_tensor_new(s->B, s->H, s->N, s->D, pad, bnhd);
    tu_tensor k = tu_tensor_new(s->B, s->H, s->N, s->D, pad, bnhd);
    tu_tensor v = tu_tensor_new(s->B, s->H, s->N, s->D, pad, bnhd);
    tu_fill_uniform(&q);
    tu_fill_uniform(&k);
    tu_fill_uniform(&v);
    tu_tensor full = tu_tensor_new(s->B, s->H, s->N, s->D, pad, bnhd);
    float *full_lse = lse_new((size_t)(s->B * s->H * s->N));
    if (ditattn_llsa_forward(ctx, &params, &q.t, &k.t, &v.t, &full.t, full_lse, NULL) != DITATTN_OK)
      fail_msg("llsa_forward: %s [%s]", ditattn_last_error(ctx), line);

    row_range rg[8];
    const int nr = ranges_for(s->N, s->block, rg);
    for (int r = 0; r < nr; r++) {
      tu_tensor part = tu_tensor_new(s->B, s->H, rg[r].M, s->D, pad, !bnhd);
      float *part_lse = lse_new((size_t)(s->B * s->H * rg[r].M));
      dt_llsa_fwd p = {params, &q.t,       &k.t,
                       &v.t,   &part.t,    part_lse,
                       NULL,   rg[r].row0, {DT_SUMMARY_NONE, NULL, 0, 0, 0, 0}};
      assert_int_equal(dt_resolve_scale(ctx, params.scale, s->D, &p.params.scale), DITATTN_OK);
      if (ctx->ops->llsa_forward(ctx, &p) != DITATTN_OK)
        fail_msg("ranged llsa_forward: %s; row0=%lld M=%lld [%s]", ditattn_last_error(ctx),
                 (long long)rg[r].row0, (long long)rg[r].M, line);
      expect_rows_equal("llsa", line, &full, full_lse, &part, part_lse, s->B, s->H, s->N, s->D,
                        rg[r]);
      tu_tensor_free(&part);
      free(part_lse);
    }
    tu_tensor_free(&q);
    tu_tensor_free(&k);
    tu_tensor_free(&v);
    tu_tensor_free(&full);
    free(full_lse);
  }
  ditattn_context_destroy(ctx);
}

/* ------------------------------------------------------------- RoPeSLR */
static void ropeslr_ranges_match_full_call(void **state) {
  (void)state;
  /* B, H, D, r, grid T×H×W, block: N = 30 (block 4, 7), 24 (block 5, 4), 12 (block 12), 9 (block
   * 2). */
  const int64_t shapes[][8] = {
      {1, 2, 4, 3, 2, 3, 5, 4}, {2, 1, 3, 2, 2, 3, 5, 7},  {1, 1, 5, 4, 2, 3, 4, 5},
      {2, 2, 4, 2, 1, 4, 6, 4}, {1, 1, 2, 1, 1, 3, 4, 12}, {1, 2, 3, 2, 1, 3, 3, 2},
  };
  ditattn_context *ctx = tu_context_new(DITATTN_BACKEND_REF, 0);
  for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
    const int64_t *s = shapes[c];
    slr_problem pb = slr_problem_make(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    const uint64_t seed = tu_seed() + 1000u + (uint64_t)c;
    tu_srand(seed);
    slr_draw_options(&pb);
    slr_problem_init(&pb, seed);
    char line[512];
    slr_describe(&pb, line, sizeof line);
    const int64_t B = pb.B, H = pb.H, N = pb.N, D = pb.D;

    tu_tensor full = tu_tensor_new(B, H, N, D, pb.pad, pb.layout_bnhd);
    float *full_lse = lse_new((size_t)(B * H * N));
    slr_forward(ctx, &pb, &full, full_lse, NULL);

    /* The problem struct as ditattn_ropeslr_forward builds it. */
    ditattn_ropeslr_weights w = slr_weights_of(pb.w);
    int32_t *raster = NULL;
    const int32_t *pos = pb.pos;
    if (!pos) {
      assert_int_equal(dt_raster_positions(ctx, pb.params.grid, N, &raster), DITATTN_OK);
      pos = raster;
    }
    dt_ropeslr_fwd base = {.params = pb.params,
                           .topk = ditattn_ropeslr_topk(&pb.params, N),
                           .weights = &w,
                           .pos = pos,
                           .q = &pb.q.t,
                           .k = &pb.k.t,
                           .v = &pb.v.t};
    assert_true(base.topk >= 1);
    assert_int_equal(dt_resolve_scale(ctx, pb.params.scale, D, &base.params.scale), DITATTN_OK);

    row_range rg[8];
    const int nr = ranges_for(N, pb.params.block, rg);
    for (int r = 0; r < nr; r++) {
      tu_tensor part = tu_tensor_new(B, H, rg[r].M, D, pb.pad, !pb.layout_bnhd);
      float *part_lse = lse_new((size_t)(B * H * rg[r].M));
      dt_ropeslr_fwd p = base;
      p.out = &part.t;
      p.lse_sparse = part_lse;
      p.q_row0 = rg[r].row0;
      if (ctx->ops->ropeslr_forward(ctx, &p) != DITATTN_OK)
        fail_msg("ranged ropeslr_forward: %s; row0=%lld M=%lld [%s]", ditattn_last_error(ctx),
                 (long long)rg[r].row0, (long long)rg[r].M, line);
      expect_rows_equal("ropeslr", line, &full, full_lse, &part, part_lse, B, H, N, D, rg[r]);
      tu_tensor_free(&part);
      free(part_lse);
    }
    dt_free(raster);
    tu_tensor_free(&full);
    free(full_lse);
    slr_problem_free(&pb);
  }
  ditattn_context_destroy(ctx);
}

/* Only backends whose forward entries honour q_row0 advertise it. */
static void query_rows_flags(void **state) {
  (void)state;
  ditattn_context *ref = tu_context_new(DITATTN_BACKEND_REF, 0);
  ditattn_context *cpu = tu_context_new(DITATTN_BACKEND_CPU, 1);
  assert_int_equal(ref->ops->query_rows, 1);
  assert_int_equal(cpu->ops->query_rows, 0);
  ditattn_context_destroy(ref);
  ditattn_context_destroy(cpu);
}

int main(void) {
  tu_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(llsa_ranges_match_full_call),
      cmocka_unit_test(ropeslr_ranges_match_full_call),
      cmocka_unit_test(query_rows_flags),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
