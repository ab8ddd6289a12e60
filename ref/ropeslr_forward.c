/* TEMPORARY stub: replaced by the real implementation. */
#include "ref.h"

ditattn_status dt_ref_ropeslr_forward(ditattn_context *ctx, const dt_ropeslr_fwd *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "dt_ref_ropeslr_forward not implemented yet");
}
