/* TEMPORARY stub: replaced by the real implementation. */
#include "ref.h"

ditattn_status dt_order_seq_to_raster(const ditattn_order_params *params, int64_t *seq_to_raster) {
  int64_t n = params->grid[0] * params->grid[1] * params->grid[2];
  for (int64_t s = 0; s < n; s++) seq_to_raster[s] = s;
  return params->kind == DITATTN_ORDER_RASTER ? DITATTN_OK : DITATTN_ERR_UNSUPPORTED;
}

ditattn_status dt_order_positions(const ditattn_order_params *params, int32_t *pos) {
  const int64_t H = params->grid[1], W = params->grid[2];
  int64_t n = params->grid[0] * H * W;
  for (int64_t s = 0; s < n; s++) {
    pos[3 * s] = (int32_t)(s / (H * W));
    pos[3 * s + 1] = (int32_t)(s / W % H);
    pos[3 * s + 2] = (int32_t)(s % W);
  }
  return params->kind == DITATTN_ORDER_RASTER ? DITATTN_OK : DITATTN_ERR_UNSUPPORTED;
}

ditattn_status dt_ref_order(ditattn_context *ctx, const dt_order *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "not implemented yet");
}
