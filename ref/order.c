/* Token orders (llsa.md §5): which raster token sits at each sequence
 * position, and the gather that applies an order to a tensor. */
#include "ref.h"

#include <stdlib.h>
#include <string.h>

/* Grid extents are at most 2^21 (checked by the API), so 21 bits per axis. */
#define MORTON_BITS 21

/* Bits of (t, y, x) interleaved, t the most significant of each triple. */
static uint64_t morton_code(uint64_t t, uint64_t y, uint64_t x) {
  uint64_t code = 0;
  for (int i = 0; i < MORTON_BITS; i++) {
    code |= ((t >> i) & 1u) << (3 * i + 2);
    code |= ((y >> i) & 1u) << (3 * i + 1);
    code |= ((x >> i) & 1u) << (3 * i);
  }
  return code;
}

typedef struct morton_entry {
  uint64_t code;
  int64_t raster;
} morton_entry;

/* By code, then by raster index: a stable sort of the raster order. */
static int morton_entry_cmp(const void *pa, const void *pb) {
  const morton_entry *a = pa, *b = pb;
  if (a->code != b->code) return a->code < b->code ? -1 : 1;
  return (a->raster > b->raster) - (a->raster < b->raster);
}

static ditattn_status morton_seq_to_raster(const int64_t grid[3], int64_t *seq_to_raster) {
  const int64_t T = grid[0], H = grid[1], W = grid[2], N = T * H * W;
  size_t bytes;
  if (!dt_mul_size((size_t)N, sizeof(morton_entry), &bytes)) return DITATTN_ERR_OVERFLOW;
  morton_entry *entries = dt_malloc(bytes);
  if (!entries) return DITATTN_ERR_OUT_OF_MEMORY;
  for (int64_t t = 0; t < T; t++)
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        const int64_t r = (t * H + y) * W + x;
        entries[r].code = morton_code((uint64_t)t, (uint64_t)y, (uint64_t)x);
        entries[r].raster = r;
      }
  qsort(entries, (size_t)N, sizeof *entries, morton_entry_cmp);
  for (int64_t s = 0; s < N; s++) seq_to_raster[s] = entries[s].raster;
  dt_free(entries);
  return DITATTN_OK;
}

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Tiles in raster order of tiles, raster order inside each (edge tiles partial). */
static void tile_seq_to_raster(const int64_t grid[3], const int64_t tile[3],
                               int64_t *seq_to_raster) {
  const int64_t T = grid[0], H = grid[1], W = grid[2];
  int64_t s = 0;
  for (int64_t t0 = 0; t0 < T; t0 += tile[0])
    for (int64_t y0 = 0; y0 < H; y0 += tile[1])
      for (int64_t x0 = 0; x0 < W; x0 += tile[2])
        for (int64_t t = t0; t < min_i64(t0 + tile[0], T); t++)
          for (int64_t y = y0; y < min_i64(y0 + tile[1], H); y++)
            for (int64_t x = x0; x < min_i64(x0 + tile[2], W); x++)
              seq_to_raster[s++] = (t * H + y) * W + x;
}

ditattn_status dt_order_seq_to_raster(const ditattn_order_params *params, int64_t *seq_to_raster) {
  const int64_t N = params->grid[0] * params->grid[1] * params->grid[2];
  switch (params->kind) {
  case DITATTN_ORDER_RASTER:
    for (int64_t s = 0; s < N; s++) seq_to_raster[s] = s;
    return DITATTN_OK;
  case DITATTN_ORDER_MORTON: return morton_seq_to_raster(params->grid, seq_to_raster);
  case DITATTN_ORDER_TILE:
    tile_seq_to_raster(params->grid, params->tile, seq_to_raster);
    return DITATTN_OK;
  }
  return DITATTN_ERR_INVALID_ARGUMENT;
}

static void raster_to_position(const int64_t grid[3], int64_t r, int32_t *pos) {
  const int64_t H = grid[1], W = grid[2];
  pos[0] = (int32_t)(r / (H * W));
  pos[1] = (int32_t)(r / W % H);
  pos[2] = (int32_t)(r % W);
}

ditattn_status dt_order_positions(const ditattn_order_params *params, int32_t *pos) {
  const int64_t N = params->grid[0] * params->grid[1] * params->grid[2];
  /* Raster needs no permutation buffer, so raster positions never fail. */
  if (params->kind == DITATTN_ORDER_RASTER) {
    for (int64_t s = 0; s < N; s++) raster_to_position(params->grid, s, pos + 3 * s);
    return DITATTN_OK;
  }
  size_t bytes;
  if (!dt_mul_size((size_t)N, sizeof(int64_t), &bytes)) return DITATTN_ERR_OVERFLOW;
  int64_t *seq_to_raster = dt_malloc(bytes);
  if (!seq_to_raster) return DITATTN_ERR_OUT_OF_MEMORY;
  ditattn_status st = dt_order_seq_to_raster(params, seq_to_raster);
  if (st == DITATTN_OK)
    for (int64_t s = 0; s < N; s++) raster_to_position(params->grid, seq_to_raster[s], pos + 3 * s);
  dt_free(seq_to_raster);
  return st;
}

ditattn_status dt_ref_order(ditattn_context *ctx, const dt_order *p) {
  (void)ctx;
  const ditattn_tensor *x = p->x, *y = p->y;
  const int64_t B = x->shape[0], H = x->shape[1], N = x->shape[2], D = x->shape[3];
  const size_t row_bytes = (size_t)D * sizeof(float);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t s = 0; s < N; s++) {
        const int64_t r = p->seq_to_raster[s];
        if (p->direction == DITATTN_FORWARD)
          memcpy(dt_f32_at(y, b, h, s, 0), dt_f32_at(x, b, h, r, 0), row_bytes);
        else
          memcpy(dt_f32_at(y, b, h, r, 0), dt_f32_at(x, b, h, s, 0), row_bytes);
      }
  return DITATTN_OK;
}
