/* TEMPORARY stub: replaced by the real implementation. */
#include "ref.h"

ditattn_status dt_ref_rope(ditattn_context *ctx, const dt_rope *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "dt_ref_rope not implemented yet");
}
