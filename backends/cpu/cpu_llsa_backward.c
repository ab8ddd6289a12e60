/* LLSA backward (§4) on the CPU. */
#include "cpu_llsa.h"

ditattn_status dt_cpu_llsa_backward(ditattn_context *ctx, const dt_llsa_bwd *p) {
  (void)p;
  return dt_fail(ctx, DITATTN_ERR_UNSUPPORTED, "llsa backward (cpu): not implemented yet");
}
