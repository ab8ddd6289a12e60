/* TEMPORARY stub: replaced by the real implementation. */
#include "ref.h"

ditattn_status dt_ref_llsa_forward(ditattn_context *ctx, const dt_llsa_fwd *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "dt_ref_llsa_forward not implemented yet");
}
