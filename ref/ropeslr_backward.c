/* TEMPORARY stub: replaced by the real implementation. */
#include "ref.h"

ditattn_status dt_ref_ropeslr_backward(ditattn_context *ctx, const dt_ropeslr_bwd *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "dt_ref_ropeslr_backward not implemented yet");
}
