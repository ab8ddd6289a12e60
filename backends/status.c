/* Status names and the per-context error message. */
#include "backend.h"

#include <stdio.h>

static const char *const status_names[DITATTN_STATUS_COUNT] = {
    [DITATTN_OK] = "success",
    [DITATTN_ERR_NULL_POINTER] = "null pointer argument",
    [DITATTN_ERR_INVALID_ARGUMENT] = "invalid argument",
    [DITATTN_ERR_SHAPE_MISMATCH] = "shape mismatch",
    [DITATTN_ERR_BAD_STRIDE] = "bad stride",
    [DITATTN_ERR_DTYPE] = "unsupported dtype",
    [DITATTN_ERR_OVERFLOW] = "size overflow",
    [DITATTN_ERR_OUT_OF_MEMORY] = "out of memory",
    [DITATTN_ERR_UNSUPPORTED] = "operation not supported by this backend",
    [DITATTN_ERR_BACKEND_UNAVAILABLE] = "backend unavailable",
    [DITATTN_ERR_IO] = "I/O error",
    [DITATTN_ERR_FORMAT] = "malformed file",
    [DITATTN_ERR_DEVICE] = "device runtime error",
    [DITATTN_ERR_MPI] = "MPI error",
    [DITATTN_ERR_NONFINITE] = "non-finite input",
    [DITATTN_ERR_INTERNAL] = "internal error",
};

const char *ditattn_strerror(ditattn_status status) {
  if ((int)status < 0 || status >= DITATTN_STATUS_COUNT || !status_names[status])
    return "unknown status";
  return status_names[status];
}

const char *ditattn_version(void) { return "0.1.0"; }

ditattn_status dt_fail(ditattn_context *ctx, ditattn_status status, const char *fmt, ...) {
  if (ctx) {
    int used = snprintf(ctx->last_error, sizeof ctx->last_error, "%s: ", ditattn_strerror(status));
    if (used < 0) used = 0;
    if ((size_t)used < sizeof ctx->last_error) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(ctx->last_error + used, sizeof ctx->last_error - (size_t)used, fmt, ap);
      va_end(ap);
    }
  }
  return status;
}

void dt_clear_error(ditattn_context *ctx) {
  if (ctx) ctx->last_error[0] = '\0';
}

const char *ditattn_last_error(const ditattn_context *ctx) {
  return ctx ? ctx->last_error : "no context";
}
