/* TEMPORARY stub: replaced by the real implementation. */
#include "ref.h"

ditattn_status dt_ref_dense_forward(ditattn_context *ctx, const dt_dense_fwd *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "dt_ref_dense_forward not implemented yet");
}

ditattn_status dt_ref_dense_backward(ditattn_context *ctx, const dt_dense_bwd *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "not implemented yet");
}
