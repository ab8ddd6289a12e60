/* TEMPORARY stub: replaced by the real implementation. */
#include "ref.h"

ditattn_status dt_ref_pool(ditattn_context *ctx, const dt_pool *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "dt_ref_pool not implemented yet");
}
